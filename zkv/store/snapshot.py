"""Snapshot files holding the whole zkv state.

This module owns the snapshot file format: writing a full state atomically, and
reading it back only after the whole file has been verified, so a caller never
half-loads a damaged snapshot.

An entry is ``(key: bytes, hlc: int, origin: str, value: bytes | None)``; a value of
``None`` is a tombstone. Metadata is any msgpack-able dict (the caller stores the
version vector etc. there).

File layout (frames are WAL frames: ``<u32 LE length> <u32 LE crc32> <payload>``)::

    b"ZKVSNAP1\\n"                       9-byte magic
    chunk frame*                        msgpack array of up to 10,000 entries, each
                                        entry a msgpack array [key, hlc, origin, value]
                                        (key/value bin, hlc int, origin str, value nil
                                        for a tombstone)
    meta frame                          msgpack map: the caller's metadata
    footer frame                        b"ZKVSNAP\\0" <u64 LE chunks> <u64 LE entries>

The footer must be the last frame and end exactly at EOF; its counts are checked
against the chunk frames (the entry count of each chunk is read from its msgpack
array header), so truncation at a frame boundary, lost or extra frames and a file
cut right after the meta frame are all detected.

A chunk payload is self-contained msgpack, so ``iter_snapshot_frames`` can stream it
to a peer unchanged and the peer decodes it with ``decode_chunk``.

Files are written to ``path + ".tmp"``, fsync'd, renamed over ``path`` and the
directory fsync'd (see ``zkv.store.wal.atomic_write``).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, BinaryIO, Generic, TypeVar

import msgpack

from zkv.store.orset import TAG_STATE, Member, decode_state
from zkv.store.parts import HASH, RESERVED, SET, split

from .wal import FRAME_HEADER, MAX_RECORD_BYTES, atomic_write, write_all

__all__ = [
    "MAGIC",
    "CHUNK_ENTRIES",
    "Entry",
    "SnapshotError",
    "SnapshotChunks",
    "write_snapshot",
    "read_snapshot",
    "read_snapshot_raw",
    "iter_snapshot_frames",
    "decode_chunk",
    "encode_chunk",
]

MAGIC = b"ZKVSNAP1\n"
FOOTER = struct.Struct("<8sQQ")  # marker, number of chunk frames, number of entries
FOOTER_MARKER = b"ZKVSNAP\x00"
CHUNK_ENTRIES = 10_000  # entries per chunk frame
CHUNK_SPLIT_BYTES = 64 << 20  # a packed chunk bigger than this is split in halves

Entry = tuple[bytes, int, str, bytes | None]
PathLike = str | os.PathLike[str]

T = TypeVar("T")


class SnapshotError(Exception):
    """The snapshot file is corrupt, incomplete or not a snapshot."""


# --------------------------------------------------------------------------- encoding


def encode_chunk(entries: list[Entry]) -> bytes:
    """msgpack-encode a list of entries as one chunk payload."""
    return msgpack.packb(entries, use_bin_type=True)


def decode_chunk(payload: bytes) -> list[Entry]:
    """Decode one chunk payload (from the file or from ``iter_snapshot_frames``)."""
    try:
        entries = msgpack.unpackb(payload, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises a zoo of ValueError/TypeError subclasses
        raise SnapshotError(f"undecodable chunk: {exc}") from exc
    if type(entries) is not tuple:
        raise SnapshotError("chunk is not a msgpack array")
    return list(entries)


def _chunk_len(payload: bytes) -> int:
    """Number of entries in a chunk, read from its msgpack array header."""
    first = payload[0] if payload else -1
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first == 0xDC and len(payload) >= 3:
        return int.from_bytes(payload[1:3], "big")
    if first == 0xDD and len(payload) >= 5:
        return int.from_bytes(payload[1:5], "big")
    raise SnapshotError("chunk is not a msgpack array")


def _encode_meta(meta: dict[Any, Any]) -> bytes:
    if not isinstance(meta, dict):
        raise TypeError(f"snapshot meta must be a dict, not {type(meta).__name__}")
    return msgpack.packb(meta, use_bin_type=True)


def _decode_meta(payload: bytes) -> dict[Any, Any]:
    try:
        meta = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:
        raise SnapshotError(f"undecodable meta: {exc}") from exc
    if not isinstance(meta, dict):
        raise SnapshotError("snapshot meta is not a map")
    return meta


# --------------------------------------------------------------------------- writing


def check_entries(entries: list[Entry]) -> None:
    """Reject entries of the wrong shape (TypeError): before writing them, since msgpack would
    happily round-trip them into something else (a str key comes back as str), and before
    applying entries a peer sent. About 0.1 s per million entries."""
    for entry in entries:
        try:
            key, hlc, origin, value = entry
        except (TypeError, ValueError):
            raise TypeError(f"snapshot entry must be a 4-tuple, got {entry!r:.200}") from None
        if (
            type(key) is not bytes
            or type(hlc) is not int
            or type(origin) is not str
            or (value is not None and type(value) not in (bytes, list, tuple))
        ):
            raise TypeError(
                f"snapshot entry must be (bytes, int, str, bytes | list | None), got {entry!r:.200}"
            )
        if type(value) in (list, tuple) and len(value) == 2:  # a value with its expiry
            v, exp = value
            if type(v) is not bytes or type(exp) is not int or not 0 < exp < 1 << 62:
                raise TypeError(f"snapshot entry holds a bad expiring value: {entry!r:.200}")
        part = key[:2] == RESERVED
        if part:
            try:
                kind = split(key)[0]
            except ValueError:
                raise TypeError(f"snapshot entry has a reserved key that names no field or member: {key!r:.200}") from None
            if kind == SET and not (type(value) in (list, tuple) and value and value[0] == TAG_STATE):
                raise TypeError(f"snapshot entry holds a set's member without its state: {entry!r:.200}")
            if kind == HASH and type(value) in (list, tuple) and len(value) == 2:
                raise TypeError(f"snapshot entry holds a hash field with an expiry: {entry!r:.200}")
        try:  # a counter's or a set member's state (zkv.store.counter, zkv.store.orset)
            state = decode_state(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"snapshot entry holds a bad counter or member state: {exc}") from None
        if state is None:
            continue
        if state.__class__ is Member and not (part and kind == SET):
            raise TypeError(f"snapshot entry holds a member's state for a key that is no member: {entry!r:.200}")
        if state.top() > (hlc, origin):
            # (the entry's version is the latest in its state: _within_clock and _not_ours
            # judge the state by it)
            raise TypeError("snapshot entry holds a state newer than its version")


def _packed_chunks(entries: list[Entry]) -> Iterator[bytes]:
    """Pack ``entries`` into one payload, splitting it if it would be too large."""
    payload = encode_chunk(entries)
    if len(payload) <= CHUNK_SPLIT_BYTES:
        yield payload
    elif len(entries) > 1:
        half = len(entries) // 2
        yield from _packed_chunks(entries[:half])
        yield from _packed_chunks(entries[half:])
    elif len(payload) <= MAX_RECORD_BYTES:
        yield payload
    else:
        raise ValueError(f"snapshot entry too large: {len(payload)} bytes packed")


def _write_frame(fd: int, payload: bytes) -> None:
    write_all(fd, FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)


def write_snapshot(path: PathLike, entries: Iterable[Entry], meta: dict[Any, Any],
                   progress: Callable[[int], None] | None = None) -> int:
    """Atomically write a snapshot of ``entries`` + ``meta`` to ``path``; ``progress(n)`` hears
    of every chunk of ``n`` entries written.

    Returns the number of entries written. If anything fails (including the
    ``entries`` iterable raising), ``path`` keeps its previous content and no
    ``.tmp`` file is left behind.
    """
    meta_payload = _encode_meta(meta)  # fail early, before touching the disk
    it = iter(entries)
    chunks = count = 0
    with atomic_write(path) as fd:
        write_all(fd, MAGIC)
        while batch := list(islice(it, CHUNK_ENTRIES)):
            check_entries(batch)
            for payload in _packed_chunks(batch):
                _write_frame(fd, payload)
                chunks += 1
            count += len(batch)
            if progress is not None:
                progress(len(batch))
        _write_frame(fd, meta_payload)
        _write_frame(fd, FOOTER.pack(FOOTER_MARKER, chunks, count))
    return count


# --------------------------------------------------------------------------- reading


@dataclass(slots=True)
class _FrameRef:
    offset: int  # of the payload
    length: int
    crc: int


@dataclass(slots=True)
class _Index:
    """What a full verification pass learned about a snapshot file."""

    chunks: list[_FrameRef] = field(default_factory=list)
    entries: int = 0
    meta: dict[Any, Any] = field(default_factory=dict)


def _pread(f: BinaryIO, length: int, offset: int) -> bytes:
    """Read exactly ``length`` bytes at ``offset`` (fewer only at EOF)."""
    fd = f.fileno()
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _scan_frames(f: BinaryIO, size: int) -> Iterator[tuple[_FrameRef, bytes]]:
    """Yield every frame after the magic, checking bounds and checksums."""
    offset = len(MAGIC)
    while offset < size:
        if size - offset < FRAME_HEADER.size:
            raise SnapshotError(f"truncated frame header at offset {offset}")
        length, crc = FRAME_HEADER.unpack(_pread(f, FRAME_HEADER.size, offset))
        start = offset + FRAME_HEADER.size
        if length > MAX_RECORD_BYTES or start + length > size:
            raise SnapshotError(f"truncated or corrupt frame at offset {offset} (length {length})")
        payload = _pread(f, length, start)
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise SnapshotError(f"checksum mismatch in frame at offset {offset}")
        yield _FrameRef(start, length, crc), payload
        offset = start + length


def _decode_footer(payload: bytes) -> tuple[int, int]:
    """Return (chunks, entries) from the footer frame."""
    if len(payload) != FOOTER.size:
        raise SnapshotError("snapshot is incomplete (no footer)")
    marker, chunks, entries = FOOTER.unpack(payload)
    if marker != FOOTER_MARKER:
        raise SnapshotError("snapshot is incomplete (no footer)")
    return chunks, entries


def _verify(f: BinaryIO) -> _Index:
    """Check the whole file: magic, every frame's crc, meta and footer."""
    size = os.fstat(f.fileno()).st_size
    if _pread(f, len(MAGIC), 0) != MAGIC:
        raise SnapshotError("not a zkv snapshot (bad magic)")
    index = _Index()
    # The last two frames are meta and footer; hold each frame back until we
    # know it is not one of them.
    pending: list[tuple[_FrameRef, bytes]] = []
    for frame in _scan_frames(f, size):
        pending.append(frame)
        if len(pending) > 2:
            ref, payload = pending.pop(0)
            index.chunks.append(ref)
            index.entries += _chunk_len(payload)
    if len(pending) < 2:
        raise SnapshotError("snapshot is incomplete (missing meta or footer)")
    chunks, entries = _decode_footer(pending[1][1])
    if chunks != len(index.chunks) or entries != index.entries:
        raise SnapshotError(
            f"footer says {chunks} chunks/{entries} entries, "
            f"file has {len(index.chunks)}/{index.entries}"
        )
    index.meta = _decode_meta(pending[0][1])
    return index


