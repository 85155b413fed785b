"""The expiry commands on one node, through dispatch, the store and the encoder, with the store's
clock moved by hand: what each answers and writes, as Redis does (zkv.commands,
zkv.store.replica); how expiries merge across nodes is tests/test_expiry_rule.py's."""

from __future__ import annotations

from pathlib import Path

import msgpack

from tests.test_replica import T0, replica
from zkv.commands import Deferred, dispatch
from zkv.events import decode_batch
from zkv.protocol import resp as r
from zkv.store.outputs import CLIENT, LOG


def run(tmp: Path, *steps: list[bytes] | int) -> list[bytes]:
    """Each command in turn; an int between them moves the store's wall clock on by that many ms."""
    rep, clock = replica(tmp, peers=())
    out = []
    for step in steps:
        if isinstance(step, int):
            clock.ms += step
            continue
        d = dispatch(step, True, False)
        if not isinstance(d, Deferred):
            out.append(d)
            continue
        rep.client([[b"c", msgpack.packb(d.ops, use_bin_type=True)]], 1.0)
        outs = rep.take()
        run.events += [i[2] for o in outs if o[0] == LOG for rec in o[1]  # type: ignore[attr-defined]
                       if rec[:1] == b"E" for i in decode_batch(rec[1:]).items]
        replies = [o for o in outs if o[0] == CLIENT and o[1][0] == b"c"]
        out.append(d.encode(msgpack.unpackb(replies[0][1][1], raw=False)))
    return out


run.events = []  # type: ignore[attr-defined]


