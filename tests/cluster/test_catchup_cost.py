"""What one requester can cost a store through its catch-up channel (found by a break-it
review): an ENTRIES request naming all 1,024 buckets used to scan the whole keyspace once per
bucket in the store's single loop, and a requester that never read its replies made the store
hold every reply (the ROUTER's default high-water mark, 1,000 messages of up to 32 MB).

And what a restart costs the peers of the node that restarts: a node that missed a few hundred
writes asked thousands of pulls (an answer that ended its catch-up was asked again at once, a
loop at network speed), and peers logged it as over its request rate.
"""

from __future__ import annotations

import random
import time

import msgpack
import pytest
import zmq

from tests.cluster.respclient import Resp, rss_mb, timed
from tests.cluster.faults import capture_heartbeat, faketime_prefix
from tests.cluster.harness import Cluster, Node, wait_until

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


# --- what a restart costs -----------------------------------------------------------------------
OVER_RATE = "over its request rate"


def _write(node: Node, rnd: random.Random, n: int) -> None:
    """``n`` writes on 20 keys, a fifth of them deletes, ten to a pipeline (so, several batches)."""
    with node.client() as c:
        for start in range(0, n, 10):
            lines = [(b"DEL k%d" if rnd.random() < 0.2 else b"SET k%d v" + str(i).encode())
                     % rnd.randrange(20) for i in range(start, min(n, start + 10))]
            for line, reply in zip(lines, c.pipeline(lines)):
                assert line.startswith(b"DEL") or reply == b"OK", (line, reply)


def _converged(c: Cluster) -> bool:
    infos = [n.info() for n in c.nodes]
    return len({(i["digest"], i["vv"]) for i in infos}) == 1


def _counter(node: Node, name: str) -> int:
    return int(node.info()[f"catchup_{name}"])


def _warned(node: Node) -> bool:
    return OVER_RATE in node.log_path.read_text(errors="replace")


@pytest.mark.parametrize("keyed,crash", [pytest.param(False, False, marks=pytest.mark.soak), (True, True)],
                         ids=["open-sigterm", "keyed-sigkill"])  # (the first behind -m soak: time)
def test_a_restart_after_a_few_hundred_missed_writes_costs_a_few_requests(make_cluster, keyed, crash) -> None:
    """A cluster that has lived a while (every node restarted twice: eight origins that wrote),
    node1 stopped, 200 writes (overwrites and deletes on 20 keys) on node0 and node2, node1
    started again.

    Bound: two requests per origin in the vector.  node1 may lack events of any origin (a
    SIGKILL loses its unsynced log tail, whatever origin it held), a few hundred events fit in
    one reply (10,000 events or 4 MB), and one pull may be asked a second time (a reply cut
    short, or one unanswered for FETCH_TIMEOUT).  Counted until two seconds (twenty heartbeats)
    after the vectors agree, so a loop that outlives the catch-up counts too: the one that asked
    an ending answer again at once cost about 6,000 requests in that time, near the request
    rate."""
    c = make_cluster(3, curve=keyed, **FAST)
    n0, n1, n2 = c.nodes
    peers = (n0, n2)
    c.start()
    rnd = random.Random(7)
    for node in c.nodes * 2:
        _write(node, rnd, 10)
        assert node.stop() == 0
        node.start()
    # A write of each node's new incarnation, heard by the others (over the bus, or by a pull
    # its heartbeat started): so node0 and node2 hear each other's events as they are written
    # below, and a pull between them (an event lost to a subscription not yet made after a
    # restart) is not counted as node1's.
    for node in c.nodes:
        _write(node, rnd, 1)
    wait_until(lambda: _converged(c), 20, what="the cluster to converge before the test")
    n1.kill() if crash else n1.stop()
    for node in peers:
        _write(node, rnd, 100)
    received = {n.id: _counter(n, "requests_received") for n in peers}
    asked = {n.id: _counter(n, "requests_sent") for n in peers}  # (node0 and node2 of each other)
    t0 = time.monotonic()
    n1.start()
    wait_until(lambda: _converged(c), 15, what="node1 to catch up")
    took = time.monotonic() - t0
    time.sleep(2.0)
    origins = len(n1.info()["vv"].split(","))
    bound = 2 * origins
    sent = _counter(n1, "requests_sent")
    # what the peers served node1: all they served but what they themselves asked (of each
    # other: a pull after an event lost to a full queue is not node1's cost; node1, which
    # writes nothing after its restart, is asked nothing that matters here)
    served = sum(_counter(n, "requests_received") - received[n.id]
                 - (_counter(n, "requests_sent") - asked[n.id]) for n in peers)
    assert sent <= bound and served <= bound, (
        f"a restart with 200 missed writes ({origins} origins) cost {sent} catch-up requests "
        f"sent, {served} received by the peers; at most {bound} expected (caught up in {took:.1f}s)")
    assert not any(_warned(n) for n in peers), f"a peer logged node1 as {OVER_RATE}"
    assert all(_counter(n, "requests_refused") == 0 for n in peers)


def test_a_restart_that_leaves_events_stamped_ahead_does_not_start_a_pull_loop(make_cluster) -> None:
    """node0 ran alone with its clock an hour ahead, wrote, crashed, and starts again with a
    right clock: its log (and so its catch-up backlog) holds an event stamped an hour ahead,
    which its peers hold back until their clocks come near it (zkv.store.replica _hold_back).
    A pull answer whose events are held back moves nothing; it used to be asked again at once,
    and again, for the hour: about a thousand requests a second from each peer.  Bound: none
    is needed while the event waits (heartbeats do not ask for an origin held back); 20 per
    peer in two seconds (one per heartbeat) leaves room and still fails on any loop."""
    c = make_cluster(3, **FAST)
    n0, n1, n2 = c.nodes
    n0.prefix = faketime_prefix("+1h")
    n0.seed_clock().start()
    with n0.client() as cl:
        assert cl.cmd("SET x from-the-future") == b"OK"
    n0.kill()
    n0.prefix = []
    c.start()
    wait_until(lambda: all(int(n.info()["clock_held_events"]) > 0 for n in (n1, n2)), 15,
               what="node1 and node2 to hold node0's event back")
    before = {n.id: _counter(n, "requests_sent") for n in (n1, n2)}
    served = _counter(n0, "requests_received")
    time.sleep(2.0)
    sent = {n.id: _counter(n, "requests_sent") - before[n.id] for n in (n1, n2)}
    served = _counter(n0, "requests_received") - served
    assert all(v <= 20 for v in sent.values()) and served <= 40, (
        f"in two seconds with an event held back, node1 and node2 sent {sent} catch-up requests, "
        f"node0 received {served}: a pull answer that moves nothing is asked again at once")
