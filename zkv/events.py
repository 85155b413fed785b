"""The replication event: one accepted write, and how it travels (msgpack) on the bus and in the log.

An event is ``(origin, seq, hlc, key, value)``: the node that accepted the write, that node's
sequence number for it (1, 2, 3 ... with no gaps), its hybrid-logical-clock timestamp, the key,
and the value (``None`` for a delete).  Events of one origin travel in *batches* of consecutive
sequence numbers, encoded as ``[origin, first_seq, [[hlc, key, value], ...]]`` so that a burst of
writes costs one message and one log record.  Heartbeats (``Heartbeat``) share the bus.

PUB frames: ``[b"ev", batch]`` or ``[b"hb", heartbeat]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

TOPIC_EVENTS = b"ev"
TOPIC_HEARTBEAT = b"hb"

# An item of a batch: (hlc, key, value-or-None)
Item = tuple[int, bytes, bytes | None]


class DecodeError(ValueError):
    """Bytes that are not a well-formed zkv message."""


@dataclass(frozen=True, slots=True)
class Event:
    origin: str
    seq: int
    hlc: int
    key: bytes
    value: bytes | None

    @property
    def op(self) -> str:
        return "DEL" if self.value is None else "SET"


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
        if not isinstance(origin, str) or not isinstance(first_seq, int) or first_seq < 1:
            raise DecodeError("bad batch header")
        for hlc, key, value in items:  # a wrong-length item raises ValueError here
            if hlc.__class__ is not int or hlc < 0 or key.__class__ is not bytes or (
                    value is not None and value.__class__ is not bytes):
                raise DecodeError("bad batch item")
        return Batch(origin, first_seq, items)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises several types for garbage
        raise DecodeError(f"undecodable batch: {exc}") from None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a store tells everyone every ``heartbeat_ms`` on its bus.

    ``seq`` is the last sequence number it issued and ``hlc`` a timestamp above every event it
    ever issued; ``vv`` is its version vector (origin -> highest contiguous seq applied);
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


def encode_heartbeat(hb: Heartbeat) -> bytes:
    return msgpack.packb(
        {
            "id": hb.id, "seq": hb.seq, "hlc": hb.hlc, "vv": hb.vv, "stable": hb.stable,
            "digest": hb.digest, "keys": hb.keys, "catchup": hb.catchup, "peers": hb.peers,
        },
        use_bin_type=True,
    )


def decode_heartbeat(payload: bytes) -> Heartbeat:
    try:
        d: dict[str, Any] = msgpack.unpackb(payload, raw=False)
        return Heartbeat(
            id=str(d["id"]), seq=int(d["seq"]), hlc=int(d["hlc"]), vv=dict(d["vv"]),
            stable=int(d["stable"]), digest=bytes(d["digest"]), keys=int(d["keys"]),
            catchup=str(d["catchup"]), peers=list(d.get("peers", [])),
        )
    except Exception as exc:
        raise DecodeError(f"undecodable heartbeat: {exc}") from None
