"""The command table: for each command, its arity and what the store must do, for both protocols.

``dispatch(args, resp)`` turns one request into either an immediate reply (bytes), a ``Deferred``
(store operations plus the function that encodes their results), a ``Quit``, a ``Hello``, or an
``Auth`` (the connection checks the password; see ``zkv.frontend.server``).  ``before_auth`` is
``dispatch`` for a connection that has not authenticated yet on a node with a password.  Store operations
are tiny tuples the store process understands::

    ("g", key)         get        -> value or None
    ("s", key, value)  set        -> None
    ("d", key)         delete     -> 1 if the key existed, else 0
    ("n",)             key count  -> int
    ("i",)             info       -> dict
    ("w",)             ack target -> [seq, {peer: seq}]: our origin's sequence number after
                                     every write before this op, and each peer's applied one
    ("sx", key, value, cond, old)    conditional set: cond 0 always, 1 only if the key is
                                     absent (NX), 2 only if present (XX) -> [1 if written,
                                     the value before (None unless ``old``)]
    ("gd", key)        get and delete -> the value before (deleted only if there was one)
    ("ap", key, more)  append        -> the new length
    ("mn", [k, v, ...])  set all if none exists (MSETNX) -> 1, else 0 and nothing written
    ("in", key, step)  INCRBY          -> the new value, or why not (str)
    ("sc", cursor, count, pattern or None)  SCAN step -> [next cursor, keys], or an error (str)
    ("ks", pattern)    KEYS            -> every live key that matches
    ("rk",)            RANDOMKEY       -> a live key, or None

Each op is checked against the receiving node's state when the store applies it, in order
with every other op; what that means with writers on two nodes is in docs/protocol.md.

The store answers each batch of operations with one message: the list of their results.  On
the same connection it also sends ``[INVALIDATE, keys]`` (msgpack list, or nil for "all") to
the frontend's identity ``FRONTEND_ID``: keys it changed without the frontend asking, or
stopped tracking, for the frontend's read cache (``zkv.frontend.readcache``), and ``[ACKS, {peer: seq}]`` whenever
a peer has applied more of our writes (for WAIT and ``min_acks``, ``zkv.frontend.waits``).

Plain-text replies keep the original servers' words byte for byte (``OK``, ``VALUE v``,
``NOT FOUND``, ``ERROR ...``); RESP replies are Redis's.  Pure: no I/O.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from zkv import __version__
from zkv.protocol import resp
from zkv.store.parts import RESERVED

Op = tuple[Any, ...]

FRONTEND_ID = b"zkv-frontend"  # the frontend DEALER's ZeroMQ identity
INVALIDATE = b"inv"  # first frame of an invalidation (replies are msgpack arrays: never this)
ACKS = b"ack"  # first frame of a peers' acknowledgement update (likewise)
Encoder = Callable[[list[Any]], bytes]


class Deferred(NamedTuple):  # one per request on the hot path: a tuple is cheapest to build
    ops: list[Op]
    encode: Encoder


@dataclass(frozen=True, slots=True)
class Quit:
    reply: bytes


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO: reply, and the protocol version the connection speaks from now on (2 or 3)."""

    reply: bytes
    proto: int


class Wait(NamedTuple):
    """WAIT numpeers timeout_ms: reply with how many peers have applied the connection's writes
    once ``numpeers`` have, or when the timeout passes (0: no timeout)."""

    ops: list[Op]
    numpeers: int
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH, or HELLO with AUTH: the connection checks the password (``zkv.auth``) and answers
    ``ok`` or its protocol's WRONGPASS; HELLO's protocol switch happens only if accepted."""

    username: bytes | None  # None: the one-argument form (``AUTH <password>``)
    password: bytes
    ok: bytes
    is_resp: bool
    hello: Hello | None = None


Reply = bytes | Deferred | Quit | Hello | Auth | Wait
NOT_ENOUGH_ACKS = "not enough replicas acknowledged"

NOAUTH_PLAIN = b"ERROR NOAUTH Authentication required\n"
NOAUTH_RESP = b"-NOAUTH Authentication required.\r\n"
WRONGPASS_PLAIN = b"ERROR WRONGPASS invalid username-password pair or user is disabled.\n"
WRONGPASS_RESP = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
# Redis's words for AUTH <password> on a server without one
NO_PASSWORD = ("AUTH <password> called without any password configured for the default user. "
               "Are you sure your configuration is correct?")
# Before AUTH, only these: what a client needs to authenticate, learn the protocol, or leave.
_OPEN_BEFORE_AUTH = frozenset({b"AUTH", b"HELLO", b"PING", b"QUIT"})

# What INFO names as redis_version, for tools and libraries that check it: the Redis release
# whose replies zkv's RESP side follows (errors, INFO layout, HELLO).
REDIS_VERSION = "7.2.0"

P_OK = b"OK\n"
P_NOT_FOUND = b"NOT FOUND\n"
P_PONG = b"PONG\n"


def _name(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= 64 else text[:64] + "..."


def unknown(name: bytes, is_resp: bool) -> bytes:
    if is_resp:
        return resp.error(f"ERR unknown command '{_name(name)}'")
    return f"ERROR unknown command '{_name(name)}'\n".encode()


def wrong_arity(name: bytes, is_resp: bool) -> bytes:
    if is_resp:
        return resp.error(f"ERR wrong number of arguments for '{_name(name).lower()}' command")
    return f"ERROR wrong number of arguments for '{_name(name).upper()}'\n".encode()


# --- plain-text protocol (what nc and the original clients speak) --------------------------------
# A value with a newline in it (written over RESP) cannot be one plain-text line: the client
# would read its second line as the reply to its next request.
P_MULTILINE = b"ERROR the value holds a newline and has no plain-text form; GET it over RESP\n"


def _p_get(results: list[Any]) -> bytes:
    v = results[0]
    if v is None:
        return P_NOT_FOUND
    if v.__class__ is str:  # (WRONGTYPE: a hash or a set)
        return f"ERROR {v}\n".encode()
    if b"\n" in v:
        return P_MULTILINE
    return b"VALUE " + v + b"\n"


def _p_ok(_results: list[Any]) -> bytes:
    return P_OK


def internal_error(d: Deferred) -> bytes:
    """The reply for a request the store could not answer, in the request's protocol."""
    return error_reply(d, "internal error")


