"""A simulated node's disk: the real ``Durability`` (log segments, snapshots, recovery) on a
directory in memory-backed storage, plus what a real disk adds - which bytes have reached
stable storage, and what a crash keeps.

The store's own code writes and reads the files, so the simulator runs its real log format and
its real recovery.  What this module adds is the model of the medium:

* ``synced``: per file, how many bytes are on stable storage.  With ``fsync = "always"`` an
  append is synced before the store goes on; with ``"everysec"`` every second (``tick``); in
  every mode a segment is synced when the log rotates (snapshots) - as the store does.
* ``crash(rng, machine=True)``: a machine crash keeps every file's synced bytes and a random
  prefix of the rest, so the last record may be torn; a process crash (``machine=False``)
  keeps everything (the page cache survives the process).
* damage while the node is down: ``corrupt_snapshot``, ``drop_segment``, ``wipe``.
* ``full``: appends fail with ENOSPC, as a full disk makes them.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path

from zkv.store import clockfile
from zkv.store.durability import SNAPSHOT, Durability, Recovered
from zkv.replication.backlog import Backlog


class SimDisk:
    def __init__(self, path: Path, node_id: str, fsync: str) -> None:
        self.path = path
        self.node_id = node_id
        self.fsync = fsync
        self.synced: dict[str, int] = {}  # file name -> bytes on stable storage
        self.durability: Durability | None = None
        self.clock: clockfile.ClockFile | None = None  # written synchronously: durable at once
        self.full = False
        path.mkdir(parents=True, exist_ok=True)

    def open(self, backlog: Backlog) -> tuple[Recovered, int | None]:
        """Start a store on these files: recovery, as the real store does it; and the persisted
        clock bound (None: no file)."""
        # "no": the medium is modelled here (no fdatasync, no background thread)
        self.durability = Durability(self.path, self.node_id, "no")
        rec = self.durability.recover(on_batch=backlog.add)
        self._sync_all()  # what recovery kept it has re-read; a truncated tail is gone for good
        floor = clockfile.load(self.path)
        self.clock = clockfile.ClockFile(self.path, floor or 0, background=False, sync=False)
        return rec, floor

    def close(self) -> None:
        if self.durability is not None:
            self.durability.close()
            self.durability = None
        if self.clock is not None:
            self.clock.close()
            self.clock = None

    # --- what the store does --------------------------------------------------------------
    def append(self, records: list[bytes], writes: int) -> None:
        assert self.durability is not None
        if self.full:
            self.durability.broken = True
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        self.durability.append(records, writes)
        if self.fsync == "always":
            self._sync_file(self._current_segment())

    def tick(self) -> None:
        """Once a simulated second: everysec syncs the log."""
        if self.fsync == "everysec":
            self._sync_file(self._current_segment())

    def snapshot(self, ks, vv, hlc, horizon) -> None:  # noqa: ANN001 - Durability's arguments
        """A snapshot (synchronous here: the simulator has no fork); the log rotates first."""
        assert self.durability is not None
        if self.durability.broken:
            return
        self.durability.snapshot_now(ks, vv, hlc, horizon)
        self._sync_all()  # rotation syncs the old segment; the snapshot is fsynced and renamed

    @property
    def records_since_snapshot(self) -> int:
        return self.durability.records_since_snapshot if self.durability is not None else 0

    # --- faults ---------------------------------------------------------------------------
    def crash(self, rng: random.Random, machine: bool) -> None:
        """The store dies.  A machine crash also loses what was not synced, a random part of it."""
        if self.durability is not None:
            self.durability.close_quietly()
            self.durability = None
        if self.clock is not None:
            self.clock.close()  # its values were fsynced as they were saved
            self.clock = None
        if not machine:
            return
        for f in sorted(self.path.iterdir()):
            if not f.name.startswith("wal-"):
                continue
            size = f.stat().st_size
            keep = self.synced.get(f.name, 0)
            if size > keep:
                keep += rng.randrange(size - keep + 1)
                os.truncate(f, keep)

    def corrupt_snapshot(self, rng: random.Random) -> bool:
        snap = self.path / SNAPSHOT
        if not snap.exists() or snap.stat().st_size == 0:
            return False
        data = bytearray(snap.read_bytes())
        at = rng.randrange(len(data))
        for i in range(at, min(len(data), at + 64)):
            data[i] ^= 0xFF
        snap.write_bytes(bytes(data))
        return True

    def drop_segment(self, rng: random.Random) -> bool:
        segs = sorted(f for f in self.path.iterdir() if f.name.startswith("wal-"))
        if not segs:
            return False
        rng.choice(segs).unlink()
        return True

    def wipe(self) -> None:
        shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        self.synced.clear()

    # --- bookkeeping ----------------------------------------------------------------------
    def _current_segment(self) -> Path:
        assert self.durability is not None
        return self.durability.current_segment_path

    def _sync_file(self, f: Path) -> None:
        try:
            self.synced[f.name] = f.stat().st_size
        except FileNotFoundError:
            pass

    def _sync_all(self) -> None:
        self.synced = {f.name: f.stat().st_size for f in self.path.iterdir() if f.name.startswith("wal-")}
