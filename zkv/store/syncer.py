"""Background fdatasync for ``fsync = "everysec"``: the store loop never waits for the disk.

An ``fdatasync`` of a log segment takes from a few to a few hundred milliseconds, depending on
the disk and on how much was written since the last one.  Called from the store loop once a
second, it stalled every client request and every replicated batch of the node for that long.
As Redis does with its background I/O thread, the loop now hands the file to one worker thread
(the system call releases the GIL) and goes on.

The worker syncs a *duplicate* of the descriptor, so the loop may close or rotate the segment
meanwhile.  One periodic sync runs at a time: if the previous one is still running when the
next second comes, that second is skipped (and counted as delayed), as Redis postpones its
``everysec`` fsync; the data simply waits for the next one.  A segment being closed is always
queued, so everything appended reaches the disk.  ``drain`` waits for all of it (clean
shutdown).
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("zkv.store")

_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
SLOW_SYNC_MS = 1000.0  # a sync slower than this is logged: everysec no longer means a second


class BackgroundSync:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[int] = []  # duplicated descriptors waiting for a sync
        self._running = False  # the worker is syncing one now
        self.syncs = 0
        self.delayed = 0  # periodic syncs skipped because the previous one was still running
        self.errors = 0
        self.last_ms = 0.0
        self.max_ms = 0.0
        self._thread = threading.Thread(target=self._work, name="zkv-fsync", daemon=True)
        self._thread.start()

    def request(self, fd: int, always: bool = False) -> bool:
        """Sync ``fd`` in the background.  Unless ``always``, nothing is queued (and False is
        returned) while an earlier sync is still queued or running."""
        with self._cond:
            if not always and (self._running or self._queue):
                self.delayed += 1
                return False
            self._queue.append(os.dup(fd))
            self._cond.notify()
            return True

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every requested sync is done; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._running or self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                fd = self._queue.pop(0)
                self._running = True
            t0 = time.perf_counter()
            try:
                _fdatasync(fd)
            except OSError as exc:
                self.errors += 1
                log.error("fdatasync of the write-ahead log failed: %s; acknowledged writes since "
                          "the last good sync may not survive a crash of the machine", exc)
            finally:
                os.close(fd)
            ms = (time.perf_counter() - t0) * 1000
            if ms > SLOW_SYNC_MS:
                log.warning("fdatasync of the write-ahead log took %.0f ms (disk busy?): a crash of "
                            "the machine can lose that much of the latest writes", ms)
            with self._cond:
                self._running = False
                self.syncs += 1
                self.last_ms = ms
                self.max_ms = max(self.max_ms, ms)
                self._cond.notify_all()
