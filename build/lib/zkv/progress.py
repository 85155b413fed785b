"""Progress lines for long operations (snapshot load at start, snapshot write, full state
transfer): at most one log line per ``every`` seconds, with the count, the total when known,
and the rate.  Pure apart from the logger and the clock it is handed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Progress:
    def __init__(self, log: logging.Logger, what: str, total: int | None = None,
                 every: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.what = what
        self.total = total
        self.every = every
        self.clock = clock
        self.start = self.last = clock()
        self.done = 0
        self.lines = 0

    def add(self, n: int) -> None:
        """``n`` more units done; logs a line if ``every`` seconds passed since the last."""
        self.done += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.lines += 1
            self.log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        rate = self.done / max(now - self.start, 1e-9)
        if self.total:
            return (f"{self.what}: {self.done:,} of {self.total:,} "
                    f"({100 * self.done / self.total:.0f}%), {rate:,.0f}/s")
        return f"{self.what}: {self.done:,} so far, {rate:,.0f}/s"
