"""Tests for zkv.store.wal: framing, torn/corrupt tails, writer modes, maintenance."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.store import wal
from zkv.store.wal import (
    MAGIC,
    WalReadResult,
    WalWriter,
    iter_wal,
    read_wal,
    rewrite_empty,
    truncate_to,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def frame(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def write_log(path: Path, payloads: list[bytes]) -> None:
    with WalWriter(path, fsync="no") as w:
        w.append(payloads)


def record_offsets(payloads: list[bytes]) -> list[int]:
    """File offset at which each record's frame starts."""
    offsets, pos = [], len(MAGIC)
    for p in payloads:
        offsets.append(pos)
        pos += 8 + len(p)
    return offsets


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "wal.log"


# --------------------------------------------------------------------------- round trips


def test_missing_file_is_empty_and_clean(log: Path) -> None:
    assert read_wal(log) == WalReadResult([], 0, 0, None)
    assert list(iter_wal(log)) == []


def test_empty_file_is_empty_and_clean(log: Path) -> None:
    log.write_bytes(b"")
    assert read_wal(log) == WalReadResult([], 0, 0, None)


def test_new_writer_writes_header_only(log: Path) -> None:
    with WalWriter(log) as w:
        assert w.size() == len(MAGIC)
    assert log.read_bytes() == MAGIC
    assert read_wal(log) == WalReadResult([], len(MAGIC), 0, None)


def test_round_trip_and_exact_bytes(log: Path) -> None:
    payloads = [b"a", b"hello", bytes(range(256)), b"\x00" * 1000]
    with WalWriter(log) as w:
        n1 = w.append(payloads[:2])
        n2 = w.append(payloads[2:])
        assert n1 == sum(8 + len(p) for p in payloads[:2])
        assert n2 == sum(8 + len(p) for p in payloads[2:])
        assert w.size() == os.path.getsize(log) == len(MAGIC) + n1 + n2
    assert log.read_bytes() == MAGIC + b"".join(frame(p) for p in payloads)
    res = read_wal(log)
    assert res == WalReadResult(payloads, len(MAGIC) + n1 + n2, 0, None)
    assert list(iter_wal(log)) == payloads


def test_reopen_appends_without_second_header(log: Path) -> None:
    write_log(log, [b"one"])
    with WalWriter(log) as w:
        assert w.size() == os.path.getsize(log)
        w.append([b"two"])
    assert read_wal(log).payloads == [b"one", b"two"]
    assert log.read_bytes().count(MAGIC) == 1


def test_append_accepts_any_iterable_and_empty(log: Path) -> None:
    with WalWriter(log) as w:
        assert w.append([]) == 0
        assert w.append(p for p in [b"x", b"y"]) == 2 * 9
    assert read_wal(log).payloads == [b"x", b"y"]


def test_empty_payload_rejected_and_nothing_written(log: Path) -> None:
    with WalWriter(log) as w:
        with pytest.raises(ValueError):
            w.append([b"ok", b""])
        assert w.size() == len(MAGIC)
    assert read_wal(log).payloads == []


def test_large_payloads_cross_read_blocks(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wal, "_READ_BLOCK", 7)
    payloads = [os.urandom(n) for n in (1, 6, 7, 8, 9, 100, 3000)]
    write_log(log, payloads)
    assert read_wal(log).payloads == payloads
    assert list(iter_wal(log)) == payloads


# --------------------------------------------------------------------------- torn tails


def test_torn_tail_at_every_offset_of_last_record(tmp_path: Path) -> None:
    payloads = [b"first", b"second record", b"the last record, torn"]
    full = tmp_path / "full"
    write_log(full, payloads)
    data = full.read_bytes()
    last = record_offsets(payloads)[-1]
    for cut in range(last, len(data)):
        torn = tmp_path / f"torn-{cut}"
        torn.write_bytes(data[:cut])
        res = read_wal(torn)
        assert res.payloads == payloads[:-1], cut
        assert res.valid_bytes == last, cut
        assert res.dropped_bytes == cut - last, cut
        assert list(iter_wal(torn)) == payloads[:-1]
        if cut == last:
            assert res.reason is None
        else:
            assert res.reason is not None and "torn record" in res.reason
            assert f"offset {last}" in res.reason


