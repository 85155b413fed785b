"""Expiry and the tie rule under faults: scenarios a review found by tracing the code (each
failed before its fix; the docstrings tell the sequence of events and why each step can happen
in a real cluster), and scenarios it found sound, pinned so a later change cannot quietly
break them.  The rules are zkv.store.counter's; ``view`` is what makes a key that expired
read the same on a node that still holds it and on one that dropped it.
"""

from __future__ import annotations

from pathlib import Path

import msgpack

from tests.test_replica import T0, replica
from zkv.clock import make
from zkv.commands import Deferred, dispatch
from zkv.events import decode_batch
from zkv.replication.antientropy import merge
from zkv.store.durability import _replay
from zkv.store.keyspace import Keyspace
from zkv.store.outputs import CLIENT, CLOCK, LOG

K = b"k"


def _exchange(*kss: Keyspace, floor: int = 0, rounds: int = 2) -> None:
    """Anti-entropy between every pair, as ``Replica._repair`` does it: each side merges the
    other's entries (exported compacted to ``floor``) under its own tombstone floor."""
    for _ in range(rounds):
        for a in kss:
            for b in kss:
                if a is not b:
                    merge(a, list(b.entries(floor)), floor)


def _view(ks: Keyspace) -> tuple[bytes | None, int]:
    return ks.get(K), ks.expiry(K)


# --- the tie rule and the expiry -----------------------------------------------------------

def test_a_tie_below_the_horizon_is_settled_when_one_side_has_an_expiry() -> None:
    """The fault the tie rule exists for (404eae2): node b lost n1's ``SET k 10 PX ..`` (a hole
    given up as lost), both hold n2's later ``INCRBY k 1``.  Once both compact, both hold a
    plain entry under the INCR's version: a = ("11", expiring), b = ("1", none).  Anti-entropy
    passes the store's tombstone floor to ``apply_many``; for a key with an expiry that goes
    through ``_counter_write``, where ``Counter.start(.., floor)`` raises the mark above the
    base, so ``Counter.set``'s tie branch (``stamp == self.mark == self.base``) never fires.
    Without the expiry the plain LWW path settles the tie; with it, the two nodes differ for
    good: digests never match (anti-entropy churns every round), and once a's value expires
    and is reclaimed, b keeps "1" for ever - a value the rule never gave, never expiring."""
    t1, t2, hz = make(T0 + 1000), make(T0 + 2000), make(T0 + 3000)
    exp = T0 + 10_000
    a, b = Keyspace(), Keyspace()
    a.apply_many("n1", [(t1, K, [b"10", exp])])
    for ks in (a, b):
        ks.apply_many("n2", [(t2, K, 1)])
        ks.compact_counters(hz)
    assert (_view(a), _view(b)) == ((b"11", exp), (b"1", 0))  # the fault's starting point
    _exchange(a, b, floor=hz)
    assert _view(a) == _view(b), "a tie under one version stays unsettled when one side expires"
    assert a.digest() == b.digest()


def test_a_settled_tie_keeps_the_winners_expiry() -> None:
    """The same tie without the floor (a full transfer, a snapshot load, ``apply_entries``):
    ``Counter.set``'s tie branch takes the winning value but not its expiry, so the node that
    had the loser now holds the winner's value *without* the expiry, and the other node keeps
    it with.  Likewise a tombstone against an expiring value under one version (the deletion
    ranks least): the value wins, its expiry is lost, and it never expires on that node."""
    t2 = make(T0 + 2000)
    exp = T0 + 10_000
    for loser in (b"1", None):
        a, b = Keyspace(), Keyspace()
        a.apply_many("n2", [(t2, K, [b"11", exp])])
        b.apply_many("n2", [(t2, K, loser)])
        b.apply_entries(list(a.entries()))
        a.apply_entries(list(b.entries()))
        assert _view(a) == (b"11", exp)
        assert _view(b) == _view(a), f"tie against {loser!r}: value taken, expiry dropped"
        assert a.digest() == b.digest()


# --- INCR of a key that one node reclaimed ---------------------------------------------------

