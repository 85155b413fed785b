"""The serving side of a store's catch-up channel: its ROUTER's requests, what each one costs its
requester, and the snapshot streams of full state transfers.

Every request is charged to its requester - the peer its CURVE key proved (ZeroMQ's ``User-Id``
on the message) or, on an open bus, its connection - under the limits of
``zkv.replication.limits``; the verbs and replies are ``zkv.replication.catchup``'s.  What it
serves is announced on the bus (``cu`` notices) for ``zkv tail``.  The store owns the data; this
object reads it through the store and never changes it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from zkv.events import TOPIC_CATCHUP, DecodeError, check_int
from zkv.replication import catchup as wire
from zkv.replication.antientropy import entries_reply
from zkv.replication.backlog import TooOld
from zkv.replication.limits import (
    ENTRIES_BURST, ENTRIES_RATE, REPLY_BYTES, REQUEST_BURST, REQUEST_RATE, SNAP_BURST, SNAP_EVERY,
    RateLimit, snapshot_refusal,
)
from zkv.replication.transfer import SnapStream, advance_streams
from zkv.store.durability import SNAPSHOT
from zkv.store.keyspace import BUCKETS
from zkv.store.snapshot import read_snapshot_raw

if TYPE_CHECKING:
    from zkv.store.server import Store

log = logging.getLogger("zkv.store")

STREAM_STALL = 30.0  # seconds a snapshot stream's reader may take nothing before it is dropped
PENDING_REPLY_BYTES = 32 * 1024 * 1024  # replies kept for one requester whose queue is full


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class CatchupServer:
    def __init__(self, store: Store, sock: zmq.Socket, keyed: bool) -> None:
        self.store = store
        self.sock = sock
        self.keyed = keyed  # CURVE: requesters are the peers their keys proved
        self.request_limit = RateLimit(REQUEST_RATE, REQUEST_BURST)  # per requester
        self.snap_limit = RateLimit(1 / SNAP_EVERY, SNAP_BURST)  # per peer
        self.entries_limit = RateLimit(ENTRIES_RATE, ENTRIES_BURST)  # all requesters together
        # Snapshot transfers asked for, awaiting a snapshot: peer -> (catch-up identity, tag)
        self.snap_waiters: dict[str, tuple[bytes, bytes]] = {}
        self.streams: list[SnapStream] = []
        self.blocked = False  # every stream waits for its reader
        # Replies ZeroMQ would not take yet (the requester's queue is at its high-water mark,
        # which it also is, briefly, for one that reads but asked for many things at once):
        # sent on later loop turns, a bounded amount per requester.
        self.pending: dict[bytes, deque[list[bytes]]] = {}
        self.pending_bytes: dict[bytes, int] = {}
        self.pending_progress: dict[bytes, float] = {}  # when a reply of it last went out

    def serve(self) -> None:
        """Answer the requests waiting (a hundred at most per loop turn)."""
        bad = self.store.bad
        now = time.monotonic()
        for _ in range(100):
            try:
                msg = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                if len(msg) < 2:
                    raise DecodeError("a request without a verb")
                who = msg[1].get("User-Id") if self.keyed else None
                frames = [f.bytes for f in msg]
                ident, verb, args = frames[0], frames[1], frames[2:]
                cost = 1 + (len(args[0]) // 256 if verb == wire.ENTRIES and args else 0)
                if not self.request_limit.allow(who or ident, now, cost):
                    bad("catch-up request", f"{who or 'a requester'} is over its request rate")
                    continue
                if verb == wire.ENTRIES and not self.entries_limit.allow(None, now):
                    bad("catch-up request", "entries requests over their shared rate")
                    continue
                reply = self._reply(ident, verb, args, who)
                if reply is not None:
                    self._send(ident, reply)
            except zmq.ZMQError:
                pass  # the asker went away: nobody to answer
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the node
                bad("catch-up request", f"{type(exc).__name__}: {exc}")

    def _reply(self, ident: bytes, verb: bytes, args: list[bytes],
               who: str | None) -> list[bytes] | None:
        st = self.store
        if verb == wire.PULL:
            origin, after = args[0].decode(), int(args[1])
            try:
                payloads, more = st.backlog.since(origin, after, max_bytes=REPLY_BYTES)
            except TooOld:
                return [wire.TOOOLD, args[0]]
            if not payloads and st.inbox.vv.get(origin, 0) > after:
                return [wire.TOOOLD, args[0]]  # we have them, but only in the snapshot
            if payloads:
                self.notice({"kind": "pull", "to": who or "a peer", "origin": origin,
                             "after": after, "batches": len(payloads),
                             "bytes": sum(len(p) for p in payloads)})
            return wire.events(args[0], more, payloads)
        if verb == wire.SNAP:
            return self._snap(ident, args, who)
        if verb == wire.BUCKETS:
            return [wire.BUCKETS, pack([st.inbox.vv, st.ks.bucket_hashes()])]
        if verb == wire.ENTRIES:
            buckets = [check_int(b, "bucket", BUCKETS - 1)
                       for b in msgpack.unpackb(args[0], raw=False)][:BUCKETS]
            sent, entries = entries_reply(st.ks, buckets)
            return [wire.ENTRIES, pack([st.gc_horizon, sent, entries])]
        if verb == wire.INFO:
            return [wire.INFO, pack(st.info())]
        return [wire.ERROR, b"unknown verb"]

    def _snap(self, ident: bytes, args: list[bytes], who: str | None) -> list[bytes] | None:
        """A full transfer: only for a configured peer, one stream each, a few a minute."""
        st = self.store
        tag = args[0] if args else b""
        # With keys, the requester is who its key proved; on an open bus, who it says it is.
        peer = who if who is not None else (args[1].decode("utf-8", "replace") if len(args) > 1 else None)
        why = snapshot_refusal(peer, frozenset(st.peer_ids))
        if why is None and not self.snap_limit.allow(peer, time.monotonic()):
            why = f"{peer} asked for snapshots too often"
        if why is not None:
            st.bad("catch-up request", f"snapshot transfer refused: {why}")
            return [wire.SNAPFAIL, tag]
        assert peer is not None
        self.streams = [s for s in self.streams if s.peer != peer]  # it asks anew
        self.snap_waiters[peer] = (ident, tag)
        if not st.disk.snapshot_running:
            st.disk.start_snapshot(st.ks, st.inbox.vv, st.clock.last, st.gc_horizon)
        return None

    def _send(self, ident: bytes, reply: list[bytes]) -> None:
        q = self.pending.get(ident)
        if q is None:
            try:
                self.sock.send_multipart([ident, *reply], zmq.NOBLOCK)
                return
            except zmq.Again:
                q = self.pending[ident] = deque()
                self.pending_bytes[ident] = 0
                self.pending_progress[ident] = time.monotonic()
        size = sum(len(f) for f in reply)
        if q and self.pending_bytes[ident] + size > PENDING_REPLY_BYTES:
            self.store.bad("catch-up", "a requester that does not read its replies: one dropped")
            return
        q.append(reply)
        self.pending_bytes[ident] += size

    def flush(self) -> None:
        """Send the replies that waited for their requesters' queues, as far as they go now;
        a requester that has taken none for STREAM_STALL seconds loses them."""
        now = time.monotonic()
        for ident, q in list(self.pending.items()):
            try:
                while q:
                    self.sock.send_multipart([ident, *q[0]], zmq.NOBLOCK)
                    self.pending_bytes[ident] -= sum(len(f) for f in q.popleft())
                    self.pending_progress[ident] = now
            except zmq.Again:
                if now - self.pending_progress[ident] <= STREAM_STALL:
                    continue
                self.store.bad("catch-up", "a requester that does not read: its replies dropped")
            except zmq.ZMQError:
                pass  # the requester is gone
            del self.pending[ident], self.pending_bytes[ident], self.pending_progress[ident]

    def snapshot_done(self, ok: bool) -> None:
        """A snapshot was written (or failed): stream it to the peers waiting for one."""
        waiters, self.snap_waiters = self.snap_waiters, {}
        if not waiters:
            return
        if not ok:
            for ident, tag in waiters.values():
                self._send_quiet(ident, [wire.SNAPFAIL, tag])
            return
        path = self.store.cfg.data_dir / SNAPSHOT
        for peer, (ident, tag) in waiters.items():
            meta, frames = read_snapshot_raw(path)  # one open file: meta and chunks agree
            self.streams.append(SnapStream(ident, tag, iter(frames), meta, peer, time.monotonic()))
            self.notice({"kind": "transfer", "to": peer,
                         "state": f"started: {frames.entries} entries in {frames.chunks} chunks"})

    def advance(self) -> None:
        """Send the streams' next chunks, as far as their readers take them."""
        before = self.streams
        self.streams, self.blocked = advance_streams(self.sock, before, time.monotonic(), STREAM_STALL)
        if len(self.streams) < len(before):
            going = {id(s) for s in self.streams}
            for s in before:
                if id(s) not in going:
                    self.notice({"kind": "transfer", "to": s.peer,
                                 "state": "sent" if s.ended else "abandoned (receiver gone or stalled)"})

    def notice(self, note: dict[str, Any]) -> None:
        """Tell zkv tail what the catch-up channel served (it does not travel on the bus)."""
        try:
            self.store.publisher.send_multipart(
                [TOPIC_CATCHUP, pack({"from": self.store.id, **note})], zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _send_quiet(self, ident: bytes, frames: list[bytes]) -> None:
        try:
            self.sock.send_multipart([ident, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
