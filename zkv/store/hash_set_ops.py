"""The store's hash and set operations: what each reads, what it answers, what it writes.

Each op (``zkv.commands`` builds them) is checked against this node's keyspace and returns its
result and its writes, ``(part key, value)`` pairs (zkv.store.parts) that the store stamps, logs
and replicates like any other write:

    ("hs", key, [f, v, ...], nx)   HSET/HMSET (nx 0) -> fields added; HSETNX (nx 1) -> 1 or 0
    ("hg", key, [f, ...])          HGET, HMGET, HEXISTS, HSTRLEN -> the values (None: no such field)
    ("ha", key, what)              HGETALL, HSCAN (0: [f, v, ...]), HKEYS (1), HVALS (2), HLEN (3)
    ("hd", key, [f, ...])          HDEL -> fields removed
    ("hi", key, f, step)           HINCRBY -> the new value, or why not (str)
    ("sa", key, [m, ...])          SADD -> members added
    ("sr", key, [m, ...])          SREM -> members removed
    ("sm", key, what, [m, ...])    SMEMBERS, SSCAN, SRANDMEMBER (0), SCARD (1), SISMEMBER and
                                   SMISMEMBER (2: 0 or 1 each)
    ("sp", key, count)             SPOP -> the members removed (count None: one, or None)
    ("ty", key)                    TYPE -> "string", "hash", "set" or "none"

A field is written as a plain value (HDEL: a delete; HINCRBY: an increment, so concurrent ones
on two nodes all count); an SADD writes a new dot naming the dots it saw, an SREM names the
dots it saw (zkv.store.orset).  An op on a key of another type answers ``WRONGTYPE``.  Pure:
the store applies the writes.
"""

from __future__ import annotations

import random
from typing import Any

from zkv.store import parts
from zkv.store.counter import MAX_INT, MIN_INT, as_int
from zkv.store.keyspace import Keyspace
from zkv.store.orset import TAG_ADD, TAG_REMOVE, event

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INT = "hash value is not an integer"
OPS = frozenset({"hs", "hg", "ha", "hd", "hi", "sa", "sr", "sm", "sp", "ty"})

Write = tuple[bytes, Any]


def removals(ks: Keyspace, key: bytes) -> list[Write]:
    """What deleting ``key``'s hash and set writes: a delete of each field and a remove of each
    member this node holds (a field or member written concurrently elsewhere survives)."""
    out: list[Write] = [(parts.part_key(parts.HASH, key, f), None) for f in ks.fields(key)]
    out += [(parts.part_key(parts.SET, key, m), event(TAG_REMOVE, ks.dots(key, m))) for m in ks.members(key)]
    return out


def copies(ks: Keyspace, src: bytes, dst: bytes) -> list[Write]:
    """What copying ``src``'s hash or set to ``dst`` (RENAME) writes."""
    out: list[Write] = [(parts.part_key(parts.HASH, dst, f), ks.field(src, f)) for f in ks.fields(src)]
    out += [(parts.part_key(parts.SET, dst, m), event(TAG_ADD, ks.dots(dst, m))) for m in ks.members(src)]
    return out


def run(ks: Keyspace, op: tuple, counters: bool = True) -> tuple[Any, list[Write]]:
    """One op: its result and its writes.  TypeError if the op is malformed."""
    code, key = op[0], op[1]
    if key.__class__ is not bytes:
        raise TypeError("a key must be bytes")
    kind = ks.kind(key)
    if code == "ty":
        return kind or "none", []
    if code[0] == "h":
        if kind is not None and kind != "hash":
            return WRONGTYPE, []
        return _hash(ks, op, counters)
    if kind is not None and kind != "set":
        return WRONGTYPE, []
    return _set(ks, op)


def _hash(ks: Keyspace, op: tuple, counters: bool) -> tuple[Any, list[Write]]:
    code, key = op[0], op[1]
    if code == "hg":
        return [ks.field(key, _bytes(f)) for f in _list(op[2])], []
    if code == "ha":
        fields, what = ks.fields(key), op[2]
        if what == 3:
            return len(fields), []
        if what == 1:
            return list(fields), []
        values = [ks.field(key, f) for f in fields]
        if what == 2:
            return values, []
        return [x for pair in zip(fields, values) for x in pair], []
    if code == "hs":
        flat, nx = _list(op[2]), op[3]
        if not flat or len(flat) % 2:
            raise TypeError("HSET needs field/value pairs")
        fields = ks.fields(key)
        if nx and flat[0] in fields:
            return 0, []
        new = {f for f in flat[0::2] if _bytes(f) not in fields}
        return len(new), [(parts.part_key(parts.HASH, key, flat[i]), _bytes(flat[i + 1]))
                          for i in range(0, len(flat), 2)]
    if code == "hd":
        fields = ks.fields(key)
        gone = {f for f in map(_bytes, _list(op[2])) if f in fields}
        return len(gone), [(parts.part_key(parts.HASH, key, f), None) for f in gone]
    if code == "hi":
        name, step = _bytes(op[2]), op[3]
        if step.__class__ is not int or not MIN_INT <= step <= MAX_INT:
            raise TypeError("HINCRBY needs a 64-bit integer")
        if not counters:
            return "HINCRBY is disabled on this node (counters = false)", []
        n = as_int(ks.field(key, name))
        if n is None:
            return NOT_INT, []
        n += step
        if not MIN_INT <= n <= MAX_INT:
            return "increment or decrement would overflow", []
        return n, [(parts.part_key(parts.HASH, key, name), step)]
    raise TypeError(f"unknown hash op {code!r}")


def _set(ks: Keyspace, op: tuple) -> tuple[Any, list[Write]]:
    code, key = op[0], op[1]
    members = ks.members(key)
    if code == "sm":
        what = op[2]
        if what == 1:
            return len(members), []
        if what == 2:
            return [int(_bytes(m) in members) for m in _list(op[3])], []
        return list(members), []
    if code == "sa":
        # (a member already here is not added again: it writes nothing, as it changes nothing
        # here, and a remove on another node takes it, as one after this SADD would)
        names = [m for m in dict.fromkeys(map(_bytes, _list(op[2]))) if m not in members]
        return len(names), [(parts.part_key(parts.SET, key, m), event(TAG_ADD, ks.dots(key, m))) for m in names]
    if code == "sr":
        names = [m for m in dict.fromkeys(map(_bytes, _list(op[2]))) if m in members]
        return len(names), [(parts.part_key(parts.SET, key, m), event(TAG_REMOVE, ks.dots(key, m))) for m in names]
    if code == "sp":
        count = op[2]
        if count is not None and (count.__class__ is not int or count < 0):
            raise TypeError("SPOP needs a count >= 0")
        chosen = random.sample(list(members), min(len(members), 1 if count is None else count))
        writes = [(parts.part_key(parts.SET, key, m), event(TAG_REMOVE, ks.dots(key, m))) for m in chosen]
        if count is None:
            return (chosen[0] if chosen else None), writes
        return chosen, writes
    raise TypeError(f"unknown set op {code!r}")


def _list(x: object) -> list:
    if x.__class__ is not list:
        raise TypeError("expected a list")
    return x  # type: ignore[return-value]


def _bytes(x: object) -> bytes:
    if x.__class__ is not bytes:
        raise TypeError("expected bytes")
    return x  # type: ignore[return-value]
