"""The answering side of a store's catch-up channel, as decisions: which request is served, what
each costs its requester, and the reply.  No socket: replies leave as the replica's outputs
(``SERVE``), a full transfer as a ``TRANSFER`` for the shell to stream (zkv.store.catchup_server).

Every request is charged to its requester - the peer its CURVE key proved (ZeroMQ's ``User-Id``)
or, on an open bus, its connection - under the limits of ``zkv.replication.limits``; the verbs
and replies are ``zkv.replication.catchup``'s.  What it serves is announced on the bus (``cu``
notices) for ``zkv tail``.  It reads the replica's state and never changes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from zkv.events import TOPIC_CATCHUP, DecodeError, check_int
from zkv.replication import catchup as wire
from zkv.replication.antientropy import entries_reply
from zkv.replication.backlog import TooOld
from zkv.replication.limits import (
    ENTRIES_BURST, ENTRIES_RATE, REPLY_BYTES, REQUEST_BURST, REQUEST_RATE, SNAP_BURST, SNAP_EVERY,
    RateLimit, snapshot_refusal,
)
from zkv.store.keyspace import BUCKETS
from zkv.store.outputs import PUBLISH, SERVE, TRANSFER

if TYPE_CHECKING:  # (typing only: the replica imports this module, not the other way round)
    from zkv.store.replica import Replica


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class Serving:
    def __init__(self, replica: Replica) -> None:
        self.r = replica
        self.request_limit = RateLimit(REQUEST_RATE, REQUEST_BURST)  # per requester
        self.snap_limit = RateLimit(1 / SNAP_EVERY, SNAP_BURST)  # per peer
        self.entries_limit = RateLimit(ENTRIES_RATE, ENTRIES_BURST)  # all requesters together
        self.received = 0  # requests, served or refused (INFO: catchup_requests_received)

    def request(self, ident: bytes, who: str | None, frames: list[bytes], now: float) -> None:
        r = self.r
        self.received += 1
        try:
            if not frames:
                raise DecodeError("a request without a verb")
            verb, args = frames[0], frames[1:]
            cost = 1 + (len(args[0]) // 256 if verb == wire.ENTRIES and args else 0)
            if not self.request_limit.allow(who or ident, now, cost):
                r.bad("catch-up request", f"{who or 'a requester'} is over its request rate")
                return
            if verb == wire.ENTRIES and not self.entries_limit.allow(None, now):
                r.bad("catch-up request", "entries requests over their shared rate")
                return
            reply = self._reply(ident, verb, args, who, now)
            if reply is not None:
                r.out.append((SERVE, ident, reply))
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the node
            r.bad("catch-up request", f"{type(exc).__name__}: {exc}")

    def _reply(self, ident: bytes, verb: bytes, args: list[bytes], who: str | None,
               now: float) -> list[bytes] | None:
        r = self.r
        if verb == wire.PULL:
            origin, after = args[0].decode(), int(args[1])
            try:
                payloads, more = r.backlog.since(origin, after, max_bytes=REPLY_BYTES)
            except TooOld:
                return [wire.TOOOLD, args[0]]
            if not payloads and r.inbox.vv.get(origin, 0) > after:
                return [wire.TOOOLD, args[0]]  # we have them, but only in the snapshot
            if payloads:
                self.notice({"kind": "pull", "to": who or "a peer", "origin": origin,
                             "after": after, "batches": len(payloads),
                             "bytes": sum(len(p) for p in payloads)})
            return wire.events(args[0], more, payloads)
        if verb == wire.SNAP:
            return self._snap(ident, args, who, now)
        if verb == wire.BUCKETS:
            return [wire.BUCKETS, pack([r.wire_vv(), r.ks.bucket_hashes()])]
        if verb == wire.ENTRIES:
            buckets = [check_int(b, "bucket", BUCKETS - 1)
                       for b in msgpack.unpackb(args[0], raw=False)][:BUCKETS]
            sent, entries = entries_reply(r.ks, buckets, horizon=r.gc_horizon)
            return [wire.ENTRIES, pack([r.gc_horizon, sent, entries])]
        if verb == wire.FOLDS:
            page, more = r.folds.page(args[0].decode() if args else "")
            return [wire.FOLDS, pack([page, more])]
        if verb == wire.INFO:
            return [wire.INFO, pack(r.info())]
        return [wire.ERROR, b"unknown verb"]

    def _snap(self, ident: bytes, args: list[bytes], who: str | None,
              now: float) -> list[bytes] | None:
        """A full transfer: only for a configured peer, one stream each, a few a minute."""
        r = self.r
        tag = args[0] if args else b""
        # With keys, the requester is who its key proved; on an open bus, who it says it is.
        peer = who if who is not None else (args[1].decode("utf-8", "replace") if len(args) > 1 else None)
        why = snapshot_refusal(peer, r.peer_ids)
        if why is None and not self.snap_limit.allow(peer, now):
            why = f"{peer} asked for snapshots too often"
        if why is not None:
            r.bad("catch-up request", f"snapshot transfer refused: {why}")
            return [wire.SNAPFAIL, tag]
        assert peer is not None
        r.out.append((TRANSFER, peer, ident, tag))
        return None

    def notice(self, note: dict[str, Any]) -> None:
        """Tell zkv tail what the catch-up channel served (it does not travel on the bus)."""
        self.r.out.append((PUBLISH, [TOPIC_CATCHUP, pack({"from": self.r.id, **note})]))
