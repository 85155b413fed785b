"""Adversarial scenarios against origin folding (zkv.replication.folds), from a review that tried
to break it: each is a concrete fault schedule through the real replica core (zkv.sim.world)
that ended in a violation the checker (or an explicit assertion) reported, before the rule each
test names was added.
"""

from __future__ import annotations

import types
from pathlib import Path

from tests.sim.helpers import final_check, settle
from zkv.replication import catchup as wire
from zkv.sim.world import World
from zkv.store.outputs import FETCH
from zkv.store.replica import Replica


def _start_all(w: World) -> None:
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)


def test_a_hole_is_given_up_as_lost_while_every_peer_holds_it_folded(tmp_path: Path) -> None:
    """Replica._resolve_holes gives a hole up once no peer's vector names the origin beyond
    what we have - but a peer's vector no longer names a folded origin at all.

    n0's first incarnation X writes ~100 events, some of them deletes; n1 snapshots midway.
    n1 is killed; n0 restarts (X finished), and n0 and n2 fold X (n1's last heartbeat named
    all of X).  n1's snapshot is lost, so it recovers X's later events behind a hole.  For
    0.3 s its requests do not get through (one-way cut n1 -> peers): its first FOLDS request is
    lost, and none is sent again for FETCH_TIMEOUT (3 s), so it cannot read their folds - but it hears their heartbeats, which name X nowhere.  After five heartbeats it
    records X's first events as lost, held by no node, although both peers hold every one.
    Once it reads the folds it adopts X's fold (it now claims all of X), its stable time rises
    with it, and the tombstone horizon passes the lost writes: anti-entropy's merge then skips
    them as "deleted, tombstone collected".  Without folding the peers' vectors would name X
    and the hole would be pulled, never given up."""
    w = World(21, tmp_path)
    _start_all(w)
    for i in range(100):  # X: keys only it writes, and a few deletes (tombstones to collect)
        if i % 10 == 9:
            w.client_op("n0", "del", b"x%d" % (i - 1))
        else:
            w.client_op("n0", "set", b"x%d" % i, b"v%d" % i)
        settle(w, 0.01)
    settle(w, 1.0)
    assert w.nodes["n1"].disk.path.joinpath("snapshot.zkv").exists()
    x = w.nodes["n0"].replica.origin
    w.crash("n1")
    w.crash("n0")
    w.start("n0")  # X is finished
    settle(w, 2.0)
    for i in ("n0", "n2"):
        assert x in w.nodes[i].replica.folds.final, (i, "did not fold X")
        assert x not in w.nodes[i].replica.wire_vv()
    assert w.nodes["n1"].disk.corrupt_snapshot(w.rng)
    w.note("damage n1: snapshot")
    w.partition({("n1", "n0"), ("n1", "n2")}, 0.3)  # (its FOLDS request is lost: 3 s before the next)
    w.start("n1")
    settle(w, 5.0)
    r1 = w.nodes["n1"].replica
    lost = r1.stats["lost_events"]
    missing = [b"x%d" % i for i in range(100) if i % 10 not in (8, 9)
               and w.nodes["n0"].replica.ks.get(b"x%d" % i) is not None and r1.ks.get(b"x%d" % i) is None]
    violations = final_check(w)
    assert lost == 0 and not missing and not violations, (lost, missing, violations)


def _as_older_version(w: World, nid: str) -> None:
    """From now on, every start of ``nid`` runs the replica as the release before folding
    behaves on the wire: its heartbeats carry its whole vector and no folds field, it never folds, never reads folds, and its stable time does not look
    at them."""
    from zkv.replication.folds import Folds

    class NoFolds(Folds):
        def add(self, origin: str, count: int, vv: dict[str, int]) -> bool:  # noqa: ARG002
            return False

        @property
        def digest(self) -> None:  # type: ignore[override] - its heartbeats carry no folds field
            return None

    start = w.start

    def start_old(node: str) -> None:
        start(node)
        r = w.nodes[node].replica
        if node == nid and r is not None:
            r.folds = NoFolds()
            r._ask_folds = lambda peer, digest: None  # noqa: SLF001
            r._folds_unsettled = lambda: False  # noqa: SLF001
            r._anti_entropy = types.MethodType(_old_anti_entropy, r)  # noqa: SLF001

    w.start = start_old  # type: ignore[method-assign]


