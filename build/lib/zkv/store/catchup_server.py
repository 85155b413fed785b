"""The sending side of a store's catch-up channel: replies its requesters' queues could not take
yet, and the snapshot streams of full state transfers.  I/O only: which request is answered, and
how, is decided in the core (``zkv.store.serving``); this module owns the ROUTER's sending.

A requester whose ZeroMQ queue is full (at its high-water mark: it asked for many things at once,
or does not read) gets its replies on later loop turns, a bounded amount each; one that takes
nothing for ``STREAM_STALL`` seconds loses them.  A full transfer waits for a fresh forked
snapshot, then streams it a few chunks per loop turn, never blocking the loop.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from zkv.replication import catchup as wire
from zkv.replication.transfer import SnapStream, advance_streams
from zkv.store.snapshot import SnapshotError, read_snapshot_raw

log = logging.getLogger("zkv.store")

STREAM_STALL = 30.0  # seconds a snapshot stream's reader may take nothing before it is dropped
PENDING_REPLY_BYTES = 32 * 1024 * 1024  # replies kept for one requester whose queue is full


class CatchupSender:
    def __init__(self, sock: zmq.Socket, snapshot_path: Path, bad: Callable[[str, str], None],
                 notice: Callable[[dict[str, Any]], None]) -> None:
        self.sock = sock
        self.snapshot_path = snapshot_path
        self.bad = bad
        self.notice = notice  # tells zkv tail what was served (the shell publishes it)
        # Snapshot transfers asked for, awaiting a snapshot: peer -> (catch-up identity, tag)
        self.snap_waiters: dict[str, tuple[bytes, bytes]] = {}
        self.streams: list[SnapStream] = []
        self.blocked = False  # every stream waits for its reader
        self.pending: dict[bytes, deque[list[bytes]]] = {}
        self.pending_bytes: dict[bytes, int] = {}
        self.pending_progress: dict[bytes, float] = {}  # when a reply of it last went out

    def send(self, ident: bytes, reply: list[bytes]) -> None:
        q = self.pending.get(ident)
        try:
            if q is None:
                try:
                    self.sock.send_multipart([ident, *reply], zmq.NOBLOCK)
                    return
                except zmq.Again:
                    q = self.pending[ident] = deque()
                    self.pending_bytes[ident] = 0
                    self.pending_progress[ident] = time.monotonic()
        except zmq.ZMQError:
            return  # the asker went away: nobody to answer
        size = sum(len(f) for f in reply)
        if q and self.pending_bytes[ident] + size > PENDING_REPLY_BYTES:
            self.bad("catch-up", "a requester that does not read its replies: one dropped")
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
                self.bad("catch-up", "a requester that does not read: its replies dropped")
            except zmq.ZMQError:
                pass  # the requester is gone
            del self.pending[ident], self.pending_bytes[ident], self.pending_progress[ident]

    def transfer(self, peer: str, ident: bytes, tag: bytes) -> None:
        """``peer`` asked for a full transfer (anew: a stream it had is dropped); it starts once
        the next snapshot is written (the shell starts one if none is running)."""
        self.streams = [s for s in self.streams if s.peer != peer]
        self.snap_waiters[peer] = (ident, tag)

    def snapshot_done(self, ok: bool) -> None:
        """A snapshot was written (or failed): stream it to the peers waiting for one."""
        waiters, self.snap_waiters = self.snap_waiters, {}
        if not waiters:
            return
        if not ok:
            for ident, tag in waiters.values():
                self._send_quiet(ident, [wire.SNAPFAIL, tag])
            return
        for peer, (ident, tag) in waiters.items():
            try:
                meta, frames = read_snapshot_raw(self.snapshot_path)  # one open file: meta and chunks agree
            except (OSError, SnapshotError) as exc:  # e.g. no descriptor left: it asks again
                log.error("the snapshot for %s's transfer cannot be read (%s); it is told to "
                          "ask again", peer, exc)
                self._send_quiet(ident, [wire.SNAPFAIL, tag])
                continue
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

    def _send_quiet(self, ident: bytes, frames: list[bytes]) -> None:
        try:
            self.sock.send_multipart([ident, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