def error_reply(d: Deferred, text: str) -> bytes:
    """``ERROR <text>`` (plain) or ``-ERR <text>`` (RESP), in the request's protocol."""
    text = " ".join(text.split())  # one line, whatever it says
    if d.encode in (_p_get, _p_ok):
        return f"ERROR {text}\n".encode()
    return resp.error(f"ERR {text}")


def error_text(text: str) -> bytes:
    """A store's error result as a RESP error: ``-WRONGTYPE ...`` as Redis words it, else
    ``-ERR <text>``."""
    return resp.error(text if text[:9] == "WRONGTYPE" else f"ERR {text}")


class Refused(list):
    """Results of a batch whose writes the store refused (e.g. ``clock skew: ...``), with the
    reason: a request that wrote is answered with the reason, any other with its results.  A
    store reply that refuses is a map ``{"refused": reason, "results": [...]}`` instead of the
    results list."""

    __slots__ = ("reason",)

    def __init__(self, results: list[Any], reason: str) -> None:
        super().__init__(results)
        self.reason = reason


WRITE_OPS = frozenset({"s", "d", "sx", "gd", "ap", "mn", "in", "se", "ex", "pe", "gx", "rn", "fa",
                       "hs", "hd", "hi", "sa", "sr", "sp"})
MAX_VALUE = 512 * 1024 * 1024  # bytes in a value (RESP's bulk limit, as Redis's default)


_P_ARITY = {b"SET": 3, b"GET": 2, b"DEL": 2, b"DELETE": 2, b"PING": 1, b"QUIT": 1, b"AUTH": 2}


def dispatch_plain(args: list[bytes], crlf: bool = False) -> Reply:
    """A plain-text line.  The text protocol's own commands (SET, GET, DEL/DELETE, PING, QUIT,
    AUTH) get its replies.  On a line ending in CR LF - an inline command, as redis-cli and
    redis-benchmark send them - PING and every other command zkv knows gets Redis's reply, as
    Redis answers inline commands; an unknown command gets the text protocol's ERROR line."""
    name = args[0].upper()
    want = _P_ARITY.get(name)
    if want is None or (crlf and name == b"PING"):
        if crlf and name in _RESP:
            return dispatch_resp(args)
        return unknown(args[0], False)
    if name == b"AUTH" and len(args) in (2, 3):  # AUTH <password> | AUTH <user> <password>
        return Auth(args[1] if len(args) == 3 else None, args[-1], P_OK, False)
    if len(args) != want:
        return wrong_arity(args[0], False)
    if name in (b"GET", b"SET", b"DEL", b"DELETE") and args[1][:2] == RESERVED:
        return f"ERROR {RESERVED_KEY}\n".encode()
    if name == b"GET":
        return Deferred([("g", args[1])], _p_get)
    if name == b"SET":
        return Deferred([("s", args[1], args[2])], _p_ok)
    if name == b"PING":
        return P_PONG
    if name == b"QUIT":
        return Quit(P_OK)
    return Deferred([("d", args[1])], _p_ok)  # DEL / DELETE


# --- RESP2 ------------------------------------------------------------------------------------
def _r_get(results: list[Any]) -> bytes:
    v = results[0]
    return error_text(v) if v.__class__ is str else resp.bulk(v)


def _r_ok(_results: list[Any]) -> bytes:
    return resp.OK


def _r_count(results: list[Any]) -> bytes:
    return resp.integer(sum(results))


def _r_exists(results: list[Any]) -> bytes:
    return resp.integer(sum(1 for r in results if r is not None))


