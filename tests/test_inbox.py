"""Unit and property tests for zkv.replication.inbox (per-origin ordering of incoming batches).

``Inbox.offer`` must hand out every event of an origin exactly once and in sequence order, drop
what was already applied, hold back batches that arrive after a gap (reporting the gap) and
release them once the gap is filled, whether by later batches or by a full state transfer
(``advance``) followed by ``release``.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.events import Batch
from zkv.replication.inbox import Inbox


def batch(first: int, last: int, origin: str = "a") -> Batch:
    """Events first..last of ``origin``; item i carries hlc = seq so content is checkable."""
    return Batch(origin, first, [(s, b"k%d" % s, b"v%d" % s) for s in range(first, last + 1)])


def span(b: Batch) -> tuple[int, int]:
    return b.first_seq, b.last_seq


def apply_all(inbox: Inbox, ready: list[Batch]) -> list[int]:
    """What a store does with offer()'s result: apply each batch, then mark it applied."""
    seqs: list[int] = []
    for b in ready:
        for e in b.events():
            assert e.hlc == e.seq, "batch content must stay aligned with its seq numbers"
            seqs.append(e.seq)
        inbox.applied(b.origin, b.last_seq)
    return seqs


# ------------------------------------------------------------------ in order, duplicates


def test_in_order_batches_are_applied() -> None:
    ib = Inbox()
    assert ib.expected("a") == 1
    ready, gap = ib.offer(batch(1, 3))
    assert [span(b) for b in ready] == [(1, 3)] and gap is False
    apply_all(ib, ready)
    assert ib.vv == {"a": 3}
    assert ib.expected("a") == 4
    ready, gap = ib.offer(batch(4, 4))
    assert [span(b) for b in ready] == [(4, 4)] and gap is False
    apply_all(ib, ready)
    assert ib.vv == {"a": 4}


def test_duplicate_batch_is_dropped() -> None:
    ib = Inbox()
    apply_all(ib, ib.offer(batch(1, 5))[0])
    assert ib.offer(batch(1, 5)) == ([], False)
    assert ib.offer(batch(3, 5)) == ([], False)
    assert ib.offer(batch(5, 5)) == ([], False)


def test_overlapping_batch_is_trimmed_to_the_new_part() -> None:
    ib = Inbox()
    apply_all(ib, ib.offer(batch(1, 5))[0])
    ready, gap = ib.offer(batch(3, 8))
    assert [span(b) for b in ready] == [(6, 8)] and not gap
    assert [e.seq for e in ready[0].events()] == [6, 7, 8]
    assert [e.hlc for e in ready[0].events()] == [6, 7, 8]


def test_origins_are_independent() -> None:
    ib = Inbox({"b": 10})
    assert ib.expected("b") == 11
    assert ib.expected("a") == 1
    ready, gap = ib.offer(batch(1, 2, "a"))
    assert [span(b) for b in ready] == [(1, 2)] and not gap
    ready, gap = ib.offer(batch(11, 11, "b"))
    assert [span(b) for b in ready] == [(11, 11)] and not gap
    ready, gap = ib.offer(batch(5, 5, "c"))
    assert ready == [] and gap
    assert ib.has_pending("c") and not ib.has_pending("a") and not ib.has_pending("b")


def test_initial_vector_is_copied() -> None:
    vv = {"a": 3}
    ib = Inbox(vv)
    ib.applied("a", 9)
    assert vv == {"a": 3}


def test_applied_never_lowers_the_vector() -> None:
    ib = Inbox({"a": 10})
    ib.applied("a", 4)
    assert ib.vv["a"] == 10
    ib.applied("a", 12)
    assert ib.vv["a"] == 12


# ------------------------------------------------------------------ gaps


def test_gap_is_reported_and_batch_held() -> None:
    ib = Inbox()
    apply_all(ib, ib.offer(batch(1, 2))[0])
    ready, gap = ib.offer(batch(5, 6))
    assert ready == [] and gap is True
    assert ib.has_pending("a")
    assert ib.vv == {"a": 2}  # nothing skipped


