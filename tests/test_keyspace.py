"""Unit and property tests for zkv.store.keyspace (the last-writer-wins conflict rule).

The central property: applying any set of writes ``(key, hlc, origin, value-or-None)`` in any
order, any number of times, ends in the same map, the same digest and the same bucket hashes,
and the value of each key is the one written by the greatest ``(hlc, origin)``.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.store.keyspace import BUCKETS, Keyspace, bucket_of, entry_hash, wins

Write = tuple[bytes, int, str, bytes | None]

KEYS = [b"a", b"b", b"c", b"key", b"k\x00", b"\xff"]
ORIGINS = ["n1", "n2", "n3"]


def build(writes: list[Write]) -> Keyspace:
    ks = Keyspace()
    for w in writes:
        ks.apply(*w)
    return ks


def snapshot(ks: Keyspace) -> dict[bytes, tuple[int, str, bytes | None]]:
    return {k: (h, o, v) for k, h, o, v in ks.entries()}


# A write's version (key, hlc, origin) is unique in a real cluster, so its value is determined:
# generate a dict version -> value and turn it into writes.
versions = st.tuples(st.sampled_from(KEYS), st.integers(1, 6), st.sampled_from(ORIGINS))
# Short values and long ones (a few hundred bytes).
values = st.one_of(st.none(), st.binary(max_size=4), st.binary(min_size=250, max_size=600))
write_sets = st.dictionaries(versions, values, max_size=25).map(
    lambda d: [(k, h, o, v) for (k, h, o), v in d.items()]
)


@st.composite
def shuffled_with_duplicates(draw: st.DrawFn) -> tuple[list[Write], list[Write]]:
    writes = draw(write_sets)
    perm = draw(st.permutations(writes))
    extra = draw(st.lists(st.sampled_from(writes), max_size=10)) if writes else []
    mixed = draw(st.permutations(perm + extra))
    return writes, mixed


def model(writes: list[Write]) -> dict[bytes, bytes | None]:
    """Reference: per key, the value of the write with the greatest (hlc, origin)."""
    best: dict[bytes, tuple[int, str, bytes | None]] = {}
    for k, h, o, v in writes:
        if k not in best or (h, o) > best[k][:2]:
            best[k] = (h, o, v)
    return {k: e[2] for k, e in best.items()}


# ------------------------------------------------------------------ properties


@given(shuffled_with_duplicates())
@settings(max_examples=60)
def test_any_order_with_duplicates_converges(case: tuple[list[Write], list[Write]]) -> None:
    writes, mixed = case
    a = build(writes)
    b = build(mixed)
    for k in KEYS:
        assert a.get(k) == b.get(k)
    assert a.digest() == b.digest()
    assert a.bucket_hashes() == b.bucket_hashes()
    assert snapshot(a) == snapshot(b)
    assert len(a) == len(b)
    assert a.tombstones == b.tombstones


@given(shuffled_with_duplicates())
@settings(max_examples=60)
def test_result_matches_last_writer_wins_model(case: tuple[list[Write], list[Write]]) -> None:
    writes, mixed = case
    ks = build(mixed)
    want = model(writes)
    for k in KEYS:
        assert ks.get(k) == want.get(k)
    assert len(ks) == sum(1 for v in want.values() if v is not None)
    assert ks.tombstones == sum(1 for v in want.values() if v is None)


@given(shuffled_with_duplicates())
@settings(max_examples=50)
def test_digest_equals_fresh_build_of_live_winners(case: tuple[list[Write], list[Write]]) -> None:
    """The incrementally maintained digest equals one computed from scratch over live entries."""
    _writes, mixed = case
    ks = build(mixed)
    fresh = Keyspace()
    for k, h, o, v in ks.entries():
        if v is not None:
            fresh.apply(k, h, o, v)
    assert ks.digest() == fresh.digest()
    assert ks.bucket_hashes() == fresh.bucket_hashes()
    expect = [0] * BUCKETS
    for k, h, o, v in ks.entries():
        if v is not None:
            expect[bucket_of(k)] ^= entry_hash(k, h, o, v)
    assert ks.bucket_hashes() == expect


@given(write_sets)
@settings(max_examples=50)
def test_reapplying_everything_changes_nothing(writes: list[Write]) -> None:
    ks = build(writes)
    before = (snapshot(ks), ks.digest())
    assert not any(ks.apply(*w) for w in writes)
    assert (snapshot(ks), ks.digest()) == before


@given(shuffled_with_duplicates())
@settings(max_examples=60)
def test_apply_entries_grouped_by_origin_equals_one_by_one(case: tuple[list[Write], list[Write]]) -> None:
    """Snapshots, transfers and repairs go through ``apply_entries``, which reorders the writes
    (origin by origin): by the conflict rule the result must not change."""
    _writes, mixed = case
    one = build(mixed)
    grouped = Keyspace()
    assert grouped.apply_entries(mixed) == max((h for _k, h, _o, _v in mixed), default=0)
    assert snapshot(grouped) == snapshot(one)
    assert grouped.bucket_hashes() == one.bucket_hashes()
    assert grouped.tombstones == one.tombstones and len(grouped) == len(one)


@given(shuffled_with_duplicates())
@settings(max_examples=60)
def test_apply_many_in_runs_equals_one_by_one(case: tuple[list[Write], list[Write]]) -> None:
    """The store applies batches with ``apply_many``: runs of one origin's writes at a time."""
    _writes, mixed = case
    one = Keyspace()
    changed_one = [one.apply(*w) for w in mixed]
    many = Keyspace()
    changed_many = 0
    i = 0
    while i < len(mixed):
        j = i
        while j < len(mixed) and mixed[j][2] == mixed[i][2]:
            j += 1
        run = mixed[i:j]
        n, top = many.apply_many(mixed[i][2], [(h, k, v) for k, h, _o, v in run])
        assert top == max(h for _k, h, _o, _v in run)
        changed_many += n
        i = j
    assert changed_many == sum(changed_one)
    assert snapshot(many) == snapshot(one)
    assert many.bucket_hashes() == one.bucket_hashes()
    assert many.tombstones == one.tombstones and len(many) == len(one)


