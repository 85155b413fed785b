"""zkv/store/syncer.py and its use by Durability: with fsync = "everysec" the store loop does not
wait for fdatasync; a request behind a running sync queues one more (never more), a failed sync
stops the store from taking writes, a rotated segment is synced before the next one is used, and
close() waits for every sync and ends the thread.

The background ``fdatasync`` is replaced by a ``GatedDisk``: it blocks until the test opens its
gate, so "the loop did not wait" and "one sync is queued behind a running one" are seen as
states, not inferred from how long something took."""

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


WAIT_S = 10.0  # deadline for anything the test waits for


class GatedDisk:
    """fdatasync that waits until ``gate`` opens (or raises ``error``); records what it synced."""

    def __init__(self, error: OSError | None = None) -> None:
        self.error = error
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)  # released once per sync that started
        self.synced: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        self.entered.release()
        assert self.gate.wait(WAIT_S), "the test never let the sync finish"
        if self.error is not None:
            raise self.error
        os.fdatasync(fd)
        with self.lock:
            self.synced.append(os.fstat(fd).st_ino)

    def wait_started(self) -> None:
        assert self.entered.acquire(timeout=WAIT_S), "no sync started"


def _append(disk: Durability, seq: int) -> None:
    disk.append([encode_event_record(encode_batch(Batch("n0", seq, [(seq, b"k%d" % seq, b"v")])))], 1)


def _wait(cond, timeout: float = WAIT_S) -> None:
    """Poll a condition the syncer exposes no event for, with a deadline."""
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
    gated = GatedDisk()
    monkeypatch.setattr(syncer_mod, "_fdatasync", gated)
    disk = _disk(tmp_path)
    syncer = disk.syncer
    assert syncer is not None
    try:
        _append(disk, 1)
        disk.sync()  # returns although the sync cannot finish: handed to the thread, not waited for
        gated.wait_started()
        started = time.perf_counter()
        assert syncer.syncs == 0 and syncer._running
        for seq in (2, 3, 4):  # three more seconds while the first sync runs
            _append(disk, seq)
            disk.sync()
        assert syncer.delayed == 1 and len(syncer._queue) == 1  # one queued behind it, not three
        assert syncer.syncs == 0, "the gate is shut: no sync can have finished"
        held_ms = (time.perf_counter() - started) * 1000
        gated.gate.set()
        gated.wait_started()  # ... the queued one runs right after the first,
        _wait(lambda: syncer.syncs == 2)
        assert len(syncer._queue) == 0 and syncer.errors == 0  # and covers every write
        assert syncer.max_ms >= held_ms  # the time the first one was held is what it reports
    finally:
        gated.gate.set()
        disk.close()
    assert not syncer._thread.is_alive()


def test_a_failed_sync_stops_the_store_taking_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failing = GatedDisk(OSError(5, "Input/output error"))
    failing.gate.set()
    monkeypatch.setattr(syncer_mod, "_fdatasync", failing)
    disk = _disk(tmp_path)
    _append(disk, 1)
    disk.sync()
    assert disk.syncer is not None
    assert disk.syncer.drain(WAIT_S), "the failed sync never finished"
    assert disk.syncer.failed is not None and disk.syncer.errors == 1
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
    assert disk.syncer is not None
    assert disk.syncer.drain(WAIT_S), "the worker never finished the broken sync"
    assert disk.syncer.failed is not None
    with pytest.raises(SyncFailed, match="bug"):
        _append(disk, 2)
    assert disk.syncer.drain(timeout=1)  # the worker is still there and idle: nothing hangs
    disk.close()


@pytest.mark.parametrize("in_flight", [False, True], ids=["idle", "background-sync-running"])
def test_a_rotated_segment_is_on_disk_before_the_next_is_used(tmp_path: Path, in_flight: bool,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether or not a background sync of the old segment is running (and held) at the
    rotation, the old segment is durable when the rotation returns: synced in the loop, or the
    rotation waited for that background sync to finish."""
    background = GatedDisk()  # shut until the test opens it
    monkeypatch.setattr(syncer_mod, "_fdatasync", background)
    synced_here: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        synced_here.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr("zkv.store.wal._fdatasync", spy)
    disk = _disk(tmp_path)
    durable_on_return: list[bool] = []
    try:
        _append(disk, 1)
        if in_flight:
            disk.sync()  # a background sync of it is requested, and cannot finish yet
            background.wait_started()
        old = [p for p in tmp_path.iterdir() if p.name.startswith("wal-")][0].stat().st_ino

        def rotate() -> None:  # what a snapshot does first
            disk._open_segment(disk._segment + 1)
            durable_on_return.append(old in synced_here or old in background.synced)

        rotation = threading.Thread(target=rotate)
        rotation.start()
        rotation.join(0.5)  # a rotation that waits for the held sync is still running: let it go
        background.gate.set()
        rotation.join(WAIT_S)
        assert not rotation.is_alive(), "the rotation never returned"
        assert durable_on_return == [True], (
            f"the next segment was opened before the old one was synced (loop: {synced_here}, "
            f"background: {background.synced}, old inode {old})")
    finally:
        background.gate.set()
        disk.close()


def test_always_and_no_modes_have_no_background_thread(tmp_path: Path) -> None:
    for mode, sub in (("always", "a"), ("no", "b")):
        disk = Durability(tmp_path / sub, "n0", mode)
        disk.recover()
        assert disk.syncer is None
        disk.sync()
        disk.close()


def test_with_no_descriptor_to_duplicate_the_sync_runs_in_the_loop(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """EMFILE on dup(): the segment is synced at once by the caller, not skipped."""
    import errno

    synced: list[int] = []
    monkeypatch.setattr(syncer_mod, "_fdatasync", lambda fd: synced.append(fd))

    def no_descriptor(fd: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(syncer_mod.os, "dup", no_descriptor)
    disk = _disk(tmp_path)
    _append(disk, 1)
    disk.sync()
    assert synced == [disk._wal._fd]
    assert disk.syncer.stats()["inline"] == 1
    monkeypatch.undo()
    disk.close()
