"""The hash and set commands: their arguments checked, their store ops (zkv.store.hash_set_ops)
built, their results encoded as Redis encodes them.

Registered in ``zkv.commands``' table when that module loads.  HSCAN and SSCAN return the whole
hash or set in one reply, with cursor 0 (as Redis does for small ones; COUNT is a hint Redis may
ignore too).  Pure: no I/O.
"""

from __future__ import annotations

import random
from typing import Any

from zkv.commands import (_NOT_INT, _RESP3_ENCODERS, _SYNTAX, Deferred, Reply, _cmd, _signed, error_text,
                          scan_options, wrong_arity)
from zkv.protocol import resp
from zkv.store.scans import glob


def _err_or(encode):  # noqa: ANN001, ANN202 - an encoder -> one that answers a str result as its error
    def checked(results: list[Any]) -> bytes:
        r = results[0]
        return error_text(r) if r.__class__ is str else encode(r)
    return checked


_r_int = _err_or(resp.integer)
_r_bulk = _err_or(resp.bulk)
_r_list = _err_or(resp.array)
_r_ok = _err_or(lambda _r: resp.OK)
_r_first = _err_or(lambda r: resp.bulk(r[0]))
_r_exists = _err_or(lambda r: resp.integer(int(r[0] is not None)))
_r_strlen = _err_or(lambda r: resp.integer(0 if r[0] is None else len(r[0])))
_r_first_int = _err_or(lambda r: resp.integer(r[0]))
_r_pairs = _err_or(resp.array)  # (HGETALL: a RESP3 connection gets a map)
_r_set = _err_or(resp.array)  # (SMEMBERS, SPOP with a count: a RESP3 connection gets a set)
# RESP3 writes null its own way, HGETALL's field/value pairs as a map, members as a set
_RESP3_ENCODERS.update({
    _r_bulk: _err_or(resp.bulk3), _r_first: _err_or(lambda r: resp.bulk3(r[0])),
    _r_list: _err_or(lambda r: resp.array(r, resp.NULL3)), _r_pairs: _err_or(resp.map3),
    _r_set: _err_or(resp.set3)})


def _pairs(a: list[bytes]) -> list[bytes] | None:
    return a[2:] if len(a) % 2 == 0 else None


@_cmd("HSET", -4)
def _hset(a: list[bytes]) -> Reply:
    flat = _pairs(a)
    return _arity(a) if flat is None else Deferred([("hs", a[1], flat, 0)], _r_int)


@_cmd("HMSET", -4)
def _hmset(a: list[bytes]) -> Reply:
    flat = _pairs(a)
    return _arity(a) if flat is None else Deferred([("hs", a[1], flat, 0)], _r_ok)


@_cmd("HSETNX", 4)
def _hsetnx(a: list[bytes]) -> Reply:
    return Deferred([("hs", a[1], a[2:], 1)], _r_int)


@_cmd("HGET", 3)
def _hget(a: list[bytes]) -> Reply:
    return Deferred([("hg", a[1], a[2:])], _r_first)


@_cmd("HMGET", -3)
def _hmget(a: list[bytes]) -> Reply:
    return Deferred([("hg", a[1], a[2:])], _r_list)


@_cmd("HEXISTS", 3)
def _hexists(a: list[bytes]) -> Reply:
    return Deferred([("hg", a[1], a[2:])], _r_exists)


@_cmd("HSTRLEN", 3)
def _hstrlen(a: list[bytes]) -> Reply:
    return Deferred([("hg", a[1], a[2:])], _r_strlen)


@_cmd("HDEL", -3)
def _hdel(a: list[bytes]) -> Reply:
    return Deferred([("hd", a[1], a[2:])], _r_int)


@_cmd("HGETALL", 2)
def _hgetall(a: list[bytes]) -> Reply:
    return Deferred([("ha", a[1], 0)], _r_pairs)


@_cmd("HKEYS", 2)
def _hkeys(a: list[bytes]) -> Reply:
    return Deferred([("ha", a[1], 1)], _r_list)


@_cmd("HVALS", 2)
def _hvals(a: list[bytes]) -> Reply:
    return Deferred([("ha", a[1], 2)], _r_list)


@_cmd("HLEN", 2)
def _hlen(a: list[bytes]) -> Reply:
    return Deferred([("ha", a[1], 3)], _r_int)


@_cmd("HINCRBY", 4)
def _hincrby(a: list[bytes]) -> Reply:
    n = _signed(a[3])
    return _NOT_INT if n is None else Deferred([("hi", a[1], a[2], n)], _r_int)


