"""The counter rule (zkv.store.counter) and the keyspace's counter entries: any order and any
duplication of the same events, merges of replicas compacted to different horizons, give the
same value - the reference rule's."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.store.counter import Counter, as_int
from zkv.store.keyspace import Keyspace

ORIGINS = ["n0@a", "n1@b", "n2@c"]


def reference(events: list[tuple[int, str, object]]) -> bytes | None:
    """The rule, stated directly: the last SET/DEL by version, plus every increment after it."""
    writes = [(h, o, v) for h, o, v in events if not isinstance(v, int)]
    base = max(writes, default=None, key=lambda e: (e[0], e[1]))
    bstamp = (base[0], base[1]) if base else (0, "")
    bvalue = base[2] if base else None
    n = as_int(bvalue)  # type: ignore[arg-type]
    if n is None:
        return bvalue  # type: ignore[return-value]
    after = [v for h, o, v in events if isinstance(v, int) and (h, o) > bstamp]
    if bvalue is None and not after:
        return None
    return b"%d" % (n + sum(after))  # type: ignore[arg-type]


_value = st.one_of(st.integers(-5, 5), st.just(None), st.sampled_from([b"10", b"-3", b"x", b"0"]))


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, str, object]]:
    n = draw(st.integers(1, 30))
    events = []
    used = set()
    for _ in range(n):
        h = draw(st.integers(1, 60))
        o = draw(st.sampled_from(ORIGINS))
        if (h, o) in used:
            continue
        used.add((h, o))
        events.append((h, o, draw(_value)))
    return events


def _replica(events: list, rng: random.Random, horizon_ok: int) -> Counter:
    """A replica that got ``events`` in a random order, some twice, compacted now and then at
    a horizon every replica has passed (every event below it is in ``events`` already)."""
    c = Counter.start((0, ""), None)
    order = events + rng.sample(events, k=len(events) // 3)
    rng.shuffle(order)
    for h, o, v in order:
        if isinstance(v, int):
            c.increment((h, o), v)
        else:
            c.set((h, o), v)
        if rng.random() < 0.2:
            c.compact(rng.randint(0, horizon_ok))
    return c


@given(histories(), st.integers(0, 2**32))
@settings(max_examples=400, deadline=None)
def test_any_order_duplication_compaction_and_merge_give_the_reference_value(
        events: list, seed: int) -> None:
    rng = random.Random(seed)
    # compaction only below a horizon that every event under it has reached everywhere: here,
    # every replica gets every event, so any horizon below the latest pending one is fine
    # as long as compaction happens after those events arrived - model it as: events below
    # ``cut`` are delivered first, compaction is at most ``cut``
    cut = rng.randint(0, 61)
    early = [e for e in events if e[0] < cut]
    late = [e for e in events if e[0] >= cut]
    reps = []
    for _ in range(3):
        c = _replica(early, rng, 0)
        c.compact(rng.randint(0, cut))
        for h, o, v in rng.sample(late, k=len(late)):
            if isinstance(v, int):
                c.increment((h, o), v)
            else:
                c.set((h, o), v)
        reps.append(c)
    want = reference(events)
    assert all(c.render() == want for c in reps), ([c.render() for c in reps], want)
    a, b, c = reps
    # merges, in any order, of states compacted differently: the same value
    for x, y in ((a, b), (b, c), (c, a)):
        m = Counter.decode(x.encode())
        m.merge(Counter.decode(y.encode()))
        assert m.render() == want
        m.merge(Counter.decode(y.encode()))  # idempotent
        assert m.render() == want


def test_three_origins_of_a_thousand_increments_each_count_three_thousand() -> None:
    rng = random.Random(1)
    events = [(h, o, 1) for o in ORIGINS for h in range(1, 1001)]
    reps = []
    for _ in range(3):
        c = Counter.start((0, ""), None)
        for h, o, v in rng.sample(events, k=len(events)):
            c.increment((h, o), v)
        reps.append(c)
    assert {c.render() for c in reps} == {b"3000"}
    reps[0].compact(900)
    assert reps[0].render() == b"3000" and len(reps[0].incs) == 3 * 101


def test_as_int_reads_what_redis_reads_as_an_integer() -> None:
    assert [as_int(v) for v in (None, b"0", b"-12", b"9223372036854775807")] == [0, 0, -12, 2**63 - 1]
    assert [as_int(v) for v in (b"", b"01", b"+1", b" 1", b"1.0", b"-0", b"9223372036854775808", b"x")] == [None] * 8


def _apply_all(ks: Keyspace, events: list, rng: random.Random) -> None:
    for h, o, v in rng.sample(events, k=len(events)):
        ks.apply_many(o, [(h, b"k", v)])


@given(histories(), st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_keyspaces_converge_to_the_reference_value_and_digest(events: list, seed: int) -> None:
    rng = random.Random(seed)
    a, b = Keyspace(), Keyspace()
    _apply_all(a, events, rng)
    _apply_all(b, events + events[: len(events) // 2], rng)
    want = reference(events)
    assert a.get(b"k") == b.get(b"k") == want
    assert a.digest() == b.digest()
    b.compact_counters(61)
    assert b.get(b"k") == want and b.digest() == a.digest() and b.counters == 0
    # a snapshot's entries (counter states included) rebuild the same keyspace
    c = Keyspace()
    c.apply_entries(list(a.entries()))
    assert c.get(b"k") == want and c.digest() == a.digest()
    # and merging one replica's entries into another changes nothing
    a.apply_entries(list(b.entries()))
    assert a.get(b"k") == want and a.digest() == b.digest()


@given(histories(), st.integers(0, 2**32))
@settings(max_examples=400, deadline=None)
def test_keyspaces_that_compact_and_exchange_entries_midway_converge(events: list, seed: int) -> None:
    """Replicas apply the events in their own orders; below a cut every replica has everything
    (a horizon), and each compacts there at its own moment - its counters become plain entries
    whose version is an increment's - and swaps entries (anti-entropy, a transfer) with another
    at random moments before and after."""
    rng = random.Random(seed)
    reps = _exchanging_replicas(events, rng)
    want = reference(events)
    assert [ks.get(b"k") for ks in reps] == [want] * 3
    assert len({ks.digest() for ks in reps}) == 1


def _exchanging_replicas(events: list, rng: random.Random, hlc=lambda h: h) -> list[Keyspace]:  # noqa: ANN001
    """``hlc``: the timestamp an event's ``h`` stands for (the expiry tests spread them over
    seconds of wall-clock time)."""
    cut = rng.randint(0, 61)
    early = [e for e in events if e[0] < cut]
    late = [e for e in events if e[0] >= cut]
    reps = [Keyspace() for _ in range(3)]
    for ks in reps:
        for h, o, v in rng.sample(early, k=len(early)):
            ks.apply_many(o, [(hlc(h), b"k", v)])
    pending = {i: rng.sample(late, k=len(late)) for i in range(3)}
    while any(pending.values()):
        i = rng.randrange(3)
        r = rng.random()
        if r < 0.15:
            reps[i].compact_counters(hlc(rng.randint(0, cut)))
        elif r < 0.3:
            reps[i].apply_entries(list(reps[rng.randrange(3)].entries()))
        elif pending[i]:
            h, o, v = pending[i].pop()
            reps[i].apply_many(o, [(hlc(h), b"k", v)])
    for i in range(3):
        reps[i].apply_entries(list(reps[(i + 1) % 3].entries()))
    return reps


@given(histories(), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_a_node_that_took_a_transfer_then_gets_every_event_again_keeps_the_value(
        events: list, seed: int) -> None:
    """A wiped node takes a full transfer from a peer that compacted (its counter's value counts
    everything below the horizon, whatever base it came from), then pulls every event from the
    peers' backlogs, old ones included: they were counted already."""
    rng = random.Random(seed)
    peer = _exchanging_replicas(events, rng)[0]
    wiped = Keyspace()
    wiped.apply_entries(list(peer.entries()))
    _apply_all(wiped, events, rng)
    assert wiped.get(b"k") == peer.get(b"k") == reference(events)
    assert wiped.digest() == peer.digest()


