"""Hybrid logical clock: timestamps that follow wall time but never go backwards.

A timestamp is one integer: ``physical_ms << 16 | logical``.  ``now()`` stamps a local event,
``observe()`` folds in a timestamp seen from a peer so that anything stamped afterwards orders
after it (causality), even when the peer's wall clock runs ahead of ours.  Pure: the wall clock
is injected, so tests drive it by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def physical(ts: int) -> int:
    """Milliseconds since the epoch of a timestamp."""
    return ts >> LOGICAL_BITS


def logical(ts: int) -> int:
    return ts & LOGICAL_MASK


def make(physical_ms: int, counter: int = 0) -> int:
    return (physical_ms << LOGICAL_BITS) | counter


class HybridClock:
    """Monotonic HLC.  Not thread-safe: one clock belongs to one store loop."""

    __slots__ = ("_last", "_wall")

    def __init__(self, wall: Callable[[], int] = wall_ms, last: int = 0) -> None:
        self._wall = wall
        self._last = last

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        """A timestamp greater than every one issued or observed before."""
        candidate = self._wall() << LOGICAL_BITS
        last = self._last
        self._last = candidate if candidate > last else last + 1
        return self._last

    def observe(self, remote: int) -> None:
        """Fold in a peer's timestamp: later ``now()`` results order after it."""
        if remote > self._last:
            self._last = remote
