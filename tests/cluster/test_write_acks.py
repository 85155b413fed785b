"""Issue 10: choosing a write's safety.  ``WAIT numpeers timeout_ms`` (as in Redis) and the
``min_acks`` setting, against real clusters: prompt on an idle loopback cluster, a count that
says the truth when a peer is down or paused, and a write that is not undone on timeout."""

from __future__ import annotations

import signal
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.cluster.harness import Node, wait_until

FAST = {"heartbeat_ms": 100, "anti_entropy_ms": 500}


def rc(node: Node) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=node.port, protocol=2, socket_timeout=10,
                       retry=Retry(NoBackoff(), 0))


def test_wait_counts_peers_that_applied_the_writes(make_cluster) -> None:
    c = make_cluster(3, **FAST).start()
    n0, n1, n2 = c.nodes
    r = rc(n0)
    # idle loopback cluster: WAIT 2 100 answers 2 in a few milliseconds, not a heartbeat later
    times = []
    for i in range(20):
        r.set(f"k{i % 3}", f"v{i}")
        if i % 4 == 3:
            r.delete(f"k{i % 3}")
        t0 = time.perf_counter()
        assert r.execute_command("WAIT", 2, 100) == 2
        times.append(time.perf_counter() - t0)
    times.sort()
    assert times[len(times) // 2] < 0.02, f"WAIT 2 100 median {times[len(times) // 2] * 1000:.1f} ms"
    # what WAIT counted is really there
    for node in (n1, n2):
        for k in range(3):
            assert rc(node).get(f"k{k}") == r.get(f"k{k}")
    # nothing written: WAIT 0 0 answers at once with the peers that have everything
    assert r.execute_command("WAIT", 0, 0) == 2
    # one peer paused: WAIT 2 300 times out and says 1; WAIT 1 answers at once
    n2.signal(signal.SIGSTOP)
    try:
        r.set("during", "pause")
        t0 = time.monotonic()
        assert r.execute_command("WAIT", 2, 300) == 1
        assert 0.25 <= time.monotonic() - t0 < 2
        assert r.execute_command("WAIT", 1, 1000) == 1
    finally:
        n2.signal(signal.SIGCONT)
    # after it resumes, it catches up and WAIT sees both again
    assert r.execute_command("WAIT", 2, 5000) == 2
    assert rc(n2).get("during") == b"pause"
    # bad arguments
    for args in (("x", 1), (1, -1), (1,)):
        try:
            r.execute_command("WAIT", *args)
        except redis.ResponseError as exc:
            assert "integer" in str(exc) or "wrong number" in str(exc)
        else:
            raise AssertionError(f"WAIT {args} was accepted")


def test_pipelined_wait_waits_for_the_writes_before_it(make_cluster) -> None:
    c = make_cluster(2, **FAST).start()
    n0, n1 = c.nodes
    p = rc(n0).pipeline(transaction=False)
    for i in range(200):
        p.set(f"p{i % 5}", f"v{i}")
    p.execute_command("WAIT", 1, 2000)
    out = p.execute()
    assert out[-1] == 1
    assert rc(n1).get("p4") == b"v199"  # WAIT returned: the peer has every write before it


def test_min_acks_makes_every_write_wait_and_says_when_it_could_not(make_cluster) -> None:
    c = make_cluster(3, min_acks=1, ack_timeout_ms=300, **FAST).start()
    n0, n1, n2 = c.nodes
    r = rc(n0)
    assert r.set("a", "1") is True
    # the OK came after a peer had applied it
    assert rc(n1).get("a") == b"1" or rc(n2).get("a") == b"1"
    with n0.client() as plain:
        assert plain.cmd("SET b 2") == b"OK"
        assert plain.cmd("DELETE b") == b"OK"
    # both peers paused: the write times out, is reported, and is not undone
    n1.signal(signal.SIGSTOP)
    n2.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        try:
            r.set("c", "kept")
        except redis.ResponseError as exc:
            assert str(exc) == "not enough replicas acknowledged"
        else:
            raise AssertionError("a write no peer applied was acknowledged with min_acks = 1")
        assert 0.25 <= time.monotonic() - t0 < 2
        with n0.client() as plain:
            assert plain.cmd("SET d x") == b"ERROR not enough replicas acknowledged"
            assert plain.cmd("GET d") == b"VALUE x"  # reads do not wait
        assert r.get("c") == b"kept"
    finally:
        n1.signal(signal.SIGCONT)
        n2.signal(signal.SIGCONT)
    for node in (n1, n2):
        wait_until(lambda: rc(node).get("c") == b"kept", what=f"c on {node.id}")
    assert r.set("e", "after") is True
