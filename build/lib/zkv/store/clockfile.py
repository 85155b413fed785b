"""The persisted clock bound: the highest timestamp this node has announced, kept on disk so that
a restarted store never stamps below it, whatever its wall clock says.

Why: peers collect tombstones below a horizon computed from the timestamps every node announces
(zkv.replication.horizon).  A node that announced ``T`` and then, restarted with its wall clock
behind, stamped a write below ``T`` would hand the cluster a write its peers may already count as
"seen everywhere" - and drop (CockroachDB persists an upper bound of its hybrid clock for the
same reason).  So a store announces only timestamps already on disk here: the core asks for a
value to be saved (``save``), a background thread writes and fsyncs it, and the core learns
what is durable (``saved``) before it announces it.

File ``clock`` in ``data_dir``: two 16-byte slots, written alternately, each
``<u64 LE value> <u32 LE crc32(value)> <4 zero bytes>``; the larger valid slot is the bound, so a
torn write of one slot leaves the other.  No file (a new or wiped node): ``load`` returns None,
and the node must learn its bound from a peer before it accepts writes.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

NAME = "clock"
_SLOT = struct.Struct("<QI4x")


def _encode(value: int) -> bytes:
    raw = struct.pack("<Q", value)
    return _SLOT.pack(value, zlib.crc32(raw))


def load(data_dir: Path) -> int | None:
    """The persisted bound, or None if there is no readable one."""
    return _read(Path(data_dir) / NAME)[0]


def _read(path: Path) -> tuple[int | None, int]:
    """(the larger valid slot's value or None, the index of that slot)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, 0
    best, where = None, 0
    for slot in (0, 1):
        off = slot * _SLOT.size
        if len(data) >= off + _SLOT.size:
            value, crc = _SLOT.unpack_from(data, off)
            if zlib.crc32(struct.pack("<Q", value)) == crc and (best is None or value > best):
                best, where = value, slot
    return best, where


def create(data_dir: Path, value: int = 0) -> None:
    """Write a bound of ``value`` where there is none: the node counts as one whose clock is
    known (tests use it for a node that "ran before" without starting its peers)."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    path = Path(data_dir) / NAME
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, _encode(value))
            os.fsync(fd)
        finally:
            os.close(fd)


class ClockFile:
    """Writes the bound, alternating slots; in a thread of its own unless ``background=False``
    (the simulator), so the store loop never waits for the fsync."""

    def __init__(self, data_dir: Path, initial: int, background: bool = True, sync: bool = True) -> None:
        self.path = Path(data_dir) / NAME
        self.saved = initial  # durable
        self._want = initial
        # The first write goes to the slot NOT holding the bound found at start: torn, it must
        # leave that bound readable (it was announced).
        self._slot = _read(self.path)[1] ^ 1
        self._sync = sync
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._cond = threading.Condition()
        self._stop = False
        self.error: OSError | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="zkv-clockfile", daemon=True)
            self._thread.start()

    def save(self, value: int) -> None:
        """Ask for ``value`` to be made durable (``saved`` says when it is)."""
        if value <= self._want:
            return
        self._want = value
        if self._thread is None:
            self._write(value)
            return
        with self._cond:
            self._cond.notify()

    def _write(self, value: int) -> None:
        os.pwrite(self._fd, _encode(value), self._slot * _SLOT.size)
        if self._sync:
            os.fsync(self._fd)
        self._slot ^= 1
        self.saved = value

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and self._want <= self.saved:
                    self._cond.wait()
                if self._stop:
                    return
                value = self._want
            try:
                self._write(value)
            except OSError as exc:  # the bound stays where it was: announcements stop rising
                self.error = exc
                return

    def close(self) -> None:
        if self._thread is not None:
            with self._cond:
                self._stop = True
                self._cond.notify()
            self._thread.join(5)
        os.close(self._fd)