def _r_int(results: list[Any]) -> bytes:
    r = results[0]
    return error_text(r) if r.__class__ is str else resp.integer(r)


def _r_array(results: list[Any]) -> bytes:  # (MGET: a hash or a set reads as null, as in Redis)
    return resp.array([None if r.__class__ is str else r for r in results])


def _r_info(section: bytes | None) -> Encoder:
    if section is not None and section.lower() == b"json":  # the whole dict, for zkv status
        def encode_json(results: list[Any]) -> bytes:
            return resp.bulk(json.dumps(results[0], sort_keys=True, default=str).encode())
        return encode_json

    def encode(results: list[Any]) -> bytes:
        return resp.bulk(format_info(results[0], section).encode())
    return encode


def format_info(info: dict[str, Any], section: bytes | None = None) -> str:
    """INFO text in Redis's layout: ``# Section`` headers and ``field:value`` lines."""
    peers = info.get("peers", {})
    mem = info.get("memory", {})
    vv = ",".join(f"{o}={s}" for o, s in sorted(info.get("vv", {}).items()))
    sections = {
        "server": [f"redis_version:{REDIS_VERSION}", f"zkv_version:{__version__}",
                   f"node_id:{info['id']}", "redis_mode:standalone",
                   f"fsync:{info.get('fsync', '')}", f"uptime_in_seconds:{info.get('uptime_s', 0)}"],
        "clients": [f"connected_clients:{info.get('clients', 0)}"],
        "memory": [f"used_memory_rss:{mem.get('store_rss', 0) + mem.get('frontend_rss', 0)}",
                   f"store_rss:{mem.get('store_rss', 0)}", f"frontend_rss:{mem.get('frontend_rss', 0)}"],
        "replication": [
            "role:master", f"node_id:{info['id']}", f"origin:{info.get('origin', '')}",
            f"seq:{info.get('seq', 0)}", f"vv:{vv}",
            f"origins_held:{info.get('origins', 0)}", f"origins_folded:{info.get('folded_origins', 0)}",
            f"digest:{info.get('digest', '')}", f"connected_peers:{sum(1 for p in peers.values() if p['connected'])}",
            f"peers:{len(peers)}",
            *(",".join([f"peer{i}:id={pid}", f"connected={int(p['connected'])}",
                        *([f"clock_offset_ms={p['clock_offset_ms']}"]
                          if p.get("clock_offset_ms") is not None else []),
                        f"lag_events={p.get('lag', {}).get('events', 0)}",
                        f"lag_ms={p.get('lag', {}).get('ms', 0)}", f"acked={p.get('acked', 0)}",
                        *(f"{o}={s}" for o, s in sorted(p["vv"].items()))])
              for i, (pid, p) in enumerate(sorted(peers.items()))),
            f"clock_refusing:{info.get('clock', {}).get('refusing', '')}",
            f"held_back_origins:{','.join(info.get('clock', {}).get('held_back_origins', []))}",
            f"clock_behind_ms:{info.get('clock', {}).get('behind_ms', 0)}",
            f"gc_horizon:{info.get('gc_horizon', 0)}",
            f"syncing:{int(bool(info.get('syncing')))}",
            *(f"{k}:{v}" for k, v in sorted(info.get("stats", {}).items())),
            *(f"catchup_{k}:{v}" for k, v in info.get("catchup", {}).items()),
        ],
        "persistence": [f"{k}:{v}" for k, v in [*info.get("disk", {}).items(),
                                                 *info.get("recovery", {}).items(),
                                                 *(("snapshot_" + a, b) for a, b in info.get("snapshots", {}).items()),
                                                 *(("fsync_" + a, b) for a, b in info.get("background_fsync", {}).items())]],
        "keyspace": [f"db0:keys={info['keys']},expires={info.get('expiring_keys', 0)},avg_ttl=0",
                     f"tombstones:{info.get('tombstones', 0)}", f"counter_keys:{info.get('counter_keys', 0)}",
                     f"expiring_keys:{info.get('expiring_keys', 0)}"],
        "frontend": [f"read_cache_{k}:{v}" for k, v in info.get("read_cache", {}).items()],
        # each listening port: connections as ZeroMQ / the frontend saw them (zkv.store.listeners)
        "listeners": [f"{k}:" + ",".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict)
                      else f"{k}:{v}" for k, v in info.get("listeners", {}).items()],
    }
    wanted = section.decode("utf-8", "replace").lower() if section else None
    out = []
    for name, lines in sections.items():
        if lines and wanted in (None, "all", "everything", "default", name):
            out.append(f"# {name.capitalize()}\r\n" + "".join(line + "\r\n" for line in lines))
    return "\r\n".join(out)


_HELLO = ["server", "zkv", "version", REDIS_VERSION, "proto", 2, "id", 0, "mode", "standalone",
          "role", "master", "modules", []]

# name -> (arity, handler); arity as in Redis: exact count if positive, minimum count if negative
_RESP: dict[bytes, tuple[int, Callable[[list[bytes]], Reply]]] = {}


