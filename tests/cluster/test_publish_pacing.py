"""Publish pacing (``publish_interval_ms``): a store gathers the local writes of one interval into
one bus batch, and still sends the first write after a quiet spell at once.

Each batch costs every peer a wake-up, so under load fewer, larger batches are most of what
replication costs a peer (see README, Figures).  The counters come from ``INFO``: the writer's
``local_writes`` and a peer's ``bus_batches`` (event batches it received on the bus).
"""

from __future__ import annotations

import time

from tests.cluster.harness import LineClient, wait_until

INTERVAL_MS = 400


def _bus_batches(node) -> int:
    return int(node.info()["bus_batches"])


def test_writes_within_one_interval_travel_as_few_batches(make_cluster) -> None:
    c = make_cluster(publish_interval_ms=INTERVAL_MS, heartbeat_ms=1000).start()
    a, b = c.nodes[0], c.nodes[1]
    with LineClient(a.port) as cl:
        assert cl.cmd(b"SET warm 0") == b"OK"
        wait_until(lambda: b.get("warm") == b"VALUE 0", timeout=10, what="first write on node1")
        before = _bus_batches(b)
        t0 = time.monotonic()
        for i in range(40):  # 40 separate requests, each one store turn, each one acknowledged
            assert cl.cmd(f"SET k{i} v{i}".encode()) == b"OK"
        elapsed = time.monotonic() - t0
    wait_until(lambda: b.get("k39") == b"VALUE v39", timeout=10, what="last write on node1")
    assert all(b.get(f"k{i}") == f"VALUE v{i}".encode() for i in range(40))
    batches = _bus_batches(b) - before
    # Unpaced, that is 40 batches.  Paced, at most one per interval, plus one at each edge
    # (and a heartbeat flushes what is pending, at most one more per second).
    allowed = int(elapsed * 1000 / INTERVAL_MS) + 3 + int(elapsed) + 1
    assert batches <= allowed, f"{batches} batches for 40 writes in {elapsed:.2f}s (allowed {allowed})"
    assert batches < 20, f"{batches} batches for 40 writes: not gathered"


def test_first_write_after_quiet_spell_is_not_delayed(make_cluster) -> None:
    # An interval of 1.5 s and heartbeats (which flush pending events) every 3 s: a write that
    # waited for either would take a second or more to reach node1.
    c = make_cluster(publish_interval_ms=1500, heartbeat_ms=3000).start()
    a, b = c.nodes[0], c.nodes[1]
    with LineClient(a.port) as cl:
        for i in range(2):
            if i:
                time.sleep(1.6)  # noqa: the quiet spell itself is what this step needs
            assert cl.cmd(f"SET quiet{i} yes".encode()) == b"OK"
            t0 = time.monotonic()
            wait_until(lambda: b.get(f"quiet{i}") == b"VALUE yes", timeout=5.0, interval=0.01,
                       what=f"write {i} on node1")
            lag = time.monotonic() - t0
            assert lag < 0.5, f"write {i} after a quiet spell took {lag:.2f}s to replicate"


def test_heartbeat_flushes_held_events_before_announcing_them(make_cluster) -> None:
    """A heartbeat announces the node's sequence number; events held back by pacing go out
    first, so a peer never sees an announcement ahead of the bus and pulls what is on its way."""
    c = make_cluster(publish_interval_ms=5000, heartbeat_ms=200).start()
    a, b = c.nodes[0], c.nodes[1]
    with LineClient(a.port) as cl:
        assert cl.cmd(b"SET warm 0") == b"OK"
        wait_until(lambda: b.get("warm") == b"VALUE 0", timeout=10, what="first write on node1")
        pulled = int(b.info()["pulled_events"])
        t0 = time.monotonic()
        for i in range(40):
            assert cl.cmd(f"SET hb{i} v{i}".encode()) == b"OK"
    # Held for up to 5 s by pacing, the writes must still arrive with the next heartbeat.
    wait_until(lambda: b.get("hb39") == b"VALUE v39", timeout=4.0, what="held writes on node1")
    assert time.monotonic() - t0 < 4.0
    assert all(b.get(f"hb{i}") == f"VALUE v{i}".encode() for i in range(40))
    assert int(b.info()["pulled_events"]) == pulled, "a heartbeat ran ahead of the bus"