def test_torn_reason_message(log: Path) -> None:
    write_log(log, [b"a" * 32])
    data = log.read_bytes()
    log.write_bytes(data[:-28])  # 40-byte frame, 12 bytes of it left
    assert read_wal(log).reason == "torn record at offset 8 (needs 40 bytes, 12 left)"


def test_truncate_then_append_recovers(log: Path) -> None:
    write_log(log, [b"keep", b"lost"])
    log.write_bytes(log.read_bytes()[:-2])
    res = read_wal(log)
    assert res.payloads == [b"keep"] and res.dropped_bytes > 0
    truncate_to(log, res.valid_bytes)
    assert os.path.getsize(log) == res.valid_bytes
    with WalWriter(log) as w:
        w.append([b"after"])
    assert read_wal(log) == WalReadResult([b"keep", b"after"], os.path.getsize(log), 0, None)


def test_truncate_to_bounds(log: Path) -> None:
    write_log(log, [b"x"])
    size = os.path.getsize(log)
    truncate_to(log, size)  # no-op
    assert os.path.getsize(log) == size
    with pytest.raises(ValueError):
        truncate_to(log, size + 1)
    with pytest.raises(ValueError):
        truncate_to(log, -1)


# --------------------------------------------------------------------------- corruption


def test_flipped_payload_byte_is_checksum_mismatch(log: Path) -> None:
    payloads = [b"alpha", b"bravo", b"charlie", b"delta"]
    write_log(log, payloads)
    data = bytearray(log.read_bytes())
    third = record_offsets(payloads)[2]
    for i in range(third + 8, third + 8 + len(payloads[2])):
        corrupt = bytearray(data)
        corrupt[i] ^= 0x01
        log.write_bytes(corrupt)
        res = read_wal(log)
        assert res.payloads == payloads[:2]
        assert res.valid_bytes == third
        assert res.dropped_bytes == len(data) - third
        assert res.reason == f"checksum mismatch at offset {third}"


def test_flipped_crc_byte_is_checksum_mismatch(log: Path) -> None:
    write_log(log, [b"alpha", b"bravo"])
    data = bytearray(log.read_bytes())
    second = record_offsets([b"alpha", b"bravo"])[1]
    data[second + 5] ^= 0x80
    log.write_bytes(data)
    res = read_wal(log)
    assert res.payloads == [b"alpha"] and "checksum mismatch" in (res.reason or "")


def test_absurd_length_is_corrupt(log: Path) -> None:
    write_log(log, [b"ok"])
    with open(log, "ab") as f:
        f.write(struct.pack("<II", (1 << 30) + 1, 0) + b"x" * 100)
    res = read_wal(log)
    assert res.payloads == [b"ok"]
    assert res.dropped_bytes == 108
    assert "bad record length" in (res.reason or "")


def test_zero_filled_tail_is_corrupt(log: Path) -> None:
    # Some filesystems leave zeros after a crash; crc32(b"") == 0, so a zero
    # length must not be accepted as an (infinitely repeatable) valid record.
    write_log(log, [b"ok"])
    with open(log, "ab") as f:
        f.write(b"\x00" * 4096)
    res = read_wal(log)
    assert res.payloads == [b"ok"] and res.dropped_bytes == 4096
    assert "bad record length 0" in (res.reason or "")


def test_bad_header(log: Path) -> None:
    log.write_bytes(b"NOTAWAL!" + frame(b"x"))
    res = read_wal(log)
    assert res == WalReadResult([], 0, len(MAGIC) + 9, "bad header")
    assert list(iter_wal(log)) == []
    with pytest.raises(ValueError, match="bad header"):
        WalWriter(log)


def test_torn_header(log: Path) -> None:
    log.write_bytes(MAGIC[:3])
    res = read_wal(log)
    assert res.payloads == [] and res.valid_bytes == 0 and res.dropped_bytes == 3
    assert res.reason == "torn header (3 of 8 bytes)"
    with pytest.raises(ValueError):
        WalWriter(log)
    truncate_to(log, res.valid_bytes)
    with WalWriter(log) as w:
        w.append([b"fresh"])
    assert read_wal(log).payloads == [b"fresh"]


# --------------------------------------------------------------------------- writer


