"""The replication event: one accepted write, and how it travels (msgpack) on the bus and in the log.

An event is ``(origin, seq, hlc, key, value)``: the node that accepted the write, that node's
sequence number for it (1, 2, 3 ... with no gaps), its hybrid-logical-clock timestamp, the key,
and the value (``None`` for a delete, an integer for an increment: zkv.store.counter;
``[value, expiry]`` for a SET with an expiry, ``[expiry]`` for an EXPIRE, 0 for PERSIST).  Events of one origin travel in *batches* of consecutive
sequence numbers, encoded as ``[origin, first_seq, [[hlc, key, value], ...]]`` so that a burst of
writes costs one message and one log record.  Heartbeats (``Heartbeat``) share the bus.

PUB frames: ``[b"ev", batch]``, ``[b"hb", heartbeat]``, and for write acknowledgements
(zkv.replication.acks) ``[b"ackreq", [origin, seq]]`` ("tell me when you have applied my events
through seq") and ``[b"ack", [node id, its incarnation, origin, seq]]`` ("I have applied
origin's events through seq"), and ``[b"cu", {...}]``: a store's notice of what it served on its catch-up channel,
for ``zkv tail`` (stores ignore it).

An origin is an *incarnation* of a node, ``"<node id>@<tag>"``, with a fresh tag at every start
of its store (``new_origin``).  A node that lost the tail of its log (a machine crash with
``fsync = "everysec"``) or its whole directory cannot know which sequence numbers it already
handed out; under a fresh origin it starts again at 1 and can never issue an event identity a
peer already holds with other content.  Its earlier incarnations stay ordinary origins: their
events are kept, pulled and replicated like anyone's.

Everything decoded here comes off the network from peers that may be buggy or hostile, so the
decoders check every field's type and range (integers within 63 bits, timestamps increasing
within a batch, bounded strings) and raise ``DecodeError`` before anything reaches the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from zkv.store.orset import TAG_ADD, TAG_REMOVE, dots
from zkv.store.parts import HASH, RESERVED, SET, split

from zkv.clock import MAX_TS

TOPIC_EVENTS = b"ev"
TOPIC_HEARTBEAT = b"hb"
TOPIC_ACKREQ = b"ackreq"
TOPIC_ACK = b"ack"
TOPIC_CATCHUP = b"cu"  # a store's notice of catch-up traffic it served (for zkv tail)

# An item of a batch: (hlc, key, value-or-None)
Item = tuple[int, bytes, bytes | None]


MAX_SEQ = (1 << 63) - 1
MAX_NAME = 128  # characters in an origin or node id on the wire
MAX_VV = 65_536  # origins in one version vector
# Local and replicated writes are logged and published in batches of at most about this many
# bytes, so no value size that a client may send (RESP's 512 MB bulk limit) makes a log record
# or a bus message too large; one item larger than this travels alone.
BATCH_BYTES = 32 * 1024 * 1024
ORIGIN_SEP = "@"


class DecodeError(ValueError):
    """Bytes that are not a well-formed zkv message."""


def new_origin(node_id: str) -> str:
    """A fresh incarnation of ``node_id``: its start time in seconds and 32 random bits, in hex."""
    return f"{node_id}{ORIGIN_SEP}{int(time.time()):x}{os.urandom(4).hex()}"


def node_of(origin: str) -> str:
    """The node an origin (incarnation) belongs to."""
    return origin.partition(ORIGIN_SEP)[0]



def vv_text(vv: dict[str, int]) -> str:
    """A version vector as logs, INFO and the tools print it: ``origin=seq,...`` by origin."""
    return ",".join(f"{o}={n}" for o, n in sorted(vv.items())) or "-"

def split_runs(things: list, size_of: Callable[[Any], int], max_bytes: int) -> list[list]:
    """``things`` cut, in order, into runs of at most about ``max_bytes`` by ``size_of`` each
    (one thing larger than that makes a run alone)."""
    out: list[list] = []
    run: list = []
    size = 0
    for t in things:
        n = size_of(t)
        if run and size + n > max_bytes:
            out.append(run)
            run, size = [], 0
        run.append(t)
        size += n
    if run:
        out.append(run)
    return out


def split_items(items: list[Item], max_bytes: int = BATCH_BYTES) -> list[list[Item]]:
    """``items`` cut into runs of at most about ``max_bytes`` of keys and values each."""
    return split_runs(items, lambda it: len(it[1]) + (len(it[2]) if it[2].__class__ is bytes else 0) + 16,
                      max_bytes)


def check_name(v: Any, what: str) -> str:
    if v.__class__ is not str or not 0 < len(v) <= MAX_NAME:
        raise DecodeError(f"bad {what}")
    return v


def check_int(v: Any, what: str, hi: int = MAX_SEQ) -> int:
    if v.__class__ is not int or not 0 <= v <= hi:
        raise DecodeError(f"bad {what}")
    return v


def check_vv(v: Any) -> dict[str, int]:
    """A version vector (origin -> seq) as decoded."""
    return _check_map(v, MAX_VV, MAX_SEQ, "version vector")


def _check_map(v: Any, most: int, hi: int, what: str) -> dict[str, int]:
    """A map of names to integers in 0..``hi``, checked whole: every heartbeat carries a few,
    so the checks run as a few passes in C (``map``, ``min``, ``max``) rather than a loop."""
    if v.__class__ is not dict or len(v) > most:
        raise DecodeError(f"bad {what}")
    if v and not ({*map(type, v)} == {str} and 0 < min(map(len, v)) and max(map(len, v)) <= MAX_NAME
                  and {*map(type, v.values())} == {int} and min(v.values()) >= 0
                  and max(v.values()) <= hi):
        raise DecodeError(f"bad {what}")
    return v


@dataclass(frozen=True, slots=True)
class Event:
    origin: str
    seq: int
    hlc: int
    key: bytes
    value: bytes | None

    @property
    def op(self) -> str:
        """The command the event stands for, as ``zkv tail`` names it."""
        return describe(self.key, self.value)[0]


def describe(key: bytes, value: Any) -> tuple[str, bytes, bytes | None, bytes | str]:
    """An event's command, the key it acts on, the field or member (None: none), and what it
    writes: a value's bytes, or words ("" for a DEL and the like)."""
    vc = value.__class__
    if key[:2] == RESERVED and (value is None or vc in (bytes, int, tuple, list)):
        try:
            kind, owner, element = split(key)
        except ValueError:
            kind = b""
        if kind == SET and vc in (tuple, list) and value:
            return ("SADD" if value[0] == TAG_ADD else "SREM"), owner, element, ""
        if kind == HASH and vc is not tuple and vc is not list:
            if value is None:
                return "HDEL", owner, element, ""
            return ("HINCRBY", owner, element, str(value)) if vc is int else ("HSET", owner, element, value)
    if value is None:
        return "DEL", key, None, ""
    if vc is int:
        return "INCRBY", key, None, str(value)
    if vc is tuple or vc is list:
        if len(value) == 2:
            return "SET", key, None, f"{value[0].decode('utf-8', 'backslashreplace')} PXAT {value[1]}"
        return ("PEXPIREAT", key, None, str(value[0])) if value and value[0] else ("PERSIST", key, None, "")
    return "SET", key, None, value


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive events ``first_seq, first_seq + 1, ...`` of one origin."""

    origin: str
    first_seq: int
    items: list[Item]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.items) - 1

    def events(self) -> list[Event]:
        return [Event(self.origin, self.first_seq + i, h, k, v) for i, (h, k, v) in enumerate(self.items)]

    def slice_from(self, seq: int) -> Batch:
        """The part of this batch with sequence numbers >= seq."""
        skip = seq - self.first_seq
        if skip <= 0:
            return self
        return Batch(self.origin, seq, self.items[skip:])


def encode_batch(batch: Batch) -> bytes:
    return msgpack.packb([batch.origin, batch.first_seq, batch.items], use_bin_type=True)


def decode_batch(payload: bytes) -> Batch:
    try:
        origin, first_seq, items = msgpack.unpackb(payload, raw=False, use_list=False)
        items = list(items)  # a list of (hlc, key, value) tuples
        if (origin.__class__ is not str or not 0 < len(origin) <= MAX_NAME
                or first_seq.__class__ is not int or not 1 <= first_seq <= MAX_SEQ - len(items)
                or not items):
            raise DecodeError("bad batch header")
        prev = -1
        for hlc, key, value in items:  # a wrong-length item raises ValueError here
            # An origin stamps its events in increasing order, so the last is the batch's
            # latest: the store checks the clock bound on it alone.
            if hlc.__class__ is not int or not prev < hlc <= MAX_TS or key.__class__ is not bytes or (
                    value is not None and value.__class__ is not bytes and (
                        value.__class__ is not int or not -MAX_SEQ - 1 <= value <= MAX_SEQ)
                    and not _expiry_item(value) and not _member_item(value)):
                raise DecodeError("bad batch item")  # (an int: an increment, zkv.store.counter)
            if key[:2] == RESERVED or value.__class__ is tuple and value and value[0].__class__ is str:
                _check_part_item(key, value, (hlc, origin))
            prev = hlc
        return Batch(origin, first_seq, items)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises several types for garbage
        raise DecodeError(f"undecodable batch: {exc}") from None


MAX_EXPIRY = 1 << 62  # ms: an expiry time in an event is below it


def _member_item(value: Any) -> bool:
    """An item value that adds or removes a set's member: ``("a"|"r", dots...)``
    (zkv.store.orset)."""
    if value.__class__ is not tuple or not value or value[0] not in (TAG_ADD, TAG_REMOVE):
        return False
    try:
        dots(value[1:])
    except ValueError:
        return False
    return True


def _check_part_item(key: bytes, value: Any, stamp: tuple[int, str]) -> None:
    """A hash's field takes what a string takes but an expiry; a set's member only an add or a
    remove, naming dots from before it (zkv.store.parts, zkv.store.orset)."""
    try:
        kind = split(key)[0]
    except ValueError:
        raise DecodeError("bad batch item: a reserved key that names no field or member") from None
    if (kind == SET) != _member_item(value) or kind == HASH and value.__class__ is tuple:
        raise DecodeError("bad batch item: a write that does not fit its field or member")
    if kind == SET and any(d >= stamp for d in dots(value[1:])):
        raise DecodeError("bad batch item: a member's write names a dot from its future")


def _expiry_item(value: Any) -> bool:
    """An item value that sets an expiry: ``(value, when)`` (SET ... PX) or ``(when,)``
    (EXPIRE; 0: PERSIST), times in ms since the epoch (zkv.store.counter)."""
    if value.__class__ is not tuple:
        return False
    if len(value) == 2:
        v, when = value
        return v.__class__ is bytes and when.__class__ is int and 0 < when < MAX_EXPIRY
    return len(value) == 1 and value[0].__class__ is int and 0 <= value[0] < MAX_EXPIRY


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a store tells everyone every ``heartbeat_ms`` on its bus.

    ``origin`` is its current incarnation, ``seq`` the last sequence number it issued under it
    and ``hlc`` a timestamp above every event it issued; ``wall`` its wall clock (ms) when it
    sent the heartbeat, from which peers measure clock offsets; ``vv`` is its version vector (origin -> highest contiguous seq applied);
    ``stable`` is a time below which it has applied every event of every origin it knows
    (for tombstone collection); ``digest`` summarises its live data (for anti-entropy and
    ``zkv verify``); ``catchup`` is its ROUTER endpoint that serves missed events.
    """

    id: str
    seq: int
    hlc: int
    vv: dict[str, int]
    stable: int
    digest: bytes
    keys: int
    catchup: str
    peers: list[str] = field(default_factory=list)
    origin: str = ""  # "" (an older sender): the node id itself
    wall: int = 0
    # node id -> the highest ``hlc`` the sender heard that node announce: a node that lost its
    # data directory learns from it how far its clock had gone (zkv.store.clockfile)
    seen: dict[str, int] = field(default_factory=dict)
    # origin -> [first, last] sequence numbers the sender holds beyond its vector (behind a gap,
    # or held back for its clock): a hole is never given up while someone holds part of it
    held: dict[str, list[int]] = field(default_factory=dict)
    # (how many, XOR of their hashes): the digest of the sender's folded origins, which its
    # vector leaves out (zkv.replication.folds); None from a sender that does not fold (an
    # older release): while one is configured, nobody folds
    folds: tuple[int, int] | None = None


