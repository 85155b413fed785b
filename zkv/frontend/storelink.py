"""The frontend's one ZeroMQ DEALER to its store, batched per event-loop turn.

Every ``submit`` made during one turn of the event loop, from any number of connections, leaves
as ONE message at the end of the turn; the store answers each message with one message of
results, in order, so replies are matched first-in first-out.  That keeps the frontend<->store
hop to about one send and one receive per loop turn, however many requests it carries.

The same connection carries the store's invalidations for the frontend's read cache; handling
replies and invalidations here, in arrival order, is what keeps the cache coherent.

ZeroMQ's file descriptor is edge-triggered: after every send and every wake-up the socket's
EVENTS must be drained, or a reply can sit unnoticed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from zkv.commands import ACKS, FRONTEND_ID, INVALIDATE, WRITE_OPS, Refused
from zkv.frontend.readcache import ReadCache


Callback = Callable[[list[Any] | None], None]  # None: the store gave no results


class StoreLink:
    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: str,
                 cache: ReadCache | None = None,
                 on_acks: Callable[[Any], None] | None = None) -> None:
        self.loop = loop
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        # A fixed identity: the store sends cache invalidations to this frontend and nobody else
        # (ZeroMQ refuses a second connection claiming an identity already connected).
        self.sock.setsockopt(zmq.ROUTING_ID, FRONTEND_ID)
        self.sock.linger = 0
        self.sock.sndhwm = 0
        self.sock.rcvhwm = 0
        self.sock.connect(endpoint)
        self._ops: list[Any] = []
        self._cbs: list[tuple[Callback, int]] = []
        self._inflight: deque[tuple[list[tuple[Callback, int]], list[Any]]] = deque()  # (callbacks, ops)
        self._scheduled = False
        self._packer = msgpack.Packer(use_bin_type=True)
        # The read cache learns from every reply and invalidation here, in the store's order,
        # whatever became of the connections that asked (see zkv.frontend.readcache).
        self.cache = cache
        self.on_acks = on_acks  # peers' acknowledgements, for WAIT (zkv.frontend.waits)
        loop.add_reader(self.sock.FD, self._drain)

    def submit(self, ops: list[Any], callback: Callback) -> None:
        """Queue store operations; ``callback(results)`` runs when the store has answered."""
        self._ops.extend(ops)
        self._cbs.append((callback, len(ops)))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._cbs:
            return
        ops, self._ops = self._ops, []
        cbs, self._cbs = self._cbs, []
        self._inflight.append((cbs, ops))
        self.sock.send(self._packer.pack(ops))  # copy=True: cheaper than zero-copy for small messages
        self._drain()

    def _drain(self) -> None:
        sock = self.sock
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            raw = sock.recv(zmq.NOBLOCK)
            if raw == INVALIDATE:  # [INVALIDATE, keys]: not a reply (replies are msgpack arrays)
                self._invalidated(sock.recv(zmq.NOBLOCK) if sock.getsockopt(zmq.RCVMORE) else b"")
                continue
            if raw == ACKS:  # [ACKS, {peer: seq}]: likewise
                payload = sock.recv(zmq.NOBLOCK) if sock.getsockopt(zmq.RCVMORE) else b""
                if self.on_acks is not None:
                    try:
                        self.on_acks(msgpack.unpackb(payload, raw=False))
                    except Exception:  # noqa: BLE001 - a bad report is ignored, not fatal
                        pass
                continue
            cbs, ops = self._inflight.popleft()
            try:
                results = msgpack.unpackb(raw, raw=False)
            except Exception:  # noqa: BLE001 - never expected from our store; fail the batch only
                results = None
            if results.__class__ is dict:  # the store refused this batch's writes
                self._refused(cbs, ops, results)
                continue
            if results.__class__ is not list or len(results) != len(ops):
                if self.cache is not None:
                    self.cache.clear()  # know nothing rather than something stale
                for cb, _n in cbs:  # the store could not read the batch: no results at all
                    cb(None)
                continue
            if self.cache is not None:
                self.cache.learn(ops, results)
            if len(cbs) == 1:
                cbs[0][0](results)
                continue
            i = 0
            for cb, n in cbs:
                cb(results[i:i + n])
                i += n

    def _refused(self, cbs: list[tuple[Callback, int]], ops: list[Any], reply: dict) -> None:
        """``{"refused": reason, "results": [...]}``: the store applied none of the batch's
        writes.  Each callback gets its results as ``Refused``, which carries the reason for the
        requests that wrote; the cache learns only from the others."""
        reason, results = reply.get("refused"), reply.get("results")
        if reason.__class__ is not str or results.__class__ is not list or len(results) != len(ops):
            if self.cache is not None:
                self.cache.clear()
            for cb, _n in cbs:
                cb(None)
            return
        if self.cache is not None:
            kept = [i for i, op in enumerate(ops) if op[0] not in WRITE_OPS]
            learnt = [results[i] for i in kept]
            self.cache.learn([ops[i] for i in kept], learnt)
            for i, r in zip(kept, learnt):  # (learn unwraps values that expire)
                results[i] = r
        i = 0
        for cb, n in cbs:
            cb(Refused(results[i:i + n], reason))
            i += n

    def _invalidated(self, payload: bytes) -> None:
        cache = self.cache
        if cache is None:
            return
        try:
            keys = msgpack.unpackb(payload)
        except Exception:  # noqa: BLE001 - cannot tell which keys: forget them all
            keys = None
        if keys.__class__ is list:
            cache.invalidate(keys)
        else:
            cache.clear()

    def close(self) -> None:
        self.loop.remove_reader(self.sock.FD)
        self.sock.close(0)
