"""What one requester can cost a store through its catch-up channel (found by a break-it
review): an ENTRIES request naming all 1,024 buckets used to scan the whole keyspace once per
bucket in the store's single loop, and a requester that never read its replies made the store
hold every reply (the ROUTER's default high-water mark, 1,000 messages of up to 32 MB).
"""

from __future__ import annotations

import time

import msgpack
import zmq

from tests.cluster.respclient import Resp, rss_mb, timed
from tests.cluster.faults import capture_heartbeat

FAST = {"heartbeat_ms": 100, "anti_entropy_ms": 60000}


def _fill(port: int, keys: int, value: bytes = b"v", per: int = 1000) -> None:
    with Resp(port) as c:
        for start in range(0, keys, per):
            args: list[bytes] = [b"MSET"]
            for i in range(start, min(keys, start + per)):
                args += [b"key:%d" % i, value]
            assert c.cmd(*args) == b"+OK"


def _dealer(endpoint: str, rcvhwm: int = 1000) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.sndhwm = 0
    s.rcvhwm = rcvhwm
    if rcvhwm < 10:
        s.setsockopt(zmq.RCVBUF, 4096)
    s.connect(endpoint)
    return s


def test_one_entries_request_for_all_buckets_does_not_stall_the_store(make_cluster) -> None:
    """ENTRIES with the 1,024 bucket numbers (a 2.8 KB request, charged 12 of a requester's
    1,000 burst tokens) makes entries_reply call Keyspace.bucket_entries([b]) once per bucket,
    and each call walks the whole keyspace: 1,024 full scans in the store loop, during which no
    client request is served.  A peer never asks more than MAX_DIFF_BUCKETS (64) at once."""
    c = make_cluster(1, **FAST)
    n0 = c.nodes[0]
    n0.start()
    _fill(n0.port, 30_000)
    endpoint = capture_heartbeat(n0)["catchup"]
    s = _dealer(endpoint)
    try:
        with Resp(n0.port) as cl:
            assert cl.cmd("DBSIZE") == b":30000"
            s.send_multipart([b"entries", msgpack.packb(list(range(1024)))])
            time.sleep(0.05)  # the request reaches the store loop first
            _, took = timed(lambda: cl.cmd("DBSIZE"))
        # a store answers a DBSIZE in about a millisecond; one request must not hold it for long
        assert took < 1.0, (f"one ENTRIES request (12 rate tokens) held the store loop for "
                            f"{took:.1f}s: a requester's 1,000-token burst buys ~80 of them")
    finally:
        s.close(0)


def test_a_requester_that_never_reads_cannot_pin_unbounded_memory(make_cluster) -> None:
    """A catch-up client sends PULL requests (1 token each, well within its rate) and never reads
    the replies.  The catch-up ROUTER keeps its default send high-water mark (1,000 messages per
    connection, no byte bound), so each reply - here the whole 4 MB backlog - is copied and held
    in the store's memory for as long as the connection stays open.  Dropping a stalled stream
    (the 30 s rule) covers snapshot streams only, and even then what was queued stays queued."""
    c = make_cluster(1, **FAST)
    n0 = c.nodes[0]
    n0.start()
    value = b"x" * (256 * 1024)
    with Resp(n0.port) as cl:
        for i in range(16):
            assert cl.cmd("SET", f"big{i}", value) == b"+OK"
    origin = n0.info()["origin"].encode()
    endpoint = capture_heartbeat(n0)["catchup"]
    store = n0.child_pid("store")
    before = rss_mb(store)
    s = _dealer(endpoint, rcvhwm=1)  # never reads
    try:
        for _ in range(60):  # 60 tokens of a 1,000-token burst
            s.send_multipart([b"pull", origin, b"0"])
        deadline = time.monotonic() + 3  # the replies are made within milliseconds
        grown = 0.0
        while time.monotonic() < deadline:
            grown = rss_mb(store) - before
            if grown > 150:
                break
            time.sleep(0.2)
        assert grown < 64, (f"60 unread PULL replies pinned {grown:.0f} MB in the store; more "
                            "connections (or more requests, at 500/s) pin more")
    finally:
        s.close(0)