def encode_heartbeat(hb: Heartbeat) -> bytes:
    return msgpack.packb(
        {
            "id": hb.id, "seq": hb.seq, "hlc": hb.hlc, "vv": hb.vv, "stable": hb.stable,
            "digest": hb.digest, "keys": hb.keys, "catchup": hb.catchup, "peers": hb.peers,
            "origin": hb.origin, "wall": hb.wall, "seen": hb.seen, "held": hb.held,
            **({"folds": list(hb.folds)} if hb.folds is not None else {}),
        },
        use_bin_type=True,
    )


def decode_heartbeat(payload: bytes) -> Heartbeat:
    try:
        d: dict[str, Any] = msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise DecodeError(f"undecodable heartbeat: {exc}") from None
    if d.__class__ is not dict:
        raise DecodeError("heartbeat is not a map")
    try:
        peers = d.get("peers", [])
        if peers.__class__ is not list or len(peers) > MAX_VV or peers and not (
                {*map(type, peers)} == {str} and 0 < min(map(len, peers))
                and max(map(len, peers)) <= MAX_NAME):
            raise DecodeError("bad peers")
        digest, catchup = d["digest"], d["catchup"]
        if digest.__class__ is not bytes or len(digest) > 64:
            raise DecodeError("bad digest")
        if catchup.__class__ is not str or len(catchup) > 300:
            raise DecodeError("bad catchup endpoint")
        node = check_name(d["id"], "id")
        origin = d.get("origin", "")
        return Heartbeat(
            id=node, seq=check_int(d["seq"], "seq"), hlc=check_int(d["hlc"], "hlc", MAX_TS),
            vv=check_vv(d["vv"]), stable=check_int(d["stable"], "stable", MAX_TS), digest=digest,
            keys=check_int(d["keys"], "keys"), catchup=catchup,
            peers=peers,
            origin=check_name(origin, "origin") if origin else node,
            wall=check_int(d.get("wall", 0), "wall"),
            seen=_check_map(d.get("seen", {}), 1024, MAX_TS, "seen map"),
            held=_check_held(d.get("held", {})),
            folds=_check_folds(d["folds"]) if "folds" in d else None,
        )
    except KeyError as exc:
        raise DecodeError(f"heartbeat lacks {exc}") from None