@pytest.mark.parametrize("mode", ["always", "everysec", "no"])
def test_fsync_modes(log: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = wal._fdatasync
    monkeypatch.setattr(wal, "_fdatasync", lambda fd: (calls.append(fd), real(fd)))
    with WalWriter(log, fsync=mode) as w:
        w.append([b"a"])
        w.append([b"b"])
        assert len(calls) == (2 if mode == "always" else 0)
        w.sync()
        assert len(calls) == (2 if mode == "always" else 1)
        w.sync()  # nothing new: no second fdatasync
        assert len(calls) == (2 if mode == "always" else 1)
    assert read_wal(log).payloads == [b"a", b"b"]


@pytest.mark.parametrize("mode", ["", "sometimes", "ALWAYS", None])
def test_bad_fsync_mode(log: Path, mode: object) -> None:
    with pytest.raises(ValueError):
        WalWriter(log, fsync=mode)  # type: ignore[arg-type]
    assert not log.exists()


def test_close_is_idempotent_and_final(log: Path) -> None:
    w = WalWriter(log)
    w.close()
    w.close()
    assert w.closed
    with pytest.raises(ValueError):
        w.append([b"x"])


def test_failed_write_is_rolled_back(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with WalWriter(log) as w:
        w.append([b"before"])
        size = w.size()
        real_write = os.write

        def half_then_fail(fd: int, data: bytes) -> int:
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(wal.os, "write", half_then_fail)
        with pytest.raises(OSError):
            w.append([b"x" * 100])
        monkeypatch.setattr(wal.os, "write", real_write)
        assert os.path.getsize(log) == size == w.size()
        w.append([b"after"])
    assert read_wal(log) == WalReadResult([b"before", b"after"], os.path.getsize(log), 0, None)


def test_appended_records_survive_sigkill(log: Path) -> None:
    script = (
        "import os, signal\n"
        "from zkv.store.wal import WalWriter\n"
        f"w = WalWriter({str(log)!r}, fsync='no')\n"
        "w.append([b'one', b'two'])\n"
        "w.append([b'three'])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env)
    assert proc.returncode == -signal.SIGKILL
    assert read_wal(log) == WalReadResult([b"one", b"two", b"three"], os.path.getsize(log), 0, None)


# --------------------------------------------------------------------------- rewrite_empty


def test_rewrite_empty(log: Path) -> None:
    write_log(log, [b"a", b"b"])
    rewrite_empty(log)
    assert log.read_bytes() == MAGIC
    assert read_wal(log) == WalReadResult([], len(MAGIC), 0, None)
    assert os.listdir(log.parent) == [log.name]
    with WalWriter(log) as w:
        w.append([b"c"])
    assert read_wal(log).payloads == [b"c"]


def test_rewrite_empty_creates_missing_file(log: Path) -> None:
    rewrite_empty(log)
    assert log.read_bytes() == MAGIC


# --------------------------------------------------------------------------- properties

payload_lists = st.lists(st.binary(min_size=1, max_size=300), max_size=40)


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(payload_lists, max_size=5), block=st.integers(1, 64))
def test_property_round_trip(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[bytes]], block: int
) -> None:
    path = tmp_path_factory.mktemp("prop") / "wal.log"
    with WalWriter(path, fsync="no") as w:
        for batch in batches:
            w.append(batch)
    expected = [p for batch in batches for p in batch]
    old = wal._READ_BLOCK
    wal._READ_BLOCK = block
    try:
        res = read_wal(path)
        streamed = list(iter_wal(path))
    finally:
        wal._READ_BLOCK = old
    assert res == WalReadResult(expected, os.path.getsize(path), 0, None)
    assert streamed == expected


@settings(max_examples=150, deadline=None)
@given(payloads=payload_lists, data=st.data())
def test_property_any_truncation_keeps_a_prefix(
    tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes], data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("prop") / "wal.log"
    write_log(path, payloads)
    full = path.read_bytes()
    cut = data.draw(st.integers(0, len(full)))
    path.write_bytes(full[:cut])
    res = read_wal(path)
    ends = [len(MAGIC) + sum(8 + len(p) for p in payloads[:i]) for i in range(len(payloads) + 1)]
    kept = max((i for i, end in enumerate(ends) if end <= cut), default=-1)
    if kept < 0:  # cut inside the header
        assert res.payloads == [] and res.valid_bytes == 0 and res.dropped_bytes == cut
    else:
        assert res.payloads == payloads[:kept]
        assert res.valid_bytes == ends[kept]
        assert res.dropped_bytes == cut - ends[kept]
        assert (res.reason is None) == (cut == ends[kept])
