"""What a store keeps on disk: write-ahead log segments and snapshots, and recovery from them.

Files in ``data_dir``::

    wal-000001.log ...   write-ahead log segments (framed msgpack records, crc32 each)
    snapshot.zkv         the last complete snapshot: every entry + the version vector it covers
    LOCK                 held (flock) while a store runs, so two stores never share a directory

A log record is one of
    ``b"E" + batch``  a batch of events (local or replicated), exactly as published, or
    ``b"R" + msgpack([vv, horizon, entries, dropped])``  entries merged by a state transfer or
    anti-entropy repair, keys dropped because the peer had collected them, and the version
    vector the transfer covered (or None).

Snapshots run in a forked child (copy-on-write view, as Redis does): the parent only rotates
to a new segment (syncing the old one) and forks, so client requests pause for that alone.
With ``fsync = "everysec"`` the once-a-second sync of the log runs in a background thread
(``zkv.store.syncer``), not in the store loop.  When the child has
written the snapshot, the segments before the rotation are deleted.  Recovery loads the
snapshot, then replays the remaining segments; a torn or corrupt tail is cut off and reported.

A file that cannot be opened while the store runs (no descriptor left: EMFILE, ENFILE; or any
other error) stops nothing.  The segment that was to follow at a snapshot: appends go on into
the one already open (so every acknowledged write is logged as configured), and the snapshot is
tried again a second later.  Deleting the segments a snapshot covers: left to the next one.

Recovery is honest about what it holds: the version vector advances over an origin's events only
while they join up with what came before (the snapshot's vector, then each record in turn).  A
batch after a hole (a lost or unusable snapshot, a missing segment) is applied to the keyspace -
the conflict rule makes that safe in any order - but not counted: it is handed back in
``Recovered.held`` for the store's inbox, and the store pulls the missing events (or a full
state transfer) from its peers before it claims any of them.
"""

from __future__ import annotations

import fcntl
import signal
import logging
import os
import re
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path

import msgpack

from zkv.clock import HybridClock
from zkv.proc import die_with_parent
from zkv.histogram import DISK_BOUNDS, SNAPSHOT_BOUNDS, Buckets
from zkv.events import BATCH_BYTES, Batch, decode_batch, split_runs
from zkv.store.keyspace import Keyspace
from zkv.progress import Progress
from zkv.store.snapshot import SnapshotError, read_snapshot, write_snapshot
from zkv.store.syncer import BackgroundSync
from zkv.store.wal import WalWriter, read_wal, truncate_to

log = logging.getLogger("zkv.store")

SNAPSHOT = "snapshot.zkv"

# Test hook (tests/cluster/test_durability.py), read once: with ZKV_TEST_SNAPSHOT_HOLD=DIR the
# forked snapshot writer, once its first chunk of entries is in snapshot.zkv.tmp (before the
# rest, the fsync and the rename into place), creates DIR/held.<n> (n counts this process's
# forked snapshots from 1; the file holds the child's pid) and waits until that file is
# removed, its parent is gone, or 30 s have passed - so a test can SIGKILL the node mid-snapshot
# (a snapshot of no entries is never held).
# Unset (always, outside tests): nothing is read or checked.
_TEST_HOLD_DIR = os.environ.get("ZKV_TEST_SNAPSHOT_HOLD") or None
_SEGMENT_RE = re.compile(r"^wal-(\d{6,})\.log$")
OPEN_RETRY_S = 1.0  # after a new log segment could not be opened, the next snapshot waits this

Entries = list[tuple[bytes, int, str, bytes | None]]


def encode_event_record(batch_payload: bytes) -> bytes:
    return b"E" + batch_payload


def encode_repair_record(vv: dict[str, int] | None, horizon: int, entries: Entries,
                         dropped: list[bytes] | None = None) -> bytes:
    """Entries merged from a peer, keys dropped because the peer had collected them (stamped
    before ``horizon``), and the version vector a full transfer covered (or None)."""
    return b"R" + msgpack.packb([vv, horizon, entries, dropped or []], use_bin_type=True)