def _client(rep, *cmds: list[bytes]) -> list[bytes]:  # noqa: ANN001
    out = []
    for cmd in cmds:
        d = dispatch(cmd, True, False)
        assert isinstance(d, Deferred)
        rep.client([[b"c", msgpack.packb(d.ops, use_bin_type=True)]], rep.now)
        replies = [o for o in rep.take() if o[0] == CLIENT and o[1][0] == b"c"]
        out.append(d.encode(msgpack.unpackb(replies[0][1][1], raw=False)))
    return out


def _incr_after_reclaim(tmp: Path):  # noqa: ANN202
    """One node (no peers: its horizon is its clock): SET k 5 PX 100, wait until the key is
    reclaimed, INCR k.  Returns the replica and every log record it wrote."""
    rep, clock = replica(tmp, peers=())
    logs: list[bytes] = []

    def step(now: float) -> None:
        rep.tick(now)
        for o in rep.take():
            if o[0] == LOG:
                logs.extend(o[1])
            elif o[0] == CLOCK:
                rep.clock_persisted(o[1])  # (the shell saved the clock bound)

    step(0.0)
    rep.now = 0.0
    d = dispatch([b"SET", K, b"5", b"PX", b"100"], True, False)
    rep.client([[b"c", msgpack.packb(d.ops, use_bin_type=True)]], 0.0)
    logs.extend(rec for o in rep.take() if o[0] == LOG for rec in o[1])
    off = rep.cfg.max_clock_offset_ms
    clock.ms += 100 + 2 * off + 500
    step(5.0)
    step(5.5)
    assert rep.stats["expired_reclaimed"] == 1 and len(rep.ks) == 0  # reclaimed
    rep.now = 5.0
    d = dispatch([b"INCR", K], True, False)
    rep.client([[b"c", msgpack.packb(d.ops, use_bin_type=True)]], 5.0)
    outs = rep.take()
    logs.extend(rec for o in outs if o[0] == LOG for rec in o[1])
    assert [o for o in outs if o[0] == CLIENT][0][1][1] == msgpack.packb([1])
    return rep, logs


def test_an_incr_after_the_key_was_reclaimed_survives_a_replay(tmp_path: Path) -> None:
    """INCR of an expired key is meant to be written as a SET of the new value; but once the
    key is *reclaimed* (``Keyspace.reclaim_expired``: no entry, no event, no log record) the
    store no longer knows it expired, and writes a bare increment.  Reclaiming is not in the
    log, so replaying the log (a restart before the next snapshot) brings the expired
    ``SET k 5 PX 100`` back, the increment adds to it, and the sum is expired: the node that
    answered INCR with 1 and GET with "1" answers GET with nil after a restart."""
    rep, logs = _incr_after_reclaim(tmp_path)
    events = [i[2] for rec in logs if rec[:1] == b"E" for i in decode_batch(rec[1:]).items]
    assert events[-1] == 1, "the INCR was written as an increment, not a SET"
    assert rep.ks.get(K) == b"1"
    ks, vv = Keyspace(), {}
    for rec in logs:
        _replay(ks, vv, rec, None, [], 0)
    ks.now_ms = rep.ks.now_ms
    assert ks.get(K) == rep.ks.get(K), "a restart (log replay) loses the acknowledged INCR"


def test_an_incr_after_the_key_was_reclaimed_agrees_with_a_peer_that_had_not(tmp_path: Path) -> None:
    """Each node reclaims by its own horizon and wall clock, so another node may still hold the
    expired ``SET k 5 PX 100`` when the INCR's bare increment arrives (its clock up to
    max_clock_offset_ms behind, or its horizon an anti-entropy round late).  There the
    increment adds to the expired base: 6, expired, hidden; compaction then reclaims it.  The
    node that issued the INCR keeps "1" (no expiry) for ever; anti-entropy never carries it
    over (its version is below the peer's floor, and the peer has no entry).  Permanent
    divergence from one INCR."""
    rep, logs = _incr_after_reclaim(tmp_path)
    peer = Keyspace()  # has every event, has not reclaimed yet
    for rec in logs:
        b = decode_batch(rec[1:])
        peer.apply_many(b.origin, b.items)
    hz = rep.gc_horizon + (10_000 << 16)
    peer.now_ms = rep.ks.now_ms + 10_000
    peer.compact_counters(hz)
    peer.reclaim_expired(hz, 2 * rep.cfg.max_clock_offset_ms)
    rep.ks.compact_counters(hz)
    _exchange(rep.ks, peer, floor=hz)
    assert peer.get(K) == rep.ks.get(K) == b"1", "the node that issued INCR and its peer disagree"


