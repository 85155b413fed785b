"""Node configuration: TOML file -> frozen dataclasses, every default and every check in one place.

Required keys (the stable contract other tools generate): ``id``, ``listen``, ``bus``, ``data_dir``
and ``[[peers]]`` entries with ``id`` and ``bus``.  Everything else is optional; the defaults
below are what a node runs with when a key is absent.  A bad config raises :class:`ConfigError`
with one line that names the problem.  ``data_dir`` is taken from the working directory; key
files (``secret_key``, peers' ``public_key``, ``tls_*_file``) from the config file's own
directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zkv.curve import KeyFileError, KeyPair, load_keypair, load_public

DEFAULT_MAX_LINE = 1024 * 1024  # bytes in one plain-text request line
DEFAULT_MAX_CLIENTS = 10_000
DEFAULT_FSYNC = "everysec"
DEFAULT_SNAPSHOT_RECORDS = 1_000_000  # logged writes that trigger a snapshot (+/- 25% per node)
DEFAULT_BACKLOG = 200_000  # events per origin kept in memory to answer catch-up requests
DEFAULT_HEARTBEAT_MS = 200
DEFAULT_ANTI_ENTROPY_MS = 2_000
# Local events are published at most once per this interval (the first after a quiet spell goes
# at once): under load, peers get fewer, larger batches, and each batch costs them a wake-up.
DEFAULT_PUBLISH_INTERVAL_MS = 2
# The frontend's read cache (zkv.frontend.readcache): a GET it answers skips the store round trip.
DEFAULT_READ_CACHE_MB = 64
# A peer's timestamp more than this ahead of our wall clock is not adopted (its events wait),
# and a node whose clock is this far ahead of the cluster's median refuses client writes.
DEFAULT_MAX_CLOCK_OFFSET_MS = 500
DEFAULT_BACKLOG_MB = 64  # bytes of event batches per origin kept for catch-up, besides ``backlog``
DEFAULT_PENDING_MB = 256  # bytes of replicated events held behind a gap, all origins together
DEFAULT_ACK_TIMEOUT_MS = 1_000  # how long a write waits for min_acks peers
DEFAULT_HWM = 100_000  # ZeroMQ high-water mark of the replication PUB/SUB sockets
FSYNC_MODES = ("always", "everysec", "no")

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ConfigError(Exception):
    """A config file that cannot be used; the message is one line naming the problem."""


@dataclass(frozen=True, slots=True)
class Peer:
    id: str
    bus: str
    public_key: bytes | None = None  # Z85; set exactly when the node has ``secret_key``


@dataclass(frozen=True, slots=True)
class Config:
    id: str
    listen_host: str
    listen_port: int
    bus: str
    data_dir: Path
    peers: tuple[Peer, ...] = ()
    fsync: str = DEFAULT_FSYNC
    max_line: int = DEFAULT_MAX_LINE
    max_clients: int = DEFAULT_MAX_CLIENTS
    snapshot_records: int = DEFAULT_SNAPSHOT_RECORDS
    backlog: int = DEFAULT_BACKLOG
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    anti_entropy_ms: int = DEFAULT_ANTI_ENTROPY_MS
    hwm: int = DEFAULT_HWM
    publish_interval_ms: int = DEFAULT_PUBLISH_INTERVAL_MS
    read_cache_mb: int = DEFAULT_READ_CACHE_MB
    max_clock_offset_ms: int = DEFAULT_MAX_CLOCK_OFFSET_MS
    backlog_mb: int = DEFAULT_BACKLOG_MB
    pending_mb: int = DEFAULT_PENDING_MB
    keys: KeyPair | None = None  # from ``secret_key``: the bus and catch-up channel use CURVE
    password: str | None = field(default=None, repr=False)  # clients must AUTH with it
    idle_timeout: int = 0  # seconds a client may stay silent before it is closed (0: never)
    tls_cert_file: Path | None = None  # with tls_key_file: the client port speaks TLS only
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None  # clients must present a certificate signed by this CA
    min_acks: int = 0  # every write waits until this many peers have applied it
    # INCR and its family (zkv.store.counter); false: refused with a reason
    counters: bool = True
    # FLUSHALL / FLUSHDB: a delete of every key, replicated; refused unless true
    allow_flushall: bool = False
    catchup_port: int = 0  # the catch-up ROUTER's port on the bus host (0: any free one)
    ack_timeout_ms: int = DEFAULT_ACK_TIMEOUT_MS  # ... or this long, then -ERR not enough ...
    metrics_listen: tuple[str, int] | None = None  # (host, port) of /metrics (port 0: any free)
    source: str = field(default="", compare=False)

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @property
    def bus_host(self) -> str:
        return parse_tcp_endpoint(self.bus)[0]

    @property
    def all_ids(self) -> tuple[str, ...]:
        return (self.id, *(p.id for p in self.peers))

    def server_keys(self) -> dict[str, bytes]:
        """Node id -> the public key its bus and catch-up socket prove (empty without keys)."""
        if self.keys is None:
            return {}
        return {self.id: self.keys.public, **{p.id: p.public_key for p in self.peers if p.public_key}}


def parse_host_port(text: str, what: str, allow_zero: bool = False) -> tuple[str, int]:
    """``"127.0.0.1:7000"`` / ``"[::1]:7000"`` / ``"localhost:7000"`` -> (host, port);
    ``allow_zero``: port 0 (any free one) is accepted too."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]\s]+):(\d+)", text)
    if not m:
        raise ConfigError(f"{what}: cannot parse address {text!r} (expected HOST:PORT)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not (0 if allow_zero else 1) <= port < 65536:
        raise ConfigError(f"{what}: port {port} out of range in {text!r}")
    return host, port


def parse_tcp_endpoint(text: str, what: str = "bus") -> tuple[str, int]:
    """``"tcp://127.0.0.1:7100"`` -> (host, port); only tcp endpoints can be reached by peers."""
    if not isinstance(text, str) or not text.startswith("tcp://"):
        raise ConfigError(f"{what}: cannot parse endpoint {text!r} (expected tcp://HOST:PORT)")
    return parse_host_port(text[len("tcp://"):], what)


def _require(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in raw:
        raise ConfigError(f"{where}: missing required key '{key}'")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}: key '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _optional_int(raw: dict[str, Any], key: str, default: int, minimum: int, where: str) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{where}: key '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


_KNOWN_KEYS = {
    "id", "listen", "bus", "data_dir", "peers", "fsync", "max_line", "max_clients",
    "snapshot_records", "backlog", "heartbeat_ms", "anti_entropy_ms", "hwm",
    "publish_interval_ms", "read_cache_mb", "max_clock_offset_ms", "backlog_mb", "pending_mb",
    "secret_key", "password", "idle_timeout", "tls_cert_file", "tls_key_file", "tls_ca_file",
    "min_acks", "ack_timeout_ms", "catchup_port", "metrics_listen", "counters", "allow_flushall",
}


def config_from_dict(raw: dict[str, Any], where: str = "config", base_dir: Path | None = None,
                     files_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document.  ``data_dir`` is relative to the working directory (or
    ``base_dir``), key files to ``files_dir`` (the config file's directory)."""
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'")
    node_id = _require(raw, "id", str, where)
    if not _ID_RE.match(node_id):
        raise ConfigError(f"{where}: id {node_id!r} must be 1-64 letters, digits, '_', '.' or '-'")
    host, port = parse_host_port(_require(raw, "listen", str, where), f"{where}: listen")
    bus = _require(raw, "bus", str, where)
    parse_tcp_endpoint(bus, f"{where}: bus")
    data_dir = Path(_require(raw, "data_dir", str, where))
    if base_dir is not None and not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    keys = None
    if "secret_key" in raw:
        key_path = Path(_require(raw, "secret_key", str, where))
        if files_dir is not None and not key_path.is_absolute():
            key_path = files_dir / key_path
        try:
            keys = load_keypair(key_path, f"{where}: secret_key")
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None
    peers_raw = raw.get("peers", [])
    if not isinstance(peers_raw, list):
        raise ConfigError(f"{where}: 'peers' must be an array of tables ([[peers]])")
    peers: list[Peer] = []
    seen_ids = {node_id}
    seen_bus = {bus}
    for i, p in enumerate(peers_raw):
        pw = f"{where}: peers[{i}]"
        if not isinstance(p, dict):
            raise ConfigError(f"{pw}: must be a table with 'id' and 'bus'")
        extra = sorted(set(p) - {"id", "bus", "public_key"})
        if extra:
            raise ConfigError(f"{pw}: unknown key '{extra[0]}'")
        pid = _require(p, "id", str, pw)
        pbus = _require(p, "bus", str, pw)
        parse_tcp_endpoint(pbus, f"{pw}: bus")
        public = None
        if "public_key" in p:
            if keys is None:
                raise ConfigError(f"{pw}: public_key is set but this node has no secret_key")
            try:
                public = load_public(_require(p, "public_key", str, pw), files_dir, f"{pw}: public_key")
            except KeyFileError as exc:
                raise ConfigError(str(exc)) from None
        elif keys is not None:
            raise ConfigError(f"{pw}: missing public_key (with secret_key set, only peers whose "
                              "key is configured may connect)")
        if pid in seen_ids:
            raise ConfigError(f"{pw}: duplicate id {pid!r}")
        if pbus in seen_bus:
            raise ConfigError(f"{pw}: duplicate bus {pbus!r}")
        seen_ids.add(pid)
        seen_bus.add(pbus)
        if public is not None and (public == keys.public or public in {q.public_key for q in peers}):
            raise ConfigError(f"{pw}: public_key is already used by another node of this config")
        peers.append(Peer(pid, pbus, public))
    password = None
    if "password" in raw:
        password = _require(raw, "password", str, where)
        if not usable_password(password):
            raise ConfigError(f"{where}: password must be non-empty, without spaces or control "
                              "characters (the plain protocol's AUTH could not send it)")
    tls = {}
    for key in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
        if key in raw:
            path = Path(_require(raw, key, str, where))
            if files_dir is not None and not path.is_absolute():
                path = files_dir / path
            if not path.is_file():
                raise ConfigError(f"{where}: {key}: no such file {path}")
            tls[key] = path
    if ("tls_cert_file" in tls) != ("tls_key_file" in tls):
        raise ConfigError(f"{where}: tls_cert_file and tls_key_file go together")
    if "tls_ca_file" in tls and "tls_cert_file" not in tls:
        raise ConfigError(f"{where}: tls_ca_file needs tls_cert_file and tls_key_file")
    min_acks = _optional_int(raw, "min_acks", 0, 0, where)
    if min_acks > len(peers):
        raise ConfigError(f"{where}: min_acks = {min_acks} but the node has {len(peers)} peer(s): "
                          "no write could ever be acknowledged")
    metrics_listen = _metrics_listen(raw, (host, port), where)
    fsync = raw.get("fsync", DEFAULT_FSYNC)
    if fsync not in FSYNC_MODES:
        raise ConfigError(f"{where}: fsync must be one of {', '.join(FSYNC_MODES)}, got {fsync!r}")
    return Config(
        id=node_id,
        listen_host=host,
        listen_port=port,
        bus=bus,
        data_dir=data_dir,
        peers=tuple(peers),
        fsync=fsync,
        max_line=_optional_int(raw, "max_line", DEFAULT_MAX_LINE, 16, where),
        max_clients=_optional_int(raw, "max_clients", DEFAULT_MAX_CLIENTS, 1, where),
        snapshot_records=_optional_int(raw, "snapshot_records", DEFAULT_SNAPSHOT_RECORDS, 100, where),
        backlog=_optional_int(raw, "backlog", DEFAULT_BACKLOG, 10, where),
        heartbeat_ms=_optional_int(raw, "heartbeat_ms", DEFAULT_HEARTBEAT_MS, 10, where),
        anti_entropy_ms=_optional_int(raw, "anti_entropy_ms", DEFAULT_ANTI_ENTROPY_MS, 50, where),
        hwm=_optional_int(raw, "hwm", DEFAULT_HWM, 1, where),
        publish_interval_ms=_optional_int(raw, "publish_interval_ms", DEFAULT_PUBLISH_INTERVAL_MS, 0, where),
        read_cache_mb=_optional_int(raw, "read_cache_mb", DEFAULT_READ_CACHE_MB, 0, where),
        max_clock_offset_ms=_optional_int(raw, "max_clock_offset_ms", DEFAULT_MAX_CLOCK_OFFSET_MS, 1, where),
        backlog_mb=_optional_int(raw, "backlog_mb", DEFAULT_BACKLOG_MB, 1, where),
        pending_mb=_optional_int(raw, "pending_mb", DEFAULT_PENDING_MB, 1, where),
        keys=keys,
        password=password,
        idle_timeout=_optional_int(raw, "idle_timeout", 0, 0, where),
        tls_cert_file=tls.get("tls_cert_file"),
        tls_key_file=tls.get("tls_key_file"),
        tls_ca_file=tls.get("tls_ca_file"),
        min_acks=min_acks,
        catchup_port=_optional_int(raw, "catchup_port", 0, 0, where),
        ack_timeout_ms=_optional_int(raw, "ack_timeout_ms", DEFAULT_ACK_TIMEOUT_MS, 1, where),
        counters=_flag(raw, "counters", where, default=True),
        allow_flushall=_flag(raw, "allow_flushall", where),
        metrics_listen=metrics_listen,
        source=where,
    )


def _flag(raw: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: key '{key}' must be true or false, got {value!r}")
    return value


def _metrics_listen(raw: dict[str, Any], listen: tuple[str, int], where: str) -> tuple[str, int] | None:
    """``metrics_listen = "HOST:PORT"``: where /metrics is served; absent or "": nowhere."""
    text = raw.get("metrics_listen", "")
    if not isinstance(text, str):
        raise ConfigError(f"{where}: key 'metrics_listen' must be a string HOST:PORT, got {text!r}")
    if not text:
        return None
    addr = parse_host_port(text, f"{where}: metrics_listen", allow_zero=True)
    if addr == listen:
        raise ConfigError(f"{where}: metrics_listen {text!r} is the client address (listen): "
                          "the two need different ports")
    return addr



def usable_password(password: str) -> bool:
    """Non-empty, printable, no spaces: the plain protocol's AUTH must send it, and a TOML
    file must hold it (no DEL, no control characters, no lone surrogates)."""
    return bool(password) and all(c.isprintable() and not c.isspace() for c in password)

def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return config_from_dict(raw, where=str(p), files_dir=p.parent)
