"""zkv/store/durability.py: recovery replays the log exactly, including keys a transfer dropped."""

from __future__ import annotations

from pathlib import Path

from zkv.events import Batch, encode_batch
from zkv.store.durability import Durability, encode_event_record, encode_repair_record


def _open(d: Path) -> Durability:
    return Durability(d, "n0", "no")


def test_replay_restores_events_and_vector(tmp_path: Path) -> None:
    disk = _open(tmp_path)
    disk.recover()
    disk.append([encode_event_record(encode_batch(Batch("n1", 1, [(10, b"a", b"1"), (11, b"b", b"2")])))], 2)
    disk.close()
    disk = _open(tmp_path)
    rec = disk.recover()
    assert rec.keyspace.get(b"a") == b"1" and rec.keyspace.get(b"b") == b"2"
    assert rec.vv == {"n1": 2} and rec.max_hlc == 11
    disk.close()


def test_keys_dropped_by_a_transfer_stay_dropped_after_replay(tmp_path: Path) -> None:
    """A full transfer or anti-entropy drops keys the peer had deleted and collected; the log
    must say so, or replaying the older SET would bring a deleted key back."""
    disk = _open(tmp_path)
    disk.recover()
    disk.append([encode_event_record(encode_batch(Batch("n1", 1, [(10, b"gone", b"old"), (12, b"kept", b"k")])))], 2)
    disk.append([encode_repair_record({"n1": 5}, 11, [], [b"gone", b"kept"])], 1)
    disk.close()
    disk = _open(tmp_path)
    rec = disk.recover()
    assert rec.keyspace.get(b"gone") is None  # stamped 10 < horizon 11: dropped again
    assert rec.keyspace.entry(b"gone") is None
    assert rec.keyspace.get(b"kept") == b"k"  # stamped 12 >= 11: a drop never removes newer data
    assert rec.vv == {"n1": 5}
    disk.close()


def test_old_repair_records_without_drops_still_replay(tmp_path: Path) -> None:
    import msgpack

    disk = _open(tmp_path)
    disk.recover()
    disk.append([b"R" + msgpack.packb([None, 0, [(b"k", 5, "n2", b"v")]], use_bin_type=True)], 1)
    disk.close()
    disk = _open(tmp_path)
    assert disk.recover().keyspace.get(b"k") == b"v"
    disk.close()


def test_gc_horizon_adopted_by_a_full_transfer_survives_restart(tmp_path: Path) -> None:
    disk = _open(tmp_path)
    disk.recover()
    disk.append([encode_repair_record({"n1": 3}, 777, [], [])], 1)  # end of a full transfer
    disk.append([encode_repair_record(None, 999, [], [])], 1)  # anti-entropy: not adopted
    disk.close()
    disk = _open(tmp_path)
    assert disk.recover().gc_horizon == 777
    disk.close()


def test_snapshot_of_several_origins_restores_the_same_keyspace(tmp_path: Path) -> None:
    """Recovery applies a snapshot's entries grouped by origin: every entry, tombstones
    included, must come back with its own origin and stamp."""
    from zkv.store.keyspace import Keyspace

    disk = _open(tmp_path)
    disk.recover()
    ks = Keyspace()
    for i in range(3000):
        ks.apply(b"k%d" % i, 100 + i, ("n0", "n1", "n2")[i % 3], None if i % 7 == 0 else b"v%d" % i)
    disk.snapshot_now(ks, {"n0": 1000, "n1": 1000, "n2": 1000}, 5000, 0)
    disk.close()
    disk = _open(tmp_path)
    rec = disk.recover()
    assert rec.snapshot_entries == 3000
    assert sorted(rec.keyspace.entries()) == sorted(ks.entries())
    assert rec.keyspace.digest() == ks.digest() and rec.keyspace.tombstones == ks.tombstones
    disk.close()


def test_replayed_repair_records_move_the_clock_past_their_entries(tmp_path: Path) -> None:
    """After a restart the clock starts above every timestamp the log holds, those of repaired
    entries too: otherwise a new local write could be stamped below data it should replace."""
    disk = _open(tmp_path)
    disk.recover()
    entries = [(b"a", 500, "n1", b"1"), (b"b", 900, "n2", None), (b"c", 700, "n0", b"3")]
    disk.append([encode_repair_record(None, 0, entries)], 3)
    disk.close()
    disk = _open(tmp_path)
    rec = disk.recover()
    assert rec.max_hlc == 900
    assert rec.keyspace.get(b"a") == b"1" and rec.keyspace.entry(b"b") == (900, "n2", None)
    disk.close()


def test_after_replay_the_snapshot_counter_counts_writes_not_records(tmp_path: Path) -> None:
    """snapshot_records counts writes; a replayed record of 50 writes must count 50, or a node
    that restarts often would let its log grow far past the threshold."""
    disk = _open(tmp_path)
    disk.recover()
    items = [(100 + i, b"k%d" % i, b"v") for i in range(50)]
    disk.append([encode_event_record(encode_batch(Batch("n1", 1, items)))], 50)
    disk.append([encode_repair_record(None, 0, [(b"r", 5, "n2", b"x")], [b"gone"])], 2)
    disk.close()
    disk = _open(tmp_path)
    rec = disk.recover()
    assert rec.log_records == 2 and disk.records_since_snapshot == 52
    disk.close()


def _events(origin: str, first: int, n: int, key: bytes = b"k") -> bytes:
    return encode_event_record(encode_batch(Batch(origin, first, [(100 * first + i, key + b"%d" % (first + i), b"v")
                                                                  for i in range(n)])))


