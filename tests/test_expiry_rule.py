"""The expiry rule (zkv.store.counter, zkv.store.keyspace): a key's expiry is a register of its
own, written by SET/DEL (a SET without EX clears it) and by EXPIRE/PERSIST, never by INCR.  Any
order and any duplication of the same events, compaction and exchanges of entries between
replicas give the same value, expiry and digest - the reference rule's; expired keys read as
missing; reclaiming them below the horizon changes no read."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.clock import make
from zkv.store.counter import Counter, as_int
from zkv.store.keyspace import Keyspace
from tests.test_counter import ORIGINS, _exchanging_replicas

# event values: an increment (int), a SET (bytes), a DEL (None), a SET with an expiry
# ((value, when)), an EXPIRE ((when,)) or a PERSIST ((0,))
_value = st.one_of(
    st.integers(-5, 5), st.just(None), st.sampled_from([b"10", b"-3", b"x"]),
    st.tuples(st.sampled_from([b"7", b"y"]), st.sampled_from([1000, 2000, 3000])),
    st.tuples(st.sampled_from([0, 1500, 2500])),
)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, str, object]]:
    events, used = [], set()
    for _ in range(draw(st.integers(1, 30))):
        h, o = draw(st.integers(1, 60)), draw(st.sampled_from(ORIGINS))
        if (h, o) not in used:
            used.add((h, o))
            events.append((h, o, draw(_value)))
    return events


def ms(h: int) -> int:
    """The timestamp event ``h`` stands for: ``h`` x 60 ms of wall-clock time, so that values
    expire (at 1,000-3,000 ms) between events."""
    return make(h * 60)


def reference_state(events: list) -> tuple[bytes | None, int]:
    """The rule stated directly: the events in version order; a value whose expiry has come by
    an event's time is gone before that event; a SET (with an expiry or not) or DEL writes the
    value and its expiry, an increment adds to a number (or starts one where there is no
    value), an EXPIRE or PERSIST sets the expiry of a value that is there."""
    value: bytes | None = None
    exp = 0
    for h, _o, v in sorted(events, key=lambda e: (e[0], e[1])):
        if exp and exp <= h * 60:
            value, exp = None, 0
        if isinstance(v, tuple) and len(v) == 2:
            value, exp = v
        elif isinstance(v, tuple):
            if value is not None:
                exp = v[0]
        elif isinstance(v, int):
            if value is None:
                value = b"%d" % v
            elif as_int(value) is not None:
                value = b"%d" % (as_int(value) + v)
        else:
            value, exp = v, 0
    return value, exp if value is not None else 0


def _apply(ks: Keyspace, events: list, rng: random.Random) -> None:
    for h, o, v in rng.sample(events, k=len(events)):
        ks.apply_many(o, [(ms(h), b"k", list(v) if isinstance(v, tuple) else v)])


def _state(ks: Keyspace) -> tuple[bytes | None, int]:
    return ks.get(b"k"), ks.expiry(b"k")


@given(histories(), st.integers(0, 2**32))
@settings(max_examples=400, deadline=None)
def test_any_order_and_duplication_give_the_reference_value_and_expiry(events: list, seed: int) -> None:
    rng = random.Random(seed)
    a, b = Keyspace(), Keyspace()
    _apply(a, events, rng)
    _apply(b, events + events[: len(events) // 2], rng)
    want = reference_state(events)
    assert _state(a) == _state(b) == want
    assert a.digest() == b.digest()
    b.compact_counters(ms(61))
    assert _state(b) == want and b.digest() == a.digest() and b.counters == 0
    c = Keyspace()  # a snapshot's entries rebuild the same keyspace
    c.apply_entries(list(a.entries()))
    assert _state(c) == want and c.digest() == a.digest()
    a.apply_entries(list(b.entries()))  # and merging another replica's changes nothing
    assert _state(a) == want and a.digest() == b.digest()


@given(histories(), st.integers(0, 2**32))
@settings(max_examples=400, deadline=None)
def test_replicas_that_compact_and_exchange_entries_midway_converge(events: list, seed: int) -> None:
    """Below a cut every replica has every event (a horizon); each compacts there at its own
    moments and swaps entries with another before and after (anti-entropy, a transfer)."""
    rng = random.Random(seed)
    reps = _exchanging_replicas([(h, o, list(v) if isinstance(v, tuple) else v) for h, o, v in events], rng, ms)
    want = reference_state(events)
    assert [_state(ks) for ks in reps] == [want] * 3
    assert len({ks.digest() for ks in reps}) == 1


def test_an_expired_key_reads_as_missing_from_its_expiry_on() -> None:
    ks = Keyspace()
    ks.apply_many("n1", [(make(100), b"k", [b"v", 5000]), (make(101), b"j", b"w")])
    ks.now_ms = 4999
    assert ks.get(b"k") == b"v" and ks.live() == 2 and sorted(ks.keys_matching(bool)) == [b"j", b"k"]
    ks.now_ms = 5000
    assert ks.get(b"k") is None and ks.live() == 1 and ks.keys_matching(bool) == [b"j"]
    assert len(ks) == 2, "still held: reads hide it; reclaiming waits for the horizon"


def test_an_older_write_arriving_late_does_not_bring_an_expired_key_back() -> None:
    ks = Keyspace()
    ks.apply_many("n1", [(make(200), b"k", [b"v", 5000])])
    ks.now_ms = 6000
    ks.apply_many("n2", [(make(150), b"k", b"old")])       # older: loses to the expiring SET
    ks.apply_many("n2", [(make(160), b"k", [7000])])       # an older EXPIRE: loses too
    assert ks.get(b"k") is None
    ks.apply_many("n2", [(make(300), b"k", b"new")])       # a newer SET: a new value, no expiry
    assert ks.get(b"k") == b"new" and ks.expiry(b"k") == 0


def test_expire_keeps_a_concurrent_sets_value_and_incr_keeps_the_expiry() -> None:
    for order in (0, 1):
        ks = Keyspace()
        ks.apply_many("n1", [(make(100), b"k", b"1")])
        writes = [("n2", make(300), b"k", [9000]), ("n3", make(200), b"k", b"2")]
        for origin, h, k, v in (writes if order else writes[::-1]):
            ks.apply_many(origin, [(h, k, v)])
        assert (ks.get(b"k"), ks.expiry(b"k")) == (b"2", 9000)
        ks.apply_many("n1", [(make(400), b"k", 5)])             # INCR: the expiry stays
        assert (ks.get(b"k"), ks.expiry(b"k")) == (b"7", 9000)
        ks.apply_many("n1", [(make(500), b"k", [0])])           # PERSIST
        assert (ks.get(b"k"), ks.expiry(b"k")) == (b"7", 0)


def test_an_expire_that_arrives_before_the_set_it_followed_still_applies() -> None:
    """Events of two origins arrive in any order: the EXPIRE made on a node that had the SET
    may reach a third node first."""
    ks = Keyspace()
    ks.apply_many("n2", [(make(300), b"k", [9000])])
    assert ks.get(b"k") is None
    ks.apply_many("n1", [(make(100), b"k", b"v")])
    assert (ks.get(b"k"), ks.expiry(b"k")) == (b"v", 9000)


def test_reclaiming_waits_for_the_horizon_and_the_margin_and_changes_no_read() -> None:
    ks = Keyspace()
    ks.apply_many("n1", [(make(1000), b"k", [b"v", 2000]), (make(1001), b"j", [b"w", 50_000])])
    ks.now_ms = 10_000
    assert ks.reclaim_expired(make(1500), margin_ms=0) == 0, "the horizon is before its expiry"
    assert ks.reclaim_expired(make(3000), margin_ms=1001) == 0, "within the margin"
    assert ks.reclaim_expired(make(3000), margin_ms=1000) == 1
    assert len(ks) == 1 and ks.get(b"k") is None and ks.expiry(b"k") == 0 and ks.get(b"j") == b"w"
    # a write stamped at or after the horizon waits, whatever its expiry says (an older write
    # of its key may still be on its way)
    ks.apply_many("n2", [(make(5000), b"i", [b"u", 2000])])
    assert ks.reclaim_expired(make(4000), margin_ms=0) == 0 and ks.expiring == 2
    # an old write of it arriving again (pulled anew) is below the floor: skipped
    ks.apply_many("n1", [(make(1000), b"k", [b"v", 2000])], floor=make(3000))
    assert len(ks) == 2 and ks.get(b"k") is None


def test_a_key_expiring_with_an_unsettled_expire_waits_for_compaction() -> None:
    ks = Keyspace()
    ks.apply_many("n1", [(make(1000), b"k", b"v")])
    ks.apply_many("n2", [(make(1100), b"k", [2000])])     # EXPIRE: a state apart from the value
    ks.now_ms = 10_000
    assert ks.counters == 1 and ks.reclaim_expired(make(5000), margin_ms=0) == 0
    ks.compact_counters(make(1050))  # a horizon between the value and the EXPIRE: it stays queued
    assert ks.counters == 1
    ks.compact_counters(make(5000))
    assert ks.counters == 0 and ks.reclaim_expired(make(5000), margin_ms=0) == 1 and len(ks) == 0


def test_a_state_with_an_expiry_round_trips_and_a_malformed_one_is_refused() -> None:
    c = Counter.start((5, "a"), b"3", exp=7000)
    c.expire((9, "b"), 8000)
    d = Counter.decode(c.encode())
    assert (d.exps, d.exp, d.base, d.value, d.view()) == ({(9, "b"): 8000}, 7000, (5, "a"), b"3", (b"3", 8000))
    for bad in ([*c.encode()[:6], 7000, [[1, "a", 8000]]],      # an EXPIRE at or before its mark
                [*c.encode()[:6], -1, []], [*c.encode()[:6], 7000]):
        try:
            Counter.decode(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_an_incr_or_expire_after_the_expiry_finds_no_key_on_every_node_whatever_it_holds() -> None:
    """One node dropped the expired key (reclaimed), another still holds it: an INCR stamped
    after the expiry counts from nothing on both, an EXPIRE after it finds no key on both."""
    for late in ([(make(5000), b"k", 1)], [(make(5000), b"k", [60_000])]):
        held, dropped = Keyspace(), Keyspace()
        for ks in (held, dropped):
            ks.apply_many("n1", [(make(1000), b"k", [b"7", 2000])])
        dropped.now_ms = 10_000
        assert dropped.reclaim_expired(make(4000), margin_ms=1000) == 1
        for ks in (held, dropped):
            ks.apply_many("n2", late)
            ks.now_ms = 6000
        assert held.get(b"k") == dropped.get(b"k") == (b"1" if late[0][2] == 1 else None)
        assert held.expiry(b"k") == dropped.expiry(b"k") == 0
        assert held.digest() == dropped.digest()
