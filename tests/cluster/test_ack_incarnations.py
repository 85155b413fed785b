"""A peer's acknowledgement must not outlive what the peer still holds (found by a break-it
review).

``Acked`` used to keep, per peer *id*, the highest sequence of our origin it ever acknowledged.
A peer that comes back as a new incarnation having lost its log tail (a machine crash with
fsync = "everysec", or a replaced disk) announces less in its heartbeats; the old figure stayed,
so WAIT counted it for writes it no longer had.  Now a new incarnation's figure starts again
from what its heartbeat says (zkv.replication.acks).
"""

from __future__ import annotations


from tests.cluster.respclient import Resp
from tests.cluster.harness import wait_until


def test_wait_does_not_count_a_peer_that_came_back_without_the_writes(make_cluster) -> None:
    c = make_cluster(2, heartbeat_ms=100, anti_entropy_ms=60000)
    n0, n1 = c.nodes
    # node0 announces its state rarely, so node1, once restarted, learns late that it lacks
    # node0's last write (nothing else makes it pull: no new write comes)
    c.write_config(n0, heartbeat_ms=20000)
    n0.seed_clock()  # node1 may hear node0's first heartbeat only 20 s late: it must not wait
    n1.seed_clock()  # for it to learn its clock before writing
    c.start(formed=False)

    # Before node0's first write, node1 must be subscribed to node0's bus.  Right after start it
    # may not be yet (ZeroMQ's slow joiner): node0's start-up heartbeat and first events are then
    # lost, and node1, which learns node0's catch-up address only from a heartbeat, cannot pull
    # them for 20 s - WAIT would return 0.  node0 hears node1 before serving clients, but nothing
    # node0 sends unasked tells the other direction, so node1 writes and waits for node0's ack,
    # which comes on node0's bus: until WAIT counts it, node1 has not heard node0.  (A new write
    # each try: node0 acknowledges a sequence once.  node1's own writes are older than k1..k5 in
    # its log, so its last record is still k5's.)
    def node1_hears_node0() -> bool:
        with Resp(n1.port) as cl:
            assert cl.cmd("SET", "warm-up", "1") == b"+OK"
            return cl.cmd("WAIT", "1", "500") == b":1"
    wait_until(node1_hears_node0, timeout=30, what="node1 to hear node0's ack of its write")

    with Resp(n0.port) as cl:
        for i in range(1, 6):
            assert cl.cmd("SET", f"k{i}", f"v{i}") == b"+OK"
            assert cl.cmd("WAIT", "1", "2000") == b":1"  # each write its own batch and record
    origin0 = n0.info()["origin"]
    n1.kill()  # then the machine "loses" the unsynced tail: node1's last record, half written
    segs = sorted(n1.data_dir.glob("wal-*.log"))
    assert segs, "no log segment on node1"
    with open(segs[-1], "r+b") as f:
        f.seek(0, 2)
        f.truncate(f.tell() - 1)
    n1.start()

    def node1_back_without_k5() -> bool:
        info = n0.info()
        line = next((v for k, v in info.items() if k.startswith("peer") and "id=node1" in v), "")
        return f"{origin0}=4" in line
    wait_until(node1_back_without_k5, timeout=10, what="node0 to hear node1 announce 4 of its writes")
    with Resp(n0.port) as cl:
        got = cl.cmd("WAIT", "1", "300")
    lacks = n1.get("k5") == b"NOT FOUND"
    assert not (got == b":1" and lacks), (
        "WAIT 1 counted node1 for k5, which node1 (a new incarnation that lost its log tail, "
        "announcing 4 of node0's writes) does not have")
