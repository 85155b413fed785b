"""String commands and MULTI/EXEC through real processes, with redis-py and raw sockets: what a
Redis user reaches for after SET and GET, replicated like every write."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.cluster.harness import Cluster, LineClient, wait_until
from tests.cluster.test_redis_clients import rclient


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("strings")).start()
    try:
        yield c
    finally:
        c.stop()


def cmd(c: LineClient, *args: bytes) -> bytes:
    """One RESP command on a raw connection; its reply's first line, without CRLF."""
    c.send(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    return c.read_line().rstrip(b"\r")


def test_string_commands_from_redis_py_replicate(shared: Cluster) -> None:
    n0, n1 = shared.nodes[0], shared.nodes[1]
    r, peer = rclient(n0), rclient(n1)
    assert r.set("s:k", "1", nx=True) is True
    assert r.set("s:k", "2", nx=True) is None
    assert r.set("s:k", "3", xx=True, get=True) == b"1"
    assert r.set("s:absent", "x", xx=True) is None
    assert r.setnx("s:k", "4") is False and r.getset("s:k", "5") == b"3"
    assert r.append("s:k", "67") == 3 and r.strlen("s:k") == 3 and r.getrange("s:k", 1, -1) == b"67"
    assert r.msetnx({"s:m1": "a", "s:m2": "b"}) is True and r.msetnx({"s:m2": "c", "s:m3": "d"}) is False
    assert r.getdel("s:m1") == b"a" and r.type("s:m2") == b"string" and r.type("s:m1") == b"none"
    assert r.touch("s:k", "s:m1", "s:m2") == 2 and r.unlink("s:m2") == 1
    want = {"s:k": b"567", "s:m1": None, "s:m2": None, "s:m3": None, "s:absent": None}
    wait_until(lambda: all(peer.get(k) == v for k, v in want.items()), 10, what="replication")
    with pytest.raises(redis.ResponseError, match="invalid expire time"):
        r.set("s:k", "v", ex=0)


def test_a_redis_py_transaction_pipeline_runs_and_replicates(shared: Cluster) -> None:
    n0, n2 = shared.nodes[0], shared.nodes[2]
    r = rclient(n0)
    with r.pipeline() as p:  # transaction=True: MULTI ... EXEC
        p.set("t:a", "1").set("t:b", "2").get("t:a").getdel("t:b").exists("t:b")
        assert p.execute() == [True, True, b"1", b"2", 0]
    wait_until(lambda: rclient(n2).get("t:a") == b"1", 10, what="t:a on node2")
    with pytest.raises(redis.ResponseError, match="WATCH is not supported"):
        with r.pipeline() as p:
            p.watch("t:a")


def test_multi_exec_discard_and_errors_over_a_raw_socket(shared: Cluster) -> None:
    n0 = shared.nodes[0]

    with LineClient(n0.port) as c:
        assert cmd(c, b"EXEC") == b"-ERR EXEC without MULTI"
        assert cmd(c, b"DISCARD") == b"-ERR DISCARD without MULTI"
        assert cmd(c, b"MULTI") == b"+OK"
        assert cmd(c, b"MULTI") == b"-ERR MULTI calls can not be nested"
        assert cmd(c, b"SET", b"x:d", b"1") == b"+QUEUED"
        assert cmd(c, b"DISCARD") == b"+OK"
        assert cmd(c, b"GET", b"x:d") == b"$-1"
        assert cmd(c, b"MULTI") == b"+OK"
        assert cmd(c, b"SET", b"x:d", b"1") == b"+QUEUED"
        assert cmd(c, b"NOSUCH").startswith(b"-ERR unknown command")
        assert cmd(c, b"EXEC").startswith(b"-EXECABORT")
        assert cmd(c, b"GET", b"x:d") == b"$-1"
        assert cmd(c, b"MULTI") == b"+OK"
        assert cmd(c, b"PING") == b"+QUEUED"
        assert cmd(c, b"SET", b"x:e", b"v") == b"+QUEUED"
        assert cmd(c, b"EXEC") == b"*2"
        assert [c.read_line(), c.read_line()] == [b"+PONG\r", b"+OK\r"]
        assert cmd(c, b"MULTI") == b"+OK"
        assert cmd(c, b"EXEC") == b"*0"
        assert cmd(c, b"MULTI") == b"+OK"
        assert cmd(c, b"WAIT", b"1", b"0").startswith(b"-ERR WAIT is not allowed")
        assert cmd(c, b"EXEC").startswith(b"-EXECABORT")


def test_no_reader_on_any_node_sees_half_a_transaction(shared: Cluster) -> None:
    """A transaction sent one command at a time (each waiting for QUEUED) writes two keys; a
    reader on the same node and one on a peer never see them differ."""
    n0, n1 = shared.nodes[0], shared.nodes[1]
    torn: list[tuple] = []
    done = threading.Event()

    def reader(node) -> None:
        c = rclient(node)
        while not done.is_set():
            a, b = c.mget("h:a", "h:b")
            if a != b:
                torn.append((node.id, a, b))

    threads = [threading.Thread(target=reader, args=(n,)) for n in (n0, n1)]
    for t in threads:
        t.start()
    w = LineClient(n0.port)
    deadline = time.monotonic() + 20
    try:
        for i in range(300):
            if time.monotonic() > deadline or torn:
                break
            v = b"%d" % i
            assert cmd(w, b"MULTI") == b"+OK"
            assert cmd(w, b"SET", b"h:a", v) == b"+QUEUED"
            time.sleep(0.001)  # (a reader's MGET may come between the two)
            assert cmd(w, b"SET", b"h:b", v) == b"+QUEUED"
            assert cmd(w, b"EXEC") == b"*2"
            assert [w.read_line(), w.read_line()] == [b"+OK\r", b"+OK\r"]
    finally:
        w.close()
        done.set()
        for t in threads:
            t.join(10)
    assert not torn, torn[:5]
    wait_until(lambda: rclient(n1).mget("h:a", "h:b") == [b"299", b"299"], 10, what="the last one")


def test_scan_returns_every_key_of_10000_while_writes_continue(shared: Cluster) -> None:
    import subprocess

    n0, n1 = shared.nodes[0], shared.nodes[1]
    r = rclient(n0)
    keys = [f"scan:{i}" for i in range(10_000)]
    for i in range(0, len(keys), 1000):
        r.mset({k: "v" for k in keys[i:i + 1000]})
    wait_until(lambda: rclient(n1).exists(keys[-1]) == 1, 10, what="the keys on node1")
    done = threading.Event()

    def churn() -> None:  # new keys and deletes meanwhile, on both nodes
        c0, c1 = rclient(n0), rclient(n1)
        for i in range(20_000):
            if done.is_set():
                return
            (c0 if i % 2 else c1).set(f"churn:{i}", "x")
            if i % 3 == 0:
                (c1 if i % 2 else c0).delete(f"churn:{i - 3}")

    t = threading.Thread(target=churn)
    t.start()
    try:
        seen = list(rclient(n1).scan_iter(match="scan:*", count=97))
    finally:
        done.set()
        t.join(30)
    assert set(seen) == {k.encode() for k in keys} and len(seen) == len(keys)
    out = subprocess.run(["redis-cli", "-p", str(n0.port), "--scan", "--pattern", "scan:99*"],
                         capture_output=True, timeout=30)
    assert sorted(out.stdout.split()) == sorted(k.encode() for k in keys if k.startswith("scan:99"))
    assert sorted(r.keys("scan:999*")) == sorted(k.encode() for k in keys if k.startswith("scan:999"))
