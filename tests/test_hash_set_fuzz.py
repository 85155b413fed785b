"""Set members under every repair path at once: with honest horizons (every replica
has applied every event below the horizon it uses), set members converge to the observed-remove
rule through tombstone collection, compaction, old events pulled again under the floor, full
transfers (entries, stale_keys/drop, forget_counters_below), repairs at equal vectors and
snapshot round trips; and the index of fields and members stays in step with the entries."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st, HealthCheck
from tests.test_hash_set_rules import set_histories, reference
from zkv.replication.antientropy import merge
from zkv.replication.transfer import stale_keys
from zkv.store.keyspace import Keyspace

def honest_h(reps_applied, events):
    # largest H such that every replica has applied every event with stamp < H
    lows = []
    for applied in reps_applied:
        missing = [e[0] for i, e in enumerate(events) if i not in applied]
        lows.append(min(missing) if missing else 10 * len(events) + 10)
    return min(lows)

@given(set_histories(), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_members_converge_through_collection_transfers_repairs_and_restarts(events, seed):
    rng = random.Random(seed)
    n = 3
    reps = [Keyspace() for _ in range(n)]
    applied = [set() for _ in range(n)]
    floors = [0] * n
    order = [rng.sample(range(len(events)), len(events)) for _ in range(n)]
    steps = 0
    while any(order) and steps < 500:
        steps += 1
        i = rng.randrange(n)
        r = rng.random()
        if r < 0.5 and order[i]:
            j = order[i].pop()
            h, o, k, v = events[j]
            reps[i].apply_many(o, [(h, k, v)], floors[i]); applied[i].add(j)
        elif r < 0.6 and applied[i]:
            j = rng.choice(sorted(applied[i]))  # an old event pulled again
            h, o, k, v = events[j]
            reps[i].apply_many(o, [(h, k, v)], floors[i])
        elif r < 0.75:
            H = honest_h(applied, events)
            if rng.random() < 0.5:
                H = rng.randint(floors[i], max(floors[i], H))
            floors[i] = max(floors[i], H)
            reps[i].collect_tombstones(floors[i]); reps[i].compact_counters(floors[i])
        elif r < 0.85:
            # full transfer from p to i (as if i's vector became p's: only if p has all i has)
            p = rng.randrange(n)
            if p == i or not applied[i] <= applied[p]: continue
            H = floors[p]
            ents = list(reps[p].entries(H))
            keys = {e[0] for e in ents}
            reps[i].apply_entries(ents)
            reps[i].drop(stale_keys(reps[i], keys, H, "x"), H)
            reps[i].forget_counters_below(keys, H)
            applied[i] |= applied[p]
            order[i] = [j for j in order[i] if j not in applied[i]]
            floors[i] = max(floors[i], H)
        elif r < 0.9:
            snap = Keyspace(); snap.apply_entries(list(reps[i].entries(floors[i]))); reps[i] = snap
        else:
            p = rng.randrange(n)
            if applied[p] == applied[i] and p != i:
                merge(reps[i], list(reps[p].entries(floors[p])), floors[i])
    for i in range(n):
        for j in order[i]:
            h, o, k, v = events[j]
            reps[i].apply_many(o, [(h, k, v)], floors[i])
    want = reference(events)
    for ks in reps:
        assert set(ks.members(b"s")) == want, ([set(k.members(b"s")) for k in reps], want)


from zkv.store import parts
from zkv.store.orset import TAG_ADD, TAG_REMOVE, event

KEYS = [b"a", b"b", b"c"]


def check_index(ks: Keyspace) -> None:  # noqa: C901
    """The index of live fields and members, len(), live(), KEYS and SCAN's list, recomputed
    from the entries."""
    hashes, sets = {}, {}
    for k, (h, o, v) in ks.items():
        if k[:2] == parts.RESERVED and v is not None:
            kind, key, el = parts.split(k)
            (hashes if kind == parts.HASH else sets).setdefault(key, set()).add(el)
    assert {k: set(v) for k, v in ks.hashes.items()} == hashes, (ks.hashes, hashes)
    assert {k: set(v) for k, v in ks.sets.items()} == sets
    live = set(hashes) | set(sets) | {k for k, _ in ks.items() if k[:2] != parts.RESERVED and ks.get(k) is not None}
    alln = set(hashes) | set(sets) | {k for k, (h,o,v) in ks.items() if k[:2] != parts.RESERVED and v is not None}
    assert len(ks) == len(alln), (len(ks), alln)
    assert ks.live() == len(live), (ks.live(), live)
    assert set(ks.keys_matching(lambda k: True)) == live
    assert {k for k in ks.key_list() if ks.exists(k)} == live


def test_the_part_index_stays_in_step_with_the_entries() -> None:
    for seed in range(150):
        rng = random.Random(seed)
        ks = Keyspace()
        t = 100
        hz = 0
        for step in range(200):
            t += rng.randint(1, 5)
            o = rng.choice("xyz")
            k = rng.choice(KEYS)
            r = rng.random()
            ks.now_ms = t
            if r < 0.15:
                ks.apply_many(o, [(t << 16, k, rng.choice([b"v", None, [b"w", t + rng.randint(-3, 20)]]))])
            elif r < 0.35:
                ks.apply_many(o, [(t << 16, parts.part_key(parts.HASH, k, rng.choice([b"f", b"g"])), rng.choice([b"1", None, 2]))])
            elif r < 0.6:
                m = rng.choice([b"m", b"n"])
                pk = parts.part_key(parts.SET, k, m)
                dots = ks.dots(k, m)
                if rng.random() < 0.3:
                    dots = dots + [((t - rng.randint(1, 30)) << 16, rng.choice("xyz"))]
                ks.apply_many(o, [(t << 16, pk, event(rng.choice([TAG_ADD, TAG_REMOVE]), dots))])
            elif r < 0.65:
                hz = max(hz, (t - rng.randint(0, 30)) << 16); ks.collect_tombstones(hz)
            elif r < 0.7:
                ks.compact_counters(hz)
            elif r < 0.75:
                ks.reclaim_expired(hz, 0)
            elif r < 0.8:
                keys = [kk for kk, _ in ks.items()]
                if keys: ks.drop(rng.sample(keys, min(2, len(keys))), t << 16)
            elif r < 0.85:
                keys = {kk for kk, _ in ks.items() if rng.random() < 0.5}
                ks.forget_counters_below(keys, hz)
            elif r < 0.9:
                other = Keyspace()
                for kk, h, oo, v in ks.entries(hz):
                    if rng.random() < 0.5: other.apply(kk, h, oo, v)
                ks.apply_entries(list(other.entries(hz)))
            check_index(ks)
