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
