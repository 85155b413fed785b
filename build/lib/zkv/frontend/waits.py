"""The frontend's view of which peers have applied this node's writes, and who waits for it.

The store tells the frontend each peer's applied sequence number of this node's current origin
(an ``[ACKS, ...]`` message on the store link whenever it grows, and a snapshot in every reply
to a ``("w",)`` op, which also carries the target: our sequence number after every write sent
before it).  ``WAIT`` and ``min_acks`` register here with that target; a waiter is answered
with the count of peers at or past it as soon as ``need`` of them are, or when its timer fires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class Waiter:
    target: int
    need: int
    done: Callable[[int], None]
    timer: asyncio.TimerHandle | None = None
    finished: bool = False  # answered or cancelled


class AckWaiters:
    def __init__(self) -> None:
        self.acked: dict[str, int] = {}
        self.waiting: list[Waiter] = []

    def count(self, target: int) -> int:
        return sum(1 for s in self.acked.values() if s >= target)

    def learn(self, acked: object) -> None:
        """Take the store's latest table (peer -> seq) as it is: the store's messages arrive in
        order, and a peer's figure may go down (it restarted without some writes).  Waiters
        are looked at only when a figure went up."""
        if acked.__class__ is not dict or acked == self.acked:
            return
        old = self.acked
        self.acked = {p: s for p, s in acked.items() if s.__class__ is int}  # type: ignore[attr-defined]
        if self.waiting and any(s > old.get(p, -1) for p, s in self.acked.items()):
            still = []
            for w in self.waiting:
                n = self.count(w.target)
                if n >= w.need:
                    self._finish(w, n)
                else:
                    still.append(w)
            self.waiting = still

    def wait(self, target: int, need: int, timeout_s: float | None, done: Callable[[int], None],
             loop: asyncio.AbstractEventLoop) -> Waiter | None:
        """Call ``done(count)`` once ``need`` peers have applied through ``target``, or after
        ``timeout_s`` (None: no timeout) with however many have.  Returns the waiter (None if
        answered at once), for ``cancel``."""
        n = self.count(target)
        if n >= need:
            done(n)
            return None
        w = Waiter(target, need, done)
        if timeout_s is not None:
            w.timer = loop.call_later(timeout_s, self._expire, w)
        self.waiting.append(w)
        return w

    def cancel(self, w: Waiter) -> None:
        """Forget a waiter whose connection is gone (``done`` is not called)."""
        if w.finished:
            return
        w.finished = True
        if w in self.waiting:
            self.waiting.remove(w)
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None

    def expire(self, w: Waiter) -> None:
        """Answer ``w`` now with however many peers have (its client half-closed)."""
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        self._expire(w)

    def _expire(self, w: Waiter) -> None:
        if w in self.waiting:
            self.waiting.remove(w)
            w.timer = None
            w.finished = True
            w.done(self.count(w.target))

    @staticmethod
    def _finish(w: Waiter, n: int) -> None:
        if w.timer is not None:
            w.timer.cancel()
        w.finished = True
        w.done(n)
