"""Folding finished incarnations (zkv.replication.folds), through the real replica core in the
simulator: vectors stay bounded however often a node restarts, and a fold never costs a node
the writes it hides - not one that lost its data after the fold, not events that surface later."""

from __future__ import annotations

from pathlib import Path

from tests.sim.helpers import final_check, settle
from zkv.events import TOPIC_EVENTS, Batch, encode_batch
from zkv.sim.world import World


def _crash_loop(w: World, node: str, times: int) -> list[bytes]:
    """Restart ``node`` ``times`` times, each incarnation writing a key of its own (which stays)
    and overwriting or deleting a few shared ones; returns the keys only those wrote."""
    own = []
    for i in range(times):
        key = b"only%d" % i
        own.append(key)
        w.client_op(node, "set", key, b"inc%d" % i)
        w.client_op(node, "set", b"k%d" % (i % 3), b"v%d" % i)
        if i % 4 == 3:
            w.client_op(node, "del", b"k%d" % ((i + 1) % 3))
        settle(w, 0.3)
        w.crash(node)
        settle(w, 0.05)
        w.start(node)
        settle(w, 0.3)
    return own


def _wire(w: World) -> dict[str, set[str]]:
    return {i: set(n.replica.wire_vv()) for i, n in w.nodes.items()}


def test_restarts_leave_only_live_incarnations_on_the_wire(tmp_path: Path) -> None:
    w = World(11, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    _crash_loop(w, "n0", 20)
    w.client_op("n1", "set", b"k0", b"last")
    settle(w, 3.0)
    current = {n.replica.origin for n in w.nodes.values()}
    assert all(wire <= current and len(wire) <= 3 for wire in _wire(w).values()), _wire(w)
    for n in w.nodes.values():
        r = n.replica
        assert len(r.inbox.vv) >= 21 and len(r.folds.final) >= 18  # (n0's 20 old incarnations)
        assert r.folds.digest == w.nodes["n0"].replica.folds.digest
    assert not final_check(w)


def test_a_node_that_lost_its_data_after_a_fold_gets_the_folded_writes_back(tmp_path: Path) -> None:
    w = World(12, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    own = _crash_loop(w, "n0", 8)
    settle(w, 3.0)
    assert len(w.nodes["n1"].replica.folds.final) >= 7
    w.crash("n1")
    w.damage("n1", "wipe")
    w.start("n1")
    settle(w, 5.0)
    r = w.nodes["n1"].replica
    assert [k for k in own if r.ks.get(k) is None] == []
    assert not final_check(w)


def test_events_that_surface_after_a_fold_are_named_spread_and_folded_again(tmp_path: Path) -> None:
    w = World(13, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    _crash_loop(w, "n0", 3)
    settle(w, 3.0)
    r2 = w.nodes["n2"].replica
    origin, count = next(iter(r2.folds.final.items()))
    assert origin not in r2.wire_vv()
    # events of that finished incarnation that n2 alone holds (as a node whose log kept what
    # its peers never heard would): they are named, pulled by the others, and folded again
    stamp = r2.clock.now()
    late = Batch(origin, count + 1, [(stamp, b"late", b"surfaced")])
    r2.bus(origin.partition("@")[0], TOPIC_EVENTS, encode_batch(late), w.t)
    assert r2.wire_vv().get(origin) == count + 1
    settle(w, 3.0)
    for n in w.nodes.values():
        assert n.replica.ks.get(b"late") == b"surfaced", n.id
        assert n.replica.folds.final[origin] == count + 1
        assert origin not in n.replica.wire_vv()


def test_a_store_that_has_not_read_a_peers_folds_announces_no_stable_time(tmp_path: Path) -> None:
    """Until it has read a peer's folds, a store may lack the events they hide: were it to
    announce a stable time meanwhile, the horizon would pass them, and once pulled they would
    read as deleted and collected."""
    w = World(14, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    own = _crash_loop(w, "n0", 6)
    for i in range(6):  # tombstones to collect, in live incarnations
        w.client_op("n2", "set", b"d%d" % i, b"x")
        w.client_op("n2", "del", b"d%d" % i)
    settle(w, 3.0)
    w.crash("n1")
    w.damage("n1", "wipe")
    w.start("n1")
    r1 = w.nodes["n1"].replica
    ask = r1._ask_folds
    r1._ask_folds = lambda peer, digest: None  # its requests for folds are lost, for a while
    stables = []
    for _ in range(60):
        settle(w, 0.05)
        stables.append(r1._stable(r1.clock.now()))
    assert len(r1.peers) == 2 and set(stables) == {0}, stables
    r1._ask_folds = ask
    settle(w, 3.0)
    assert [k for k in own if r1.ks.get(k) is None] == []
    assert not final_check(w)


def test_folds_of_live_incarnations_are_not_believed(tmp_path: Path) -> None:
    """A peer's list of folds naming incarnations that are writing now (its own, ours, a third
    node's) is a lie or a bug: believed, they would vanish from every vector."""
    import msgpack

    from zkv.replication import catchup as wire

    w = World(15, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    for i in w.nodes:
        w.client_op(i, "set", b"k-" + i.encode(), b"v")
    settle(w, 1.0)
    r1 = w.nodes["n1"].replica
    live = {n.replica.origin: r1.inbox.vv[n.replica.origin] for n in w.nodes.values()}
    before = r1.claims.not_believed
    r1._folds_asked = ("n2", w.t, (3, 7))
    page = msgpack.packb([[[o, c] for o, c in live.items()], False])
    r1.fetch_reply("n2", [wire.FOLDS, page], w.t)
    assert r1.folds.final == {} and r1.wire_vv() == live
    assert r1.claims.not_believed == before + 3
    assert r1._folds_read["n2"] == (3, 7)  # read: its lies do not hold our stable time at 0
