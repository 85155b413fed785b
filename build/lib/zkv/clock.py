"""Hybrid logical clock: timestamps that follow wall time but never go backwards.

A timestamp is one integer: ``physical_ms << 16 | logical``.  ``now()`` stamps a local event,
``observe()`` folds in a timestamp seen from a peer so that anything stamped afterwards orders
after it (causality), even when the peer's wall clock runs ahead of ours.  Pure: the wall clock
is injected, so tests drive it by hand.

The clock is *bounded*: a peer's timestamp is adopted only if it is at most ``max_offset_ms``
ahead of our own wall clock (``observe`` returns False otherwise and leaves the clock alone).
Without the bound, one node whose clock runs an hour ahead would drag every peer's clock an hour
ahead, and its writes would beat every later write in the cluster for that hour.  Every
timestamp fits in 63 bits (``MAX_TS``): the log, msgpack and the keyspace's entry header all
take it, and anything larger off the wire is refused before it reaches a clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_TS = (1 << 63) - 1  # the largest timestamp any message, log record or entry may carry


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

    __slots__ = ("_last", "_wall", "_max_offset")

    def __init__(self, wall: Callable[[], int] = wall_ms, last: int = 0,
                 max_offset_ms: int | None = None) -> None:
        self._wall = wall
        self._last = last
        self._max_offset = max_offset_ms  # None: unbounded (tools that only read timestamps)

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        """A timestamp greater than every one issued or observed before."""
        candidate = self._wall() << LOGICAL_BITS
        last = self._last
        self._last = candidate if candidate > last else last + 1
        return self._last

    def issued(self, ts: int) -> None:
        """Move past ``ts``, a stamp this store handed out itself (``now()`` ... ``now() + n``);
        never bounded, or a later ``now()`` could repeat it."""
        if ts > self._last:
            self._last = ts

    def wall(self) -> int:
        """Our own wall clock, in milliseconds."""
        return self._wall()

    def limit(self) -> int:
        """The highest timestamp a peer may make this clock adopt: wall + max offset."""
        if self._max_offset is None:
            return MAX_TS
        return min(MAX_TS, ((self._wall() + self._max_offset) << LOGICAL_BITS) | LOGICAL_MASK)

    def observe(self, remote: int) -> bool:
        """Fold in a peer's timestamp so that later ``now()`` results order after it.

        Returns False, adopting nothing, when ``remote`` lies beyond ``limit()``: the caller
        holds back whatever carried it."""
        if remote <= self._last:
            return True
        if remote > self.limit():
            return False
        self._last = remote
        return True
