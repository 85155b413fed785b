"""Break-it against the trust model of commit 9080d76 (zkv.replication.claims), in the simulator:
honest clusters, real replica cores, schedules that end in a state the docs say cannot happen.
These tests fail on purpose: they document bugs, and must pass once fixed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.sim.helpers import settle
from zkv.sim.world import World


def _remove(w: World, gone: str) -> None:
    """The documented way to remove a node: it stops for good, and every other node's config
    stops listing it (each restarted in turn)."""
    w.crash(gone)
    for nid, node in w.nodes.items():
        if nid == gone:
            continue
        node.cfg = replace(node.cfg, peers=tuple(p for p in node.cfg.peers if p.id != gone))
        w.crash(nid)
        w.start(nid)
        settle(w, 1.0)


def test_a_wiped_node_gets_the_writes_of_a_removed_node(tmp_path: Path) -> None:
    """(A, honest) Claims.vector drops from every heartbeat's vector the origins this store has
    not heard of whose node is not configured - a removed node's incarnations.  A store that
    has never heard of them (wiped, or a node added later: "it fetches the whole dataset")
    catches up by pulls (the peers' backlogs reach back), never sees the removed node's origins
    in any peer's vector, never pulls them: its vector never equals the others' (so
    anti-entropy never runs either), and the removed node's acknowledged writes are missing on
    it for good.  (Its Horizon.stable also ignores them: it counts itself as holding every
    event of every origin.)  Before 9080d76 the vector was taken whole and the origin pulled."""
    w = World(7, tmp_path, nodes=4)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    op = w.client_op("n3", "set", b"written-on-n3", b"v")
    settle(w, 1.0)
    assert op.result == "ok"
    assert all(w.nodes[i].replica.ks.get(b"written-on-n3") == b"v" for i in ("n0", "n1", "n2"))
    _remove(w, "n3")
    w.client_op("n0", "set", b"written-on-n0", b"v")
    settle(w, 1.0)
    w.crash("n2")
    w.nodes["n2"].disk.wipe()
    w.start("n2")
    settle(w, 10.0)
    n0, n2 = w.nodes["n0"].replica, w.nodes["n2"].replica
    assert n2.ks.get(b"written-on-n0") == b"v"  # it did catch up with the configured nodes
    assert n2.ks.get(b"written-on-n3") == b"v", (
        f"the removed node's write never reached the wiped node: its vv {sorted(n2.inbox.vv)} "
        f"vs n0's {sorted(n0.inbox.vv)}; full transfers: {n2.stats['full_syncs']}")
    assert n2.inbox.vv == n0.inbox.vv
