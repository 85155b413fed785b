"""Which keys the frontend's read cache may hold, and which of them it must be told to drop.

The frontend's read cache (zkv.frontend.readcache) learns of changes it did not ask for -
replicated writes, repairs, transfers - from *invalidations* the store sends on the reply
connection, before any reply computed after the change.  Only keys it may hold are named: those
it read since it was last told of a change to them (*tracked*, as in Redis's client-side
caching; its own writes only update keys already cached), each once, so a frontend that does
not read what peers write hears little.  Bounded, as Redis's tracking table is: past ``max_keys``
some tracked keys are dropped and named in an invalidation, so the frontend stops caching exactly
what is no longer tracked.  A bulk change (a repair, a transfer) or a flood of names says
"forget everything" instead.  Pure: the store sends what ``take`` returns.
"""

from __future__ import annotations

from collections.abc import Iterable

from zkv.store.parts import RESERVED, split

INVALIDATE_MAX_KEYS = 10_000  # beyond this per turn, "forget everything" is cheaper for both sides
TRACK_EVICT = 1_000  # keys untracked (and invalidated) at a time once max_keys is reached


class Tracking:
    __slots__ = ("keys", "max_keys", "changed", "forget_all")

    def __init__(self, max_keys: int) -> None:
        self.keys: set[bytes] = set()  # read by the frontend, not changed since
        self.max_keys = max_keys
        self.changed: list[bytes] = []  # to invalidate: tracked keys changed, or untracked
        self.forget_all = False  # the frontend must drop its whole cache

    @property
    def pending(self) -> bool:
        return bool(self.changed) or self.forget_all

    def forget(self) -> None:
        """A bulk change: everything the frontend holds may be stale."""
        self.forget_all = True

    def note_changes(self, items: Iterable[tuple[int, bytes, bytes | None]]) -> None:
        """Writes the frontend did not make (replicated events): name the tracked keys among
        them, each once (a new read tracks it again)."""
        keys = self.keys
        if not keys or self.forget_all:
            return
        changed = self.changed
        for _hlc, key, _value in items:
            if key[:2] == RESERVED:  # a hash's field, a set's member: its key's type may change
                key = split(key)[1]
            if key in keys:
                keys.discard(key)
                changed.append(key)
        if len(changed) > INVALIDATE_MAX_KEYS:  # cheaper to forget all than to list
            self.forget_all = True

    def bound(self) -> None:
        """Bring the tracked set back under its bound: stop tracking arbitrary keys, a small
        slice more than the excess so this runs once per TRACK_EVICT new reads, not per read.
        They are named in the next invalidation, after the replies that may cache them."""
        if len(self.keys) <= self.max_keys:
            return
        count = min(len(self.keys), len(self.keys) - self.max_keys + TRACK_EVICT)
        if count + len(self.changed) > INVALIDATE_MAX_KEYS:  # a flood of new reads in one turn
            self.forget_all = True  # (which also empties the tracked set)
            return
        pop = self.keys.pop
        for _ in range(count):
            self.changed.append(pop())

    def take(self) -> list[bytes] | None:
        """The next invalidation's content (None: forget everything), and start afresh."""
        keys = None if self.forget_all else self.changed
        if self.forget_all:
            self.keys.clear()
        self.changed = []
        self.forget_all = False
        return keys