def _cmd(name: str, arity: int) -> Callable[[Callable[[list[bytes]], Reply]], Callable[[list[bytes]], Reply]]:
    def register(fn: Callable[[list[bytes]], Reply]) -> Callable[[list[bytes]], Reply]:
        _RESP[name.encode()] = (arity, fn)
        return fn
    return register


@_cmd("GET", 2)
def _get(a: list[bytes]) -> Reply:
    return Deferred([("g", a[1])], _r_get)


_SYNTAX = resp.error("ERR syntax error")
_NOT_INT = resp.error("ERR value is not an integer or out of range")


# An expiry option's kind, as the store takes it: ms from now, at a time (ms), the key's own
_IN, _AT, _KEEP, _PERSIST = 1, 2, 3, 4
_EXPIRY_OPTS = {b"EX": (_IN, 1000), b"PX": (_IN, 1), b"EXAT": (_AT, 1000), b"PXAT": (_AT, 1)}
MAX_EXPIRY_MS = 1 << 61  # ms: an expiry time or span beyond it is refused (Redis: overflow)


def _expiry_ms(raw: bytes, scale: int, command: str) -> int | Reply:
    """An EX/PX/EXAT/PXAT argument in ms, or the error Redis gives: not an integer, or not
    positive (or too large)."""
    n = _signed(raw)
    if n is None:
        return _NOT_INT
    if n <= 0 or n * scale >= MAX_EXPIRY_MS:
        return resp.error(f"ERR invalid expire time in '{command}' command")
    return n * scale


@_cmd("SET", -3)
def _set(a: list[bytes]) -> Reply:
    """SET key value [NX | XX] [GET] [EX s | PX ms | EXAT unix-s | PXAT unix-ms | KEEPTTL]"""
    if len(a) == 3:
        return Deferred([("s", a[1], a[2])], _r_ok)
    cond, old, kind, amount = 0, False, 0, 0
    i = 3
    while i < len(a):
        o = a[i].upper()
        if o == b"NX" and cond == 0:
            cond = 1
        elif o == b"XX" and cond == 0:
            cond = 2
        elif o == b"GET" and not old:
            old = True
        elif o == b"KEEPTTL" and kind == 0:
            kind = _KEEP
        elif o in _EXPIRY_OPTS and kind == 0 and i + 1 < len(a):
            kind, scale = _EXPIRY_OPTS[o]
            ms = _expiry_ms(a[i + 1], scale, "set")
            if ms.__class__ is not int:
                return ms  # type: ignore[return-value]
            amount = ms  # type: ignore[assignment]
            i += 1
        else:
            return _SYNTAX
        i += 1
    if kind:
        return Deferred([("se", a[1], a[2], cond, old, kind, amount)], _r_set_old if old else _r_set_cond)
    return Deferred([("sx", a[1], a[2], cond, old)], _r_set_old if old else _r_set_cond)


def _r_rename(results: list[Any]) -> bytes:
    r = results[0]
    return error_text(r) if r.__class__ is str else resp.OK


@_cmd("RENAME", 3)
def _rename(a: list[bytes]) -> Reply:
    return Deferred([("rn", a[1], a[2], False)], _r_rename)


@_cmd("RENAMENX", 3)
def _renamenx(a: list[bytes]) -> Reply:
    return Deferred([("rn", a[1], a[2], True)], _r_incr)  # (an integer, or why not)


@_cmd("FLUSHALL", -1)
def _flushall(a: list[bytes]) -> Reply:
    if len(a) > 2 or (len(a) == 2 and a[1].upper() not in (b"ASYNC", b"SYNC")):
        return _SYNTAX
    return Deferred([("fa",)], _r_rename)


_RESP[b"FLUSHDB"] = _RESP[b"FLUSHALL"]


@_cmd("SETEX", 4)
def _setex(a: list[bytes]) -> Reply:
    ms = _expiry_ms(a[2], 1000, "setex")
    return ms if ms.__class__ is not int else Deferred([("se", a[1], a[3], 0, False, _IN, ms)], _r_ok)  # type: ignore[return-value]


@_cmd("PSETEX", 4)
def _psetex(a: list[bytes]) -> Reply:
    ms = _expiry_ms(a[2], 1, "psetex")
    return ms if ms.__class__ is not int else Deferred([("se", a[1], a[3], 0, False, _IN, ms)], _r_ok)  # type: ignore[return-value]


def _expire(a: list[bytes], kind: int, scale: int) -> Reply:
    """EXPIRE key seconds [NX | XX | GT | LT] and its kin: a time not in the future deletes the
    key (as in Redis)."""
    n = _signed(a[2])
    if n is None:
        return _NOT_INT
    if abs(n) * scale >= MAX_EXPIRY_MS:
        return resp.error(f"ERR invalid expire time in '{a[0].decode('utf-8', 'replace').lower()}' command")
    flag = 0
    for opt in a[3:]:
        f = {b"NX": 1, b"XX": 2, b"GT": 3, b"LT": 4}.get(opt.upper())
        if f is None:
            return resp.error(f"ERR Unsupported option {opt.decode('utf-8', 'replace')}")
        if flag and flag != f:
            if {flag, f} == {3, 4}:
                return resp.error("ERR GT and LT options at the same time are not compatible")
            return resp.error("ERR NX and XX, GT or LT options at the same time are not compatible")
        flag = f
    return Deferred([("ex", a[1], kind, n * scale, flag)], _r_int)