def _old_anti_entropy(self: Replica) -> None:
    """Replica._anti_entropy as of 9f5a9f1: at equal vectors, whatever the peer's folds."""
    fresh = [v for v in self.peers.values()
             if self.now - v.seen < 5 * self._hb_every and v.hb.id in self.endpoints
             and not v.hb.held]
    if not fresh or self.sync is not None or self.inbox.gaps():
        return
    self._ae_turn += 1
    view = fresh[self._ae_turn % len(fresh)]
    if (view.hb.vv == self.inbox.vv and view.hb.digest != self.ks.digest()
            and self.ae_asked is None):
        self.out.append((FETCH, view.hb.id, [wire.BUCKETS]))
        self.ae_asked = (view.hb.id, self.now)


def test_an_older_peer_that_loses_its_data_never_gets_the_folded_events(tmp_path: Path) -> None:
    """Mixed versions (a rolling upgrade): n0 still runs the release before folding, n1 and n2
    the new one.  A heartbeat without the folds field reads as "no folds" (Heartbeat.folds
    (0, 0), 'from an older sender'), and n1 and n2 fold n1's finished incarnations on the
    strength of n0's heartbeats as readily as of each other's.  Then n0 is wiped: it learns
    which origins exist only from its peers' vectors, which would no longer name folded ones,
    so it never pulls them: its vector never names them again (converged never: the vectors
    differ for good), and its stable time (the old rule: it holds everything any peer names)
    no longer protects them.  Here anti-entropy (at equal wire vectors) happens to copy their
    entries before n0's horizon moves (a wiped node saves no clock for a while, so its stable
    time stays 0); should the horizon win, the merge skips them as collected.  A store cannot tell an older peer from one with no folds, and folds while one is
    configured."""
    w = World(22, tmp_path)
    _as_older_version(w, "n0")
    _start_all(w)
    own = []
    for i in range(6):  # n1 crash-loops, each incarnation writing a key of its own
        w.client_op("n1", "set", b"only%d" % i, b"inc%d" % i)
        w.client_op("n1", "set", b"gone%d" % i, b"x")
        w.client_op("n1", "del", b"gone%d" % i)
        own.append(b"only%d" % i)
        settle(w, 0.3)
        w.crash("n1")
        settle(w, 0.05)
        w.start("n1")
        settle(w, 0.3)
    w.client_op("n2", "set", b"tomb", b"x")  # a tombstone of a live incarnation, for n0 to hold
    w.client_op("n2", "del", b"tomb")
    settle(w, 3.0)
    # the rule: nobody folds while a configured peer's heartbeats carry no folds (before it,
    # n1 and n2 folded n1's old incarnations and the wiped n0 never learnt of them)
    assert all(not w.nodes[i].replica.folds.final for i in ("n1", "n2"))
    w.crash("n0")
    w.damage("n0", "wipe")
    w.start("n0")
    settle(w, 5.0)
    r0 = w.nodes["n0"].replica
    missing = [k for k in own if r0.ks.get(k) is None]
    violations = final_check(w)
    assert not missing and not violations, (missing, violations)


def test_a_liar_spreads_folds_of_incarnations_that_never_existed_and_they_outlive_it(
        tmp_path: Path) -> None:
    """_read_folds adopts a fold wherever ``vv.get(origin, 0) >= count``, so a fold at count 0
    of any name is "held": one FOLDS reply (4,096 a page, and pages follow as long as the
    sender says ``more``) plants made-up folds in a store, the store's digest changes, every
    other store reads its map and adopts them too, and since each store re-learns folds by
    gossip at its start, they survive every restart that is not of every node at once - long
    after the liar is gone.  No bound like the 256 unknown origins a vector may name: memory,
    and every later FOLDS read, grow without limit."""
    import msgpack

    w = World(23, tmp_path)
    _start_all(w)
    r1 = w.nodes["n1"].replica
    junk = [["n2@ffff%08x" % i, 0] for i in range(2 * 4096)]
    for page, more in ((junk[:4096], True), (junk[4096:], False)):
        r1._folds_asked = ("n2", w.t, (len(junk), 12345))  # noqa: SLF001 - asked by a lying heartbeat
        r1.fetch_reply("n2", [wire.FOLDS, msgpack.packb([page, more])], w.t)
    settle(w, 3.0)
    for i in ("n1", "n0", "n2"):  # each restarts in turn: the others teach it the junk again
        w.crash(i)
        w.start(i)
        settle(w, 3.0)
    sizes = {i: len(n.replica.folds.final) for i, n in w.nodes.items()}
    assert max(sizes.values()) < 100, sizes