class SnapshotChunks(Generic[T]):
    """Iterator over the chunks of a verified snapshot.

    Each payload is re-read from the still-open file (and its crc re-checked) only
    when asked for, so memory use is one chunk. The file is closed when the
    iterator is exhausted, on ``close()``/``with``, or when it is garbage collected.
    ``chunks`` and ``entries`` give the totals from the footer (e.g. for presizing
    or progress reporting).
    """

    def __init__(self, f: BinaryIO, index: _Index, decode: Callable[[bytes], T]) -> None:
        self._f: BinaryIO | None = f
        self._refs = index.chunks
        self._next = 0
        self._decode = decode
        self.chunks = len(index.chunks)
        self.entries = index.entries

    def __next__(self) -> T:
        f = self._f
        if f is None or self._next >= len(self._refs):
            self.close()
            raise StopIteration
        ref = self._refs[self._next]
        self._next += 1
        payload = _pread(f, ref.length, ref.offset)
        if len(payload) != ref.length or zlib.crc32(payload) != ref.crc:
            self.close()
            raise SnapshotError("snapshot file changed while being read")
        return self._decode(payload)

    def __iter__(self) -> SnapshotChunks[T]:
        return self

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> SnapshotChunks[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _open_verified(
    path: PathLike, decode: Callable[[bytes], T]
) -> tuple[dict[Any, Any], SnapshotChunks[T]]:
    """Open and verify the file; hand it to a ``SnapshotChunks`` that decodes with ``decode``."""
    f = open(path, "rb", buffering=0)
    try:
        index = _verify(f)
    except BaseException:
        f.close()
        raise
    return index.meta, SnapshotChunks(f, index, decode)


def _raw(payload: bytes) -> bytes:
    return payload


def read_snapshot_raw(path: PathLike) -> tuple[dict[Any, Any], SnapshotChunks[bytes]]:
    """Verify the snapshot at ``path`` and return ``(meta, raw chunk payloads)``.

    Meta and chunks come from the same open file, so they stay consistent even if
    a newer snapshot replaces ``path`` meanwhile. Raises ``FileNotFoundError`` if
    there is no file and ``SnapshotError`` if it is damaged. Memory use is one
    chunk at a time: payloads are re-read (and re-checked) lazily.
    """
    return _open_verified(path, _raw)


def iter_snapshot_frames(path: PathLike) -> SnapshotChunks[bytes]:
    """Verify the snapshot at ``path``, then return an iterator of its raw chunk
    payloads (msgpack arrays of ``[key, hlc, origin, value]``; see ``decode_chunk``)."""
    return read_snapshot_raw(path)[1]


def read_snapshot(path: PathLike) -> tuple[dict[Any, Any], SnapshotChunks[list[Entry]]]:
    """Verify the snapshot at ``path`` and return ``(meta, iterator of entry chunks)``.

    The whole file is checked before this returns, so if it returns the caller can
    load the chunks without fear of a corrupt tail.
    """
    return _open_verified(path, decode_chunk)