def test_non_str_origin_is_refused_and_the_keyspace_stays_usable() -> None:
    ks = Keyspace()
    ks.apply(b"k", 1, "n1", b"v")
    try:
        ks.apply(b"k", 2, b"n2", b"w")  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        raise AssertionError("a bytes origin was accepted")
    assert ks.apply(b"k", 3, "n3", b"x") and ks.entry(b"k") == (3, "n3", b"x")
    fresh = Keyspace()
    fresh.apply(b"k", 3, "n3", b"x")
    assert ks.bucket_hashes() == fresh.bucket_hashes()


# ------------------------------------------------------------------ the conflict rule


def test_apply_new_key_and_get() -> None:
    ks = Keyspace()
    assert ks.get(b"k") is None
    assert ks.apply(b"k", 10, "n1", b"v")
    assert ks.get(b"k") == b"v"
    assert ks.entry(b"k") == (10, "n1", b"v")


def test_newer_hlc_wins_older_loses() -> None:
    ks = Keyspace()
    ks.apply(b"k", 10, "n1", b"old")
    assert ks.apply(b"k", 11, "n1", b"new")
    assert not ks.apply(b"k", 9, "n9", b"older")
    assert ks.get(b"k") == b"new"


def test_equal_hlc_tie_broken_by_origin() -> None:
    for order in ([("n1", b"one"), ("n2", b"two")], [("n2", b"two"), ("n1", b"one")]):
        ks = Keyspace()
        for origin, v in order:
            ks.apply(b"k", 10, origin, v)
        assert ks.get(b"k") == b"two", "greater origin wins a tie, whatever the order"
        assert ks.entry(b"k") == (10, "n2", b"two")


def test_same_version_twice_is_not_a_change() -> None:
    ks = Keyspace()
    assert ks.apply(b"k", 10, "n1", b"v")
    assert not ks.apply(b"k", 10, "n1", b"v")


