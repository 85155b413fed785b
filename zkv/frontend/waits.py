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


@dataclass(slots=True)
class Waiter:
    target: int
    need: int
    done: Callable[[int], None]
    timer: asyncio.TimerHandle | None = None


class AckWaiters:
    def __init__(self) -> None:
        self.acked: dict[str, int] = {}
        self.waiting: list[Waiter] = []

    def count(self, target: int) -> int:
        return sum(1 for s in self.acked.values() if s >= target)

    def learn(self, acked: object) -> None:
        """Merge a store's report (peer -> seq; never lowers a value) and answer who is due."""
        if acked.__class__ is not dict:
            return
        for peer, seq in acked.items():  # type: ignore[attr-defined]
            if seq.__class__ is int and seq > self.acked.get(peer, -1):
                self.acked[peer] = seq
        if self.waiting:
            still = []
            for w in self.waiting:
                n = self.count(w.target)
                if n >= w.need:
                    self._finish(w, n)
                else:
                    still.append(w)
            self.waiting = still

    def wait(self, target: int, need: int, timeout_s: float | None, done: Callable[[int], None],
             loop: asyncio.AbstractEventLoop) -> None:
        """Call ``done(count)`` once ``need`` peers have applied through ``target``, or after
        ``timeout_s`` (None: no timeout) with however many have."""
        n = self.count(target)
        if n >= need:
            done(n)
            return
        w = Waiter(target, need, done)
        if timeout_s is not None:
            w.timer = loop.call_later(timeout_s, self._expire, w)
        self.waiting.append(w)

    def _expire(self, w: Waiter) -> None:
        if w in self.waiting:
            self.waiting.remove(w)
            w.timer = None
            w.done(self.count(w.target))

    @staticmethod
    def _finish(w: Waiter, n: int) -> None:
        if w.timer is not None:
            w.timer.cancel()
        w.done(n)