@_cmd("EXPIRE", -3)
def _expire_s(a: list[bytes]) -> Reply:
    return _expire(a, _IN, 1000)


@_cmd("PEXPIRE", -3)
def _pexpire(a: list[bytes]) -> Reply:
    return _expire(a, _IN, 1)


@_cmd("EXPIREAT", -3)
def _expireat(a: list[bytes]) -> Reply:
    return _expire(a, _AT, 1000)


@_cmd("PEXPIREAT", -3)
def _pexpireat(a: list[bytes]) -> Reply:
    return _expire(a, _AT, 1)


@_cmd("PERSIST", 2)
def _persist(a: list[bytes]) -> Reply:
    return Deferred([("pe", a[1])], _r_int)


def _ttl(ms: bool, absolute: bool) -> Callable[[list[bytes]], Reply]:
    def encode(results: list[Any]) -> bytes:
        r = results[0]
        if r.__class__ is int:
            return resp.integer(r)  # -2: no such key; -1: no expiry
        exp, now = r
        t = max(0, exp if absolute else exp - now)
        return resp.integer(t if ms else (t + 500) // 1000)
    return lambda a: Deferred([("tt", a[1])], encode)


_RESP[b"TTL"] = (2, _ttl(False, False))
_RESP[b"PTTL"] = (2, _ttl(True, False))
_RESP[b"EXPIRETIME"] = (2, _ttl(False, True))
_RESP[b"PEXPIRETIME"] = (2, _ttl(True, True))


@_cmd("GETEX", -2)
def _getex(a: list[bytes]) -> Reply:
    """GETEX key [EX s | PX ms | EXAT unix-s | PXAT unix-ms | PERSIST]"""
    if len(a) == 2:
        return Deferred([("g", a[1])], _r_get)
    o = a[2].upper()
    if o == b"PERSIST" and len(a) == 3:
        return Deferred([("gx", a[1], _PERSIST, 0)], _r_get)
    if o not in _EXPIRY_OPTS or len(a) != 4:
        return _SYNTAX
    kind, scale = _EXPIRY_OPTS[o]
    ms = _expiry_ms(a[3], scale, "getex")
    return ms if ms.__class__ is not int else Deferred([("gx", a[1], kind, ms)], _r_get)  # type: ignore[return-value]


def _r_set_cond(results: list[Any]) -> bytes:  # SET ... NX|XX: OK, or null if not written
    return resp.OK if results[0][0] else resp.NULL_BULK


def _r_set_old(results: list[Any]) -> bytes:  # SET ... GET: the value before, written or not
    r = results[0]
    return error_text(r) if r.__class__ is str else resp.bulk(r[1])


@_cmd("SETNX", 3)
def _setnx(a: list[bytes]) -> Reply:
    return Deferred([("sx", a[1], a[2], 1, False)], _r_written)


def _r_written(results: list[Any]) -> bytes:
    return resp.integer(results[0][0])


@_cmd("GETSET", 3)
def _getset(a: list[bytes]) -> Reply:
    return Deferred([("sx", a[1], a[2], 0, True)], _r_set_old)


@_cmd("GETDEL", 2)
def _getdel(a: list[bytes]) -> Reply:
    return Deferred([("gd", a[1])], _r_get)


@_cmd("APPEND", 3)
def _append(a: list[bytes]) -> Reply:
    return Deferred([("ap", a[1], a[2])], _r_append)


def _r_append(results: list[Any]) -> bytes:
    if results[0].__class__ is str:
        return error_text(results[0])
    if results[0] < 0:
        return resp.error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    return resp.integer(results[0])


@_cmd("STRLEN", 2)
def _strlen(a: list[bytes]) -> Reply:
    return Deferred([("g", a[1])], _r_strlen)


def _r_strlen(results: list[Any]) -> bytes:
    r = results[0]
    return error_text(r) if r.__class__ is str else resp.integer(0 if r is None else len(r))


@_cmd("GETRANGE", 4)
def _getrange(a: list[bytes]) -> Reply:
    start, end = _signed(a[2]), _signed(a[3])
    if start is None or end is None:
        return _NOT_INT
    return Deferred([("g", a[1])], lambda results: error_text(results[0]) if results[0].__class__ is str
                    else resp.bulk(_range(results[0] or b"", start, end)))


_RESP[b"SUBSTR"] = _RESP[b"GETRANGE"]


def _signed(b: bytes) -> int | None:
    """A 64-bit integer written as Redis reads one: digits, an optional '-', no leading zeros
    (``int`` alone would take '+1', ' 1', '1_0' and '010')."""
    digits = b[1:] if b[:1] == b"-" else b
    if not digits.isdigit() or not digits.isascii() or (digits[:1] == b"0" and len(b) > 1) or len(digits) > 19:
        return None
    n = int(b)
    return n if -(1 << 63) <= n < 1 << 63 else None


def _range(v: bytes, start: int, end: int) -> bytes:
    """GETRANGE's inclusive, negative-from-the-end range, as Redis clamps it."""
    n = len(v)
    if start < 0:
        start = max(0, n + start)
    if end < 0:
        end = n + end
    end = min(end, n - 1)
    return v[start:end + 1] if start <= end else b""


@_cmd("MSETNX", -3)
def _msetnx(a: list[bytes]) -> Reply:
    if len(a) % 2 != 1:
        return wrong_arity(a[0], True)
    return Deferred([("mn", a[1:])], _r_int)


def scan_options(a: list[bytes], start: int, with_type: bool) -> bytes | tuple[bytes | None, int, bytes | None]:
    """``[MATCH pattern] [COUNT count] [TYPE type]`` from ``a[start:]`` (TYPE only
    ``with_type``): (pattern or None, count, type or None), or the error to answer."""
    match, count, kind = None, 10, None
    for i in range(start, len(a), 2):
        opt = a[i].upper()
        if i + 1 >= len(a):
            return _SYNTAX
        if opt == b"MATCH":
            match = a[i + 1]
        elif opt == b"COUNT":
            n = _int_arg(a[i + 1])
            if n is None:
                return _NOT_INT
            if n < 1:
                return _SYNTAX
            count = n
        elif opt == b"TYPE" and with_type:
            kind = a[i + 1].lower()
        else:
            return _SYNTAX
    return match, count, kind


@_cmd("SCAN", -2)
def _scan(a: list[bytes]) -> Reply:
    """SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]"""
    cursor = int(a[1]) if a[1].isdigit() and len(a[1]) <= 19 else None
    if cursor is None or cursor >= 1 << 63:
        return resp.error("ERR invalid cursor")
    opts = scan_options(a, 2, True)
    if opts.__class__ is bytes:
        return opts  # type: ignore[return-value]
    match, count, kind = opts  # type: ignore[misc]
    if match == b"*":
        match = None
    if kind is None:
        return Deferred([("sc", cursor, count, match)], _r_scan)
    if kind not in (b"string", b"hash", b"set"):
        return Deferred([("sc", cursor, count, match)], _r_scan_none)
    return Deferred([("sc", cursor, count, match, kind.decode())], _r_scan)


def _r_scan(results: list[Any]) -> bytes:
    r = results[0]
    if r.__class__ is str:
        return error_text(r)
    return resp.array([b"%d" % r[0], r[1]])


def _r_scan_none(results: list[Any]) -> bytes:  # TYPE of a kind no key has: the walk, no keys
    r = results[0]
    if r.__class__ is str:
        return resp.error(f"ERR {r}")
    return resp.array([b"%d" % r[0], []])


@_cmd("KEYS", 2)
def _keys(a: list[bytes]) -> Reply:
    return Deferred([("ks", a[1])], _r_keys)


def _r_keys(results: list[Any]) -> bytes:
    return resp.array(results[0])


@_cmd("RANDOMKEY", 1)
def _randomkey(a: list[bytes]) -> Reply:
    return Deferred([("rk",)], _r_get)


def _incr(key: bytes, step: int) -> Deferred:
    return Deferred([("in", key, step)], _r_incr)


def _r_incr(results: list[Any]) -> bytes:
    r = results[0]
    return error_text(r) if r.__class__ is str else resp.integer(r)


@_cmd("INCR", 2)
def _incr1(a: list[bytes]) -> Reply:
    return _incr(a[1], 1)


@_cmd("DECR", 2)
def _decr1(a: list[bytes]) -> Reply:
    return _incr(a[1], -1)


@_cmd("INCRBY", 3)
def _incrby(a: list[bytes]) -> Reply:
    n = _signed(a[2])
    return _NOT_INT if n is None else _incr(a[1], n)


@_cmd("DECRBY", 3)
def _decrby(a: list[bytes]) -> Reply:
    n = _signed(a[2])
    if n is None:
        return _NOT_INT
    if n == -(1 << 63):
        return resp.error("ERR decrement would overflow")
    return _incr(a[1], -n)


@_cmd("INCRBYFLOAT", 3)
def _incrbyfloat(a: list[bytes]) -> Reply:
    return resp.error("ERR INCRBYFLOAT is not supported: counters here are integers (INCRBY)")


@_cmd("DEL", -2)
def _del(a: list[bytes]) -> Reply:
    return Deferred([("d", k) for k in a[1:]], _r_count)


_RESP[b"DELETE"] = _RESP[b"DEL"]
_RESP[b"UNLINK"] = _RESP[b"DEL"]  # (a delete is as cheap as an unlink here)


@_cmd("EXISTS", -2)
def _exists(a: list[bytes]) -> Reply:
    return Deferred([("g", k) for k in a[1:]], _r_exists)


_RESP[b"TOUCH"] = _RESP[b"EXISTS"]  # (no access times to touch: how many exist)


@_cmd("MGET", -2)
def _mget(a: list[bytes]) -> Reply:
    return Deferred([("g", k) for k in a[1:]], _r_array)


@_cmd("MSET", -3)
def _mset(a: list[bytes]) -> Reply:
    if len(a) % 2 != 1:
        return wrong_arity(a[0], True)
    return Deferred([("s", a[i], a[i + 1]) for i in range(1, len(a), 2)], _r_ok)


@_cmd("PING", -1)
def _ping(a: list[bytes]) -> Reply:
    if len(a) > 2:
        return wrong_arity(a[0], True)
    return resp.PONG if len(a) == 1 else resp.bulk(a[1])


@_cmd("ECHO", 2)
def _echo(a: list[bytes]) -> Reply:
    return resp.bulk(a[1])


@_cmd("DBSIZE", 1)
def _dbsize(a: list[bytes]) -> Reply:
    return Deferred([("n",)], _r_int)


@_cmd("INFO", -1)
def _info(a: list[bytes]) -> Reply:
    return Deferred([("i",)], _r_info(a[1] if len(a) > 1 else None))


@_cmd("QUIT", -1)
def _quit(a: list[bytes]) -> Reply:
    return Quit(resp.OK)


@_cmd("COMMAND", -1)
def _command(a: list[bytes]) -> Reply:
    sub = a[1].upper() if len(a) > 1 else b""
    if sub == b"COUNT":
        return resp.integer(len(_RESP))
    return resp.EMPTY_ARRAY  # COMMAND, COMMAND DOCS ...: clients accept an empty table


def _config_get_pairs(a: list[bytes]) -> list[bytes]:
    # redis-benchmark and others ask for persistence settings; answer the ones that map.
    known = {b"save": b"", b"appendonly": b"no"}
    pairs: list[bytes] = []
    for pattern in a[2:]:
        if pattern.lower() in known:
            pairs += [pattern.lower(), known[pattern.lower()]]
    return pairs


@_cmd("CONFIG", -2)
def _config(a: list[bytes]) -> Reply:
    if a[1].upper() == b"GET":
        return resp.array(_config_get_pairs(a))
    return resp.error("ERR CONFIG subcommands other than GET are not supported")


@_cmd("CLIENT", -2)
def _client(a: list[bytes]) -> Reply:
    sub = a[1].upper()
    if sub in (b"SETNAME", b"SETINFO", b"NO-EVICT", b"NO-TOUCH", b"REPLY"):
        return resp.OK
    if sub == b"GETNAME":
        return resp.NULL_BULK
    if sub == b"ID":
        return resp.integer(0)
    return resp.error(f"ERR unknown subcommand '{_name(a[1])}'")


def _int_arg(b: bytes) -> int | None:
    return int(b) if b.isdigit() and len(b) <= 18 else None


@_cmd("WAIT", 3)
def _wait(a: list[bytes]) -> Reply:
    n, t = _int_arg(a[1]), _int_arg(a[2])
    if n is None or t is None:
        return resp.error("ERR value is not an integer or out of range")
    return Wait([("w",)], n, t)


@_cmd("AUTH", -2)
def _auth(a: list[bytes]) -> Reply:
    if len(a) > 3:
        return resp.error("ERR syntax error")
    return Auth(a[1] if len(a) == 3 else None, a[-1], resp.OK, True)


@_cmd("HELLO", -1)
def _hello(a: list[bytes]) -> Reply:
    """HELLO [protover [AUTH username password] [SETNAME clientname]]"""
    if len(a) == 1:
        return resp.array(_HELLO)
    if a[1] not in (b"2", b"3"):
        return resp.error("NOPROTO unsupported protocol version")
    auth = None
    i = 2
    while i < len(a):
        opt = a[i].upper()
        if opt == b"AUTH" and i + 2 < len(a):
            auth = (a[i + 1], a[i + 2])
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(a):
            i += 2
        else:
            return resp.error(f"ERR Syntax error in HELLO option '{_name(a[i])}'")
    proto = int(a[1])
    info = [*_HELLO[:5], proto, *_HELLO[6:]]
    hello = Hello(resp.map3(info) if proto == 3 else resp.array(info), proto)
    if auth is None:
        return hello
    return Auth(auth[0], auth[1], hello.reply, True, hello)


def _tx(a: list[bytes]) -> Reply:
    from zkv.transaction import TxControl  # (zkv.transaction builds on this module)
    return TxControl(a[0].upper())  # type: ignore[return-value]


for _name_, _arity in (("MULTI", 1), ("EXEC", 1), ("DISCARD", 1), ("WATCH", -2), ("UNWATCH", 1)):
    _RESP[_name_.encode()] = (_arity, _tx)


@_cmd("SELECT", 2)
def _select(a: list[bytes]) -> Reply:
    return resp.OK if a[1] == b"0" else resp.error("ERR DB index is out of range")


def known_commands() -> frozenset[bytes]:
    """Every command name either protocol accepts, upper case (e.g. for counting requests)."""
    return frozenset(_RESP) | frozenset(_P_ARITY)


# Commands whose arguments name no key (every other names one at least first)
_NO_KEYS = frozenset({b"PING", b"ECHO", b"AUTH", b"HELLO", b"CONFIG", b"CLIENT", b"INFO", b"SELECT",
                      b"WAIT", b"SCAN", b"KEYS", b"COMMAND", b"FLUSHALL", b"FLUSHDB", b"DBSIZE",
                      b"QUIT", b"RANDOMKEY", b"MULTI", b"EXEC", b"DISCARD", b"UNWATCH"})
_ALL_KEYS = frozenset({b"DEL", b"DELETE", b"UNLINK", b"EXISTS", b"TOUCH", b"MGET", b"WATCH"})
_FF = b"\xff"  # (a key below it cannot begin with RESERVED: one comparison on the hot path)
RESERVED_KEY = "keys beginning with the bytes 0xFF 0x00 are reserved (hash fields and set members live there)"


def _names_reserved(name: bytes, args: list[bytes]) -> bool:
    """Whether a key among ``args`` begins with ``RESERVED`` (zkv.store.parts)."""
    if name in _NO_KEYS:
        return False
    if name in _ALL_KEYS:
        return any(k[:2] == RESERVED for k in args[1:])
    if name == b"MSET" or name == b"MSETNX":
        return any(k[:2] == RESERVED for k in args[1::2])
    if name == b"RENAME" or name == b"RENAMENX":
        return any(k[:2] == RESERVED for k in args[1:3])
    return args[1][:2] == RESERVED


def dispatch_resp(args: list[bytes]) -> Reply:
    name = args[0].upper()
    entry = _RESP.get(name)
    if entry is None:
        return unknown(args[0], True)
    arity, fn = entry
    if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
        return wrong_arity(args[0], True)
    if len(args) > 1 and _names_reserved(name, args):
        return resp.error(f"ERR {RESERVED_KEY}")
    return fn(args)


def _r_get3(results: list[Any]) -> bytes:
    v = results[0]
    return error_text(v) if v.__class__ is str else resp.bulk3(v)


def _r_array3(results: list[Any]) -> bytes:
    return resp.array([None if r.__class__ is str else r for r in results], resp.NULL3)


def _r_set_cond3(results: list[Any]) -> bytes:
    return resp.OK if results[0][0] else resp.NULL3


def _r_set_old3(results: list[Any]) -> bytes:
    r = results[0]
    return error_text(r) if r.__class__ is str else resp.bulk3(r[1])


# RESP3 differs from RESP2, for the commands here, only in how null is written.
_RESP3_ENCODERS: dict[Encoder, Encoder] = {_r_get: _r_get3, _r_array: _r_array3,
                                           _r_set_cond: _r_set_cond3, _r_set_old: _r_set_old3}


def before_auth(args: list[bytes], is_resp: bool, resp3: bool = False) -> Reply:
    """``dispatch`` for a connection that must authenticate first: AUTH, HELLO, PING and QUIT
    as usual, anything else NOAUTH."""
    if args[0].upper() in _OPEN_BEFORE_AUTH:
        return dispatch(args, is_resp, resp3)
    return NOAUTH_RESP if is_resp else NOAUTH_PLAIN


def dispatch(args: list[bytes], is_resp: bool, resp3: bool = False) -> Reply:
    """One request -> its reply; ``resp3`` once the connection has said HELLO 3."""
    if not is_resp:
        return dispatch_plain(args, is_resp is None)
    # The two requests of nearly every workload, as clients send them (upper case), without
    # the table lookup: the same replies _set and _get give.
    n = len(args)
    if n == 3 and args[0] == b"SET" and (args[1] < _FF or args[1][:2] != RESERVED):
        return Deferred([("s", args[1], args[2])], _r_ok)
    if n == 2 and args[0] == b"GET" and not resp3 and (args[1] < _FF or args[1][:2] != RESERVED):
        return Deferred([("g", args[1])], _r_get)
    r = dispatch_resp(args)
    if resp3:
        if r.__class__ is Deferred:
            enc = _RESP3_ENCODERS.get(r.encode)  # type: ignore[union-attr]
            if enc is not None:
                return Deferred(r.ops, enc)  # type: ignore[union-attr]
        elif r is resp.NULL_BULK:
            return resp.NULL3
        elif len(args) > 1 and args[0].upper() == b"CONFIG" and args[1].upper() == b"GET":
            return resp.map3(_config_get_pairs(args))  # RESP3: CONFIG GET is a map, as in Redis
    return r


importlib.import_module("zkv.collection_commands")  # (registers the hash and set commands)
