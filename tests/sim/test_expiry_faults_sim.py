"""Expiry under faults, through the real replica core in the simulator: an INCR of a key that
its node has reclaimed, an EXPIRE from a node that was cut off (tests/test_expiry_faults.py has
the same at the keyspace level; each failed before its fix).

The simulator's random workload keeps counter keys and expiring keys apart (zkv.sim.run), and
its checker cannot judge a key that is both (``_check_counters`` reads a SET PX's ``(value,
ms)`` as a value), so these scenarios compare the replicas directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sim.helpers import settle
from zkv.sim.world import World

K = b"ttl-counter"


def _holds(w: World, nid: str) -> bool:
    return K in w.nodes[nid].replica.ks._data  # type: ignore[union-attr]


def _views(w: World) -> dict[str, bytes | None]:
    return {i: n.replica.ks.get(K) for i, n in w.nodes.items()}  # type: ignore[union-attr]


def _incr_as_soon_as_one_node_reclaimed(w: World) -> str:
    """SET K 5 PX 100 on n0; step time until a node has reclaimed K while another still
    holds it; INCR K there.  Returns the node that did the INCR."""
    for i in w.nodes:  # (staggered: their anti-entropy rounds, which reclaim, fall apart)
        w.start(i)
        settle(w, 0.07)
    settle(w, 1.0)
    w.client_op("n0", "setpx", K, (b"5", 100))
    settle(w, 0.1)
    assert all(_holds(w, i) for i in w.nodes)
    for _ in range(2000):
        settle(w, 0.002)
        gone = [i for i in w.nodes if not _holds(w, i)]
        if gone:
            break
    assert gone and len(gone) < len(w.nodes), "every node reclaimed at the same instant"
    op = w.client_op(gone[0], "incr", K, 1)
    settle(w, 0.2)
    assert op.result == "ok"
    return gone[0]


@pytest.mark.parametrize("seed", [95_000_001, 95_000_003])
def test_sim_incr_right_after_a_reclaim_reads_1_everywhere(tmp_path: Path, seed: int) -> None:
    """The node that reclaimed writes a bare increment (and answers 1, as Redis does for an
    INCR of an expired key); the nodes that still held the expired value add it to that value
    (6, expired).  What follows depends on timing: anti-entropy may merge their state into the
    INCR's node (the expiry register comes over: its "1" is now expired too - the acknowledged
    INCR is gone everywhere), or they compact first and the INCR's node keeps "1" while the
    others reclaim (divergence anti-entropy never repairs: the entry is below their floor).
    By the store's own rule (an INCR of an expired key starts it anew) every node reads "1"."""
    w = World(seed, tmp_path)
    _incr_as_soon_as_one_node_reclaimed(w)
    settle(w, 20.0)
    views = _views(w)
    assert views == {i: b"1" for i in w.nodes}, views


def test_sim_incr_right_after_a_reclaim_survives_a_restart(tmp_path: Path) -> None:
    """The node that took the INCR answered 1 and reads "1"; it restarts before its next
    snapshot (the log replay brings the expired SET PX back, and the increment adds to it):
    it reads nil."""
    w = World(95_000_002, tmp_path, snapshot_records=10_000)
    nid = _incr_as_soon_as_one_node_reclaimed(w)
    assert w.nodes[nid].replica.ks.get(K) == b"1"  # type: ignore[union-attr]
    w.crash(nid)
    settle(w, 0.05)
    w.start(nid)
    settle(w, 1.0)
    assert w.nodes[nid].replica.ks.get(K) == b"1", "the INCR acknowledged with 1 is gone"  # type: ignore[union-attr]


def test_sim_an_expire_from_a_cut_off_node_finds_no_key_anywhere(tmp_path: Path) -> None:
    """tests/test_break_expiry.py ``..an_expire_arriving_after_the_key_was_reclaimed..``
    through the real core, with faults the simulator draws anyway (a partition, a clock 2 s
    behind) and the default anti_entropy_ms (2,000: the interval at which keys are reclaimed
    and digests compared):

      2.0 s  n2: SET ek v0                        every node has it
      2.0 s  n1 hears nothing (n0, n2 -> n1 cut for 2.6 s)
      2.05 s n2: SET ek v1 PX 50                  n0, n2 have it; n1 does not
      4.55 s n1: PEXPIRE ek 60000                 n1 sees v0 alive: written, sent to all
             n0's clock is 2 s behind: n1's event waits there (beyond its clock bound),
             meanwhile the horizon passes the SET PX + 2 x max_clock_offset_ms, and n0
             reclaims ek; then n1's EXPIRE lands on nothing (a tombstone-state, collected)

    n1 and n2 hold v1 until the EXPIRE's time (60 s); n0 holds nothing, and anti-entropy
    skips their entry (below n0's floor).  Ten seconds after every fault healed the replicas
    still differ, and the checker says so."""
    from zkv.sim.checker import check
    key = b"ek"
    w = World(95_100_000, tmp_path, anti_entropy_ms=2000)
    w.set_clock("n0", -2000)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.5)
    w.client_op("n2", "set", key, b"v0")
    settle(w, 0.5)
    w.partition({("n2", "n1"), ("n0", "n1")}, 2.6)
    settle(w, 0.05)
    w.client_op("n2", "setpx", key, (b"v1", 50))
    settle(w, 2.5)
    op = w.client_op("n1", "pexpire", key, 60_000)
    settle(w, 6.0)
    assert op.result == "ok" and op.written is not None  # (written: n1 saw v0 alive)
    for n in w.nodes.values():
        n.offset_ms = 0.0
    settle(w, 10.0)
    views = {i: n.replica.ks.get(key) for i, n in w.nodes.items()}  # type: ignore[union-attr]
    assert views == {i: None for i in w.nodes}, views  # (v1 expired before the EXPIRE's time)
    assert not [str(v) for v in check(w.ops, *w.final_state(), w.true_wall())]


def test_sim_a_key_expiring_while_a_node_is_paused_is_reclaimed_only_after(tmp_path: Path) -> None:
    """SET PX 300, then one node pauses for 3 s: the others hide the key from its expiry on,
    but keep it (the horizon waits for the paused node's stable time); once it resumes,
    every node reclaims it and the replicas agree."""
    w = World(95_000_010, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    w.client_op("n0", "setpx", K, (b"v", 300))
    settle(w, 0.1)
    w.pause("n1", 3.0)
    settle(w, 2.5)
    assert all(_holds(w, i) for i in w.nodes), "reclaimed while a node could not have seen the horizon"
    g = w.client_op("n2", "get", K)
    settle(w, 0.1)
    assert g.result == "ok" and g.got is None
    settle(w, 6.0)
    assert not any(_holds(w, i) for i in w.nodes)
