"""Unit tests for zkv.config (TOML node configuration).

The minimal config (``id``, ``listen``, ``bus``, ``data_dir``, ``[[peers]]``) loads with the
documented defaults; every kind of bad config raises ``ConfigError`` with a one-line message that
names the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zkv import config as cfgmod
from zkv.config import (
    DEFAULT_ANTI_ENTROPY_MS, DEFAULT_BACKLOG, DEFAULT_FSYNC, DEFAULT_HEARTBEAT_MS, DEFAULT_HWM,
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_LINE, DEFAULT_SNAPSHOT_RECORDS, Config, ConfigError, Peer,
    config_from_dict, load_config, parse_host_port, parse_tcp_endpoint,
)

MINIMAL = """\
id = "n1"
listen = "127.0.0.1:7000"
bus = "tcp://127.0.0.1:7100"
data_dir = "data/n1"

[[peers]]
id = "n2"
bus = "tcp://127.0.0.1:7101"

[[peers]]
id = "n3"
bus = "tcp://127.0.0.1:7102"
"""


def write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def base() -> dict[str, Any]:
    return {
        "id": "n1", "listen": "127.0.0.1:7000", "bus": "tcp://127.0.0.1:7100", "data_dir": "d",
        "peers": [{"id": "n2", "bus": "tcp://127.0.0.1:7101"}],
    }


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(raw)
    msg = str(exc.value)
    assert "\n" not in msg, "one line"
    return msg


# ------------------------------------------------------------------ loading


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL)
    c = load_config(p)
    assert isinstance(c, Config)
    assert c.id == "n1"
    assert c.listen_host == "127.0.0.1" and c.listen_port == 7000
    assert c.listen == "127.0.0.1:7000"
    assert c.bus == "tcp://127.0.0.1:7100"
    assert c.bus_host == "127.0.0.1"
    assert c.data_dir == Path("data/n1")  # relative to the working directory
    assert c.peers == (Peer("n2", "tcp://127.0.0.1:7101"), Peer("n3", "tcp://127.0.0.1:7102"))
    assert c.all_ids == ("n1", "n2", "n3")
    assert c.source == str(p)
    # documented defaults
    assert c.fsync == DEFAULT_FSYNC == "everysec"
    assert c.max_line == DEFAULT_MAX_LINE == 1024 * 1024
    assert c.max_clients == DEFAULT_MAX_CLIENTS == 10_000
    assert c.snapshot_records == DEFAULT_SNAPSHOT_RECORDS == 1_000_000
    assert c.backlog == DEFAULT_BACKLOG == 200_000
    assert c.heartbeat_ms == DEFAULT_HEARTBEAT_MS == 200
    assert c.anti_entropy_ms == DEFAULT_ANTI_ENTROPY_MS == 2_000
    assert c.hwm == DEFAULT_HWM == 100_000
    assert c.publish_interval_ms == 2


def test_single_node_without_peers() -> None:
    raw = base()
    del raw["peers"]
    c = config_from_dict(raw)
    assert c.peers == ()
    assert c.all_ids == ("n1",)


def test_optional_keys_are_read(tmp_path: Path) -> None:
    text = MINIMAL.replace('data_dir = "data/n1"\n', """data_dir = "data/n1"
