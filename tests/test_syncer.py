"""zkv/store/syncer.py and its use by Durability: with fsync = "everysec" the store loop does not
wait for fdatasync; a request behind a running sync queues one more (never more), a failed sync
stops the store from taking writes, a rotated segment is synced before the next one is used, and
close() waits for every sync and ends the thread."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from zkv.events import Batch, encode_batch
from zkv.store import syncer as syncer_mod
from zkv.store.durability import Durability, encode_event_record
from zkv.store.syncer import SyncFailed


class SlowDisk:
    """fdatasync that takes ``seconds`` (or raises ``error``) and records the inodes it synced."""

    def __init__(self, seconds: float, error: OSError | None = None) -> None:
        self.seconds = seconds
        self.error = error
        self.synced: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        os.fdatasync(fd)
        with self.lock:
            self.synced.append(os.fstat(fd).st_ino)


def _append(disk: Durability, seq: int) -> None:
    disk.append([encode_event_record(encode_batch(Batch("n0", seq, [(seq, b"k%d" % seq, b"v")])))], 1)


def _wait(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _disk(tmp_path: Path) -> Durability:
    disk = Durability(tmp_path, "n0", "everysec")
    disk.recover()
    return disk


def test_the_loop_does_not_wait_and_at_most_one_sync_waits_behind(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowDisk(0.4)
    monkeypatch.setattr(syncer_mod, "_fdatasync", slow)
    disk = _disk(tmp_path)
    syncer = disk.syncer
    assert syncer is not None
    _append(disk, 1)
    t0 = time.perf_counter()
    disk.sync()
    assert time.perf_counter() - t0 < 0.2  # handed to the thread, not waited for
    _wait(lambda: syncer._running)
    for seq in (2, 3, 4):  # three more seconds while the first sync runs
        _append(disk, seq)
        disk.sync()
    assert syncer.delayed == 1 and len(syncer._queue) == 1  # one queued behind it, not three
    _wait(lambda: syncer.syncs == 2)  # ... and it runs right after, covering every write
    assert syncer.max_ms >= 400 and syncer.errors == 0
    disk.close()
    assert not syncer._thread.is_alive()


def test_a_failed_sync_stops_the_store_taking_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syncer_mod, "_fdatasync", SlowDisk(0.0, OSError(5, "Input/output error")))
    disk = _disk(tmp_path)
    _append(disk, 1)
    disk.sync()
    _wait(lambda: disk.syncer is not None and disk.syncer.failed is not None)
    assert disk.syncer.errors == 1
    with pytest.raises(SyncFailed, match="Input/output error"):
        _append(disk, 2)  # not written, so never acknowledged
    with pytest.raises(SyncFailed):
        disk.sync()
    disk.close()


def test_an_unexpected_error_in_the_worker_is_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_fd: int) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(syncer_mod, "_fdatasync", broken)
    disk = _disk(tmp_path)
    _append(disk, 1)
    disk.sync()
    _wait(lambda: disk.syncer is not None and disk.syncer.failed is not None)
    with pytest.raises(SyncFailed, match="bug"):
        _append(disk, 2)
    assert disk.syncer.drain(timeout=1)  # the worker is still there and idle: nothing hangs
    disk.close()


def test_a_rotated_segment_is_on_disk_before_the_next_is_used(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowDisk(0.3)
    monkeypatch.setattr(syncer_mod, "_fdatasync", slow)
    synced_here: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        synced_here.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr("zkv.store.wal._fdatasync", spy)
    disk = _disk(tmp_path)
    _append(disk, 1)
    old = [p for p in tmp_path.iterdir() if p.name.startswith("wal-")][0]
    disk._open_segment(disk._segment + 1)  # what a snapshot does first
    assert old.stat().st_ino in synced_here  # synced in the loop, before anything else is written
    disk.close()


def test_always_and_no_modes_have_no_background_thread(tmp_path: Path) -> None:
    for mode, sub in (("always", "a"), ("no", "b")):
        disk = Durability(tmp_path / sub, "n0", mode)
        disk.recover()
        assert disk.syncer is None
        disk.sync()
        disk.close()