def test_held_batch_released_when_gap_filled() -> None:
    ib = Inbox()
    apply_all(ib, ib.offer(batch(1, 2))[0])
    ib.offer(batch(5, 6))
    ib.offer(batch(7, 9))
    ready, gap = ib.offer(batch(3, 4))
    assert [span(b) for b in ready] == [(3, 4), (5, 6), (7, 9)]
    assert gap is False
    assert apply_all(ib, ready) == list(range(3, 10))
    assert ib.vv == {"a": 9}
    assert not ib.has_pending("a")


def test_filling_part_of_the_gap_still_reports_gap() -> None:
    ib = Inbox()
    ib.offer(batch(10, 12))  # expected 1
    ready, gap = ib.offer(batch(1, 4))
    assert [span(b) for b in ready] == [(1, 4)]
    assert gap is True, "events 5..9 are still missing"
    assert ib.has_pending("a")


def test_overlapping_held_batches_released_without_duplicates() -> None:
    ib = Inbox()
    ib.offer(batch(4, 8))
    ib.offer(batch(6, 12))
    ib.offer(batch(5, 6))
    ib.offer(batch(13, 13))
    ready, gap = ib.offer(batch(1, 5))
    seqs = apply_all(ib, ready)
    assert seqs == list(range(1, 14))
    assert not gap
    assert not ib.has_pending("a")


def test_filler_overlapping_held_batch() -> None:
    ib = Inbox()
    ib.offer(batch(3, 6))
    ready, gap = ib.offer(batch(1, 4))  # overlaps the held one
    assert apply_all(ib, ready) == [1, 2, 3, 4, 5, 6]
    assert not gap


def test_held_batch_made_stale_by_filler_is_discarded() -> None:
    ib = Inbox()
    ib.offer(batch(3, 4))
    ready, gap = ib.offer(batch(1, 10))
    assert apply_all(ib, ready) == list(range(1, 11))
    assert not gap and not ib.has_pending("a")


def test_max_pending_bounds_held_batches_but_still_reports_gap() -> None:
    ib = Inbox(max_pending=2)
    assert ib.offer(batch(10, 10)) == ([], True)
    assert ib.offer(batch(20, 20)) == ([], True)
    assert ib.offer(batch(30, 30)) == ([], True)  # not held, but the gap is still reported
    ready, gap = ib.offer(batch(1, 9))
    assert [span(b) for b in ready] == [(1, 9), (10, 10)]
    assert gap is True  # 20 still held, 11..19 missing


def test_shorter_duplicate_held_batch_does_not_replace_longer_one() -> None:
    ib = Inbox()
    ib.offer(batch(5, 10))   # held: gap 1..4
    ib.offer(batch(5, 6))    # same start, shorter (e.g. a catch-up reply page)
    ready, gap = ib.offer(batch(1, 4))
    # The longer batch was kept: filling 1..4 releases all of 5..10, and nothing is missing.
    assert apply_all(ib, ready) == list(range(1, 11))
    assert gap is False and not ib.has_pending("a")
    assert ib.vv == {"a": 10}


def test_longer_duplicate_held_batch_replaces_shorter_one() -> None:
    ib = Inbox()
    ib.offer(batch(5, 6))    # held: gap 1..4
    ib.offer(batch(5, 10))   # same start, longer
    ready, gap = ib.offer(batch(1, 4))
    assert apply_all(ib, ready) == list(range(1, 11))
    assert gap is False and not ib.has_pending("a")


# ------------------------------------------------------------------ full state transfer


def test_advance_then_release() -> None:
    ib = Inbox()
    apply_all(ib, ib.offer(batch(1, 2))[0])
    ib.offer(batch(8, 9))     # stale after the transfer: dropped
    ib.offer(batch(10, 14))   # straddles the transfer point: released from 13
    ib.offer(batch(15, 16))
    ib.offer(batch(20, 20))   # beyond another gap: stays held
    ib.advance({"a": 12, "b": 7})
    assert ib.vv == {"a": 12, "b": 7}
    assert ib.expected("a") == 13
    ready = ib.release("a")
    assert [span(b) for b in ready] == [(13, 14), (15, 16)]
    assert apply_all(ib, ready) == [13, 14, 15, 16]
    assert ib.vv["a"] == 16
    assert ib.has_pending("a")  # 20
    assert ib.release("a") == []