@_cmd("HINCRBYFLOAT", 4)
def _hincrbyfloat(a: list[bytes]) -> Reply:
    return resp.error("ERR HINCRBYFLOAT is not supported: counters here are integers (HINCRBY)")


def _scan(a: list[bytes], op: tuple, pairs: bool) -> Reply:
    """``HSCAN|SSCAN key cursor [MATCH p] [COUNT n]``: the whole hash or set, in one reply with
    cursor 0, filtered by the pattern (the frontend filters: the store sends every element)."""
    if not (a[2].isdigit() and len(a[2]) <= 19):
        return resp.error("ERR invalid cursor")
    opts = scan_options(a, 3, False)
    if opts.__class__ is bytes:
        return opts  # type: ignore[return-value]
    match = opts[0]  # type: ignore[index]

    def encode(results: list[Any]) -> bytes:
        r = results[0]
        if r.__class__ is str:
            return error_text(r)
        test = glob(match).fullmatch if match is not None else None
        if test is None:
            return resp.array([b"0", r])
        if pairs:
            return resp.array([b"0", [x for i in range(0, len(r), 2) if test(r[i]) for x in r[i:i + 2]]])
        return resp.array([b"0", [m for m in r if test(m)]])
    return Deferred([op], encode)


@_cmd("HSCAN", -3)
def _hscan(a: list[bytes]) -> Reply:
    return _scan(a, ("ha", a[1], 0), True)


@_cmd("SADD", -3)
def _sadd(a: list[bytes]) -> Reply:
    return Deferred([("sa", a[1], a[2:])], _r_int)


@_cmd("SREM", -3)
def _srem(a: list[bytes]) -> Reply:
    return Deferred([("sr", a[1], a[2:])], _r_int)


@_cmd("SMEMBERS", 2)
def _smembers(a: list[bytes]) -> Reply:
    return Deferred([("sm", a[1], 0, [])], _r_set)


@_cmd("SCARD", 2)
def _scard(a: list[bytes]) -> Reply:
    return Deferred([("sm", a[1], 1, [])], _r_int)


@_cmd("SISMEMBER", 3)
def _sismember(a: list[bytes]) -> Reply:
    return Deferred([("sm", a[1], 2, a[2:])], _r_first_int)


@_cmd("SMISMEMBER", -3)
def _smismember(a: list[bytes]) -> Reply:
    return Deferred([("sm", a[1], 2, a[2:])], _r_list)


@_cmd("SSCAN", -3)
def _sscan(a: list[bytes]) -> Reply:
    return _scan(a, ("sm", a[1], 0, []), False)


@_cmd("SPOP", -2)
def _spop(a: list[bytes]) -> Reply:
    if len(a) > 3:
        return _SYNTAX
    if len(a) == 2:
        return Deferred([("sp", a[1], None)], _r_bulk)
    n = _signed(a[2])
    if n is None or n < 0:
        return resp.error("ERR value is out of range, must be positive")
    return Deferred([("sp", a[1], n)], _r_set)


_r_random = _err_or(lambda r: resp.bulk(random.choice(r) if r else None))
_RESP3_ENCODERS[_r_random] = _err_or(lambda r: resp.bulk3(random.choice(r) if r else None))
MAX_RANDOM_REPEATS = 1_000_000  # SRANDMEMBER key -count: members in one reply, at most


@_cmd("SRANDMEMBER", -2)
def _srandmember(a: list[bytes]) -> Reply:
    if len(a) > 3:
        return _SYNTAX
    if len(a) == 2:
        return Deferred([("sm", a[1], 0, [])], _r_random)
    n = _signed(a[2])
    if n is None:
        return _NOT_INT
    if n == -(1 << 63):
        return resp.error("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807")
    if n < -MAX_RANDOM_REPEATS:  # (Redis would build such a reply; here it would stall the node)
        return resp.error(f"ERR a negative count may ask for at most {MAX_RANDOM_REPEATS} members here")

    def pick(r: list[bytes]) -> bytes:
        if n >= 0:
            return resp.array(random.sample(r, min(n, len(r))))
        return resp.array([random.choice(r) for _ in range(-n)] if r else [])
    return Deferred([("sm", a[1], 0, [])], _err_or(pick))


@_cmd("TYPE", 2)
def _type(a: list[bytes]) -> Reply:
    return Deferred([("ty", a[1])], _r_type)


def _r_type(results: list[Any]) -> bytes:
    return resp.simple(results[0])


def _arity(a: list[bytes]) -> bytes:
    return wrong_arity(a[0], True)