# --- an EXPIRE (or INCR) from a node that never had the expiring SET -------------------------

def test_an_expire_arriving_after_the_key_was_reclaimed_finds_no_key_anywhere() -> None:
    """``reclaim_expired``'s argument: any EXPIRE made while the key was alive on its node was
    stamped before the expiry + max_clock_offset_ms, so (with the 2x margin) below the horizon,
    so it has arrived.  That holds only if the node that made it judged "alive" by the same
    expiry.  A node that had *not yet received* the expiring SET judged an older value alive:

      n3: SET k v0 (t0)                      every node has it
      n3: SET k v1 PX 50 (t1)                n2 is cut off from n3 for a few seconds
      n2: EXPIRE k 60 (te, te > t1 + 2 s)    n2 still holds v0: alive, so written
      the cut heals; every node holds t1; the horizon passes t1 + 2 x offset (not te)
      n1 reclaims k; n1 then receives te     (its copy of n2's batch was dropped: a gap)
      n0 received te before it reclaimed

    With expiry written as a register of its own, n0 then read v1 for 60 s and n1 (an EXPIRE of
    nothing) nil.  By the rule now (zkv.store.counter ``view``), v1 expired before te, so the
    EXPIRE finds no key, on the node that still holds v1 and on the one that dropped it."""
    t0, t1 = make(T0), make(T0 + 100)
    te = make(T0 + 3000)
    hz = make(T0 + 2500)  # t1 < hz <= te, and physical(hz) - 2 x 500 >= the expiry
    exp_v1 = T0 + 150
    exp_te = T0 + 63_000
    n0, n1 = Keyspace(), Keyspace()
    for ks in (n0, n1):
        ks.apply_many("n3", [(t0, K, b"v0")])
        ks.apply_many("n3", [(t1, K, [b"v1", exp_v1])])
        ks.now_ms = T0 + 3000
    n0.apply_many("n2", [(te, K, [exp_te])], floor=hz)
    assert n1.reclaim_expired(hz, 1000) == 1
    n1.apply_many("n2", [(te, K, [exp_te])], floor=hz)
    assert _view(n0) == _view(n1) == (None, 0)
    _past_the_horizon(n0, n1)
    assert _view(n1) == _view(n0) == (None, 0)


def _past_the_horizon(*kss: Keyspace) -> None:
    """The horizon passes everything: tombstones, compaction, reclaiming, then anti-entropy."""
    hz = make(T0 + 5000)
    for ks in kss:
        ks.now_ms = T0 + 6000
        ks.collect_tombstones(hz)
        ks.compact_counters(hz)
        ks.reclaim_expired(hz, 1000)
    _exchange(*kss, floor=hz)


def test_an_incr_from_a_node_that_lacked_the_expiring_set_agrees_everywhere() -> None:
    """The INCR form of the scenario above: n2, not yet holding n3's ``SET k 10 PX 50``,
    increments the older "1" it holds (a bare increment).  n1 reclaimed the expired key
    before the increment reached it; n0 still held it.  Before the version-order rule, n1
    kept "1" for ever and n0 10 + 1, expired: they never agreed.  Now both count the
    increment from nothing."""
    t0, t1 = make(T0), make(T0 + 100)
    ti = make(T0 + 3000)
    hz = make(T0 + 2500)
    n0, n1 = Keyspace(), Keyspace()
    for ks in (n0, n1):
        ks.apply_many("n3", [(t0, K, b"1")])
        ks.apply_many("n3", [(t1, K, [b"10", T0 + 150])])
        ks.now_ms = T0 + 3000
    n0.apply_many("n2", [(ti, K, 1)], floor=hz)
    assert n1.reclaim_expired(hz, 1000) == 1
    n1.apply_many("n2", [(ti, K, 1)], floor=hz)
    _past_the_horizon(n0, n1)
    assert _view(n0) == _view(n1)


