"""Unit tests for zkv.frontend.readcache and for how a connection uses it (no sockets).

The connection side is driven like tests/test_frontend_flow.py: a recording link stands in for
the store, so each test decides what the store answers and when; ``answer`` does what
StoreLink does with a reply (tests/test_storelink.py checks StoreLink itself).
"""

from __future__ import annotations

from zkv.frontend.readcache import ENTRY_OVERHEAD, MISS, ReadCache
from tests.test_frontend_flow import RecordingLink, connect


def answer(link: RecordingLink, cache: ReadCache, i: int, results: list | None) -> None:
    ops, callback = link.pending[i]
    if results is None:
        cache.clear()
    else:
        cache.learn(ops, results)
    callback(results)


def test_put_lookup_absent_and_invalidate() -> None:
    c = ReadCache(1 << 20)
    assert c.lookup(b"k") is MISS
    c.put(b"k", b"v")
    c.put(b"gone", None)
    assert c.lookup(b"k") == b"v" and c.lookup(b"gone") is None
    c.invalidate([b"k", b"never-cached"])
    assert c.lookup(b"k") is MISS and len(c) == 1
    c.clear()
    assert len(c) == 0 and c.size == 0


def test_budget_evicts_oldest_first_and_accounts_bytes() -> None:
    c = ReadCache(3 * (2 + 4 + ENTRY_OVERHEAD))
    for i in range(5):
        c.put(b"k%d" % i, b"vvvv")
    assert [k for k in (b"k0", b"k1", b"k2", b"k3", b"k4") if c.lookup(k) is not MISS] == [b"k2", b"k3", b"k4"]
    assert c.size == 3 * (2 + 4 + ENTRY_OVERHEAD)
    c.put(b"k3", b"")  # replacing updates the size, not adds to it
    assert c.size == 2 * (2 + 4 + ENTRY_OVERHEAD) + 2 + ENTRY_OVERHEAD
    c.put(b"huge", b"x" * (1 << 20))  # larger than the whole budget: not kept, nothing evicted
    assert c.lookup(b"huge") is MISS and len(c) == 3
    c.put(b"k4", b"x" * (1 << 20))  # an entry that grows past the budget leaves
    assert c.lookup(b"k4") is MISS and c.size == 2 + ENTRY_OVERHEAD + 2 + 4 + ENTRY_OVERHEAD


def test_read_is_answered_from_the_cache_once_the_store_has_answered_it() -> None:
    cache = ReadCache(1 << 20)
    conn, t, link = connect(cache)
    conn.data_received(b"GET k\n")
    assert len(link.pending) == 1
    answer(link, cache, 0, [b"v1"])
    conn.data_received(b"GET k\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    assert len(link.pending) == 1, "the cached key went to the store again"
    assert t.out == b"VALUE v1\nVALUE v1\n$2\r\nv1\r\n"
    conn.data_received(b"GET other\n")  # not cached: to the store
    assert len(link.pending) == 2


def test_a_write_is_cached_when_acknowledged_not_before() -> None:
    cache = ReadCache(1 << 20)
    cache.put(b"k", b"old")
    conn, t, link = connect(cache)
    conn.data_received(b"SET k new\nGET k\n")  # the GET follows an unapplied write: store
    assert [op for ops, _cb in link.pending for op in ops] == [("s", b"k", b"new"), ("g", b"k")]
    assert cache.lookup(b"k") == b"old"
    answer(link, cache, 0, [None, b"new"])
    assert t.out == b"OK\nVALUE new\n"
    assert cache.lookup(b"k") == b"new"
    conn.data_received(b"DEL k\n")
    answer(link, cache, 1, [1])
    conn.data_received(b"GET k\n")
    assert len(link.pending) == 2 and t.out.endswith(b"OK\nNOT FOUND\n")


def test_a_read_waits_behind_this_clients_pending_requests() -> None:
    cache = ReadCache(1 << 20)
    cache.put(b"k", b"cached")
    conn, t, link = connect(cache)
    conn.data_received(b"SET k mine\n")
    conn.data_received(b"GET k\n")  # a separate read, but the SET is still owed: store
    assert len(link.pending) == 2
    answer(link, cache, 0, [None])
    answer(link, cache, 1, [b"mine"])
    assert t.out == b"OK\nVALUE mine\n"


def test_learn_allocates_on_read_and_updates_on_write() -> None:
    cache = ReadCache(1 << 20)
    cache.learn([("g", b"a"), ("s", b"b", b"2"), ("d", b"c"), ("g", b"d"), ("n",), ("s", b"a", b"9"),
                 ("d", b"d")],
                [b"1", None, 1, b"4", 7, None, 1])
    # a: read, then overwritten; b, c: written only, so not cached; d: read, then deleted
    assert [cache.lookup(k) for k in (b"a", b"b", b"c", b"d")] == [b"9", MISS, MISS, None]
    assert len(cache) == 2


def test_learn_caches_only_the_last_word_on_each_key_within_budget() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    keys = st.sampled_from([b"a", b"bb", b"ccc", b"dddd"])
    values = st.one_of(st.none(), st.binary(max_size=300))
    op = st.one_of(st.tuples(st.just("s"), keys, st.binary(max_size=300)).map(lambda t: (t, None)),
                   st.tuples(st.just("g"), keys).flatmap(lambda t: values.map(lambda v: (t, v))),
                   st.tuples(st.just("d"), keys).map(lambda t: (t, 1)),
                   st.just((("n",), 3)))

    @given(st.lists(op, max_size=40), st.integers(200, 1200))
    @settings(max_examples=300)
    def check(pairs: list, budget: int) -> None:
        c = ReadCache(budget)
        c.learn([o for o, _r in pairs], [r for _o, r in pairs])
        last: dict[bytes, bytes | None] = {}  # what the store said last about each key
        for o, r in pairs:
            if o[0] in ("s", "g", "d"):
                last[o[1]] = o[2] if o[0] == "s" else r if o[0] == "g" else None
        for k, v in c._d.items():  # evictions may differ from put's; values may not
            assert last[k] == v
        assert c.size == sum(len(k) + len(v or b"") + ENTRY_OVERHEAD for k, v in c._d.items())
        assert c.size <= budget

    check()


def test_writes_the_store_decides_forget_their_keys_and_keep_the_size_true() -> None:
    c = ReadCache(1 << 20)
    for k in (b"a", b"b", b"c", b"d"):
        c.put(k, b"vv")
    c.learn([("ap", b"a", b"x"), ("rn", b"b", b"c"), ("g", b"e")], [3, 1, b"new"])
    assert [c.lookup(k) is MISS for k in (b"a", b"b", b"c", b"d", b"e")] == [True, True, True, False, False]
    assert c.size == 2 * ENTRY_OVERHEAD + 1 + 2 + 1 + 3, "the size counts what is cached, no more"
    c.learn([("fa",)], [1])
    assert len(c) == 0 and c.size == 0


def test_a_value_that_expires_is_answered_but_never_kept() -> None:
    c = ReadCache(1 << 20)
    c.put(b"k", b"old")
    results = [[b"v", 1_780_000_000_000], b"w"]
    c.learn([("g", b"k"), ("g", b"j")], results)
    assert results == [b"v", b"w"], "the client gets the bare value"
    assert c.lookup(b"k") is MISS and c.lookup(b"j") == b"w"
    assert c.size == 1 + 1 + ENTRY_OVERHEAD