fsync = "always"
max_line = 4096
max_clients = 50
snapshot_records = 1000
backlog = 500
heartbeat_ms = 100
anti_entropy_ms = 1000
hwm = 10
publish_interval_ms = 0
""")
    c = load_config(write(tmp_path, text))
    assert c.publish_interval_ms == 0  # 0: publish every store loop turn
    assert (c.fsync, c.max_line, c.max_clients, c.snapshot_records, c.backlog,
            c.heartbeat_ms, c.anti_entropy_ms, c.hwm) == ("always", 4096, 50, 1000, 500, 100, 1000, 10)


@pytest.mark.parametrize("mode", ["always", "everysec", "no"])
def test_fsync_modes(mode: str) -> None:
    assert config_from_dict({**base(), "fsync": mode}).fsync == mode


def test_base_dir_for_relative_data_dir(tmp_path: Path) -> None:
    assert config_from_dict(base(), base_dir=tmp_path).data_dir == tmp_path / "d"
    absolute = {**base(), "data_dir": "/var/zkv"}
    assert config_from_dict(absolute, base_dir=tmp_path).data_dir == Path("/var/zkv")


def test_ipv6_listen() -> None:
    c = config_from_dict({**base(), "listen": "[::1]:7000"})
    assert c.listen_host == "::1"
    assert c.listen_port == 7000
    assert c.listen == "[::1]:7000"


def test_hostname_listen() -> None:
    c = config_from_dict({**base(), "listen": "localhost:7000"})
    assert (c.listen_host, c.listen_port, c.listen) == ("localhost", 7000, "localhost:7000")


def test_ipv6_bus() -> None:
    c = config_from_dict({**base(), "bus": "tcp://[::1]:7100"})
    assert c.bus_host == "::1"


def test_config_is_frozen() -> None:
    c = config_from_dict(base())
    with pytest.raises(AttributeError):
        c.id = "other"  # type: ignore[misc]


# ------------------------------------------------------------------ address parsers


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:7000", ("127.0.0.1", 7000)),
    ("[::1]:7000", ("::1", 7000)),
    ("[fe80::1:2]:1", ("fe80::1:2", 1)),
    ("example.org:65535", ("example.org", 65535)),
])
def test_parse_host_port(text: str, want: tuple[str, int]) -> None:
    assert parse_host_port(text, "listen") == want


@pytest.mark.parametrize("text", ["7000", "127.0.0.1", "127.0.0.1:", ":7000", "::1:7000",
                                  "[::1]7000", "host:port", "a b:1", ""])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="cannot parse address"):
        parse_host_port(text, "listen")


@pytest.mark.parametrize("text", ["h:0", "h:65536", "h:99999"])
def test_parse_host_port_port_range(text: str) -> None:
    with pytest.raises(ConfigError, match="out of range"):
        parse_host_port(text, "listen")


def test_parse_tcp_endpoint() -> None:
    assert parse_tcp_endpoint("tcp://10.0.0.1:7100") == ("10.0.0.1", 7100)
    for bad in ["udp://1.2.3.4:5", "ipc:///tmp/x", "1.2.3.4:5", "tcp://", "tcp://*:5x"]:
        with pytest.raises(ConfigError):
            parse_tcp_endpoint(bad)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("key", ["id", "listen", "bus", "data_dir"])
def test_missing_required_key(key: str) -> None:
    raw = base()
    del raw[key]
    assert f"missing required key '{key}'" in error_of(raw)


def test_missing_peer_keys() -> None:
    msg = error_of({**base(), "peers": [{"id": "n2"}]})
    assert "peers[0]" in msg and "missing required key 'bus'" in msg
    msg = error_of({**base(), "peers": [{"bus": "tcp://127.0.0.1:7101"}]})
    assert "peers[0]" in msg and "missing required key 'id'" in msg


@pytest.mark.parametrize("listen", ["7000", "localhost", "127.0.0.1:x", "::1:7000", "127.0.0.1:70000"])
def test_unparsable_listen(listen: str) -> None:
    msg = error_of({**base(), "listen": listen})
    assert "listen" in msg and repr(listen) in msg


@pytest.mark.parametrize("bus", ["udp://127.0.0.1:7100", "127.0.0.1:7100", "ipc:///tmp/bus", "tcp:/x:1"])
def test_bad_bus_scheme(bus: str) -> None:
    msg = error_of({**base(), "bus": bus})
    assert "bus" in msg and "tcp://HOST:PORT" in msg and repr(bus) in msg


def test_bad_peer_bus() -> None:
    msg = error_of({**base(), "peers": [{"id": "n2", "bus": "udp://127.0.0.1:7101"}]})
    assert "peers[0]" in msg and "bus" in msg


def test_duplicate_peer_id() -> None:
    raw = base()
    raw["peers"].append({"id": "n2", "bus": "tcp://127.0.0.1:7102"})
    msg = error_of(raw)
    assert "peers[1]" in msg and "duplicate id 'n2'" in msg


def test_peer_with_own_id() -> None:
    msg = error_of({**base(), "peers": [{"id": "n1", "bus": "tcp://127.0.0.1:7101"}]})
    assert "duplicate id 'n1'" in msg


def test_duplicate_bus() -> None:
    raw = base()
    raw["peers"].append({"id": "n3", "bus": "tcp://127.0.0.1:7101"})
    msg = error_of(raw)
    assert "peers[1]" in msg and "duplicate bus 'tcp://127.0.0.1:7101'" in msg


def test_peer_with_own_bus() -> None:
    msg = error_of({**base(), "peers": [{"id": "n2", "bus": "tcp://127.0.0.1:7100"}]})
    assert "duplicate bus" in msg


@pytest.mark.parametrize("fsync", ["sometimes", "ALWAYS", "", 1])
def test_bad_fsync(fsync: object) -> None:
    msg = error_of({**base(), "fsync": fsync})
    assert "fsync" in msg and "always, everysec, no" in msg and repr(fsync) in msg


def test_unknown_key() -> None:
    msg = error_of({**base(), "max_lines": 5})
    assert "unknown key 'max_lines'" in msg


def test_unknown_peer_key() -> None:
    msg = error_of({**base(), "peers": [{"id": "n2", "bus": "tcp://127.0.0.1:7101", "port": 1}]})
    assert "peers[0]" in msg and "unknown key 'port'" in msg


def test_peers_must_be_array_of_tables() -> None:
    assert "[[peers]]" in error_of({**base(), "peers": {"id": "n2"}})
    assert "peers[0]" in error_of({**base(), "peers": ["n2"]})


@pytest.mark.parametrize("key, value", [
    ("id", 5), ("listen", 7000), ("bus", ["tcp://127.0.0.1:7100"]), ("data_dir", True),
])
def test_wrong_type(key: str, value: object) -> None:
    msg = error_of({**base(), key: value})
    assert f"key '{key}' must be a str" in msg


@pytest.mark.parametrize("node_id", ["", "has space", "a/b", "x" * 65, "é"])
def test_bad_id(node_id: str) -> None:
    msg = error_of({**base(), "id": node_id})
    assert "id" in msg and repr(node_id) in msg


@pytest.mark.parametrize("key, value", [
    ("max_line", 15), ("max_line", "big"), ("max_clients", 0), ("snapshot_records", 99),
    ("backlog", 9), ("heartbeat_ms", 9), ("anti_entropy_ms", 49), ("hwm", 0), ("hwm", True),
    ("backlog", 1.5), ("publish_interval_ms", -1), ("publish_interval_ms", 0.5),
])
def test_bad_integer_settings(key: str, value: object) -> None:
    msg = error_of({**base(), key: value})
    assert f"key '{key}' must be an integer >=" in msg


def test_not_toml(tmp_path: Path) -> None:
    p = write(tmp_path, "id = n1 this is not toml [[[\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert "not valid TOML" in str(exc.value)
    assert str(p) in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "bin.toml"
    p.write_bytes(b'id = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(p)


def test_error_from_file_names_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, 'fsync = "maybe"\n' + MINIMAL)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(exc.value).startswith(str(p))
    assert "fsync must be one of" in str(exc.value)


def test_top_level_key_after_peers_table_is_a_peer_key(tmp_path: Path) -> None:
    """TOML puts keys written after [[peers]] into that peer: reported, not silently ignored."""
    p = write(tmp_path, MINIMAL + 'fsync = "always"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert "peers[1]" in str(exc.value) and "unknown key 'fsync'" in str(exc.value)


def test_config_error_is_exception() -> None:
    assert issubclass(ConfigError, Exception)
    assert cfgmod.FSYNC_MODES == ("always", "everysec", "no")


def test_issue9_keys_have_defaults_and_are_checked(tmp_path) -> None:
    from zkv.config import ConfigError, config_from_dict

    base = {"id": "n0", "listen": "127.0.0.1:7000", "bus": "tcp://127.0.0.1:7100", "data_dir": "d"}
    cfg = config_from_dict(base)
    assert (cfg.max_clock_offset_ms, cfg.backlog_mb, cfg.pending_mb) == (500, 64, 256)
    cfg = config_from_dict({**base, "max_clock_offset_ms": 50, "backlog_mb": 1, "pending_mb": 8})
    assert (cfg.max_clock_offset_ms, cfg.backlog_mb, cfg.pending_mb) == (50, 1, 8)
    for key in ("max_clock_offset_ms", "backlog_mb", "pending_mb"):
        with pytest.raises(ConfigError, match=key):
            config_from_dict({**base, key: 0})
