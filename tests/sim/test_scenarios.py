"""The compound faults that lost acknowledged writes, replayed in the simulator through the real
replica core (zkv.sim.world), step by step, with the checker's verdict at the end.

1. A node restarted with its clock behind, before it hears a peer, acknowledged a write stamped
   below the others' tombstone horizon; they dropped it as "deleted and collected".
2. A node that wrote alone past a snapshot lost that snapshot: the events in its intact log, after
   the hole, were never claimed, never announced, and the peers' horizon passed them.
3. A node whose data directory was wiped restarted with its clock behind: the same as 1, with no
   clock file to restart from.
"""

from __future__ import annotations

from pathlib import Path

from tests.sim.helpers import final_check, settle
from zkv.sim.world import World


def test_restart_with_the_clock_behind_while_the_others_are_paused(tmp_path: Path) -> None:
    w = World(1, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    w.client_op("n0", "set", b"gone", b"1")
    settle(w, 0.5)
    w.crash("n1")
    w.client_op("n0", "del", b"gone")
    settle(w, 12.0)  # no collection while n1 is down: the horizon then jumps ~12 s at once
    w.start("n1")
    settle(w, 2.0)
    assert w.nodes["n0"].replica.ks.entry(b"gone") is None, "the tombstone was not collected"
    w.crash("n2")
    w.pause("n0", 6.0)
    w.pause("n1", 6.0)
    w.set_clock("n2", -8000)
    w.start("n2")
    settle(w, 1.0)  # it hears no peer: after five heartbeats it serves clients
    op = w.client_op("n2", "set", b"newkey", b"v")
    settle(w, 0.1)
    w.crash("n2")
    w.set_clock("n2", 0)
    settle(w, 6.0)
    w.start("n2")
    violations = final_check(w)
    assert op.result in ("ok", "refused"), op
    assert not violations, violations


def test_writes_after_a_lost_snapshot_reach_every_node(tmp_path: Path) -> None:
    w = World(2, tmp_path, snapshot_records=100)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    w.crash("n0")
    w.crash("n1")
    for i in range(140):
        key = b"k%d" % (i % 40)
        if i % 10 == 9:
            w.client_op("n2", "del", key)
        else:
            w.client_op("n2", "set", key, b"v%d" % i)
        settle(w, 0.01)
    assert w.nodes["n2"].disk.path.joinpath("snapshot.zkv").exists()
    w.crash("n2")
    assert w.nodes["n2"].disk.corrupt_snapshot(w.rng)
    w.start("n0")
    w.start("n1")
    settle(w, 1.0)
    for i in range(5):
        w.client_op("n0", "set", b"other%d" % i, b"o")
    w.client_op("n0", "del", b"other4")
    settle(w, 1.0)
    w.start("n2")
    settle(w, 5.0)
    # writes whose only copy was the lost snapshot are fairly gone; the checker must not
    # count them: excuse those the intact log does not hold
    acked_after = [op for op in w.ops if op.node == "n2" and op.result == "ok" and op.event]
    held = w.nodes["n2"].replica
    for op in acked_after:
        e = held.ks.entry(op.key)
        if e is None or (e[0], e[1]) < op.version:
            op.excused = "in the lost snapshot only"
    violations = final_check(w)
    assert not violations, violations
    assert held.stats["lost_events"] > 0  # the hole was given up, the rest claimed


def test_wiped_node_with_its_clock_behind_waits_for_a_peer(tmp_path: Path) -> None:
    w = World(3, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    w.client_op("n0", "set", b"gone", b"1")
    settle(w, 0.3)
    w.client_op("n0", "del", b"gone")
    settle(w, 6.0)
    w.crash("n2")
    w.nodes["n2"].disk.wipe()
    w.pause("n0", 5.0)
    w.pause("n1", 5.0)
    w.set_clock("n2", -4000)
    w.start("n2")
    settle(w, 1.0)
    op = w.client_op("n2", "set", b"gone", b"new")
    settle(w, 0.1)
    assert op.result == "refused", "a wiped node accepted a write before it heard how far its clock had gone"
    settle(w, 5.0)  # the peers resume; n2 hears them and then accepts writes
    op2 = w.client_op("n2", "set", b"gone", b"newer")
    settle(w, 0.1)
    assert op2.result in ("ok", "refused")
    violations = final_check(w)
    assert not violations, violations


def test_anti_entropy_repairs_keys_a_replica_lost_and_the_others_keep_theirs(tmp_path: Path) -> None:
    """Keys vanish from n0's memory (a bug, bad RAM: nothing announces it, its version vector
    is unchanged).  n2 is down, so no tombstone horizon moves; n0 and n1 compare digests at
    equal vectors, and the merge must bring the keys back to n0 - and n1, seeing them missing
    on n0, must keep its own copies (absence is not a delete)."""
    w = World(4, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    for i in range(400):  # many buckets hold two keys: a reply covers a key n0 lost and another
        w.client_op("n%d" % (i % 3), "set", b"r%d" % i, b"v%d" % i)
        settle(w, 0.002)
    settle(w, 1.0)
    w.crash("n2")
    settle(w, 0.2)
    w.rot("n0", 40)
    assert len(w.nodes["n0"].replica.ks) == 360
    settle(w, 7.0)  # (a round n0 began with n2 as it went down waits FETCH_TIMEOUT, 3 s)
    assert len(w.nodes["n0"].replica.ks) == 400, "anti-entropy did not repair n0"
    assert len(w.nodes["n1"].replica.ks) == 400
    violations = final_check(w)
    assert not violations, violations