def test_wins_function() -> None:
    assert wins(1, "a", None)
    assert wins(2, "a", (1, "z", b"v"))
    assert not wins(1, "z", (2, "a", b"v"))
    assert wins(2, "b", (2, "a", None))
    assert not wins(2, "a", (2, "b", b"v"))
    assert not wins(2, "a", (2, "a", b"v"))
    assert wins(2, "a", (2, "a", b"9"), b"10"), "the same version: the greater number"
    assert not wins(2, "a", (2, "a", b"10"), b"9")
    assert wins(2, "a", (2, "a", None), b"v"), "the same version: a value beats a deletion"


@given(st.permutations([None, b"", b"abc", b"ab", b"7", b"10", b"-3", b"10"]), st.integers(1, 3))
def test_two_values_under_one_version_settle_the_same_in_any_order(values, times) -> None:
    """A replica that lost events can hold a compacted counter under the same version as its
    peers but another value; whatever order the copies meet in, every replica keeps one."""
    ks = Keyspace()
    for v in values * times:
        ks.apply(b"k", 5, "n1", v)
    assert ks.get(b"k") == b"10"
    want = Keyspace()
    want.apply(b"k", 5, "n1", b"10")
    assert ks.digest() == want.digest()


def test_tombstone_blocks_older_set() -> None:
    ks = Keyspace()
    ks.apply(b"k", 10, "n1", b"v")
    assert ks.apply(b"k", 20, "n2", None)
    assert ks.get(b"k") is None
    assert ks.entry(b"k") == (20, "n2", None)
    assert not ks.apply(b"k", 15, "n3", b"late")  # older SET arriving after the delete
    assert ks.get(b"k") is None
    assert ks.apply(b"k", 21, "n1", b"again")  # a newer SET does bring it back
    assert ks.get(b"k") == b"again"
    assert ks.tombstones == 0


def test_delete_of_unknown_key_leaves_tombstone_that_blocks_older_set() -> None:
    ks = Keyspace()
    assert ks.apply(b"k", 20, "n1", None)
    assert ks.tombstones == 1
    assert len(ks) == 0
    assert not ks.apply(b"k", 19, "n2", b"v")
    assert ks.get(b"k") is None


def test_len_excludes_tombstones() -> None:
    ks = Keyspace()
    ks.apply(b"a", 1, "n1", b"1")
    ks.apply(b"b", 1, "n1", b"2")
    ks.apply(b"c", 1, "n1", b"3")
    assert len(ks) == 3 and ks.tombstones == 0
    ks.apply(b"b", 2, "n1", None)
    assert len(ks) == 2 and ks.tombstones == 1
    ks.apply(b"b", 3, "n1", b"back")
    assert len(ks) == 3 and ks.tombstones == 0
    ks.apply(b"z", 3, "n1", None)
    assert len(ks) == 3 and ks.tombstones == 1


def test_empty_value_is_live_not_a_tombstone() -> None:
    ks = Keyspace()
    ks.apply(b"k", 1, "n1", b"")
    assert ks.get(b"k") == b""
    assert len(ks) == 1 and ks.tombstones == 0
    assert ks.digest() != Keyspace().digest()


def test_items_and_entries_include_tombstones() -> None:
    ks = Keyspace()
    ks.apply(b"a", 1, "n1", b"1")
    ks.apply(b"b", 2, "n2", None)
    assert dict(ks.items()) == {b"a": (1, "n1", b"1"), b"b": (2, "n2", None)}
    assert sorted(ks.entries()) == [(b"a", 1, "n1", b"1"), (b"b", 2, "n2", None)]


# ------------------------------------------------------------------ digest


def test_digest_ignores_tombstones() -> None:
    empty = Keyspace().digest()
    ks = Keyspace()
    ks.apply(b"gone", 5, "n1", None)
    assert ks.digest() == empty
    ks.apply(b"live", 5, "n1", b"v")
    other = Keyspace()
    other.apply(b"live", 5, "n1", b"v")
    assert ks.digest() == other.digest()
    assert ks.bucket_hashes() == other.bucket_hashes()


