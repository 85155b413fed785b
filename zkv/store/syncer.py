"""Background fdatasync for ``fsync = "everysec"``: the store loop does not wait for the disk.

An ``fdatasync`` of a log segment takes from a few to a few hundred milliseconds, depending on
the disk and on how much was written since the last one.  Called from the store loop once a
second, it stalled every client request and every replicated batch of the node for that long.
As Redis does with its background I/O thread, the loop now hands the file to one worker thread
(the system call releases the GIL) and goes on.

The worker syncs a *duplicate* of the descriptor, so the loop may close or rotate the segment
meanwhile.  At most one sync waits behind the running one: a request that finds a sync of the
same file still queued adds nothing (that sync, not started yet, will cover the new writes too),
and a request that finds one running queues the next right behind it (counted as ``delayed``:
the disk is slower than once a second).  So a write reaches the disk at most about
``max(1 s, D) + D`` after it was logged, where D is how long one sync takes.

With no descriptor to spare for the duplicate (EMFILE, ENFILE: connections took them all), the
sync runs in the calling thread instead, on the loop's own descriptor (counted as ``inline``):
slower for that second, but no write waits longer for the disk than everysec promises.

A failed sync is not retried: on Linux the error is reported once, and the pages it concerned
may be gone.  The failure is kept (``failed``), and ``check`` raises it, so the store stops
acknowledging writes instead of promising a durability it no longer has (Redis refuses writes
after a failed background fsync for the same reason).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from zkv.histogram import DISK_BOUNDS, Buckets

log = logging.getLogger("zkv.store")

_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
SLOW_SYNC_MS = 1000.0  # a sync slower than this is logged: everysec no longer means a second


class SyncFailed(OSError):
    """A background fdatasync failed (or its worker died): the log's durability is unknown."""


class BackgroundSync:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[tuple[int, int]] = []  # (duplicated descriptor, inode) waiting
        self._running = False  # the worker is syncing one now
        self._stopping = False
        self.failed: BaseException | None = None
        self.syncs = 0
        self.delayed = 0  # requests that found the previous sync still running
        self.errors = 0
        self.inline = 0  # syncs run in the caller's thread: no descriptor to duplicate
        self.last_ms = 0.0
        self.max_ms = 0.0
        self.durations = Buckets(DISK_BOUNDS)  # seconds per good sync (/metrics)
        self._thread = threading.Thread(target=self._work, name="zkv-fsync", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, float]:
        return {"syncs": self.syncs, "delayed": self.delayed, "errors": self.errors,
                "inline": self.inline,
                "last_ms": round(self.last_ms, 2), "max_ms": round(self.max_ms, 2)}

    def check(self) -> None:
        """Raise ``SyncFailed`` if a sync failed or the worker is gone."""
        if self.failed is not None:
            raise SyncFailed(f"background fdatasync of the log failed: {self.failed}")
        if not self._thread.is_alive() and not self._stopping:
            raise SyncFailed("the background fdatasync thread is gone")

    def request(self, fd: int) -> None:
        """Sync ``fd`` in the background, soon (see the module docstring for how soon)."""
        self.check()
        inode = os.fstat(fd).st_ino
        with self._cond:
            if any(ino == inode for _dup, ino in self._queue):
                return  # a sync of this file not started yet covers these writes too
            try:
                dup = os.dup(fd)
            except OSError:
                dup = -1
            else:
                if self._running:
                    self.delayed += 1
                self._queue.append((dup, inode))
                self._cond.notify()
        if dup < 0:
            self.inline += 1
            self._sync(fd, close=False)
            self.check()

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every requested sync is done; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._running or self._queue) and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return not self._queue

    def stop(self, timeout: float = 60.0) -> bool:
        """``drain``, then end the worker thread."""
        done = self.drain(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        return done

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return  # stopping, nothing left
                fd, _inode = self._queue.pop(0)
                self._running = True
            try:
                self._sync(fd)
            except BaseException as exc:  # noqa: BLE001 - whatever it was, the store must hear of it
                self.failed = self.failed or exc
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()

    def _sync(self, fd: int, close: bool = True) -> None:
        """fdatasync ``fd`` (and close it, unless ``close`` is False: the caller's own)."""
        t0 = time.perf_counter()
        try:
            _fdatasync(fd)
        except OSError as exc:
            self.errors += 1
            self.failed = self.failed or exc
            log.error("fdatasync of the write-ahead log failed: %s; the store stops taking writes "
                      "(acknowledged ones since the last good sync may not survive a machine crash)", exc)
            return
        finally:
            try:
                if close:
                    os.close(fd)
            except OSError:
                pass  # the duplicate only; the sync's outcome is what counts
        ms = (time.perf_counter() - t0) * 1000
        if ms > SLOW_SYNC_MS:
            log.warning("fdatasync of the write-ahead log took %.0f ms (disk busy?): a crash of "
                        "the machine can lose about twice that of the latest writes", ms)
        self.syncs += 1
        self.last_ms = ms
        self.max_ms = max(self.max_ms, ms)
        self.durations.observe(ms / 1000)
