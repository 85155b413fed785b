"""Unit and property tests for zkv.clock (the hybrid logical clock).

The wall clock is injected, so every test drives it by hand: it may stall, jump forward or go
backwards, and ``now()`` must still be strictly increasing, follow the wall clock when it can,
and order after every timestamp ``observe()``-d from a peer.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zkv import clock
from zkv.clock import LOGICAL_BITS, LOGICAL_MASK, MAX_TS, HybridClock, logical, make, physical


class FakeWall:
    """A hand-driven wall clock in milliseconds."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def clock_at(ms: int) -> tuple[HybridClock, FakeWall]:
    wall = FakeWall(ms)
    return HybridClock(wall), wall


# ------------------------------------------------------------------ helpers physical/logical/make


def test_make_packs_physical_and_logical() -> None:
    assert LOGICAL_BITS == 16
    assert LOGICAL_MASK == 0xFFFF
    assert make(1000) == 1000 << 16
    assert make(1000, 7) == (1000 << 16) | 7
    assert make(0, 0) == 0


@given(st.integers(0, 2**47), st.integers(0, LOGICAL_MASK))
@settings(max_examples=50)
def test_make_physical_logical_roundtrip(ms: int, counter: int) -> None:
    ts = make(ms, counter)
    assert physical(ts) == ms
    assert logical(ts) == counter


def test_timestamps_order_by_physical_then_logical() -> None:
    assert make(1000, 65535) < make(1001, 0)
    assert make(1000, 1) > make(1000, 0)


def test_wall_ms_is_current_time_in_ms() -> None:
    import time

    before = time.time_ns() // 1_000_000
    got = clock.wall_ms()
    after = time.time_ns() // 1_000_000
    assert before <= got <= after


def test_default_clock_uses_the_real_wall_clock() -> None:
    import time

    c = HybridClock()
    before = time.time_ns() // 1_000_000
    ts = c.now()
    assert abs(physical(ts) - before) < 5_000


# ------------------------------------------------------------------ now()


def test_now_follows_wall_clock_with_zero_logical() -> None:
    c, wall = clock_at(1_000)
    assert c.now() == make(1_000, 0)
    wall.ms = 1_005
    assert c.now() == make(1_005, 0)
    assert c.last == make(1_005, 0)


def test_stalled_wall_clock_bumps_logical_counter() -> None:
    c, _wall = clock_at(1_000)
    got = [c.now() for _ in range(5)]
    assert got == [make(1_000, i) for i in range(5)]
    assert [logical(t) for t in got] == [0, 1, 2, 3, 4]
    assert all(physical(t) == 1_000 for t in got)


def test_wall_clock_going_backwards_keeps_now_monotonic() -> None:
    c, wall = clock_at(5_000)
    a = c.now()
    wall.ms = 4_000  # NTP step backwards
    b = c.now()
    cc = c.now()
    assert a < b < cc
    assert physical(b) == 5_000 and logical(b) == 1
    assert logical(cc) == 2
    wall.ms = 5_001  # wall clock catches up: back to (wall, 0)
    d = c.now()
    assert d == make(5_001, 0)
    assert d > cc


def test_counter_resets_when_wall_clock_advances() -> None:
    c, wall = clock_at(10)
    c.now(), c.now(), c.now()
    wall.ms = 11
    assert c.now() == make(11, 0)


def test_initial_last_is_respected() -> None:
    """A clock restored after a restart never issues below what it issued before."""
    wall = FakeWall(100)
    c = HybridClock(wall, last=make(200, 3))
    assert c.last == make(200, 3)
    assert c.now() == make(200, 4)


# ------------------------------------------------------------------ observe()


def test_observe_remote_ahead_makes_now_greater() -> None:
    c, _wall = clock_at(1_000)
    remote = make(9_000, 42)  # a peer whose wall clock runs 8 s ahead
    c.observe(remote)
    assert c.last == remote
    ts = c.now()
    assert ts > remote
    assert ts == make(9_000, 43)


def test_observe_remote_behind_changes_nothing() -> None:
    c, _wall = clock_at(1_000)
    first = c.now()
    c.observe(make(500, 9))
    assert c.last == first
    assert c.now() == make(1_000, 1)


def test_observe_then_wall_overtakes_remote() -> None:
    c, wall = clock_at(1_000)
    c.observe(make(2_000, 5))
    wall.ms = 3_000
    assert c.now() == make(3_000, 0)


def test_observe_equal_to_last_is_harmless() -> None:
    c, _wall = clock_at(1_000)
    t = c.now()
    c.observe(t)
    assert c.now() > t


# ------------------------------------------------------------------ property


Op = tuple[str, int]


@given(st.lists(st.one_of(
    st.tuples(st.just("wall"), st.integers(0, 10_000)),
    st.tuples(st.just("now"), st.just(0)),
    st.tuples(st.just("observe"), st.integers(0, make(12_000))),
), max_size=60))
@settings(max_examples=150)
def test_now_strictly_increases_and_dominates_everything_seen(ops: list[Op]) -> None:
    wall = FakeWall(1_000)
    c = HybridClock(wall)
    issued: list[int] = []
    seen_max = 0
    for kind, x in ops:
        if kind == "wall":
            wall.ms = x
        elif kind == "observe":
            c.observe(x)
            seen_max = max(seen_max, x)
        else:
            ts = c.now()
            assert ts > seen_max, "now() must order after every issued/observed timestamp"
            assert ts >= wall.ms << LOGICAL_BITS, "now() never lags the wall clock"
            if issued:
                assert ts > issued[-1]
            issued.append(ts)
            seen_max = ts
        assert c.last >= seen_max



# ------------------------------------------------------------------ the bound


def test_observe_refuses_a_timestamp_beyond_the_bound() -> None:
    wall = FakeWall(10_000)
    c = HybridClock(wall, max_offset_ms=500)
    assert c.observe(make(10_400)) is True
    assert physical(c.now()) == 10_400
    assert c.observe(make(10_501)) is False  # 501 ms ahead: not adopted
    assert physical(c.now()) == 10_400
    wall.ms = 10_100  # our clock moved on: 10_501 is now within the bound
    assert c.observe(make(10_501)) is True
    assert physical(c.now()) == 10_501


def test_no_timestamp_however_large_breaks_the_clock() -> None:
    c = HybridClock(FakeWall(10_000), max_offset_ms=500)
    assert c.observe(MAX_TS) is False
    assert c.observe(2**64 - 1) is False
    assert physical(c.now()) == 10_000


def test_own_stamps_are_never_bounded() -> None:
    """A store hands out now(), now()+1, ... in one turn; the clock must pass the last one even
    if it lies beyond the bound, or a later now() would repeat it."""
    c = HybridClock(FakeWall(10_000), max_offset_ms=1)
    t = c.now()
    c.issued(t + 70_000 << 16)
    assert c.now() > t + 70_000 << 16
