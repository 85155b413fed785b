"""Write-ahead log file framing for zkv.

This module owns the on-disk layout of the WAL and nothing above it: payloads are
opaque bytes (the caller msgpack-encodes its records), and the module only frames,
checksums, appends, reads back and trims them.

File layout::

    b"ZKVWAL1\\n"                                  8-byte magic header
    frame*                                         zero or more records
    frame := <u32 LE payload length> <u32 LE zlib.crc32(payload)> <payload>

Payloads must be 1 byte .. 1 GiB long. Empty payloads are refused because a
zero-filled tail (what some filesystems leave after a crash that extended the file)
would otherwise parse as an endless run of valid empty records: a length of 0 is
treated as corruption by the reader.

Reading never raises on bad content: it stops at the first frame that is torn,
fails its checksum or has an absurd length, and reports how many bytes are good
(``valid_bytes``) so the caller can ``truncate_to`` that point before reopening a
``WalWriter``.

It also holds the small file helpers shared with ``zkv.store.snapshot``
(``encode_frame``, ``write_all``, ``fsync_dir``, ``atomic_write``).
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from zkv.store.syncer import BackgroundSync

__all__ = [
    "MAGIC",
    "FRAME_HEADER",
    "MAX_RECORD_BYTES",
    "FSYNC_MODES",
    "WalReadResult",
    "WalWriter",
    "read_wal",
    "iter_wal",
    "truncate_to",
    "rewrite_empty",
    "encode_frame",
    "write_all",
    "fsync_dir",
    "atomic_write",
]

MAGIC = b"ZKVWAL1\n"
FRAME_HEADER = struct.Struct("<II")  # payload length, crc32(payload)
MAX_RECORD_BYTES = 1 << 30  # a length field above this is corruption, not data
FSYNC_MODES = frozenset({"always", "everysec", "no"})

_READ_BLOCK = 1 << 20  # bytes per read() when scanning; tests shrink it
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- helpers


def encode_frame(payload: bytes) -> bytes:
    """Return one framed record: length + crc32 header followed by ``payload``."""
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` all of ``data`` to ``fd``, looping over short writes."""
    written = os.write(fd, data)
    if written == len(data):
        return
    view = memoryview(data)
    while written < len(view):
        written += os.write(fd, view[written:])


def fsync_dir(path: PathLike) -> None:
    """fsync the directory containing ``path`` so a create/rename in it is durable."""
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_path(path: PathLike) -> str:
    return os.fspath(path) + ".tmp"


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[int]:
    """Yield a raw fd on ``path + ".tmp"``; on clean exit fsync it, rename it over
    ``path`` and fsync the directory. On error the temp file is removed and ``path``
    is left untouched, so a reader never sees a half-written file under ``path``."""
    tmp = _tmp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o600)
    try:
        try:
            yield fd
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class WalReadResult:
    """Outcome of reading a WAL file."""

    payloads: list[bytes]  # every intact record, in order
    valid_bytes: int  # offset just past the last intact record (header included)
    dropped_bytes: int  # bytes after that (torn/corrupt tail), 0 if clean
    reason: str | None  # why reading stopped early, None if the file is clean


@dataclass(slots=True)
class _Parsed:
    """Result of parsing the frames in one in-memory buffer."""

    payloads: list[bytes]
    used: int  # bytes of the buffer consumed by intact frames
    reason: str | None = None  # set when a frame is corrupt (or torn at EOF)
    need: int = 0  # size of the incomplete frame at the end, if any