# --- anti-entropy below the floor --------------------------------------------------------------

def test_anti_entropy_repairs_a_key_with_an_expiry_below_the_floor() -> None:
    """Anti-entropy exists to repair replicas that hold the same events but different data (a
    bug, a disk that lied, a hole given up as lost).  For a plain key the newer entry wins on
    both sides whatever the floor.  For a key with an expiry the write goes through
    ``_counter_write``, whose ``Counter.start(.., floor)`` puts the mark at the floor: every
    entry stamped below the floor is "counted already" and dropped, so the newer entry never
    replaces the older one, in either direction.  The digests differ for good; anti-entropy
    asks for the same buckets every round and repairs nothing."""
    t1, t2, hz = make(T0 + 1000), make(T0 + 2000), make(T0 + 3000)
    for old, new in (([b"v1", T0 + 99_000], b"v2"), (b"v1", [b"v2", T0 + 99_000]),
                     ([b"v1", T0 + 99_000], [b"v2", T0 + 98_000])):
        a, b = Keyspace(), Keyspace()
        a.apply_many("n1", [(t1, K, old)])
        b.apply_many("n2", [(t2, K, new)])
        _exchange(a, b, floor=hz)
        assert a.get(K) == b.get(K) == b"v2", f"{old!r} at t1 against {new!r} at t2"
        assert a.digest() == b.digest()


def test_anti_entropy_repairs_a_plain_key_below_the_floor() -> None:
    """(The control for the test above: without an expiry the newer entry wins.)"""
    t1, t2, hz = make(T0 + 1000), make(T0 + 2000), make(T0 + 3000)
    a, b = Keyspace(), Keyspace()
    a.apply_many("n1", [(t1, K, b"v1")])
    b.apply_many("n2", [(t2, K, b"v2")])
    _exchange(a, b, floor=hz)
    assert a.get(K) == b.get(K) == b"v2" and a.digest() == b.digest()


def test_reclaiming_on_one_node_first_only_delays_anti_entropy() -> None:
    """One node reclaims an expired key before another: their digests differ until the other
    does.  The entry the other sends is below the reclaimer's floor and is skipped (no
    resurrection); the reclaimer sends nothing for the key (no deletion by absence)."""
    t1, hz = make(T0 + 100), make(T0 + 3000)
    a, b = Keyspace(), Keyspace()
    for ks in (a, b):
        ks.apply_many("n1", [(t1, K, [b"v", T0 + 200])])
        ks.now_ms = T0 + 5000
    assert a.reclaim_expired(hz, 1000) == 1
    _exchange(a, b, floor=hz)
    assert len(a) == 0 and len(b) == 1 and b.get(K) is None
    assert b.reclaim_expired(hz, 1000) == 1 and a.digest() == b.digest()


# --- a full transfer's counter forgetting is not in the log ---------------------------------

