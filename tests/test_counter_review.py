"""Counters against the faults a review found (zkv.store.counter, zkv.store.keyspace): a sum
past 64 bits with compaction, an increment superseded by a DEL whose tombstone was collected
(before and after a full transfer, and with the sender lacking the newer increment), the
compaction queue under SET/INCR cycles, and peers' counter states that contradict their own
version.  Each failed before the rule it names.

Origins: x, p, y stand for three nodes' incarnations."""

from __future__ import annotations

import msgpack

from zkv.replication.antientropy import merge
from zkv.replication.transfer import stale_keys
from zkv.store.counter import MAX_INT, Counter
from zkv.store.keyspace import BUCKETS, Keyspace
from zkv.store.snapshot import check_entries, decode_chunk, encode_chunk

K = b"k"


# --- 1. overflow past 64 bits, then compaction: permanent divergence ---------------------------

def test_sum_past_2_63_then_compaction_diverges_from_an_uncompacted_replica() -> None:
    """Base MAX-7; nodes b and c each INCRBY 5 concurrently (each sees MAX-2: allowed); c, not
    yet having b's, DECRBY 20 (it sees MAX-2, gets MAX-22: allowed).  Every event is the same on
    both replicas; the rule says MAX-7+5+5-20 = MAX-17.  Replica A compacted when the horizon
    passed the two +5 (value MAX+3: no longer a 64-bit integer, so the base is 'not an integer'
    and later increments are ignored, and dropped by the next compaction)."""
    base = b"%d" % (MAX_INT - 7)
    a, b = Keyspace(), Keyspace()
    for ks in (a, b):
        ks.apply(K, 1, "x", base)
        ks.apply(K, 2, "y", 5)
        ks.apply(K, 3, "p", 5)
    a.compact_counters(10)                      # horizon 10 passed both +5
    for ks in (a, b):
        ks.apply(K, 12, "p", -20)
    for ks in (a, b):
        ks.compact_counters(13)                 # every event below the horizon now
    want = b"%d" % (MAX_INT - 17)
    assert b.get(K) == want
    assert a.get(K) == want, a.get(K)           # A: b'9223372036854775810' for ever
    assert a.digest() == b.digest()             # same header (12, p), different value: AE
                                                # cannot repair (equal versions never win)


# --- 2. an increment superseded by a collected DEL comes back ---------------------------------

def _sender() -> Keyspace:
    """S saw inc(3,x), DEL(5,p); the horizon passed 10 and S collected the tombstone; then y
    incremented k again at 15 (k starts from 'absent': mark NONE)."""
    s = Keyspace()
    s.apply_many("x", [(3, K, 1)])
    s.apply_many("p", [(5, K, None)])
    assert s.collect_tombstones(10) == 1 and s.entry(K) is None
    s.apply_many("y", [(15, K, 1)], 10)
    assert s.get(K) == b"1"                     # the rule: DEL(5) supersedes inc(3): 0 + 1
    return s


def _transfer(w: Keyspace, s: Keyspace, horizon: int) -> None:
    """Replica._transfer_chunk + _transfer_end, keyspace side."""
    entries = list(s.entries(horizon))          # (counter states compacted to its horizon)
    check_entries(entries)
    w.apply_entries(decode_chunk(encode_chunk(entries)))
    w.drop(stale_keys(w, {e[0] for e in entries}, horizon, "w"), horizon)
    w.forget_counters_below({e[0] for e in entries}, horizon)
    w.compact_counters(horizon)                 # _collect_tombstones with the adopted horizon


def _anti_entropy(dst: Keyspace, src: Keyspace, floor: int) -> None:
    merge(dst, src.bucket_entries(range(BUCKETS), floor), floor)


def test_wiped_node_pulls_an_old_increment_before_the_transfer() -> None:
    """A wiped node (gc_horizon 0) pulls x's backlog (it still reaches back to seq 1) and y's;
    p's backlog is trimmed (TOOOLD), so it takes a full transfer from S.  The DEL is in no
    backlog and no snapshot (collected), so only the sender's state can supersede inc(3,x) -
    but S's state of k has mark NONE, and W's header (15,y) is above the horizon, so
    stale_keys keeps it."""
    s = _sender()
    w = Keyspace()
    w.apply_many("x", [(3, K, 1)], 0)           # pulled at floor 0 (wiped: gc_horizon 0)
    w.apply_many("y", [(15, K, 1)], 0)
    _transfer(w, s, 10)
    assert w.get(K) == b"1", w.get(K)           # b'2'
    _anti_entropy(s, w, 10)
    assert s.get(K) == b"1", s.get(K)           # and anti-entropy spreads it to S


