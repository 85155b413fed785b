"""zkv/store/syncer.py and its use by Durability: with fsync = "everysec" the store loop never
waits for fdatasync, a busy syncer skips a second rather than queueing, a closed segment is
always synced, and close() waits for every sync."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from zkv.events import Batch, encode_batch
from zkv.store import syncer as syncer_mod
from zkv.store.durability import Durability, encode_event_record


class SlowDisk:
    """fdatasync that takes ``seconds`` and records which files it synced (by inode)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.synced: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        time.sleep(self.seconds)
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


def test_everysec_sync_does_not_wait_for_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowDisk(0.4)
    monkeypatch.setattr(syncer_mod, "_fdatasync", slow)
    disk = Durability(tmp_path, "n0", "everysec")
    disk.recover()
    _append(disk, 1)
    t0 = time.perf_counter()
    disk.sync()
    assert time.perf_counter() - t0 < 0.2  # handed to the thread, not waited for
    _append(disk, 2)
    disk.sync()  # the first is still running: this second is skipped, not queued
    assert disk.syncer is not None and disk.syncer.delayed == 1
    _wait(lambda: disk.syncer.syncs == 1)
    disk.sync()  # now it runs
    _wait(lambda: disk.syncer.syncs == 2)
    assert disk.syncer.max_ms >= 400 and disk.syncer.errors == 0
    disk.close()


def test_a_rotated_segment_is_synced_and_close_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowDisk(0.3)
    monkeypatch.setattr(syncer_mod, "_fdatasync", slow)
    disk = Durability(tmp_path, "n0", "everysec")
    disk.recover()
    _append(disk, 1)
    old = [p for p in tmp_path.iterdir() if p.name.startswith("wal-")]
    disk._open_segment(disk._segment + 1)  # what a snapshot does first: closed, synced behind
    _append(disk, 2)
    disk.sync()  # busy with the closed segment: skipped
    t0 = time.perf_counter()
    disk.close()  # the last segment synced now, and the queued one waited for
    assert time.perf_counter() - t0 >= 0.2
    assert old[0].stat().st_ino in slow.synced


def test_always_and_no_modes_have_no_background_thread(tmp_path: Path) -> None:
    for mode, sub in (("always", "a"), ("no", "b")):
        disk = Durability(tmp_path / sub, "n0", mode)
        disk.recover()
        assert disk.syncer is None
        disk.sync()
        disk.close()
