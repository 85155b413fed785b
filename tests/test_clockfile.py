"""zkv.store.clockfile: the persisted clock bound survives restarts and torn writes."""

from __future__ import annotations

from pathlib import Path

from zkv.store import clockfile
from zkv.store.clockfile import ClockFile, load


def test_no_file_means_unknown(tmp_path: Path) -> None:
    assert load(tmp_path) is None


def test_saved_values_are_read_back_after_a_restart(tmp_path: Path) -> None:
    f = ClockFile(tmp_path, 0, background=False)
    for v in (100, 50, 300):  # a lower value is never written
        f.save(v)
    assert f.saved == 300
    f.close()
    assert load(tmp_path) == 300


def test_background_writer_reports_what_is_durable(tmp_path: Path) -> None:
    import time
    f = ClockFile(tmp_path, 0)
    f.save(12345)
    deadline = time.monotonic() + 5
    while f.saved < 12345 and time.monotonic() < deadline:
        time.sleep(0.01)
    f.close()
    assert load(tmp_path) == 12345


def test_a_torn_write_leaves_the_other_slot_also_after_a_restart(tmp_path: Path) -> None:
    f = ClockFile(tmp_path, 0, background=False)
    for v in (100, 200, 300):
        f.save(v)
    f.close()
    assert load(tmp_path) == 300
    f = ClockFile(tmp_path, 300, background=False)
    f.save(400)  # goes to the slot that did not hold 300
    f.close()
    data = bytearray((tmp_path / "clock").read_bytes())
    # tear the slot written last: the bound announced before (300) must still be there
    slot = 0 if load_slot(tmp_path, 400) == 0 else 1
    data[slot * 16: slot * 16 + 16] = b"\xff" * 16
    (tmp_path / "clock").write_bytes(bytes(data))
    assert load(tmp_path) == 300


def load_slot(path: Path, value: int) -> int:
    import struct
    data = (path / "clock").read_bytes()
    return 0 if struct.unpack_from("<Q", data, 0)[0] == value else 1


def test_garbage_reads_as_unknown(tmp_path: Path) -> None:
    (tmp_path / "clock").write_bytes(b"\x00\x01garbage")
    assert load(tmp_path) is None


def test_create_marks_a_node_known_without_overwriting(tmp_path: Path) -> None:
    clockfile.create(tmp_path / "d")
    assert load(tmp_path / "d") == 0
    f = ClockFile(tmp_path / "d", 0, background=False)
    f.save(77)
    f.close()
    clockfile.create(tmp_path / "d")
    assert load(tmp_path / "d") == 77