def _parse_frames(buf: bytes, base: int, at_eof: bool) -> _Parsed:
    """Parse whole frames from ``buf`` (which starts at file offset ``base``).

    Stops at the first bad frame. An incomplete trailing frame is a torn record
    only when ``at_eof``; otherwise it is reported through ``need`` so the caller
    can read more.
    """
    payloads: list[bytes] = []
    append = payloads.append
    unpack_from = FRAME_HEADER.unpack_from
    crc32 = zlib.crc32
    size = len(buf)
    pos = 0
    while pos < size:
        left = size - pos
        if left < 8:
            if not at_eof:
                return _Parsed(payloads, pos, need=8)
            reason = f"torn record header at offset {base + pos} (needs 8 bytes, {left} left)"
            return _Parsed(payloads, pos, reason)
        length, crc = unpack_from(buf, pos)
        if length == 0 or length > MAX_RECORD_BYTES:
            return _Parsed(payloads, pos, f"bad record length {length} at offset {base + pos}")
        end = pos + 8 + length
        if end > size:
            if not at_eof:
                return _Parsed(payloads, pos, need=8 + length)
            reason = (
                f"torn record at offset {base + pos} (needs {8 + length} bytes, {left} left)"
            )
            return _Parsed(payloads, pos, reason)
        payload = buf[pos + 8 : end]
        if crc32(payload) != crc:
            return _Parsed(payloads, pos, f"checksum mismatch at offset {base + pos}")
        append(payload)
        pos = end
    return _Parsed(payloads, pos)


class _WalScanner:
    """Streams the intact payloads of an open WAL file, block by block.

    After iteration, ``valid_bytes`` and ``reason`` describe where and why it stopped.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.valid_bytes = 0
        self.reason: str | None = None

    def __iter__(self) -> Iterator[bytes]:
        if not self._read_header():
            return
        buf = b""
        want = _READ_BLOCK
        while True:
            block = self._f.read(want)
            at_eof = len(block) < want
            buf = buf + block if buf else block
            parsed = _parse_frames(buf, self.valid_bytes, at_eof)
            self.valid_bytes += parsed.used
            yield from parsed.payloads
            if parsed.reason is not None:
                self.reason = parsed.reason
                return
            if at_eof:
                return
            buf = buf[parsed.used :]
            want = max(_READ_BLOCK, parsed.need - len(buf))

    def _read_header(self) -> bool:
        head = self._f.read(len(MAGIC))
        if head == MAGIC:
            self.valid_bytes = len(MAGIC)
            return True
        if head:  # an empty file is a clean, empty log
            torn = len(head) < len(MAGIC) and MAGIC.startswith(head)
            self.reason = (
                f"torn header ({len(head)} of {len(MAGIC)} bytes)" if torn else "bad header"
            )
        return False


def read_wal(path: PathLike) -> WalReadResult:
    """Read every intact record of the WAL at ``path``.

    A missing or empty file gives an empty, clean result. Never raises on corrupt
    content: reading stops at the first bad frame and the rest is reported as dropped.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return WalReadResult([], 0, 0, None)
    with f:
        scanner = _WalScanner(f)
        payloads = list(scanner)
        file_size = f.seek(0, os.SEEK_END)
    valid = scanner.valid_bytes
    return WalReadResult(payloads, valid, file_size - valid, scanner.reason)