def test_set_then_delete_returns_digest_to_empty() -> None:
    ks = Keyspace()
    ks.apply(b"k", 1, "n1", b"v")
    ks.apply(b"k", 2, "n1", None)
    assert ks.digest() == Keyspace().digest()
    assert ks.bucket_hashes() == [0] * BUCKETS


@given(st.dictionaries(st.binary(max_size=6).filter(lambda k: k[:2] != b"\xff\x00"), st.binary(max_size=6), min_size=1, max_size=8),
       st.data())
@settings(max_examples=50)
def test_digest_reflects_every_live_value(data: dict[bytes, bytes], draw: st.DataObject) -> None:
    base = Keyspace()
    for k, v in data.items():
        base.apply(k, 1, "n1", v)
    key = draw.draw(st.sampled_from(sorted(data)))
    new_value = draw.draw(st.binary(max_size=6).filter(lambda v: v != data[key]))
    changed = Keyspace()
    for k, v in data.items():
        changed.apply(k, 1, "n1", new_value if k == key else v)
    assert base.digest() != changed.digest()
    assert base.bucket_hashes()[bucket_of(key)] != changed.bucket_hashes()[bucket_of(key)]
    # a missing live key is noticed too
    missing = Keyspace()
    for k, v in data.items():
        if k != key:
            missing.apply(k, 1, "n1", v)
    assert missing.digest() != base.digest()


def test_digest_reflects_version_not_only_value() -> None:
    a, b = Keyspace(), Keyspace()
    a.apply(b"k", 1, "n1", b"v")
    b.apply(b"k", 2, "n1", b"v")
    assert a.digest() != b.digest()


def test_digest_shape_and_buckets() -> None:
    ks = Keyspace()
    assert len(ks.digest()) == 16
    assert len(ks.bucket_hashes()) == BUCKETS
    ks.apply(b"k", 1, "n1", b"v")
    hashes = ks.bucket_hashes()
    nonzero = [i for i, h in enumerate(hashes) if h]
    assert nonzero == [bucket_of(b"k")]
    hashes[0] ^= 1  # a copy, not the live list
    assert ks.bucket_hashes() != hashes


def test_bucket_of_in_range() -> None:
    for k in [b"", b"a", b"\xff" * 100, b"key:1"]:
        assert 0 <= bucket_of(k) < BUCKETS


def test_bucket_entries_returns_tombstones_of_those_buckets_only() -> None:
    ks = Keyspace()
    keys = [b"k%d" % i for i in range(50)]
    for i, k in enumerate(keys):
        ks.apply(k, i + 1, "n1", None if i % 3 == 0 else b"v%d" % i)
    wanted = {bucket_of(keys[0]), bucket_of(keys[1])}
    got = ks.bucket_entries(wanted)
    expect = [(k, h, o, v) for k, h, o, v in ks.entries() if bucket_of(k) in wanted]
    assert sorted(got) == sorted(expect)
    assert any(v is None for _k, _h, _o, v in got)
    assert ks.bucket_entries([]) == []


# ------------------------------------------------------------------ tombstone GC


def test_collect_tombstones_drops_only_tombstones_below_horizon() -> None:
    ks = Keyspace()
    ks.apply(b"t5", 5, "n1", None)
    ks.apply(b"t10", 10, "n1", None)
    ks.apply(b"t15", 15, "n1", None)
    ks.apply(b"live3", 3, "n1", b"v")  # live and old: never collected
    digest = ks.digest()
    assert ks.collect_tombstones(10) == 1
    assert ks.entry(b"t5") is None
    assert ks.entry(b"t10") == (10, "n1", None)  # == horizon: kept
    assert ks.entry(b"t15") == (15, "n1", None)
    assert ks.get(b"live3") == b"v"
    assert ks.tombstones == 2
    assert len(ks) == 1
    assert ks.digest() == digest
    assert ks.collect_tombstones(10) == 0
    assert ks.collect_tombstones(100) == 2
    assert ks.tombstones == 0
    assert sorted(k for k, *_ in ks.entries()) == [b"live3"]