def test_what_a_transfer_forgets_of_a_counter_is_logged_so_a_restart_keeps_it(tmp_path: Path) -> None:
    """``_transfer_end`` logs the transfer's entries and the keys it ``drop``s, but not what
    ``forget_counters_below`` changes: a counter key the sender lacks (deleted there and
    collected below its horizon) keeps only its increments at or after the horizon - live.
    Replaying the log (a crash before the snapshot the transfer asks for, or no snapshot at
    all while a gap is open) applies the events again and skips the forgetting: the deleted
    base (and its expiry) comes back, "11" expiring instead of "1".  Worse, the entry's
    version is the increment's, the same as on every other node: for a plain SET the tie
    rule then settles "11" against the cluster's "1" in favour of "11" (the greater), and
    anti-entropy spreads the deleted SET's value to every node; with the expiry the tie is
    never settled (the first test here) and the nodes stay apart.

      receiver: n2@a#1 SET k 10 PX <far> (t1), n2@a#2 INCRBY k 1 (t3)
      sender (n1): has n2@a#1, its own DEL k (t2), collected; horizon H with t2 < H <= t3"""
    t1, t3 = make(T0 - 9000), make(T0 - 1000)
    horizon = make(T0 - 5000)
    far = T0 + 3_600_000
    r, _clock = replica(tmp_path)
    logs: list[bytes] = []
    from tests.test_replica import _transfer  # (the same transfer the other replica tests drive)
    from zkv.events import TOPIC_EVENTS, Batch, encode_batch
    r.bus("n2", TOPIC_EVENTS, encode_batch(Batch("n2@a", 1, [(t1, K, [b"10", far]), (t3, K, 1)])), 0.1)
    logs.extend(rec for o in r.take() if o[0] == LOG for rec in o[1])
    assert r.ks.get(K) == b"11" and r.inbox.vv == {"n2@a": 2}
    _transfer(r, {"vv": {"n1@z": 5, "n2@a": 1}, "gc_horizon": horizon, "announced_stable": horizon},
              [[b"other", make(T0 - 8000), "n1@z", b"x"]])
    logs.extend(rec for o in r.take() if o[0] == LOG for rec in o[1])
    assert r.gc_horizon == horizon
    assert (r.ks.get(K), r.ks.expiry(K)) == (b"1", 0)  # live: the base below the horizon forgotten
    ks, vv = Keyspace(), {}
    for rec in logs:
        _replay(ks, vv, rec, None, [], 0)
    assert (ks.get(K), ks.expiry(K)) == (r.ks.get(K), r.ks.expiry(K)), "a restart changes the key"


# --- reclaiming keeps up with a cache's write rate? -------------------------------------------

def test_reclaiming_keeps_up_with_a_steady_stream_of_expiring_keys(tmp_path: Path) -> None:
    """``reclaim_expired`` runs once per anti-entropy round (``_collect_tombstones``), with a
    budget of COMPACT_BUDGET (4,096) heap entries, stale ones included.  At the default
    anti_entropy_ms (2,000) that is about 2,000 keys a second, whatever the load: a cache that
    writes ``SET k v PX 100`` 10,000 times a second (each key its own) keeps every expired key
    but a fifth, and memory grows without bound.  After 20 s of that, a store should hold
    about the last few seconds' keys (the margin is 2 x max_clock_offset_ms = 1 s); it holds
    four fifths of all of them."""
    from zkv.config import DEFAULT_ANTI_ENTROPY_MS, Config
    from zkv.replication.backlog import Backlog
    from zkv.store.durability import Recovered
    from zkv.store.replica import Replica
    from tests.test_replica import Clock
    cfg = Config(id="n0", listen_host="127.0.0.1", listen_port=1, bus="tcp://127.0.0.1:1000",
                 data_dir=tmp_path, peers=(), heartbeat_ms=100, anti_entropy_ms=DEFAULT_ANTI_ENTROPY_MS,
                 read_cache_mb=0)
    clock = Clock()
    r = Replica(cfg, Recovered(Keyspace(), {}, 0, 0, 0.0, 0, 0, 0, []), "n0@me", Backlog(1000), 0.0,
                wall=clock, clock_floor=0)
    per_turn, turn_s, seconds = 1000, 0.1, 20.0
    now, n = 0.0, 0
    while now < seconds:
        ops = [["se", b"key%d" % (n + i), b"v", 0, False, 1, 100] for i in range(per_turn)]
        n += per_turn
        r.client([[b"c", msgpack.packb(ops, use_bin_type=True)]], now)
        r.tick(now)
        for o in r.take():
            if o[0] == CLOCK:
                r.clock_persisted(o[1])
        now += turn_s
        clock.ms = T0 + int(now * 1000)
    held = r.ks.expiring
    assert n == 200_000
    assert held <= 10 * 10_000 // 2, (f"{held} of {n} expiring keys still held after {seconds:.0f} s "
                                      f"({r.stats['expired_reclaimed']} reclaimed)")