def _check_folds(v: Any) -> tuple[int, int]:
    if (v.__class__ is not list or len(v) != 2 or v[0].__class__ is not int
            or v[1].__class__ is not int or not 0 <= v[0] <= MAX_SEQ or not 0 <= v[1] < 1 << 64):
        raise DecodeError("bad folds digest")
    return (v[0], v[1])


def _check_held(v: Any) -> dict[str, list[int]]:
    if v.__class__ is not dict or len(v) > MAX_VV:
        raise DecodeError("bad held map")
    for o, r in v.items():
        check_name(o, "origin in held map")
        if r.__class__ is not list or len(r) != 2:
            raise DecodeError("bad held range")
        check_int(r[0], "held range")
        check_int(r[1], "held range")
    return v


def encode_ackreq(origin: str, seq: int) -> bytes:
    return msgpack.packb([origin, seq], use_bin_type=True)


def _unpack_list(payload: bytes, n: int, what: str) -> list[Any]:
    try:
        d = msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise DecodeError(f"undecodable {what}: {exc}") from None
    if d.__class__ is not list or len(d) != n:
        raise DecodeError(f"{what} is not a list of {n}")
    return d


def decode_ackreq(payload: bytes) -> tuple[str, int]:
    d = _unpack_list(payload, 2, "ack request")
    return check_name(d[0], "origin"), check_int(d[1], "seq")


def encode_ack(node_id: str, incarnation: str, origin: str, seq: int) -> bytes:
    return msgpack.packb([node_id, incarnation, origin, seq], use_bin_type=True)


def decode_ack(payload: bytes) -> tuple[str, str, str, int]:
    """``(node id, its incarnation, origin, seq)``: that incarnation has applied ``origin``'s
    events through ``seq``."""
    d = _unpack_list(payload, 4, "ack")
    return (check_name(d[0], "id"), check_name(d[1], "incarnation"), check_name(d[2], "origin"),
            check_int(d[3], "seq"))
