"""Tests for zkv.store.snapshot: round trips, chunking, corruption detection, atomicity."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from zkv.store import snapshot
from zkv.store.snapshot import (
    CHUNK_ENTRIES,
    Entry,
    SnapshotError,
    decode_chunk,
    iter_snapshot_frames,
    read_snapshot,
    read_snapshot_raw,
    write_snapshot,
)


def make_entries(n: int) -> list[Entry]:
    """n entries; every 7th is a tombstone."""
    return [
        (b"key-%08d" % i, 1_700_000_000 + i, f"node-{i % 3}", None if i % 7 == 0 else b"v%d" % i)
        for i in range(n)
    ]


def load(path: Path) -> tuple[dict, list[Entry]]:
    meta, chunks = read_snapshot(path)
    return meta, [e for chunk in chunks for e in chunk]


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    return tmp_path / "state.snap"


# --------------------------------------------------------------------------- round trips


def test_round_trip_tombstones_binary_keys_and_types(snap: Path) -> None:
    entries: list[Entry] = [
        (bytes(range(256)), 0, "a", b"\x00\xff" * 10),
        (b"", 2**64 - 1, "n\u00f6de-\u2603", b""),
        (b"\x00", -(2**63), "", None),  # tombstone
        (b"k", 42, "b", bytes(100_000)),
    ]
    meta = {"vv": {"node-a": 3, "node-b": 9}, "node": "a", 7: [1, 2], "blob": b"\x01\x02"}
    assert write_snapshot(snap, entries, meta) == 4
    got_meta, got = load(snap)
    assert got_meta == meta
    assert got == entries
    for key, hlc, origin, value in got:
        assert type(key) is bytes and type(hlc) is int and type(origin) is str
        assert value is None or type(value) is bytes


def test_zero_entries(snap: Path) -> None:
    assert write_snapshot(snap, [], {"vv": {}}) == 0
    assert load(snap) == ({"vv": {}}, [])
    assert list(iter_snapshot_frames(snap)) == []


def test_many_entries_use_multiple_chunks(snap: Path) -> None:
    entries = make_entries(25_000)
    assert write_snapshot(snap, iter(entries), {"n": 25_000}) == 25_000
    meta, chunks = read_snapshot(snap)
    chunk_list = list(chunks)
    assert meta == {"n": 25_000}
    assert [len(c) for c in chunk_list] == [CHUNK_ENTRIES, CHUNK_ENTRIES, 5_000]
    assert [e for c in chunk_list for e in c] == entries


def test_raw_frames_decode_to_the_same_entries(snap: Path) -> None:
    entries = make_entries(12_345)
    write_snapshot(snap, entries, {})
    frames = list(iter_snapshot_frames(snap))
    assert len(frames) == 2
    assert [e for f in frames for e in decode_chunk(f)] == entries
    # the documented wire encoding: a msgpack array of [key, hlc, origin, value]
    first = msgpack.unpackb(frames[0], raw=False)
    assert first[0] == [b"key-00000000", 1_700_000_000, "node-0", None]


def test_read_snapshot_raw_returns_meta_and_frames(snap: Path) -> None:
    write_snapshot(snap, make_entries(3), {"x": 1})
    meta, frames = read_snapshot_raw(snap)
    assert meta == {"x": 1}
    assert decode_chunk(next(frames)) == make_entries(3)


def test_overwrite_replaces_previous_snapshot(snap: Path) -> None:
    write_snapshot(snap, make_entries(10), {"gen": 1})
    write_snapshot(snap, make_entries(3), {"gen": 2})
    assert load(snap) == ({"gen": 2}, make_entries(3))


def test_oversized_chunks_are_split(snap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "CHUNK_SPLIT_BYTES", 1000)
    entries = make_entries(500)
    write_snapshot(snap, entries, {})
    frames = list(iter_snapshot_frames(snap))
    assert len(frames) > 10 and all(len(f) <= 1000 for f in frames)
    assert load(snap) == ({}, entries)


def test_reader_survives_replacement_of_the_file(snap: Path) -> None:
    write_snapshot(snap, make_entries(25_000), {"gen": 1})
    meta, chunks = read_snapshot(snap)
    write_snapshot(snap, make_entries(5), {"gen": 2})  # replaced under the reader
    assert meta == {"gen": 1}
    assert [e for c in chunks for e in c] == make_entries(25_000)


def test_chunk_iterator_totals_and_close(snap: Path) -> None:
    write_snapshot(snap, make_entries(25_000), {})
    meta, chunks = read_snapshot(snap)
    assert (chunks.chunks, chunks.entries) == (3, 25_000)
    with chunks:
        assert len(next(chunks)) == CHUNK_ENTRIES
    assert list(chunks) == []  # closed: nothing more
    frames = iter_snapshot_frames(snap)
    assert (frames.chunks, frames.entries) == (3, 25_000)
    frames.close()


def test_abandoned_iterator_closes_its_file(snap: Path) -> None:
    write_snapshot(snap, make_entries(10), {})
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        _meta, chunks = read_snapshot(snap)
        del chunks  # never iterated
        gc.collect()


def test_in_place_modification_after_verify_is_detected(snap: Path) -> None:
    write_snapshot(snap, make_entries(25_000), {})
    _meta, chunks = read_snapshot(snap)
    with open(snap, "r+b") as f:  # not how zkv writes, but must not go unnoticed
        f.seek(len(snapshot.MAGIC) + 8 + 100)
        f.write(b"\xff")
    with pytest.raises(SnapshotError, match="changed"):
        next(chunks)


# --------------------------------------------------------------------------- atomicity


def test_no_tmp_left_after_write(snap: Path) -> None:
    write_snapshot(snap, make_entries(100), {})
    assert os.listdir(snap.parent) == [snap.name]


def test_failed_write_keeps_old_snapshot_and_leaves_no_tmp(snap: Path) -> None:
    write_snapshot(snap, make_entries(5), {"gen": 1})

    def exploding() -> Iterator[Entry]:
        yield from make_entries(CHUNK_ENTRIES + 10)
        raise RuntimeError("state changed")

    with pytest.raises(RuntimeError):
        write_snapshot(snap, exploding(), {"gen": 2})
    assert os.listdir(snap.parent) == [snap.name]
    assert load(snap) == ({"gen": 1}, make_entries(5))


@pytest.mark.parametrize(
    "bad",
    [
        ("k", 1, "o", b"v"),  # str key
        (b"k", 1, b"o", b"v"),  # bytes origin
        (b"k", "1", "o", b"v"),  # str hlc
        (b"k", 1, "o", "v"),  # str value
        (b"k", 1, "o"),  # too short
        (b"k", 1, "o", b"v", 5),  # too long
    ],
)
def test_malformed_entries_rejected(snap: Path, bad: tuple) -> None:
    with pytest.raises(TypeError):
        write_snapshot(snap, [(b"ok", 1, "o", None), bad], {})
    assert not snap.exists() and os.listdir(snap.parent) == []


def test_meta_must_be_a_dict(snap: Path) -> None:
    with pytest.raises(TypeError):
        write_snapshot(snap, [], ["not", "a", "dict"])  # type: ignore[arg-type]
    assert os.listdir(snap.parent) == []


# --------------------------------------------------------------------------- corruption


def test_missing_file(snap: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_snapshot(snap)
    with pytest.raises(FileNotFoundError):
        iter_snapshot_frames(snap)


def _small_snapshot(path: Path) -> bytes:
    write_snapshot(path, make_entries(3), {"vv": {"a": 1}})
    return path.read_bytes()


def test_every_truncation_is_rejected(snap: Path) -> None:
    data = _small_snapshot(snap)
    for cut in range(len(data)):
        snap.write_bytes(data[:cut])
        with pytest.raises(SnapshotError):
            read_snapshot(snap)
        with pytest.raises(SnapshotError):
            iter_snapshot_frames(snap)


def test_every_bit_flip_is_rejected(snap: Path) -> None:
    data = _small_snapshot(snap)
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            corrupt = bytearray(data)
            corrupt[i] ^= bit
            snap.write_bytes(corrupt)
            with pytest.raises(SnapshotError):
                read_snapshot(snap)


def test_truncated_large_snapshot_is_rejected(snap: Path) -> None:
    write_snapshot(snap, make_entries(25_000), {})
    data = snap.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, len(data) - 40):
        snap.write_bytes(data[:cut])
        with pytest.raises(SnapshotError):
            read_snapshot(snap)


def test_flip_in_last_chunk_rejected_before_any_chunk_is_returned(snap: Path) -> None:
    write_snapshot(snap, make_entries(25_000), {})
    data = bytearray(snap.read_bytes())
    data[len(data) - 200] ^= 0x10  # inside the last chunk, far from the first
    snap.write_bytes(data)
    with pytest.raises(SnapshotError):
        read_snapshot(snap)


def test_trailing_garbage_is_rejected(snap: Path) -> None:
    data = _small_snapshot(snap)
    snap.write_bytes(data + b"\x00")
    with pytest.raises(SnapshotError):
        read_snapshot(snap)


def test_file_cut_after_meta_frame_is_rejected(snap: Path) -> None:
    write_snapshot(snap, make_entries(3), {"x": 1})
    data = snap.read_bytes()
    footer_frame = 8 + snapshot.FOOTER.size
    snap.write_bytes(data[:-footer_frame])  # ends cleanly after the meta frame
    with pytest.raises(SnapshotError, match="incomplete|footer"):
        read_snapshot(snap)


def test_wrong_magic_and_empty_file(snap: Path) -> None:
    snap.write_bytes(b"")
    with pytest.raises(SnapshotError):
        read_snapshot(snap)
    snap.write_bytes(b"ZKVWAL1\n" + b"\x00" * 64)
    with pytest.raises(SnapshotError, match="magic"):
        read_snapshot(snap)


def test_decode_chunk_rejects_garbage() -> None:
    with pytest.raises(SnapshotError):
        decode_chunk(b"\xc1")
    with pytest.raises(SnapshotError):
        decode_chunk(msgpack.packb({"not": "a list"}))