def test_replay_claims_only_contiguous_events(tmp_path: Path) -> None:
    """A hole in the log (a lost segment, an unusable snapshot) must not let the vector jump over
    events the node never loaded: what lies after the hole is applied but handed back as held."""
    disk = _open(tmp_path)
    disk.recover()
    disk.append([_events("n1@a", 1, 3)], 3)   # seqs 1..3
    disk.append([_events("n1@a", 7, 2)], 2)   # seqs 7..8: 4..6 are missing
    disk.append([_events("n2@b", 5, 1)], 1)   # n2 starts at 5: 1..4 missing
    disk.close()
    rec = _open(tmp_path).recover()
    assert rec.vv == {"n1@a": 3}
    assert [(b.origin, b.first_seq, b.last_seq) for b in rec.held] == [("n1@a", 7, 8), ("n2@b", 5, 5)]
    assert rec.keyspace.get(b"k7") == b"v" and rec.keyspace.get(b"k5") == b"v"  # applied all the same


def test_a_transfer_record_fills_a_hole(tmp_path: Path) -> None:
    disk = _open(tmp_path)
    disk.recover()
    disk.append([_events("n1@a", 5, 2)], 2)                   # held: 1..4 missing
    disk.append([encode_repair_record({"n1@a": 5}, 0, [])], 1)  # a full transfer covered 1..5
    disk.close()
    rec = _open(tmp_path).recover()
    assert rec.vv == {"n1@a": 5}
    assert [(b.first_seq, b.last_seq) for b in rec.held] == [(6, 6)]  # only seq 6 still unclaimed


def test_unusable_snapshot_claims_nothing_it_did_not_load(tmp_path: Path) -> None:
    from zkv.store.keyspace import Keyspace

    disk = _open(tmp_path)
    disk.recover()
    disk.append([_events("n1@a", 1, 50)], 50)
    ks = Keyspace()
    for i in range(50):
        ks.apply(b"k%d" % (1 + i), 100 + i, "n1@a", b"v")
    disk.snapshot_now(ks, {"n1@a": 50}, 200, 0)
    disk.append([_events("n1@a", 51, 2)], 2)
    disk.close()
    snap = tmp_path / "snapshot.zkv"
    raw = bytearray(snap.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(b ^ 0xFF for b in raw[mid:mid + 64])
    snap.write_bytes(bytes(raw))
    rec = _open(tmp_path).recover()
    assert rec.vv == {}  # not {"n1@a": 52}: events 1..50 were in the snapshot it could not read
    assert [(b.first_seq, b.last_seq) for b in rec.held] == [(51, 52)]


def test_rotation_syncs_the_old_segment_in_every_mode(tmp_path: Path, monkeypatch) -> None:
    import zkv.store.wal as wal

    synced: list[int] = []
    real = wal._fdatasync
    monkeypatch.setattr(wal, "_fdatasync", lambda fd: (synced.append(fd), real(fd)))
    disk = _open(tmp_path)  # fsync = "no"
    disk.recover()
    disk.append([_events("n1@a", 1, 1)], 1)
    assert synced == []
    disk._open_segment(disk._segment + 1)
    assert len(synced) == 1  # the old segment reached the disk before the new one was used
    disk.close()


def test_no_snapshot_after_a_failed_append(tmp_path: Path) -> None:
    from zkv.store.keyspace import Keyspace

    disk = _open(tmp_path)
    disk.recover()
    try:
        disk.append([b""], 1)  # the log refuses an empty record
    except ValueError:
        pass
    assert disk.broken
    assert disk.start_snapshot(Keyspace(), {}, 0, 0) is False
    disk.snapshot_now(Keyspace(), {}, 0, 0)
    assert not (tmp_path / "snapshot.zkv").exists()
    disk.close()


def test_a_segment_that_cannot_be_opened_leaves_the_log_where_it_was(tmp_path: Path, monkeypatch) -> None:
    """No descriptor left (EMFILE) when a snapshot rotates the log: no snapshot, appends go on
    into the segment already open and are replayed; the snapshot is tried again later."""
    import errno

    import zkv.store.durability as durability
    from zkv.store.keyspace import Keyspace
    from zkv.store.wal import read_wal

    disk = _open(tmp_path)
    disk.recover()
    disk.append([_events("n1@a", 1, 1)], 1)
    real = durability.WalWriter

    def no_descriptor(*a, **kw):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(durability, "WalWriter", no_descriptor)
    assert disk.start_snapshot(Keyspace(), {}, 0, 0) is False
    assert not disk.snapshot_running and not disk.broken and disk.open_failures == 1
    disk.append([_events("n1@a", 2, 1)], 1)  # into the segment that was open
    assert len(read_wal(tmp_path / "wal-000001.log").payloads) == 2
    monkeypatch.setattr(durability, "WalWriter", real)
    assert disk.start_snapshot(Keyspace(), {}, 0, 0) is False  # not before OPEN_RETRY_S
    disk._retry_at = 0.0
    assert disk.start_snapshot(Keyspace(), {}, 0, 0) is True
    assert disk.poll_snapshot(block=True) is True
    disk.close()


def test_a_segment_left_with_its_header_only_is_made_durable_when_opened_again(tmp_path: Path,
                                                                             monkeypatch) -> None:
    """An earlier attempt wrote the header, then could not fsync the directory: the next open
    of that file fsyncs the directory before any record goes in."""
    import zkv.store.wal as wal

    dirs: list[str] = []
    monkeypatch.setattr(wal, "fsync_dir", lambda p: dirs.append(str(p)))
    path = tmp_path / "wal-000002.log"
    path.write_bytes(wal.MAGIC)
    w = wal.WalWriter(path, fsync="no")
    assert dirs == [str(path)]
    w.append([b"x"])
    w.close()
    wal.WalWriter(path, fsync="no").close()  # a segment with records: no directory fsync
    assert dirs == [str(path)]
