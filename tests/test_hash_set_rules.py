"""The set and hash merge rules (zkv.store.orset, zkv.store.parts, zkv.store.keyspace): any order
and any duplication of the same events, compaction below the horizon and exchanges of whole
states between replicas give the same members, fields and digest - the reference rule's: a
member is present while some SADD's dot is named by no SREM or later SADD (so an SADD wins over
an SREM that did not see it), a field holds its last write."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.events import Batch, DecodeError, decode_batch, encode_batch
from zkv.store import hash_set_ops, parts
from zkv.store.keyspace import Keyspace
from zkv.store.orset import TAG_ADD, TAG_REMOVE, Member, event

ORIGINS = ["a", "b", "c"]
MEMBERS = [b"m", b"n"]


@st.composite
def set_histories(draw: st.DrawFn) -> list[tuple[int, str, bytes, list]]:
    """SADDs and SREMs made on three nodes that see each other's events late and in any order:
    each names the dots its node had seen, as the store does (``hash_set_ops``)."""
    seen_by: dict[str, set[int]] = {o: set() for o in ORIGINS}  # indexes of events a node has
    events: list[tuple[int, str, bytes, list]] = []
    for step in range(draw(st.integers(1, 24))):
        o = draw(st.sampled_from(ORIGINS))
        for i in draw(st.lists(st.integers(0, max(0, len(events) - 1)), max_size=3)):
            if i < len(events):
                seen_by[o].add(i)  # (delivered before this step)
        member = draw(st.sampled_from(MEMBERS))
        ks = Keyspace()
        for i in sorted(seen_by[o]):
            h, eo, k, v = events[i]
            ks.apply_many(eo, [(h, k, v)])
        dots = ks.dots(b"s", member)
        tag = draw(st.sampled_from([TAG_ADD, TAG_REMOVE]))
        h = 10 * (step + 1)
        events.append((h, o, parts.part_key(parts.SET, b"s", member), event(tag, dots)))
        seen_by[o].add(len(events) - 1)
    return events


def reference(events: list) -> set[bytes]:
    """The observed-remove rule, from scratch: the SADD dots no event names."""
    named = {(v[i], v[i + 1]) for _h, _o, _k, v in events for i in range(1, len(v), 2)}
    return {parts.split(k)[2] for h, o, k, v in events if v[0] == TAG_ADD and (h, o) not in named}


def _replicas(events: list, rng: random.Random) -> list[Keyspace]:
    cut = rng.randint(0, 10 * len(events) + 10)
    early = [e for e in events if e[0] < cut]
    late = [e for e in events if e[0] >= cut]
    reps = [Keyspace() for _ in range(3)]
    for ks in reps:
        for h, o, k, v in rng.sample(early, k=len(early)):
            ks.apply_many(o, [(h, k, v)])
    pending = {i: rng.sample(late, k=len(late)) + rng.sample(late, k=len(late) // 2) for i in range(3)}
    while any(pending.values()):
        i = rng.randrange(3)
        r = rng.random()
        if r < 0.15:
            # (every event below the cut is here; few horizons, so replicas share marks often)
            reps[i].compact_counters(rng.choice([cut // 2, cut]))
        elif r < 0.3:
            reps[i].apply_entries(list(reps[rng.randrange(3)].entries(rng.choice([0, cut]))))
        elif pending[i]:
            h, o, k, v = pending[i].pop()
            reps[i].apply_many(o, [(h, k, v)])
    for i in range(3):
        reps[i].apply_entries(list(reps[(i + 1) % 3].entries()))
    return reps


@given(set_histories(), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_sets_converge_to_the_observed_remove_rule(events: list, seed: int) -> None:
    reps = _replicas(events, random.Random(seed))
    want = reference(events)
    for ks in reps:
        assert set(ks.members(b"s")) == want
    assert len({ks.digest() for ks in reps}) == 1


def test_an_sadd_wins_over_a_concurrent_srem_and_loses_to_a_later_one() -> None:
    ks = Keyspace()
    pk = parts.part_key(parts.SET, b"s", b"m")
    ks.apply_many("a", [(10, pk, event(TAG_ADD, []))])
    first = ks.dots(b"s", b"m")
    # node b removes what it saw; node c, at the same time, re-adds (a new dot b never saw)
    for order in ([("b", 20, event(TAG_REMOVE, first)), ("c", 15, event(TAG_ADD, first))],
                  [("c", 15, event(TAG_ADD, first)), ("b", 20, event(TAG_REMOVE, first))]):
        k2 = Keyspace()
        k2.apply_many("a", [(10, pk, event(TAG_ADD, []))])
        for o, h, v in order:
            k2.apply_many(o, [(h, pk, v)])
        assert list(k2.members(b"s")) == [b"m"] and k2.dots(b"s", b"m") == [(15, "c")]
    # an SREM that saw the re-add removes it
    ks.apply_many("c", [(15, pk, event(TAG_ADD, first))])
    ks.apply_many("b", [(30, pk, event(TAG_REMOVE, ks.dots(b"s", b"m")))])
    assert not ks.members(b"s") and ks.kind(b"s") is None
    ks.apply_many("c", [(15, pk, event(TAG_ADD, first))])  # (the re-add arriving again)
    assert not ks.members(b"s")


def test_members_merge_in_any_order() -> None:
    rng = random.Random(7)
    for _ in range(300):
        states = []
        for _ in range(3):
            mark = (rng.randint(0, 5), "a")
            dots = {(rng.randint(0, 9), rng.choice("ab")) for _ in range(4)}
            live = sorted(d for d in dots if d > mark and rng.random() < 0.5)
            gone = {d: (rng.randint(6, 12), "c") for d in dots if d not in live and rng.random() < 0.7}
            states.append(Member(mark, live, gone))
        merged = []
        for perm in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
            m = Member(states[perm[0]].mark, list(states[perm[0]].live), dict(states[perm[0]].gone))
            for i in perm[1:]:
                m.merge(states[i])
                m.merge(states[i])  # (twice: idempotent)
            merged.append((m.mark, m.live, m.gone))
        assert merged[0] == merged[1] == merged[2]


FIELD_VALUES = st.one_of(st.none(), st.sampled_from([b"x", b"y", b"5"]), st.integers(-3, 3))


@given(st.lists(st.tuples(st.integers(1, 40), st.sampled_from(ORIGINS), st.sampled_from([b"f", b"g"]), FIELD_VALUES),
                max_size=25, unique_by=lambda e: (e[0], e[1])), st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_hash_fields_converge_in_any_order(raw: list, seed: int) -> None:
    events = [(10 * h, o, parts.part_key(parts.HASH, b"h", f), v) for h, o, f, v in raw]
    reps = _replicas(events, random.Random(seed))
    assert len({ks.digest() for ks in reps}) == 1
    assert len({tuple((f, ks.field(b"h", f)) for f in sorted(ks.fields(b"h"))) for ks in reps}) == 1


def test_a_whole_key_delete_removes_what_the_node_saw_and_keeps_a_concurrent_field() -> None:
    ks = Keyspace()
    ks.apply_many("a", [(10, parts.part_key(parts.HASH, b"h", b"f"), b"1")])
    ks.apply_many("a", [(11, parts.part_key(parts.SET, b"s", b"m"), event(TAG_ADD, []))])
    writes = hash_set_ops.removals(ks, b"h") + hash_set_ops.removals(ks, b"s")
    other = Keyspace()  # a node that wrote a field and a member the DEL never saw
    other.apply_many("a", [(10, parts.part_key(parts.HASH, b"h", b"f"), b"1")])
    other.apply_many("a", [(11, parts.part_key(parts.SET, b"s", b"m"), event(TAG_ADD, []))])
    other.apply_many("b", [(12, parts.part_key(parts.HASH, b"h", b"g"), b"2"),
                           (13, parts.part_key(parts.SET, b"s", b"m"), event(TAG_ADD, other.dots(b"s", b"m")))])
    for k in (ks, other):
        k.apply_many("c", [(20 + i, pk, v) for i, (pk, v) in enumerate(writes)])
    other_writes = [(12, parts.part_key(parts.HASH, b"h", b"g"), b"2"),
                    (13, parts.part_key(parts.SET, b"s", b"m"), event(TAG_ADD, [(11, "a")]))]
    ks.apply_many("b", other_writes)
    for k in (ks, other):
        assert list(k.fields(b"h")) == [b"g"] and list(k.members(b"s")) == [b"m"]
    assert ks.digest() == other.digest()


def test_types_a_write_of_another_type_hides_and_a_string_write_replaces() -> None:
    ks = Keyspace()
    ks.apply_many("a", [(10, parts.part_key(parts.HASH, b"k", b"f"), b"1")])
    assert ks.kind(b"k") == "hash" and ks.exists(b"k") and ks.get(b"k") is None
    assert hash_set_ops.run(ks, ("sa", b"k", [b"m"]))[0] == hash_set_ops.WRONGTYPE
    ks.apply_many("b", [(11, b"k", b"v")])  # a concurrent string write: the string shows
    assert ks.kind(b"k") == "string" and len(ks) == 1 and ks.live() == 1
    assert ks.key_list() == [b"k"]
    ks.apply_many("b", [(12, b"k", None)])
    assert ks.kind(b"k") == "hash" and len(ks) == 1


def _batch(key: bytes, value: object) -> bytes:
    return encode_batch(Batch("n1", 1, [(5, key, value)]))


@pytest.mark.parametrize("key,value", [
    (b"\xff\x00", b"x"),  # a reserved key that names nothing
    (b"\xff\x00q\x00\x00\x00\x01kf", b"x"),  # an unknown kind
    (parts.part_key(parts.SET, b"s", b"m"), b"x"),  # a member takes only an add or a remove
    (parts.part_key(parts.SET, b"s", b"m"), None),
    (parts.part_key(parts.HASH, b"h", b"f"), ["a"]),  # a field takes no add
    (parts.part_key(parts.HASH, b"h", b"f"), [b"v", 1000]),  # nor an expiry
    (b"plain", ["a"]),  # an add of a key that is no member
    (parts.part_key(parts.SET, b"s", b"m"), ["a", 1]),  # a dot without its origin
    (parts.part_key(parts.SET, b"s", b"m"), ["r", -1, "x"]),
])
def test_a_peer_cannot_send_a_write_that_does_not_fit_its_field_or_member(key: bytes, value: object) -> None:
    with pytest.raises(DecodeError):
        decode_batch(_batch(key, value))


def test_field_and_member_writes_decode() -> None:
    for key, value in [(parts.part_key(parts.HASH, b"h", b"f"), b"x"), (parts.part_key(parts.HASH, b"h", b"f"), None),
                       (parts.part_key(parts.HASH, b"h", b"f"), 3),
                       (parts.part_key(parts.SET, b"s", b"m"), ["a", 4, "n1"]), (parts.part_key(parts.SET, b"s", b"m"), ["r"])]:
        assert decode_batch(_batch(key, value)).items[0][1] == key


def test_a_removal_after_the_horizon_of_a_dot_before_it_survives_compaction_and_merges() -> None:
    """Found by the property test above: a re-add at 30 replaced the dot 10; a replica compacted
    to horizon 20 must still know 10 was removed (the removal is after the horizon, so another
    replica may hold 10 live with the same mark), or a merge with such a replica brings 10
    back and an SREM that saw only 30 leaves the member present."""
    pk = parts.part_key(parts.SET, b"s", b"m")
    for how in ("compaction", "merge"):  # how x comes to the horizon
        x, y = Keyspace(), Keyspace()
        for ks in (x, y):
            ks.apply_many("a", [(10, pk, event(TAG_ADD, []))])
        x.apply_many("b", [(30, pk, event(TAG_ADD, [(10, "a")]))])
        if how == "compaction":
            x.compact_counters(20)
        else:
            x.apply_entries(list(y.entries(20)))
        x.apply_entries(list(y.entries(20)))  # y: 10 live, settled to the same horizon
        assert x.dots(b"s", b"m") == [(30, "b")], how
        x.apply_many("c", [(40, pk, event(TAG_REMOVE, [(30, "b")]))])
        assert not x.members(b"s"), how


@given(st.lists(st.tuples(st.sampled_from([b"k", b"j"]), st.sampled_from(["str", "del", "field", "nofield", "add", "rem", "drop", "gc"]),
                          st.sampled_from([b"a", b"b"])), max_size=40))
@settings(max_examples=300, deadline=None)
def test_the_key_count_counts_each_key_once_whatever_its_types(ops: list) -> None:
    """``len`` (every heartbeat, INFO) and DBSIZE keep counts instead of a pass over the hashes
    and sets: they must equal a count of the keys that read as present."""
    ks = Keyspace()
    for i, (key, what, elem) in enumerate(ops):
        h = 10 * (i + 1)
        if what == "str":
            ks.apply_many("a", [(h, key, b"v")])
        elif what == "del":
            ks.apply_many("a", [(h, key, None)])
        elif what == "field":
            ks.apply_many("a", [(h, parts.part_key(parts.HASH, key, elem), b"1")])
        elif what == "nofield":
            ks.apply_many("a", [(h, parts.part_key(parts.HASH, key, elem), None)])
        elif what == "add":
            ks.apply_many("a", [(h, parts.part_key(parts.SET, key, elem), event(TAG_ADD, ks.dots(key, elem)))])
        elif what == "rem":
            ks.apply_many("a", [(h, parts.part_key(parts.SET, key, elem), event(TAG_REMOVE, ks.dots(key, elem)))])
        elif what == "drop":
            ks.drop([key, parts.part_key(parts.HASH, key, elem)], h)
        else:
            ks.compact_counters(h)
            ks.collect_tombstones(h)
        present = [k for k in (b"k", b"j") if ks.exists(k)]
        assert len(ks) == ks.live() == len(present), (ops[:i + 1], present)
        assert sorted(ks.keys_matching(lambda k: True)) == sorted(present)
        assert sorted(k for k in ks.key_list() if ks.exists(k)) == sorted(present)