def test_advance_never_lowers_the_vector() -> None:
    ib = Inbox({"a": 10, "b": 3})
    ib.advance({"a": 5, "b": 8})
    assert ib.vv == {"a": 10, "b": 8}


def test_advance_drops_fully_covered_pending() -> None:
    ib = Inbox()
    ib.offer(batch(3, 5))
    ib.advance({"a": 5})
    assert not ib.has_pending("a")
    assert ib.release("a") == []


def test_release_with_nothing_held() -> None:
    assert Inbox().release("zz") == []


# ------------------------------------------------------------------ property


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    """Batches covering 1..n, cut at random points, plus random re-sends, in random order."""
    n = draw(st.integers(1, 30))
    cuts = sorted(draw(st.sets(st.integers(2, n), max_size=8))) if n > 1 else []
    bounds = [1, *cuts, n + 1]
    spans = [(bounds[i], bounds[i + 1] - 1) for i in range(len(bounds) - 1)]
    # Re-sends of any span, including ones that start where another batch starts and end
    # elsewhere (a catch-up reply page against a live batch).
    resends = draw(st.lists(
        st.tuples(st.integers(1, n), st.integers(0, 5)).map(lambda t: (t[0], min(n, t[0] + t[1]))),
        max_size=6))
    return n, draw(st.permutations(spans + resends))


@given(deliveries())
@settings(max_examples=100)
def test_every_event_applied_exactly_once_in_order(case: tuple[int, list[tuple[int, int]]]) -> None:
    n, spans = case
    ib = Inbox()
    applied: list[int] = []
    for f, last in spans:
        ready, gap = ib.offer(batch(f, last))
        applied += apply_all(ib, ready)
        if ready:  # after applying, a gap is reported exactly when something is still held
            assert gap == ib.has_pending("a")
        elif f > ib.expected("a"):
            assert gap, "a batch beyond the next expected seq must report a gap"
    assert applied == list(range(1, n + 1))
    assert ib.vv["a"] == n
    assert not ib.has_pending("a")


def test_pending_is_bounded_in_bytes() -> None:
    """Held-back batches (after a gap) cannot pile up without bound: past max_pending_bytes a
    batch is not held (it will be pulled again once the gap is filled)."""
    from zkv.events import Batch

    inbox = Inbox(max_pending_bytes=3000)
    big = b"x" * 1000
    assert inbox.offer(Batch("o", 3, [(1, b"a", big)])) == ([], True)
    assert inbox.offer(Batch("o", 4, [(2, b"b", big)])) == ([], True)
    assert inbox.offer(Batch("o", 5, [(3, b"c", big)])) == ([], True)  # over the bound: dropped
    assert inbox.pending_bytes <= 3000
    ready, gap = inbox.offer(Batch("o", 1, [(0, b"z", b"1"), (0, b"y", b"2")]))
    assert [(b.first_seq, b.last_seq) for b in ready] == [(1, 2), (3, 3), (4, 4)]
    assert not gap and inbox.pending_bytes == 0


def test_gaps_held_ranges_and_lowest_stamp() -> None:
    from zkv.events import Batch
    from zkv.replication.inbox import Inbox
    ib = Inbox({"a": 2})
    assert ib.gaps() == {} and ib.held_ranges() == {} and ib.lowest_held_stamp() is None
    ib.offer(Batch("a", 5, [(50, b"k", b"v"), (51, b"k", b"w")]))
    ib.offer(Batch("a", 9, [(90, b"k", None)]))
    assert ib.gaps() == {"a": 5}
    assert ib.held_ranges() == {"a": [5, 9]}
    assert ib.lowest_held_stamp() == 50