def test_set_with_an_expiry_then_ttl_pttl_expiretime_and_gone(tmp_path: Path) -> None:
    assert run(tmp_path,
               [b"SET", b"k", b"v", b"EX", b"10"], [b"TTL", b"k"], [b"PTTL", b"k"],
               [b"EXPIRETIME", b"k"], [b"PEXPIRETIME", b"k"], 9_400, [b"TTL", b"k"], [b"PTTL", b"k"],
               600, [b"GET", b"k"], [b"TTL", b"k"], [b"EXISTS", b"k"], [b"DBSIZE"],
               [b"SET", b"p", b"v"], [b"TTL", b"p"]) == [
        r.OK, b":10\r\n", b":10000\r\n", b":%d\r\n" % ((T0 + 10_000 + 500) // 1000),
        b":%d\r\n" % (T0 + 10_000), b":1\r\n", b":600\r\n",
        r.NULL_BULK, b":-2\r\n", b":0\r\n", b":0\r\n", r.OK, b":-1\r\n"]


def test_set_options_together_and_keepttl(tmp_path: Path) -> None:
    assert run(tmp_path,
               [b"SET", b"k", b"1", b"PX", b"5000", b"NX", b"GET"],   # absent: written, null back
               [b"SET", b"k", b"2", b"NX", b"PX", b"9"],              # present: not written
               [b"SET", b"k", b"3", b"KEEPTTL"], [b"PTTL", b"k"],
               [b"SET", b"k", b"4", b"XX"], [b"PTTL", b"k"],          # a SET without EX clears it
               [b"SET", b"k", b"5", b"PXAT", b"%d" % (T0 - 1)], [b"GET", b"k"],  # past: deleted
               [b"PSETEX", b"q", b"250", b"v"], [b"PTTL", b"q"], [b"SETEX", b"q", b"2", b"w"],
               [b"TTL", b"q"]) == [
        r.NULL_BULK, r.NULL_BULK, r.OK, b":5000\r\n", r.OK, b":-1\r\n", r.OK, r.NULL_BULK,
        r.OK, b":250\r\n", r.OK, b":2\r\n"]
    assert run.events[-3] is None, "a SET whose expiry has passed is written as a delete"  # type: ignore[attr-defined]


def test_expire_and_its_conditions(tmp_path: Path) -> None:
    assert run(tmp_path,
               [b"EXPIRE", b"none", b"10"],                         # no key: 0
               [b"SET", b"k", b"v"],
               [b"EXPIRE", b"k", b"10", b"XX"],                     # no expiry yet: 0
               [b"EXPIRE", b"k", b"10", b"GT"],                     # none counts as forever: 0
               [b"EXPIRE", b"k", b"10", b"NX"], [b"TTL", b"k"],     # 1
               [b"EXPIRE", b"k", b"20", b"NX"],                     # has one: 0
               [b"EXPIRE", b"k", b"5", b"GT"], [b"EXPIRE", b"k", b"20", b"GT"], [b"TTL", b"k"],
               [b"PEXPIRE", b"k", b"30000", b"LT"], [b"PEXPIRE", b"k", b"3000", b"LT"], [b"TTL", b"k"],
               [b"EXPIREAT", b"k", b"%d" % (T0 // 1000 + 100)], [b"TTL", b"k"],
               [b"PEXPIREAT", b"k", b"%d" % (T0 + 7000)], [b"PTTL", b"k"],
               [b"PERSIST", b"k"], [b"PERSIST", b"k"], [b"TTL", b"k"],
               [b"EXPIRE", b"k", b"0"], [b"EXISTS", b"k"]) == [  # not in the future: deleted
        b":0\r\n", r.OK, b":0\r\n", b":0\r\n", b":1\r\n", b":10\r\n", b":0\r\n",
        b":0\r\n", b":1\r\n", b":20\r\n", b":0\r\n", b":1\r\n", b":3\r\n",
        b":1\r\n", b":100\r\n", b":1\r\n", b":7000\r\n", b":1\r\n", b":0\r\n", b":-1\r\n",
        b":1\r\n", b":0\r\n"]
    assert run.events[-1] is None and run.events[-2] == (0,)  # type: ignore[attr-defined]


def test_getex_append_incr_keep_or_change_the_expiry(tmp_path: Path) -> None:
    assert run(tmp_path,
               [b"SET", b"k", b"ab", b"PX", b"4000"],
               [b"GETEX", b"k"], [b"PTTL", b"k"],
               [b"GETEX", b"k", b"PX", b"9000"], [b"PTTL", b"k"],
               [b"APPEND", b"k", b"c"], [b"PTTL", b"k"], [b"GET", b"k"],
               [b"GETEX", b"k", b"PERSIST"], [b"PTTL", b"k"],
               [b"SET", b"n", b"10", b"PX", b"1000"], [b"INCR", b"n"], [b"PTTL", b"n"],
               1000, [b"GET", b"n"], [b"INCR", b"n"], [b"PTTL", b"n"],   # expired: starts anew
               [b"GETEX", b"gone", b"EX", b"5"]) == [
        r.OK, b"$2\r\nab\r\n", b":4000\r\n", b"$2\r\nab\r\n", b":9000\r\n", b":3\r\n", b":9000\r\n",
        b"$3\r\nabc\r\n", b"$3\r\nabc\r\n", b":-1\r\n",
        r.OK, b":11\r\n", b":1000\r\n", r.NULL_BULK, b":1\r\n", b":-1\r\n", r.NULL_BULK]
    # the INCR of the expired counter is an increment, stamped after the expiry: it counts from
    # nothing on every node (an INCR of it elsewhere at the same time counts too)
    assert run.events[-1] == 1  # type: ignore[attr-defined]


def test_expired_keys_are_left_out_of_keys_scan_randomkey_mget(tmp_path: Path) -> None:
    assert run(tmp_path,
               [b"SET", b"a", b"1", b"PX", b"100"], [b"SET", b"b", b"2"], 100,
               [b"KEYS", b"*"], [b"SCAN", b"0"], [b"RANDOMKEY"], [b"MGET", b"a", b"b"], [b"TYPE", b"a"],
               [b"STRLEN", b"a"], [b"SETNX", b"a", b"x"], [b"GET", b"a"]) == [
        r.OK, r.OK, b"*1\r\n$1\r\nb\r\n", b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nb\r\n", b"$1\r\nb\r\n",
        b"*2\r\n$-1\r\n$1\r\n2\r\n", b"+none\r\n", b":0\r\n", b":1\r\n", b"$1\r\nx\r\n"]


def test_rename_moves_the_value_and_its_expiry_in_one_batch(tmp_path: Path) -> None:
    run.events.clear()  # type: ignore[attr-defined]
    assert run(tmp_path,
               [b"RENAME", b"none", b"x"],
               [b"SET", b"a", b"1", b"PX", b"5000"], [b"SET", b"b", b"2"],
               [b"RENAMENX", b"a", b"b"], [b"RENAME", b"a", b"c"], [b"GET", b"a"], [b"GET", b"c"],
               [b"PTTL", b"c"], [b"RENAME", b"c", b"c"], [b"RENAMENX", b"b", b"b"],
               [b"INCRBY", b"n", b"5"], [b"RENAME", b"n", b"m"], [b"INCR", b"m"]) == [
        b"-ERR no such key\r\n", r.OK, r.OK, b":0\r\n", r.OK, r.NULL_BULK, b"$1\r\n1\r\n",
        b":5000\r\n", r.OK, b":0\r\n", b":5\r\n", r.OK, b":6\r\n"]
    # a copy (the value and its expiry) then a delete; a renamed counter is a value
    assert run.events[2:4] == [(b"1", T0 + 5000), None]  # type: ignore[attr-defined]
    assert run.events[-3:-1] == [b"5", None]  # type: ignore[attr-defined]


def test_flushall_is_refused_unless_allowed_then_deletes_every_key(tmp_path: Path) -> None:
    import dataclasses

    assert run(tmp_path, [b"SET", b"a", b"1"], [b"FLUSHALL"], [b"DBSIZE"], [b"FLUSHDB", b"LATER"]) == [
        r.OK, b"-ERR FLUSHALL and FLUSHDB are off on this node (config key allow_flushall = false): "
              b"see docs/data-model.md\r\n", b":1\r\n", b"-ERR syntax error\r\n"]
    rep, _clock = replica(tmp_path / "on", peers=())
    rep.cfg = dataclasses.replace(rep.cfg, allow_flushall=True)
    for ops in ([("s", b"a", b"1"), ("se", b"b", b"2", 0, False, 1, 100), ("d", b"c")], [("fa",)], [("n",)]):
        rep.client([[b"c", msgpack.packb(ops, use_bin_type=True)]], 1.0)
    replies = [msgpack.unpackb(o[1][1], raw=False) for o in rep.take() if o[0] == CLIENT]
    assert replies[-2:] == [[1], [0]]
    assert rep.ks.tombstones == 3, "every key is deleted with a tombstone, replicated as DELs"
