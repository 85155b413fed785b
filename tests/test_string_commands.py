"""The string commands beyond SET/GET/DEL: what each asks of the store (zkv.commands) and what
the store does with it (zkv.store.replica), on one node; replication is the usual event."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgpack
import pytest

from tests.test_replica import replica
from zkv.commands import Deferred, dispatch
from zkv.protocol import resp as r
from zkv.store.outputs import CLIENT


def run(tmp: Path, *commands: list[bytes], resp3: bool = False, counters: bool = True) -> list[bytes]:
    """Each command through dispatch, the store (one turn per command) and the encoder."""
    rep, _clock = replica(tmp, peers=())
    rep.cfg = dataclasses.replace(rep.cfg, counters=counters)
    out = []
    for args in commands:
        d = dispatch(args, True, resp3)
        if not isinstance(d, Deferred):
            out.append(d)
            continue
        rep.client([[b"c", msgpack.packb(d.ops, use_bin_type=True)]], 1.0)
        replies = [o for o in rep.take() if o[0] == CLIENT and o[1][0] == b"c"]
        out.append(d.encode(msgpack.unpackb(replies[0][1][1], raw=False)))
    run.replica = rep  # type: ignore[attr-defined]
    return out


def test_set_nx_xx_and_get(tmp_path: Path) -> None:
    assert run(tmp_path,
               [b"SET", b"k", b"1", b"XX"],          # absent: not written
               [b"SET", b"k", b"1", b"NX"],          # absent: written
               [b"SET", b"k", b"2", b"NX"],          # present: not written
               [b"SET", b"k", b"3", b"XX", b"GET"],  # present: written, the old value back
               [b"SET", b"k", b"4", b"NX", b"GET"],  # present: not written, the value back
               [b"set", b"new", b"5", b"get"],       # absent: written, null back
               [b"GET", b"k"], [b"GET", b"new"]) == [
        r.NULL_BULK, r.OK, r.NULL_BULK, b"$1\r\n1\r\n", b"$1\r\n3\r\n", r.NULL_BULK,
        b"$1\r\n3\r\n", b"$1\r\n5\r\n"]


def test_setnx_getset_getdel(tmp_path: Path) -> None:
    assert run(tmp_path,
               [b"SETNX", b"k", b"a"], [b"SETNX", b"k", b"b"],
               [b"GETSET", b"k", b"c"], [b"GETSET", b"fresh", b"x"],
               [b"GETDEL", b"k"], [b"GETDEL", b"k"], [b"EXISTS", b"k", b"fresh"]) == [
        b":1\r\n", b":0\r\n", b"$1\r\na\r\n", r.NULL_BULK, b"$1\r\nc\r\n", r.NULL_BULK, b":1\r\n"]


def test_a_getdel_of_a_missing_key_writes_nothing(tmp_path: Path) -> None:
    run(tmp_path, [b"GETDEL", b"nothing"], [b"SET", b"k", b"v", b"XX"])
    assert run.replica.inbox.vv == {}  # type: ignore[attr-defined]


def test_append_strlen_getrange(tmp_path: Path) -> None:
    assert run(tmp_path,
               [b"APPEND", b"k", b"Hello"], [b"APPEND", b"k", b" World"], [b"STRLEN", b"k"],
               [b"STRLEN", b"none"], [b"GETRANGE", b"k", b"0", b"4"],
               [b"GETRANGE", b"k", b"-5", b"-1"], [b"GETRANGE", b"k", b"5", b"2"],
               [b"GETRANGE", b"k", b"0", b"100"], [b"SUBSTR", b"none", b"0", b"3"],
               [b"GETRANGE", b"k", b"x", b"1"]) == [
        b":5\r\n", b":11\r\n", b":11\r\n", b":0\r\n", b"$5\r\nHello\r\n", b"$5\r\nWorld\r\n",
        b"$0\r\n\r\n", b"$11\r\nHello World\r\n", b"$0\r\n\r\n",
        b"-ERR value is not an integer or out of range\r\n"]


def test_msetnx_is_all_or_nothing(tmp_path: Path) -> None:
    assert run(tmp_path,
               [b"MSETNX", b"a", b"1", b"b", b"2"], [b"MSETNX", b"b", b"9", b"c", b"3"],
               [b"MGET", b"a", b"b", b"c"], [b"MSETNX", b"a"]) == [
        b":1\r\n", b":0\r\n", b"*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n",
        b"-ERR wrong number of arguments for 'msetnx' command\r\n"]


def test_type_touch_unlink(tmp_path: Path) -> None:
    assert run(tmp_path, [b"SET", b"k", b"v"], [b"TYPE", b"k"], [b"TYPE", b"none"],
               [b"TOUCH", b"k", b"none", b"k"], [b"UNLINK", b"k", b"none"], [b"TYPE", b"k"]) == [
        r.OK, b"+string\r\n", b"+none\r\n", b":2\r\n", b":1\r\n", b"+none\r\n"]


def test_resp3_nulls_of_conditional_sets(tmp_path: Path) -> None:
    assert run(tmp_path, [b"SET", b"k", b"1", b"XX"], [b"SET", b"k", b"1", b"GET"],
               resp3=True) == [b"_\r\n", b"_\r\n"]


@pytest.mark.parametrize("op", [("sx", b"k", 1, 0, False), ("sx", b"k", b"v", 7, False), ("gd", 3),
                                ("ap", b"k", None), ("mn", [b"a"]), ("mn", b"ab"), ("mn", [b"a", 1])])
def test_malformed_ops_get_a_null_result_and_write_nothing(tmp_path: Path, op: tuple) -> None:
    rep, _clock = replica(tmp_path, peers=())
    rep.client([[b"c", msgpack.packb([op], use_bin_type=True)]], 1.0)
    replies = [o for o in rep.take() if o[0] == CLIENT]
    assert msgpack.unpackb(replies[0][1][1]) == [None]
    assert rep.inbox.vv == {} and len(rep.ks) == 0


def test_the_read_cache_forgets_keys_that_other_writes_changed() -> None:
    from zkv.frontend.readcache import ReadCache
    c = ReadCache(1 << 20)
    c.learn([("g", b"a"), ("g", b"b"), ("g", b"c")], [b"1", b"2", b"3"])
    c.learn([("sx", b"a", b"9", 0, False), ("ap", b"b", b"x"), ("mn", [b"c", b"z"])],
            [[1, None], 2, 1])
    assert [c.lookup(k) for k in (b"a", b"b", b"c")] == [c.lookup(b"none")] * 3


def test_incr_family(tmp_path: Path) -> None:
    assert run(tmp_path,
               [b"INCR", b"c"], [b"INCRBY", b"c", b"10"], [b"DECR", b"c"], [b"DECRBY", b"c", b"5"],
               [b"GET", b"c"], [b"SET", b"s", b"abc"], [b"INCR", b"s"],
               [b"SET", b"big", b"9223372036854775807"], [b"INCR", b"big"],
               [b"INCRBY", b"c", b"x"], [b"DECRBY", b"c", b"-9223372036854775808"],
               [b"INCRBYFLOAT", b"c", b"1.5"], [b"SET", b"c", b"100"], [b"INCR", b"c"],
               [b"DEL", b"c"], [b"INCR", b"c"], [b"TYPE", b"c"]) == [
        b":1\r\n", b":11\r\n", b":10\r\n", b":5\r\n", b"$1\r\n5\r\n", r.OK,
        b"-ERR value is not an integer or out of range\r\n", r.OK,
        b"-ERR increment or decrement would overflow\r\n",
        b"-ERR value is not an integer or out of range\r\n", b"-ERR decrement would overflow\r\n",
        b"-ERR INCRBYFLOAT is not supported: counters here are integers (INCRBY)\r\n",
        r.OK, b":101\r\n", b":1\r\n", b":1\r\n", b"+string\r\n"]


def test_incr_is_refused_with_a_reason_while_counters_are_off(tmp_path: Path) -> None:
    out = run(tmp_path, [b"INCR", b"c"], [b"GET", b"c"], counters=False)
    assert out[0].startswith(b"-ERR INCR, DECR, INCRBY and DECRBY are off on this node") and out[1] == r.NULL_BULK