def encode_repair_records(vv: dict[str, int] | None, horizon: int, entries: Entries,
                          dropped: list[bytes] | None = None,
                          max_bytes: int = BATCH_BYTES) -> list[bytes]:
    """``encode_repair_record``, cut into records of about ``max_bytes`` of entries each (the
    log takes records of up to 1 GiB; values reach 512 MB).  ``vv`` goes on the last record
    alone, so a log that ends early never claims a transfer it does not hold whole."""
    runs = split_runs(entries, lambda e: len(e[0]) + (len(e[3]) if e[3] is not None else 0) + 32,
                      max_bytes) or [[]]
    last = len(runs) - 1
    return [encode_repair_record(vv if i == last else None, horizon, r, dropped if i == 0 else None)
            for i, r in enumerate(runs)]


class DataDirInUse(Exception):
    """Another store holds this data directory."""


@dataclass(slots=True)
class Recovered:
    keyspace: Keyspace
    vv: dict[str, int]
    max_hlc: int
    gc_horizon: int
    seconds: float
    snapshot_entries: int
    log_records: int
    dropped_bytes: int
    held: list[Batch] = field(default_factory=list)  # batches after a hole: applied, not counted


class Durability:
    """Owns the files in ``data_dir``; the store calls it, nothing else touches them."""

    def __init__(self, data_dir: Path, node_id: str, fsync: str) -> None:
        self.dir = Path(data_dir)
        self.node_id = node_id
        self.fsync = fsync
        # Private: the data is every client's, and other local users must not read it.
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        exposed = self.dir.stat().st_mode & 0o077
        if exposed:
            log.warning("data_dir %s is readable or writable by other users (mode %o): "
                        "chmod 700 it; its files hold every key and value", self.dir,
                        self.dir.stat().st_mode & 0o777)
        self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise DataDirInUse(f"data_dir {self.dir} is in use by another running store") from None
        self._wal: WalWriter | None = None
        self._segment = 0
        self.records_since_snapshot = 0
        self._child: int | None = None
        self._child_started = 0.0
        self._child_segment = 0
        self._forks = 0  # snapshot children forked (names the test hook's markers)
        self.last_fork_pause_ms = 0.0
        self.max_fork_pause_ms = 0.0  # the longest a snapshot has paused the store loop
        self.last_snapshot_seconds = 0.0
        self.snapshots_taken = 0
        self.snapshot_durations = Buckets(SNAPSHOT_BOUNDS)  # seconds per good snapshot (/metrics)
        self.fork_pauses = Buckets(DISK_BOUNDS)  # seconds the store loop paused per fork
        self.broken = False  # an append failed: no snapshot may be taken from this keyspace
        self._retry_at = 0.0  # (monotonic) a new segment could not be opened: not before this
        self.open_failures = 0  # new segments that could not be opened (INFO)
        self._open_streak = 0  # ... since the last one that could
        self._disk_bytes = {"log_bytes": 0, "snapshot_bytes": 0}
        # everysec: the once-a-second fdatasync runs in a thread, never in the store loop
        self.syncer = BackgroundSync() if fsync == "everysec" else None

    # --- recovery ----------------------------------------------------------------------------
    def _segments(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.dir.iterdir():
            m = _SEGMENT_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def disk_bytes(self) -> dict[str, int]:
        """Bytes of log segments and of the snapshot now on disk (INFO, zkv status); the last
        figures known if the directory cannot be read now."""
        log_bytes = 0
        try:
            segments = self._segments()
        except OSError:
            return self._disk_bytes
        for _n, p in segments:
            try:
                log_bytes += p.stat().st_size
            except FileNotFoundError:
                pass
        try:
            snap = (self.dir / SNAPSHOT).stat().st_size
        except FileNotFoundError:
            snap = 0
        self._disk_bytes = {"log_bytes": log_bytes, "snapshot_bytes": snap}
        return self._disk_bytes

    def _segment_path(self, n: int) -> Path:
        return self.dir / f"wal-{n:06d}.log"

    def recover(self, on_batch: Callable[[str, int, int, bytes], None] | None = None) -> Recovered:
        """Load the snapshot and replay the log.  ``on_batch(origin, first, last, payload)`` sees
        every replayed event batch (the store refills its catch-up backlog from them)."""
        t0 = time.perf_counter()
        ks = Keyspace()
        vv: dict[str, int] = {}
        max_hlc = 0
        horizon = 0
        first_segment = 0
        snap_entries = 0
        snap = self.dir / SNAPSHOT
        if snap.exists():
            try:
                meta, chunks = read_snapshot(snap)
                owner = meta.get("id")
                if owner not in (None, self.node_id):
                    raise SnapshotError(f"snapshot belongs to node {owner!r}, not {self.node_id!r}")
                progress = Progress(log, "loading the snapshot (entries)", chunks.entries)
                for chunk in chunks:
                    ks.apply_entries(chunk)
                    snap_entries += len(chunk)
                    progress.add(len(chunk))
                vv = {str(k): int(v) for k, v in meta.get("vv", {}).items()}
                max_hlc = int(meta.get("hlc", 0))
                horizon = int(meta.get("gc_horizon", 0))
                first_segment = int(meta.get("segment", 0))
            except SnapshotError as exc:
                aside = snap.with_name(f"{SNAPSHOT}.corrupt-{int(time.time())}")
                os.replace(snap, aside)
                log.error("snapshot unusable (%s); moved to %s, recovering from the log and peers",
                          exc, aside.name)
                ks, vv, max_hlc, horizon, first_segment, snap_entries = Keyspace(), {}, 0, 0, 0, 0
        records = writes = 0
        dropped = 0
        held: list[Batch] = []
        for n, path in self._segments():
            if n < first_segment:
                path.unlink()  # covered by the snapshot; its deletion was interrupted
                continue
            result = read_wal(path)
            if result.dropped_bytes:
                log.warning("%s: dropped a torn/corrupt tail of %d bytes (%s); kept %d records",
                            path.name, result.dropped_bytes, result.reason, len(result.payloads))
                truncate_to(path, result.valid_bytes)
                dropped += result.dropped_bytes
            for payload in result.payloads:
                records += 1
                top, adopted, n_writes = _replay(ks, vv, payload, on_batch, held, horizon)
                max_hlc, horizon = max(max_hlc, top), max(horizon, adopted)
                writes += n_writes
            self._segment = n
        self.records_since_snapshot = writes  # counted in writes, as append() counts them
        self._open_segment(max(self._segment, first_segment, 1))
        held = [b.slice_from(vv.get(b.origin, 0) + 1) for b in held if b.last_seq > vv.get(b.origin, 0)]
        for origin in sorted({b.origin for b in held}):
            mine = [b for b in held if b.origin == origin]
            log.warning("the log holds %d events of %s after a hole (it has up to %d, then from %d): "
                        "kept, and counted only once peers supply the missing ones",
                        sum(len(b.items) for b in mine), origin, vv.get(origin, 0),
                        min(b.first_seq for b in mine))
        return Recovered(ks, vv, max_hlc, horizon, time.perf_counter() - t0, snap_entries, records,
                         dropped, held)

    # --- writing -----------------------------------------------------------------------------
    def _open_segment(self, n: int) -> None:
        """Make segment ``n`` the one appends go to.  It is opened before the current one is
        closed: if it cannot be (OSError), appends go on into the current one."""
        new = WalWriter(self._segment_path(n), fsync=self.fsync)
        if self._wal is not None:
            # Synced here, not in the background, and in every fsync mode ("no" included): a
            # machine crash must never keep the next segment's records while losing this
            # one's tail (replay would find a hole, and have to fetch it from peers).  Always,
            # not only if dirty: a background sync that took the dirty mark may still be queued.
            try:
                self._wal.sync_always()
            except BaseException:
                new.close()
                raise
            self._wal.close()
        self._segment = n
        self._wal = new

    def _rotate(self) -> bool:
        """Open the next segment; False (logged, retried after OPEN_RETRY_S) if it cannot be."""
        now = time.monotonic()
        if now < self._retry_at:
            return False
        try:
            self._open_segment(self._segment + 1)
        except OSError as exc:
            if not self._open_streak:
                log.error("cannot open log segment %s (%s): writes go on into %s, and the "
                          "snapshot is tried again every %.0fs", self._segment_path(self._segment + 1).name,
                          exc, self._segment_path(self._segment).name, OPEN_RETRY_S)
            self._open_streak += 1
            self.open_failures += 1
            self._retry_at = now + OPEN_RETRY_S
            return False
        if self._open_streak:
            log.info("log segment %s opened after %d failed attempts",
                     self._segment_path(self._segment).name, self._open_streak)
            self._open_streak = 0
        return True

    def append(self, records: list[bytes], writes: int) -> None:
        """Append records holding ``writes`` writes; with fsync=always they are on disk on return.
        Raises ``SyncFailed`` once a background sync has failed: no write is acknowledged then."""
        assert self._wal is not None
        try:
            if self.syncer is not None:
                self.syncer.check()
            self._wal.append(records)
        except BaseException:
            # The caller has applied these writes to its keyspace already; a snapshot taken
            # now would persist writes the log never held, so none is taken any more.
            self.broken = True
            raise
        self.records_since_snapshot += writes

    def sync(self) -> None:
        """Called once a second: makes everysec mean what it says (in the background)."""
        if self._wal is not None and self.syncer is not None:
            self.syncer.check()  # a failed sync stops the store even while no write comes
            self._wal.sync_in_background(self.syncer)

    # --- snapshots ---------------------------------------------------------------------------
    @property
    def snapshot_running(self) -> bool:
        return self._child is not None

    def _meta(self, vv: dict[str, int], hlc: int, horizon: int, segment: int) -> dict:
        return {"id": self.node_id, "vv": dict(vv), "hlc": hlc, "gc_horizon": horizon,
                "segment": segment, "written": time.time()}

    def start_snapshot(self, ks: Keyspace, vv: dict[str, int], hlc: int, horizon: int) -> bool:
        """Fork a child that writes the snapshot; returns False if one is already running."""
        if self._child is not None or self.broken:
            return False
        t0 = time.perf_counter()
        if not self._rotate():  # everything before the new segment is in the view
            return False
        meta = self._meta(vv, hlc, horizon, self._segment)
        self._forks += 1
        pid = os.fork()
        if pid == 0:  # child: write and leave without running any of the parent's cleanup
            code = 0
            try:
                os.close(self._lock_fd)  # the lock belongs to the parent alone
                die_with_parent(signal.SIGKILL)  # never outlive it holding its sockets' ports
                progress = Progress(log, "writing a snapshot (entries)", len(ks))
                on_chunk = progress.add
                if _TEST_HOLD_DIR is not None:
                    on_chunk = _hold_once(Path(_TEST_HOLD_DIR) / f"held.{self._forks}", on_chunk)
                write_snapshot(self.dir / SNAPSHOT, ks.entries(horizon), meta, on_chunk)
            except BaseException:  # noqa: BLE001 - report through the exit code
                code = 1
            os._exit(code)
        self.last_fork_pause_ms = (time.perf_counter() - t0) * 1000
        self.max_fork_pause_ms = max(self.max_fork_pause_ms, self.last_fork_pause_ms)
        self.fork_pauses.observe(self.last_fork_pause_ms / 1000)
        self._child, self._child_started, self._child_segment = pid, time.perf_counter(), self._segment
        self.records_since_snapshot = 0
        return True

    def poll_snapshot(self, block: bool = False) -> bool | None:
        """Reap a finished snapshot child: True ok, False failed, None still running/none."""
        if self._child is None:
            return None
        pid, status = os.waitpid(self._child, 0 if block else os.WNOHANG)
        if pid == 0:
            return None
        self._child = None
        ok = os.waitstatus_to_exitcode(status) == 0
        self.last_snapshot_seconds = time.perf_counter() - self._child_started
        if ok:
            self.snapshots_taken += 1
            self.snapshot_durations.observe(self.last_snapshot_seconds)
            try:
                for n, path in self._segments():
                    if n < self._child_segment:
                        path.unlink()
            except OSError as exc:  # the next snapshot deletes them (or the next recovery)
                log.error("the log segments before the snapshot could not be deleted: %s", exc)
        else:
            log.error("snapshot child failed (status %s); the log is kept", status)
        return ok

    def snapshot_now(self, ks: Keyspace, vv: dict[str, int], hlc: int, horizon: int) -> None:
        """Synchronous snapshot (clean shutdown): the next start reads no log at all."""
        self.poll_snapshot(block=True)
        if self.broken:
            log.error("no snapshot at shutdown: a log append failed, so the keyspace may hold "
                      "writes the log does not; the next start replays the log instead")
            return
        self._open_segment(self._segment + 1)
        write_snapshot(self.dir / SNAPSHOT, ks.entries(horizon), self._meta(vv, hlc, horizon, self._segment))
        for n, path in self._segments():
            if n < self._segment:
                path.unlink()
        self.records_since_snapshot = 0

    @property
    def current_segment_path(self) -> Path:
        """The segment appends go to now."""
        return self._segment_path(self._segment)

    def close_quietly(self) -> None:
        """Let go of the files as a killed process does: nothing synced, nothing written (the
        simulator's crash; a real store never calls it)."""
        if self._wal is not None:
            os.close(self._wal._fd)
            self._wal._fd = -1
            self._wal = None
        os.close(self._lock_fd)

    def close(self) -> None:
        if self._wal is not None:
            self._wal.sync()
            self._wal.close()
            self._wal = None
        if self.syncer is not None and not self.syncer.stop():
            log.error("background fdatasync still running at shutdown; the log may lack its last second")
        os.close(self._lock_fd)


def _hold_once(marker: Path, then: Callable[[int], None]) -> Callable[[int], None]:
    """The ZKV_TEST_SNAPSHOT_HOLD hook (see _TEST_HOLD_DIR): a progress callback that, the first
    time it is called, creates ``marker`` and waits until it is removed, the parent is gone, or
    30 s have passed."""
    parent, held = os.getppid(), False

    def hold(n: int) -> None:
        nonlocal held
        if not held:
            held = True
            tmp = marker.with_name(marker.name + ".tmp")
            tmp.write_text(str(os.getpid()))
            os.replace(tmp, marker)  # a reader never sees it without the pid
            deadline = time.monotonic() + 30
            while marker.exists() and os.getppid() == parent and time.monotonic() < deadline:
                time.sleep(0.005)
        then(n)

    return hold


def _replay(ks: Keyspace, vv: dict[str, int], payload: bytes,
            on_batch: Callable[[str, int, int, bytes], None] | None,
            held: list[Batch], floor: int = 0) -> tuple[int, int, int]:
    """Apply one log record; returns the highest timestamp in it, the GC horizon a full
    transfer made the store adopt (0 for other records), and how many writes it held.
    An event batch that does not join up with ``vv`` is applied but goes to ``held``."""
    kind, body = payload[:1], payload[1:]
    top = adopted = writes = 0
    if kind == b"E":
        batch: Batch = decode_batch(body)
        top = ks.apply_many(batch.origin, batch.items, floor)[1]  # as the live store did
        writes = len(batch.items)
        have = vv.get(batch.origin, 0)
        if batch.first_seq > have + 1:
            held.append(batch)  # a hole before it: not ours to claim yet
        elif batch.last_seq > have:
            vv[batch.origin] = batch.last_seq
            if on_batch is not None:
                on_batch(batch.origin, batch.first_seq, batch.last_seq, body)
    elif kind == b"R":
        rvv, horizon, entries, *rest = msgpack.unpackb(body, raw=False)
        top = ks.apply_entries(entries)
        writes = len(entries) + len(rest[0] if rest and rest[0] else ())
        if rest and rest[0]:
            ks.drop(rest[0], horizon)
        if rvv is not None:  # the end of a full transfer: the peer's horizon became ours
            adopted = horizon
        for origin, seq in (rvv or {}).items():
            if seq > vv.get(origin, 0):
                vv[origin] = seq
    else:
        log.warning("skipping a log record of unknown kind %r", kind)
    return top, adopted, writes


def clock_after(recovered: Recovered) -> HybridClock:
    """A clock that will stamp above everything recovered."""
    return HybridClock(last=recovered.max_hlc)