def iter_wal(path: PathLike) -> Iterator[bytes]:
    """Stream the intact records of the WAL at ``path`` with bounded memory.

    Stops silently at the first bad frame; use ``read_wal`` to learn why and where.
    A missing file yields nothing.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        yield from _WalScanner(f)


# --------------------------------------------------------------------------- writing


class WalWriter:
    """Appends framed records to a WAL file through a raw fd (no user-space buffer).

    Every ``append`` issues one ``os.write``, so once it returns the records are in
    the OS page cache and survive a SIGKILL of the process. Durability against power
    loss depends on ``fsync``:

    * ``"always"``   -- fdatasync after every append;
    * ``"everysec"`` -- the caller calls ``sync()`` about once a second;
    * ``"no"``       -- leave it to the OS.

    ``sync()`` may be called from another thread while ``append`` runs; other
    methods are not thread-safe. If a write fails part-way the file is cut back to
    its previous size so no torn frame is left in the middle of the log.
    """

    __slots__ = ("path", "fsync", "_fd", "_size", "_dirty")

    def __init__(self, path: PathLike, fsync: str = "everysec") -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {sorted(FSYNC_MODES)}, not {fsync!r}")
        self.path = os.fspath(path)
        self.fsync = fsync
        self._dirty = False
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | _O_CLOEXEC, 0o600)
        try:
            self._size = self._prepare_header()
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    def _prepare_header(self) -> int:
        size = os.fstat(self._fd).st_size
        if size == 0:
            write_all(self._fd, MAGIC)
            size = len(MAGIC)
        elif size < len(MAGIC) or os.pread(self._fd, len(MAGIC), 0) != MAGIC:
            raise ValueError(f"{self.path}: bad header, not a zkv WAL (truncate_to first?)")
        if size == len(MAGIC):
            # No record yet: the file and its directory entry are made durable before any
            # record goes in, also when an earlier attempt wrote the header and then failed
            # (e.g. no descriptor left to open the directory with).
            os.fsync(self._fd)
            fsync_dir(self.path)
        return size

    def append(self, payloads: Iterable[bytes]) -> int:
        """Frame ``payloads`` and write them with one ``os.write``; return bytes written."""
        fd = self._fd
        if fd < 0:
            raise ValueError("WalWriter is closed")
        pack = FRAME_HEADER.pack
        crc32 = zlib.crc32
        parts: list[bytes] = []
        for payload in payloads:
            length = len(payload)
            if not 0 < length <= MAX_RECORD_BYTES:
                raise ValueError(f"WAL payload must be 1..{MAX_RECORD_BYTES} bytes, got {length}")
            parts.append(pack(length, crc32(payload)))
            parts.append(payload)
        if not parts:
            return 0
        data = b"".join(parts)
        self._write(fd, data)
        if self.fsync == "always":
            _fdatasync(fd)
        else:
            self._dirty = True
        return len(data)

    def _write(self, fd: int, data: bytes) -> None:
        try:
            write_all(fd, data)
        except BaseException:
            self._roll_back(fd)
            raise
        self._size += len(data)

    def _roll_back(self, fd: int) -> None:
        """Cut a partially written append off, so later appends stay readable."""
        try:
            os.ftruncate(fd, self._size)
        except OSError:
            # Cannot restore a clean end: refuse further appends rather than write
            # records behind a torn frame that readers would never reach.
            os.close(fd)
            self._fd = -1

    def sync(self) -> None:
        """fdatasync now (no-op if nothing was appended since the last sync)."""
        if self._fd < 0 or not self._dirty:
            return
        self._dirty = False  # cleared first: an append racing with us re-marks it
        _fdatasync(self._fd)

    def sync_always(self) -> None:
        """fdatasync now, even if nothing is marked dirty: a background sync may have taken
        the mark and still be queued or running."""
        if self._fd < 0:
            return
        self._dirty = False
        _fdatasync(self._fd)

    def sync_in_background(self, syncer: BackgroundSync) -> None:
        """Have ``syncer`` fdatasync what was appended so far, without waiting for it (no-op if
        nothing was appended since)."""
        if self._fd >= 0 and self._dirty:
            syncer.request(self._fd)
            self._dirty = False

    def size(self) -> int:
        """Current file size in bytes (header included)."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Sync (unless fsync="no") and close. Idempotent."""
        if self._fd < 0:
            return
        try:
            if self.fsync != "no":
                self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> WalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- maintenance


def truncate_to(path: PathLike, valid_bytes: int) -> None:
    """Cut the file at ``path`` to ``valid_bytes`` (from ``read_wal``) and fsync it."""
    fd = os.open(path, os.O_RDWR | _O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if not 0 <= valid_bytes <= size:
            raise ValueError(f"valid_bytes {valid_bytes} outside file size {size}")
        if valid_bytes < size:
            os.ftruncate(fd, valid_bytes)
            os.fsync(fd)
    finally:
        os.close(fd)


def rewrite_empty(path: PathLike) -> None:
    """Atomically replace the log at ``path`` with an empty one (header only).

    Any open ``WalWriter`` on ``path`` keeps writing to the old, unlinked file:
    close it first and open a new one afterwards.
    """
    with atomic_write(path) as fd:
        write_all(fd, MAGIC)
