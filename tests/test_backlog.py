"""Unit and property tests for zkv.replication.backlog (the bounded in-memory replication backlog).

``since(origin, after)`` must return the stored payloads covering every event after ``after`` (the
first may start earlier), say whether more remain past ``max_events``, raise ``TooOld`` once the
start was trimmed, start over when a batch does not join up, and trimming must keep at least
``limit`` events so that a peer at most ``limit`` events behind can always catch up.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.replication.backlog import Backlog, TooOld


def payload(first: int, last: int) -> bytes:
    return b"%d-%d" % (first, last)


def fill(bl: Backlog, sizes: list[int], origin: str = "a", start: int = 1) -> list[tuple[int, int]]:
    """Add consecutive batches of the given sizes; returns their (first, last) spans."""
    spans = []
    seq = start
    for n in sizes:
        bl.add(origin, seq, seq + n - 1, payload(seq, seq + n - 1))
        spans.append((seq, seq + n - 1))
        seq += n
    return spans


def spans_of(payloads: list[bytes]) -> list[tuple[int, int]]:
    out = []
    for p in payloads:
        f, last = p.split(b"-")
        out.append((int(f), int(last)))
    return out


# ------------------------------------------------------------------ since()


def test_empty_backlog() -> None:
    bl = Backlog(100)
    assert bl.since("a", 0) == ([], False)
    assert bl.oldest("a") is None
    assert bl.newest("a") == 0


def test_since_returns_batches_after_seq() -> None:
    bl = Backlog(100)
    fill(bl, [3, 2, 4])  # 1-3, 4-5, 6-9
    assert bl.oldest("a") == 1
    assert bl.newest("a") == 9
    assert bl.since("a", 0) == ([b"1-3", b"4-5", b"6-9"], False)
    assert bl.since("a", 3) == ([b"4-5", b"6-9"], False)
    # the first payload may start before after+1: the receiver skips what it has
    assert bl.since("a", 2) == ([b"1-3", b"4-5", b"6-9"], False)
    assert bl.since("a", 4) == ([b"4-5", b"6-9"], False)
    assert bl.since("a", 8) == ([b"6-9"], False)
    assert bl.since("a", 9) == ([], False)  # up to date
    assert bl.since("a", 50) == ([], False)  # ahead (e.g. after our own restart)


def test_since_is_per_origin() -> None:
    bl = Backlog(100)
    fill(bl, [2], origin="a")
    fill(bl, [5], origin="b")
    assert bl.since("a", 0) == ([b"1-2"], False)
    assert bl.since("b", 0) == ([b"1-5"], False)
    assert bl.since("c", 0) == ([], False)


def test_more_flag_with_max_events() -> None:
    bl = Backlog(1000)
    fill(bl, [3, 3, 3, 3])  # 1-3, 4-6, 7-9, 10-12
    assert bl.since("a", 0, max_events=3) == ([b"1-3"], True)
    assert bl.since("a", 0, max_events=4) == ([b"1-3", b"4-6"], True)
    assert bl.since("a", 0, max_events=12) == ([b"1-3", b"4-6", b"7-9", b"10-12"], False)
    assert bl.since("a", 0, max_events=1000) == ([b"1-3", b"4-6", b"7-9", b"10-12"], False)
    assert bl.since("a", 3, max_events=6) == ([b"4-6", b"7-9"], True)
    assert bl.since("a", 3, max_events=9) == ([b"4-6", b"7-9", b"10-12"], False)


def test_max_events_counts_only_events_after_seq() -> None:
    bl = Backlog(1000)
    fill(bl, [10, 3])  # 1-10, 11-13
    # after=8: the first batch contributes only 9 and 10 (2 events), so 3 more fit
    assert bl.since("a", 8, max_events=5) == ([b"1-10", b"11-13"], False)
    assert bl.since("a", 8, max_events=2) == ([b"1-10"], True)


def test_since_always_makes_progress() -> None:
    bl = Backlog(1000)
    fill(bl, [50])
    assert bl.since("a", 0, max_events=1) == ([b"1-50"], False)


# ------------------------------------------------------------------ trimming / TooOld


def test_too_old_after_trim() -> None:
    bl = Backlog(10)
    fill(bl, [1] * 30)
    oldest = bl.oldest("a")
    assert oldest is not None and oldest > 1
    with pytest.raises(TooOld) as exc:
        bl.since("a", 0)
    assert exc.value.oldest == oldest
    with pytest.raises(TooOld):
        bl.since("a", oldest - 2)
    payloads, more = bl.since("a", oldest - 1)
    assert spans_of(payloads)[0] == (oldest, oldest)
    assert not more


def test_trim_keeps_at_least_limit_events_single_event_batches() -> None:
    bl = Backlog(10)
    fill(bl, [1] * 100)
    newest = bl.newest("a")
    assert newest == 100
    payloads, _ = bl.since("a", newest - 10)  # exactly `limit` events behind: served
    assert spans_of(payloads)[-1] == (100, 100)
    assert len(payloads) == 10
    # bounded: never more than limit + limit // 4 events held
    oldest = bl.oldest("a")
    assert oldest is not None and newest - oldest + 1 <= 10 + 10 // 4


def test_trim_keeps_at_least_one_batch_even_if_huge() -> None:
    bl = Backlog(10)
    fill(bl, [100])
    assert bl.oldest("a") == 1
    fill(bl, [100], start=101)
    assert bl.oldest("a") == 101  # the older batch goes, the newest stays
    assert bl.since("a", 150) == ([b"101-200"], False)


def test_trim_keeps_at_least_limit_events_multi_event_batches() -> None:
    bl = Backlog(10)
    fill(bl, [4, 4, 4, 4])  # 1-4, 5-8, 9-12, 13-16: 16 events > 12, so trimmed
    newest = bl.newest("a")
    assert newest == 16
    oldest = bl.oldest("a")
    assert oldest is not None and 1 < oldest <= newest - 10 + 1, "trimmed, yet >= limit events kept"
    payloads, more = bl.since("a", newest - 10)  # a peer `limit` events behind must still be served
    got = spans_of(payloads)
    assert got[0][0] <= newest - 10 + 1 and got[-1][1] == newest and not more, got
    assert all(got[i][1] + 1 == got[i + 1][0] for i in range(len(got) - 1)), f"not contiguous: {got}"
    with pytest.raises(TooOld):
        bl.since("a", 0)  # the trimmed start is no longer served


@given(st.integers(10, 40), st.lists(st.integers(1, 6), min_size=1, max_size=60))
@settings(max_examples=100)
def test_trim_bounds_memory(limit: int, sizes: list[int]) -> None:
    bl = Backlog(limit)
    spans = fill(bl, sizes)
    oldest = bl.oldest("a")
    assert oldest is not None
    held = [s for s in spans if s[0] >= oldest]
    held_events = sum(last - f + 1 for f, last in held)
    # trimming starts above limit * 1.25 and may keep one (possibly large) batch beyond that
    assert held_events <= limit + limit // 4 + max(sizes)
    # what is held is served intact, in order
    payloads, more = bl.since("a", oldest - 1, max_events=10**9)
    assert spans_of(payloads) == held and not more
    assert held[0][0] in {f for f, _ in spans}


# ------------------------------------------------------------------ reset on a gap


def test_non_contiguous_add_resets_the_origin_log() -> None:
    bl = Backlog(100)
    fill(bl, [3, 3])  # 1-6
    bl.add("a", 20, 22, payload(20, 22))  # after a full state transfer: 7..19 never seen
    assert bl.oldest("a") == 20
    assert bl.newest("a") == 22
    with pytest.raises(TooOld) as exc:
        bl.since("a", 3)
    assert exc.value.oldest == 20
    assert bl.since("a", 19) == ([b"20-22"], False)
    bl.add("a", 23, 23, payload(23, 23))
    assert bl.since("a", 19) == ([b"20-22", b"23-23"], False)


def test_reset_restarts_event_count() -> None:
    bl = Backlog(10)
    fill(bl, [9])                  # 1-9
    bl.add("a", 50, 54, b"50-54")  # reset: 5 events held, not 14
    bl.add("a", 55, 58, b"55-58")  # 9 events: no trim (threshold 12)
    assert bl.oldest("a") == 50


def test_reset_does_not_touch_other_origins() -> None:
    bl = Backlog(100)
    fill(bl, [3], origin="a")
    fill(bl, [3], origin="b")
    bl.add("a", 10, 10, b"10-10")
    assert bl.since("b", 0) == ([b"1-3"], False)


def test_too_old_carries_oldest() -> None:
    e = TooOld(42)
    assert e.oldest == 42
    assert isinstance(e, Exception)


# ------------------------------------------------------------------ property: since() coverage


@given(st.lists(st.integers(1, 5), min_size=1, max_size=30), st.data())
@settings(max_examples=100)
def test_since_covers_every_event_after(sizes: list[int], data: st.DataObject) -> None:
    bl = Backlog(10_000)  # no trimming here
    spans = fill(bl, sizes)
    newest = spans[-1][1]
    after = data.draw(st.integers(0, newest))
    max_events = data.draw(st.integers(1, 40))
    payloads, more = bl.since("a", after, max_events=max_events)
    got = spans_of(payloads)
    assert got == [s for s in spans if s[1] > after][: len(got)]
    if after < newest:
        assert got, "progress: at least one batch"
        assert got[0][0] <= after + 1 <= got[0][1]
    new_events = sum(last - max(f, after + 1) + 1 for f, last in got)
    assert more == (got[-1][1] < newest if got else False)
    if more:
        assert new_events >= max_events
    # paging with `more` reaches the newest event
    cursor = after
    for _ in range(100):
        p, m = bl.since("a", cursor, max_events=max_events)
        if p:
            cursor = spans_of(p)[-1][1]
        if not m:
            break
    assert cursor == newest or after >= newest