# --- snapshots of rich states -------------------------------------------------------------------

def test_a_snapshot_of_every_kind_of_state_with_an_expiry_loads_back_the_same(tmp_path: Path) -> None:
    """A snapshot (written compacted to the horizon, read with tuples for lists) of: a plain
    expiring value; a counter whose expiry was set by its base (the 9-element form only for the
    expiry); one with an EXPIRE newer than its base; one PERSISTed (expiry register set,
    time 0: 9 elements, exp 0); a deletion with a later EXPIRE (a tombstone with a state); the
    6-element form of an old snapshot.  The loaded keyspace has the same reads, expiries and
    digest, before and after compaction."""
    from zkv.store.snapshot import read_snapshot, write_snapshot
    t = [make(T0 + i * 100) for i in range(12)]
    ks = Keyspace()
    ks.apply_many("n1", [(t[0], b"plain", [b"p", T0 + 50_000]),
                         (t[1], b"ctr-base", [b"10", T0 + 60_000]), (t[2], b"ctr-base", 5),
                         (t[3], b"ctr-exp", b"7"), (t[4], b"ctr-exp", 1), (t[5], b"ctr-exp", [T0 + 70_000]),
                         (t[6], b"persisted", [b"3", T0 + 1000]), (t[7], b"persisted", [0]),
                         (t[8], b"dead", None), (t[9], b"dead", [T0 + 80_000]),
                         (t[10], b"old", b"1"), (t[11], b"old", 2)])
    horizon = make(T0 + 450)  # between the events: some states compact, some do not
    for compact in (False, True):
        if compact:
            ks.compact_counters(horizon)
        write_snapshot(tmp_path / "snap", ks.entries(horizon), {"gc_horizon": horizon})
        _meta, chunks = read_snapshot(tmp_path / "snap")
        back = Keyspace()
        for chunk in chunks:
            back.apply_entries(chunk)
        for k in (b"plain", b"ctr-base", b"ctr-exp", b"persisted", b"dead", b"old"):
            assert (back.get(k), back.expiry(k), back.entry(k)) == (ks.get(k), ks.expiry(k), ks.entry(k)), k
        assert back.digest() == ks.digest()


# --- full transfers between a node that reclaimed and one that did not -------------------------

def test_a_transfer_from_a_peer_that_reclaimed_drops_the_expired_key(tmp_path: Path) -> None:
    """The sender reclaimed ``k`` (expired, stamped below its horizon); the receiver still holds
    it: the transfer lacks it, ``stale_keys`` finds it below the sender's horizon, and it goes."""
    from tests.test_replica import _transfer
    horizon = make(T0 - 5000)
    ks = Keyspace()
    ks.apply_many("n2@old", [(make(T0 - 9000), K, [b"v", T0 - 8000])])
    r, _ = replica(tmp_path, ks=ks)
    _transfer(r, {"vv": {"n1@z": 5}, "gc_horizon": horizon, "announced_stable": horizon},
              [[b"other", make(T0 - 8000), "n1@z", b"x"]])
    assert K not in r.ks._data and r.ks.expiring == 0


def test_a_transfer_from_a_peer_that_had_not_reclaimed_brings_it_back_hidden(tmp_path: Path) -> None:
    """The receiver reclaimed ``k``; the sender had not: the transfer brings the expired entry
    back (``apply_entries`` has no floor), hidden from every read, and the next reclaiming
    round takes it again - no read changes."""
    from tests.test_replica import _transfer
    horizon = make(T0 - 5000)
    r, clock = replica(tmp_path)
    r.ks.now_ms = T0
    _transfer(r, {"vv": {"n1@z": 5}, "gc_horizon": horizon, "announced_stable": horizon},
              [[K, make(T0 - 9000), "n2@old", [b"v", T0 - 8000]]])
    r.ks.now_ms = T0
    assert r.ks.get(K) is None and r.ks.expiring == 1
    assert r.ks.reclaim_expired(r.gc_horizon, 2 * r.cfg.max_clock_offset_ms) == 1
