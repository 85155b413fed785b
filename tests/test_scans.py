"""SCAN's cursors, KEYS and RANDOMKEY (zkv.store.scans, zkv.commands): Redis's full-iteration
guarantee under writes, bounded steps, and its glob patterns."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.test_string_commands import run
from zkv.store.keyspace import Keyspace
from zkv.store.scans import LOOK_FACTOR, MAX_SCANS, InvalidCursor, Scans, glob


def _ks(keys: list[bytes]) -> Keyspace:
    ks = Keyspace()
    for i, k in enumerate(keys):
        ks.apply(k, 10 + i, "n0@a", b"v")
    return ks


def test_every_key_present_throughout_is_returned_once_while_keys_come_and_go() -> None:
    rng = random.Random(3)
    keys = [b"k%d" % i for i in range(2000)]
    ks = _ks(keys)
    stable = set(keys[::2])  # never touched during the scan
    scans = Scans()
    cursor, seen, stamp = 0, [], 100_000
    while True:
        cursor, got = scans.step(ks, cursor, rng.randint(1, 50), None, 0.0)
        seen += got
        for _ in range(5):  # deletes and new keys between calls
            stamp += 1
            k = rng.choice(keys[1::2])
            ks.apply(k, stamp, "n1@b", None if rng.random() < 0.5 else b"w")
            ks.apply(b"new%d" % stamp, stamp, "n1@b", b"x")
        if cursor == 0:
            break
    assert stable <= set(seen)
    assert len(seen) == len(set(seen))
    assert all(ks.get(k) is not None or k not in stable for k in seen)


def test_a_step_looks_at_a_bounded_number_of_keys_however_many_were_deleted() -> None:
    keys = [b"k%d" % i for i in range(1000)]
    ks = _ks(keys)
    for k in keys[:990]:
        ks.apply(k, 5000, "n0@a", None)
    scans = Scans()
    cursor, got = scans.step(ks, 0, 10, None, 0.0)
    assert got == [] and cursor != 0 and cursor & 0xFFFF_FFFF == 10 * LOOK_FACTOR


def test_cursors_are_dropped_when_too_many_or_idle() -> None:
    ks = _ks([b"a", b"b", b"c"])
    scans = Scans()
    first, _ = scans.step(ks, 0, 1, None, 0.0)
    for _ in range(MAX_SCANS):
        scans.step(ks, 0, 1, None, 0.0)
    with pytest.raises(InvalidCursor):
        scans.step(ks, first, 1, None, 0.0)
    c, _ = scans.step(ks, 0, 1, None, 0.0)
    with pytest.raises(InvalidCursor):
        scans.step(ks, c, 1, None, 1000.0)
    with pytest.raises(InvalidCursor):
        scans.step(ks, 12345 << 32, 1, None, 0.0)


@pytest.mark.parametrize("pattern,yes,no", [
    (b"user:*", [b"user:", b"user:1:x"], [b"use", b"xuser:1"]),
    (b"h?llo", [b"hello", b"hallo"], [b"hllo", b"heello"]),
    (b"h[ae]llo", [b"hello", b"hallo"], [b"hillo"]),
    (b"h[^e]llo", [b"hallo"], [b"hello"]),
    (b"h[a-b]llo", [b"hallo", b"hbllo"], [b"hcllo"]),
    (b"a\\*b", [b"a*b"], [b"axb"]),
    (b"*\n*", [b"x\ny"], [b"xy"]),
])
def test_glob_patterns_as_redis_reads_them(pattern: bytes, yes: list[bytes], no: list[bytes]) -> None:
    rx = glob(pattern)
    assert all(rx.fullmatch(k) for k in yes) and not any(rx.fullmatch(k) for k in no)


def test_scan_keys_randomkey_through_the_store(tmp_path: Path) -> None:
    out = run(tmp_path, [b"MSET", b"a1", b"x", b"a2", b"y", b"b1", b"z"], [b"DEL", b"a2"],
              [b"KEYS", b"a*"], [b"SCAN", b"0", b"MATCH", b"*1", b"COUNT", b"100"],
              [b"SCAN", b"0", b"TYPE", b"hash"], [b"SCAN", b"abc"], [b"SCAN", b"0", b"COUNT", b"0"],
              [b"SCAN", b"0", b"BOGUS", b"1"], [b"SCAN", b"99999999999"], [b"RANDOMKEY"])
    assert out[2] == b"*1\r\n$2\r\na1\r\n"
    assert out[3] == b"*2\r\n$1\r\n0\r\n*2\r\n$2\r\na1\r\n$2\r\nb1\r\n"
    assert out[4] == b"*2\r\n$1\r\n0\r\n*0\r\n"
    assert out[5] == out[8] == b"-ERR invalid cursor\r\n"
    assert out[6] == out[7] == b"-ERR syntax error\r\n"
    assert out[9] in (b"$2\r\na1\r\n", b"$2\r\nb1\r\n")


def test_a_malformed_pattern_never_raises() -> None:
    """``KEYS []`` once stopped the store (re.error out of its loop), and ``HSCAN h 0 MATCH []``
    left the frontend without a reply: an empty class matches nothing, a backwards range is the
    same range (as in Redis), and any pattern compiles."""
    assert not glob(b"[]").fullmatch(b"a")
    assert glob(b"a[b-a]").fullmatch(b"ab") and not glob(b"a[b-a]").fullmatch(b"ac")
    assert glob(b"[^]").fullmatch(b"x")
    for p in (b"[", b"[[]", b"[\\", b"\\", b"[a-]", b"[-a]", b"[]]", b"(", b"a{2}", b"[z-a-c]", b"[^-]"):
        glob(p).fullmatch(b"a-]")  # (compiles, and answers)