def test_a_set_older_than_the_mark_is_counted_already() -> None:
    """A state whose value stands for everything up to its mark (taken in a transfer from a peer
    that compacted) ignores an old SET pulled afterwards, as it ignores old increments."""
    c = Counter((0, ""), b"14", (500, "\U0010ffff"))
    c.increment((600, "n1@b"), 1)
    assert not c.set((200, "n0@a"), b"51") and not c.increment((300, "n2@c"), 5)
    assert c.render() == b"15"
    assert c.set((700, "n0@a"), b"3") and c.render() == b"3"


def test_states_at_the_same_mark_with_different_values_settle_the_same_in_either_order() -> None:
    """Only after a fault that lost events on one replica: both compacted to the same mark, one
    short of a SET the other counted.  Merging either way round gives the same state (the
    greater value, zkv.store.counter.tie_rank)."""
    short = Counter((5, "a"), b"86", (9, "\U0010ffff"), {(12, "b"): 2})
    full = Counter((7, "c"), b"96", (9, "\U0010ffff"), {(12, "b"): 2})
    a, b = Counter.decode(short.encode()), Counter.decode(full.encode())
    a.merge(Counter.decode(full.encode()))
    b.merge(Counter.decode(short.encode()))
    assert a.render() == b.render() == b"98"
    assert a.encode() == b.encode()
    # the same through two keyspaces that hold them as entries and swap them (anti-entropy)
    x, y = Keyspace(), Keyspace()
    x.apply_many("b", [(12, b"k", short.encode())])
    y.apply_many("b", [(12, b"k", full.encode())])
    x.apply_entries(list(y.entries()))
    y.apply_entries(list(x.entries()))
    assert x.get(b"k") == y.get(b"k") == b"98" and x.digest() == y.digest()
