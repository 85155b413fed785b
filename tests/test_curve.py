"""Key files, the ZAP decision, config checks for keys, and the catch-up limits (no sockets,
except one in-process ROUTER/DEALER pair for a stalled snapshot stream)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import zmq
from zmq.utils import z85

from zkv.config import ConfigError, config_from_dict, load_config
from zkv.curve import KeyFileError, keygen, load_keypair, load_public, zap_reply
from zkv.replication.limits import RateLimit, snapshot_refusal
from zkv.replication.transfer import SnapStream, advance_streams


def test_keygen_writes_zeromq_certificates(tmp_path: Path) -> None:
    pub, sec = keygen(tmp_path / "k" / "node0")
    assert (pub.name, sec.name) == ("node0.public", "node0.secret")
    assert os.stat(sec).st_mode & 0o777 == 0o600
    public, secret = zmq.auth.load_certificate(sec)  # ZeroMQ's own reader agrees
    assert zmq.curve_public(secret) == public
    assert zmq.auth.load_certificate(pub) == (public, None)
    pair = load_keypair(tmp_path / "k" / "node0")  # PATH alone means PATH.secret
    assert (pair.public, pair.secret) == (public, secret)
    assert load_public(str(pub)) == public
    assert load_public(public.decode()) == public  # inline Z85
    with pytest.raises(KeyFileError, match="exists"):
        keygen(tmp_path / "k" / "node0")
    keygen(tmp_path / "k" / "node0", force=True)
    assert load_keypair(sec).public != public


def test_bad_keys_are_one_line_errors(tmp_path: Path) -> None:
    pub, sec = keygen(tmp_path / "n")
    with pytest.raises(KeyFileError, match="no secret key"):
        load_keypair(pub)
    with pytest.raises(KeyFileError, match="no such key file"):
        load_keypair(tmp_path / "missing.secret")
    with pytest.raises(KeyFileError):
        load_public("not-a-key")
    with pytest.raises(KeyFileError, match="neither a Z85 key nor a key file"):
        load_public("x" * 39 + "\x00")
    other_public, _ = zmq.curve_keypair()
    text = sec.read_text().replace(load_keypair(sec).public.decode(), other_public.decode())
    bad = tmp_path / "mixed.secret"
    bad.write_text(text)
    with pytest.raises(KeyFileError, match="does not belong"):
        load_keypair(bad)


def _zap(key: bytes, mechanism: bytes = b"CURVE", domain: bytes = b"zkv") -> list[bytes]:
    return [b"1.0", b"req7", domain, b"10.0.0.9", b"", mechanism, z85.decode(key)]


def test_zap_admits_only_listed_curve_keys() -> None:
    peer, _ = zmq.curve_keypair()
    stranger, _ = zmq.curve_keypair()
    admitted = {peer: "node1"}
    reply, name = zap_reply(_zap(peer), admitted)
    assert name == "node1" and reply == [b"1.0", b"req7", b"200", b"OK", b"node1", b""]
    for frames in (_zap(stranger), _zap(peer, mechanism=b"NULL")[:6], _zap(peer, domain=b"x")):
        reply, name = zap_reply(frames, admitted)
        assert name is None and reply[2] == b"400" and reply[1] == b"req7"
    reply, name = zap_reply([b"2.0", b"r", b"zkv", b"", b"", b"CURVE", z85.decode(peer)], admitted)
    assert name is None and reply[2] == b"500"
    reply, name = zap_reply([b"1.0"], admitted)
    assert name is None and reply[2] == b"500"


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "n0.toml"
    p.write_text('id = "n0"\nlisten = "127.0.0.1:7000"\nbus = "tcp://127.0.0.1:7100"\n'
                 'data_dir = "d"\n' + body)
    return p


def test_config_keys_all_or_none(tmp_path: Path) -> None:
    keygen(tmp_path / "keys" / "n0")
    keygen(tmp_path / "keys" / "n1")
    peer = '[[peers]]\nid = "n1"\nbus = "tcp://127.0.0.1:7101"\n'
    cfg = load_config(_write(tmp_path, 'secret_key = "keys/n0.secret"\n' + peer
                             + 'public_key = "keys/n1.public"\n'))
    assert cfg.keys is not None and cfg.peers[0].public_key == load_public(str(tmp_path / "keys/n1.public"))
    assert cfg.server_keys() == {"n0": cfg.keys.public, "n1": cfg.peers[0].public_key}
    with pytest.raises(ConfigError, match=r"peers\[0\]: missing public_key"):
        load_config(_write(tmp_path, 'secret_key = "keys/n0.secret"\n' + peer))
    with pytest.raises(ConfigError, match="no secret_key"):
        load_config(_write(tmp_path, peer + 'public_key = "keys/n1.public"\n'))
    with pytest.raises(ConfigError, match="already used"):
        load_config(_write(tmp_path, 'secret_key = "keys/n0.secret"\n' + peer
                           + 'public_key = "keys/n0.public"\n'))
    with pytest.raises(ConfigError, match="no such key file"):
        load_config(_write(tmp_path, 'secret_key = "keys/nope.secret"\n'))
    assert config_from_dict({"id": "a", "listen": "127.0.0.1:1", "bus": "tcp://127.0.0.1:2",
                             "data_dir": "d"}).keys is None


def test_rate_limit_is_per_requester_and_refills() -> None:
    rl = RateLimit(rate=10, burst=5)
    assert sum(rl.allow("a", 0.0) for _ in range(20)) == 5
    assert rl.allow("b", 0.0)  # another requester has its own bucket
    assert not rl.allow("a", 0.05)  # half a token back: not yet
    assert rl.allow("a", 0.2) and rl.refused == 16
    assert not rl.allow("a", 100.0, cost=6)  # never more than the burst saved up
    small = RateLimit(rate=1, burst=1, max_keys=3)
    for k in "wxyz":
        small.allow(k, 0.0)
    assert list(small.buckets) == ["x", "y", "z"]


def test_snapshot_refusal() -> None:
    peers = frozenset({"n1", "n2"})
    assert snapshot_refusal("n1", peers) is None
    assert "not a configured peer" in snapshot_refusal("n0", peers)
    assert "names no requester" in snapshot_refusal(None, peers)


def test_a_stream_whose_reader_never_reads_is_dropped() -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.sndhwm = 2
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.rcvhwm = 2
    dealer.identity = b"reader"
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        dealer.send(b"hello")
        assert router.poll(5000)
        ident = router.recv_multipart()[0]
        chunks = iter([b"x" * 1_000_000] * 1000)
        st = SnapStream(ident, b"t", chunks, {}, "n1", time.monotonic())
        streams = [st]
        deadline = time.monotonic() + 10
        while streams and not (streams[0].pending is not None) and time.monotonic() < deadline:
            streams, blocked = advance_streams(router, streams, time.monotonic(), stall=30)
        assert streams and streams[0].pending is not None, "the reader's queue never filled"
        streams, blocked = advance_streams(router, streams, time.monotonic(), stall=30)
        assert streams and blocked
        streams, _ = advance_streams(router, streams, time.monotonic() + 31, stall=30)
        assert streams == []
    finally:
        dealer.close(0)
        router.close(0)
        ctx.term()


def test_which_bus_hosts_count_as_loopback() -> None:
    """A store whose bus binds anything but loopback without keys warns at start."""
    from zkv.store.server import _loopback

    assert _loopback("127.0.0.1") and _loopback("127.0.0.2") and _loopback("::1")
    assert _loopback("localhost")
    for host in ("0.0.0.0", "*", "10.0.0.1", "::", "example.org"):
        assert not _loopback(host), host