def test_node_pulls_an_old_increment_after_the_transfer() -> None:
    """The order seed 136 saw: transfer first (W adopts horizon 10), then old events of an
    origin again (a folded origin pulled back).  floor=10 skips them only for keys with no
    entry; k has one (re-created by inc(15,y)), so inc(3,x) counts - unless W's next
    compaction pass (next AE tick, at most COMPACT_BUDGET keys) lifted k's mark first."""
    s = _sender()
    w = Keyspace()
    entries = list(s.entries(10))
    w.apply_entries(entries)
    w.drop(stale_keys(w, {e[0] for e in entries}, 10, "w"), 10)
    w.forget_counters_below({e[0] for e in entries}, 10)
    assert w.get(K) == b"1"
    w.apply_many("x", [(3, K, 1)], 10)          # an old event, below the adopted horizon
    assert w.get(K) == b"1", w.get(K)           # b'2'


def test_kept_because_the_sender_lacked_the_new_increment() -> None:
    """S does not have inc(15,y) yet when it snapshots: k is not in the transfer, and W's header
    (15,y) is above the horizon, so stale_keys keeps W's state, whose inc(3,x) the collected
    DEL superseded.  Both then compact at 10 (same mark), S gets inc(15,y): same header (15,y),
    values 1 and 2, and anti-entropy can never repair it (equal marks: each keeps its value)."""
    s = Keyspace()
    s.apply_many("x", [(3, K, 1)])
    s.apply_many("p", [(5, K, None)])
    s.collect_tombstones(10)
    w = Keyspace()
    w.apply_many("x", [(3, K, 1)], 0)           # pulled before the transfer (floor 0)
    w.apply_many("y", [(15, K, 1)], 0)
    _transfer(w, s, 10)
    s.apply_many("y", [(15, K, 1)], 10)
    s.compact_counters(10)
    for _ in range(3):
        _anti_entropy(s, w, 10)
        _anti_entropy(w, s, 10)
    assert s.get(K) == w.get(K) == b"1", (s.get(K), w.get(K))   # (b'1', b'2')
    assert s.digest() == w.digest()


# --- 3. the compaction queue ------------------------------------------------------------------

def test_compact_queue_does_not_grow_with_set_incr_cycles() -> None:
    """A rate-limiter pattern (SET k 0, then INCRs; repeat) while the horizon cannot pass the
    latest increment (a node down, or just a busy key): every cycle leaves one more queue entry
    for the same key; each is re-appended on every pass while the key has increments."""
    ks = Keyspace()
    t = 100
    for _cycle in range(1000):
        ks.apply_many("x", [(t, K, b"0"), (t + 1, K, 1)])
        t += 2
        ks.compact_counters(50)                 # the horizon is stuck below every increment
    assert ks.counters == 1
    assert len(ks._compact_queue) <= 2, len(ks._compact_queue)   # 1000


# --- 4. wire form -----------------------------------------------------------------------------

def test_counter_state_round_trips_through_every_codec() -> None:
    c = Counter((1, "x"), b"7", (9, "\U0010ffff"), {})
    c.increment((12, "y"), -3)
    for raw in (msgpack.packb(c.encode(), use_bin_type=True),):
        for kw in ({"raw": False}, {"raw": False, "use_list": False}):
            d = Counter.decode(msgpack.unpackb(raw, **kw))
            assert (d.base, d.value, d.mark, d.incs, d.total) == (c.base, c.value, c.mark, c.incs, c.total)


# --- 5. a peer's counter state is checked for shape, not against its entry's version ----------

def test_a_state_whose_increments_lie_beyond_its_header_is_refused() -> None:
    """_within_clock and _not_ours look at the entry's (hlc, origin) only; a state's increments
    can carry any stamp (far in the future, or of the receiver's own incarnation).  Such an
    increment is never superseded by a SET nor compacted, and the header does not cover it."""
    state = [0, "", None, 0, "", [[1 << 62, "me@1", 1]]]
    entries = [(K, 5, "x", state)]
    try:
        check_entries(entries)
    except TypeError:
        return
    ks = Keyspace()
    ks.apply_entries(entries)
    ks.apply_many("y", [(100, K, b"7")])        # a later SET
    assert ks.get(K) == b"7", ks.get(K)         # b'8': the forged increment outlives it


def test_a_state_with_its_base_after_its_mark_is_refused() -> None:
    state = [10, "a", b"5", 3, "a", []]         # base (10,a) newer than its mark (3,a)
    try:
        Counter.decode(state)
    except ValueError:
        return
    c = Counter.decode(state)
    c.set((7, "b"), b"1")                        # an older SET replaces the newer base
    assert c.render() == b"5", c.render()


def test_an_old_increment_delivered_again_after_its_key_was_collected_and_recreated() -> None:
    """At the store itself: k deleted and collected below the horizon, re-created by a new
    increment, then an old increment of it arrives again (a peer pulled anew): the floor says
    everything below the horizon is settled."""
    s = _sender()
    s.apply_many("x", [(3, K, 1)], 10)
    assert s.get(K) == b"1", s.get(K)