@given(write_sets, st.integers(0, 8))
@settings(max_examples=50)
def test_collect_tombstones_property(writes: list[Write], horizon: int) -> None:
    ks = build(writes)
    before = snapshot(ks)
    dropped = ks.collect_tombstones(horizon)
    after = snapshot(ks)
    expect = {k: e for k, e in before.items() if not (e[2] is None and e[0] < horizon)}
    assert after == expect
    assert dropped == len(before) - len(expect)
    assert ks.tombstones == sum(1 for e in after.values() if e[2] is None)


# ------------------------------------------------------------------ drop_absent


def test_drop_absent_drops_old_local_keys_missing_from_peer() -> None:
    ks = Keyspace()
    ks.apply(b"old_live", 5, "n1", b"v")      # absent at peer, before horizon: dropped
    ks.apply(b"old_tomb", 6, "n1", None)      # absent at peer, before horizon: dropped
    ks.apply(b"new_live", 50, "n1", b"w")     # absent at peer, after horizon: kept
    ks.apply(b"present", 5, "n1", b"p")       # present at peer: kept
    n = ks.drop_absent({b"present"}, 10)
    assert n == 2
    assert ks.entry(b"old_live") is None
    assert ks.entry(b"old_tomb") is None
    assert ks.get(b"new_live") == b"w"
    assert ks.get(b"present") == b"p"
    assert len(ks) == 2 and ks.tombstones == 0
    ref = Keyspace()
    ref.apply(b"new_live", 50, "n1", b"w")
    ref.apply(b"present", 5, "n1", b"p")
    assert ks.digest() == ref.digest()
    assert ks.bucket_hashes() == ref.bucket_hashes()


def test_drop_absent_horizon_is_exclusive() -> None:
    ks = Keyspace()
    ks.apply(b"k", 10, "n1", b"v")
    assert ks.drop_absent(set(), 10) == 0
    assert ks.get(b"k") == b"v"
    assert ks.drop_absent(set(), 11) == 1
    assert ks.get(b"k") is None
    assert ks.digest() == Keyspace().digest()


def test_drop_absent_limited_to_buckets() -> None:
    ks = Keyspace()
    keys = [b"x%d" % i for i in range(40)]
    for k in keys:
        ks.apply(k, 1, "n1", b"v")
    only = {bucket_of(keys[0])}
    n = ks.drop_absent(set(), 10, buckets=only)
    assert n == sum(1 for k in keys if bucket_of(k) in only)
    for k in keys:
        assert (ks.get(k) is None) == (bucket_of(k) in only)


def test_an_old_write_below_the_horizon_does_not_bring_a_collected_key_back() -> None:
    """SET k (10), DELETE k (20), the tombstone collected at horizon 30: the SET arriving again
    (pulled anew after some node recovered less than it had) must not resurrect k."""
    ks = Keyspace()
    ks.apply(b"k", 10, "a@1", b"old")
    ks.apply(b"k", 20, "b@1", None)
    assert ks.collect_tombstones(30) == 1
    assert ks.apply_many("a@1", [(10, b"k", b"old")], floor=30) == (0, 10)
    assert ks.entry(b"k") is None
    # above the horizon, or for a key that has an entry, the conflict rule decides as always
    assert ks.apply(b"k", 31, "a@1", b"new", floor=30)
    ks.apply(b"j", 5, "a@1", b"v")
    assert ks.apply(b"j", 6, "a@1", b"w", floor=30) and ks.get(b"j") == b"w"


def test_a_keyspace_takes_far_more_origins_than_restarts_make() -> None:
    """Every start of every node is a new origin; 40,000 of them (past the 32,767 an older
    16-bit index allowed) apply, read back, and tombstone by name."""
    ks = Keyspace()
    for i in range(40_000):
        ks.apply_many(f"n{i % 3}@{i:08x}", [(1000 + i, b"k%d" % (i % 50), b"v%d" % i)])
    assert ks.get(b"k49") == b"v39999"
    assert ks.entry(b"k49")[:2] == (1000 + 39_999, f"n0@{39_999:08x}")
    ks.apply_many("n2@last", [(10**9, b"k49", None)])
    assert ks.get(b"k49") is None and ks.tombstones == 1
