"""The simulated world: replicas, links, clocks, disks and clients, driven by one seeded RNG.

Every replica is the production core (``zkv.store.replica.Replica``) recovered from its real
files by the real ``Durability``; only the shell is simulated.  One event queue orders
everything - message deliveries, timers, client requests, faults - in virtual time, so a seed
replays exactly.

The network, as ZeroMQ over TCP behaves: each ordered pair of nodes has three connections (the
bus, PUB -> SUB; requests, DEALER -> ROUTER; replies, back).  Within one connection messages
arrive in the order sent or not at all; across connections anything goes (each message draws
its own delay).  A connection lives as long as both ends' incarnations: a restart on either side
drops what was in flight, and a partition drops what it cuts (a PUB does not queue for a
subscriber it cannot reach).  A paused node (SIGSTOP) takes nothing until it resumes, then
everything that waited, in order.
"""

from __future__ import annotations

import heapq
import logging
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from zkv.commands import FRONTEND_ID
from zkv.config import Config, Peer
from zkv.events import decode_batch
from zkv.replication import catchup as wire
from zkv.replication.backlog import Backlog
from zkv.sim.disk import SimDisk
from zkv.sim.liar import lie
from zkv.store.outputs import (
    CLIENT, CLOCK, CONNECT, FETCH, LOG, PAUSE, PUBLISH, SERVE, SNAPSHOT, TRANSFER,
)
from zkv.store import parts
from zkv.store.replica import Replica
from zkv.store.snapshot import encode_chunk

# hash and set writes: (field, value) for HSET, field for HDEL, (field, step) for HINCRBY, member
COLLECTION_KINDS = ("hset", "hdel", "hincr", "sadd", "srem")
EPOCH_MS = 1_780_000_000_000  # the simulated wall clocks start here (late 2026)
BUS, REQ, REP = 0, 1, 2  # the three connections of an ordered pair of nodes


@dataclass
class Op:
    """One client operation and what became of it."""

    id: int
    node: str
    kind: str  # "set", "del", "get", "incr", "setpx", "pexpire", "persist", and COLLECTION_KINDS
    key: bytes
    value: bytes | int | tuple[bytes, int] | None  # (setpx: the value and ms; pexpire: ms)
    invoked: float
    completed: float | None = None
    result: str = "pending"  # "ok", "refused", "unknown" (the node died first)
    got: bytes | None = None  # a GET's answer
    version: tuple[int, str] | None = None  # (hlc, origin) a write was stamped with
    event: tuple[str, int] | None = None  # (origin, seq)
    excused: str = ""  # why losing it is fair (its only copies were destroyed)
    written: object = None  # the value its event carries (the store decides an expiry's time)
    items: list = field(default_factory=list)  # every (hlc, key, value) its events carry


@dataclass
class SimNode:
    id: str
    cfg: Config
    disk: SimDisk
    replica: Replica | None = None
    up: bool = False
    paused_until: float = 0.0
    offset_ms: float = 0.0  # wall clock minus true time
    drift: float = 0.0  # extra ms per second of true time while set
    drift_since: float = 0.0
    incarnation: int = 0
    endpoints: dict[str, tuple[str, int]] = field(default_factory=dict)  # peer -> (endpoint, its inc)
    clients_paused: bool = False
    client_queue: list[Op] = field(default_factory=list)
    tick_at: float = float("inf")
    snapshot_at: int = 0
    pending_ops: dict[bytes, Op] = field(default_factory=dict)
    down_vv: dict[str, int] = field(default_factory=dict)  # what it held when it went down
    down_versions: dict[bytes, tuple[int, str]] = field(default_factory=dict)
    unwritten: list[bytes] = field(default_factory=list)  # log records a failed append never wrote


class SimError(Exception):
    """An exception inside a replica: a bug, reported with the seed."""


class World:
    def __init__(self, seed: int, root: Path, nodes: int = 3, fsync: str = "always",
                 snapshot_records: int = 60, backlog: int = 40, heartbeat_ms: int = 100,
                 anti_entropy_ms: int = 200, max_clock_offset_ms: int = 500) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.t = 0.0
        self._queue: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._n = 0
        self.ops: list[Op] = []
        self.errors: list[str] = []
        self.trace: list[str] = []  # faults, as they happened (for a failure's report)
        self.cut: set[tuple[str, str]] = set()  # (src, dst): messages from src to dst are lost
        self.lossy: dict[tuple[str, str], float] = {}  # (src, dst) -> PUB loss probability
        self.liars: dict[str, float] = {}  # node -> until when its messages lie (zkv.sim.liar)
        self._last: dict[tuple[str, str, int], float] = {}  # FIFO per connection
        ids = [f"n{i}" for i in range(nodes)]
        self.nodes: dict[str, SimNode] = {}
        for i in ids:
            cfg = Config(
                id=i, listen_host="127.0.0.1", listen_port=1, bus=f"tcp://127.0.0.1:{1000 + len(self.nodes)}",
                data_dir=root / i, peers=tuple(Peer(p, f"tcp://127.0.0.1:{1000 + k}") for k, p in enumerate(ids) if p != i),
                fsync=fsync, snapshot_records=snapshot_records, backlog=backlog,
                heartbeat_ms=heartbeat_ms, anti_entropy_ms=anti_entropy_ms,
                max_clock_offset_ms=max_clock_offset_ms, read_cache_mb=0, publish_interval_ms=2,
                counters=True,
            )
            self.nodes[i] = SimNode(i, cfg, SimDisk(root / i, i, fsync))
        logging.getLogger("zkv").setLevel(logging.CRITICAL)

    # --- the event queue ------------------------------------------------------------------------
    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self._n += 1
        heapq.heappush(self._queue, (t, self._n, fn, args))

    def run_until(self, t_end: float, stop: Callable[[], bool] | None = None) -> bool:
        """Process events up to ``t_end``; True if ``stop()`` became true first."""
        q = self._queue
        checked = self.t
        while q and q[0][0] <= t_end:
            t, _n, fn, args = heapq.heappop(q)
            self.t = max(self.t, t)
            fn(*args)
            if self.errors:
                raise SimError(self.errors[0])
            if stop is not None and self.t - checked >= 0.05:  # (a check costs a digest a node)
                checked = self.t
                if stop():
                    return True
        self.t = max(self.t, t_end)
        return False

    def final_state(self) -> tuple[dict[str, dict[bytes, tuple]], dict[str, dict[str, int]]]:
        """Every replica's entries (tombstones included; a value with an expiry as ``(value,
        expiry)``) and version vector: the checker's input."""
        reps = {i: n.replica for i, n in self.nodes.items()}
        assert all(r is not None for r in reps.values()), "a node is down"
        finals = {}
        for i, r in reps.items():
            ks = r.ks  # type: ignore[union-attr]
            finals[i] = {k: (h, o, (v, ks.expiry(k))) if v is not None and ks.expiry(k) else (h, o, v)
                         for k, (h, o, v) in ks.items()}
            for k, (h, o, v) in list(finals[i].items()):
                if k[:3] == parts.SET:  # (a member's version is where its events left it: its dots say it)
                    finals[i][k] = (0, "", v)
        return finals, {i: dict(r.inbox.vv) for i, r in reps.items()}  # type: ignore[union-attr]

    def true_wall(self) -> int:
        """The wall clock (ms) of a node whose clock is right, now."""
        return int(EPOCH_MS + self.t * 1000)

    def note(self, text: str) -> None:
        self.trace.append(f"{self.t:8.3f} {text}")

    # --- clocks ---------------------------------------------------------------------------------
    def wall_of(self, node: SimNode) -> Callable[[], int]:
        def wall() -> int:
            extra = node.drift * (self.t - node.drift_since) if node.drift else 0.0
            return int(EPOCH_MS + self.t * 1000 + node.offset_ms + extra)
        return wall

    # --- node life ------------------------------------------------------------------------------
    def start(self, nid: str) -> None:
        node = self.nodes[nid]
        if node.up:
            return
        if node.disk.full:
            self.at(self.t + 0.2, self.start, nid)  # a full disk: it cannot open a new segment
            return
        node.incarnation += 1
        backlog = Backlog(node.cfg.backlog)
        rec, floor = node.disk.open(backlog)
        origin = f"{nid}@{node.incarnation:04x}{self.rng.getrandbits(32):08x}"
        node.replica = Replica(node.cfg, rec, origin, backlog, self.t, wall=self.wall_of(node),
                               clock_floor=floor)
        node.replica.catchup_endpoint = f"sim://{nid}/{node.incarnation}"
        node.up = True
        node.paused_until = 0.0
        node.endpoints = {}
        node.clients_paused = False
        node.snapshot_at = int(node.cfg.snapshot_records * self.rng.uniform(0.75, 1.25))
        node.tick_at = float("inf")
        self.note(f"start {nid} as {origin} (clock {node.offset_ms:+.0f} ms)")
        self._turn(node, lambda r: r.tick(self.t))
        self.at(self.t + 1.0, self._disk_second, nid, node.incarnation)

    def crash(self, nid: str, machine: bool = False) -> None:
        node = self.nodes[nid]
        if not node.up:
            return
        r = node.replica
        assert r is not None
        node.down_vv = dict(r.inbox.vv)
        node.down_versions = {k: (e[0], e[1]) for k, e in r.ks.items()}
        node.up = False
        node.replica = None
        node.disk.crash(self.rng, machine)
        for op in node.pending_ops.values():
            op.result, op.completed = "unknown", None
        for op in node.client_queue:
            op.result = "unknown"
        node.pending_ops.clear()
        node.client_queue.clear()
        self.note(f"{'machine crash' if machine else 'kill'} {nid}")

    def _alive(self, node: SimNode) -> bool:
        return node.up and node.replica is not None

    def _disk_second(self, nid: str, inc: int) -> None:
        node = self.nodes[nid]
        if not node.up or node.incarnation != inc:
            return
        node.disk.tick()
        self.at(self.t + 1.0, self._disk_second, nid, inc)

    # --- one turn of a node's loop: an input, then what the core asks for -----------------------
    def _turn(self, node: SimNode, step: Callable[[Replica], None]) -> None:
        r = node.replica
        assert r is not None
        try:
            step(r)
            r.tick(self.t)
            self._carry_out(node, r)
        except SimError:
            raise
        except OSError as exc:  # a full disk: the store process dies, as the real one does
            self.note(f"{node.id} died: {exc}")
            self.crash(node.id)
            self._forget_unwritten(node)
            self.at(self.t + 0.5, self.start, node.id)
            return
        except Exception:  # noqa: BLE001 - any other exception is a bug
            self.errors.append(f"exception in {node.id}: {traceback.format_exc()}")
            return
        if node.up and node.replica is r:
            if node.disk.records_since_snapshot >= node.snapshot_at and r.snapshot_allowed():
                node.disk.snapshot(*r.snapshot_state())
                node.snapshot_at = int(node.cfg.snapshot_records * self.rng.uniform(0.75, 1.25))
            nt = max(r.next_timer(), self.t + 0.001)
            if nt < node.tick_at - 1e-9 or node.tick_at <= self.t:
                node.tick_at = nt
                self.at(nt, self._tick, node.id, node.incarnation)

    def _tick(self, nid: str, inc: int) -> None:
        node = self.nodes[nid]
        if not self._alive(node) or node.incarnation != inc:
            return
        if self.t < node.paused_until:
            self.at(node.paused_until, self._tick, nid, inc)
            return
        if self.t + 1e-9 < node.tick_at:
            return  # a later tick replaced this one
        node.tick_at = float("inf")
        self._turn(node, lambda r: None)

    def _forget_unwritten(self, node: SimNode) -> None:
        """A store that died on a failed append holds, once down, only what reached its log:
        the events of that append and of the ones after it were in its memory, never on disk
        (the checker must not count it among their holders when another disk is damaged)."""
        for rec in node.unwritten:
            if rec[:1] != b"E":
                continue
            b = decode_batch(rec[1:])
            if node.down_vv.get(b.origin, 0) >= b.first_seq:
                node.down_vv[b.origin] = b.first_seq - 1
            for hlc, key, _value in b.items:
                if node.down_versions.get(key) == (hlc, b.origin):
                    del node.down_versions[key]
        node.unwritten = []

    def _carry_out(self, node: SimNode, r: Replica) -> None:
        outs = r.take()
        for i, o in enumerate(outs):
            verb = o[0]
            if verb == LOG:
                try:
                    node.disk.append(o[1], o[2])
                except OSError:
                    node.unwritten = [rec for later in outs[i:] if later[0] == LOG for rec in later[1]]
                    raise
                self._note_stamps(node, o[1])
            elif verb == PUBLISH:
                for p in r.peer_ids:
                    self._send(node.id, p, BUS, o[1])
            elif verb == FETCH:
                self._send(node.id, o[1], REQ, o[2])
            elif verb == CONNECT:
                node.endpoints[o[1]] = o[2]
            elif verb == CLIENT:
                self._client_reply(node, o[1])
            elif verb == SERVE:
                self._send(node.id, o[1].decode(), REP, o[2])
            elif verb == TRANSFER:
                self._stream_snapshot(node, r, o[1], o[3])
            elif verb == SNAPSHOT:
                node.disk.snapshot(*r.snapshot_state())
            elif verb == CLOCK:
                assert node.disk.clock is not None
                node.disk.clock.save(o[1])
                r.clock_persisted(node.disk.clock.saved)
            elif verb == PAUSE:
                node.clients_paused = o[1]
                if not o[1]:
                    queued, node.client_queue = node.client_queue, []
                    for op in queued:
                        self.at(self.t, self._deliver_op, op)

    def _stream_snapshot(self, node: SimNode, r: Replica, peer: str, tag: bytes) -> None:
        """A full transfer: the state as it is now, in chunks, then its meta (as a forked
        snapshot would hold it)."""
        ks, vv, hlc, horizon = r.snapshot_state()
        entries = list(ks.entries(horizon))
        for i in range(0, len(entries), 50):
            self._send(node.id, peer, REP, [wire.SNAPCHUNK, tag, encode_chunk(entries[i:i + 50])])
        meta = {"id": node.id, "vv": dict(vv), "hlc": hlc, "gc_horizon": horizon, "segment": 0}
        self._send(node.id, peer, REP, [wire.SNAPEND, tag, msgpack.packb(meta, use_bin_type=True)])

    # --- the network ----------------------------------------------------------------------------
    def _send(self, src: str, dst: str, conn: int, frames: list[bytes]) -> None:
        s, d = self.nodes[src], self.nodes.get(dst)
        if d is None or not d.up or (src, dst) in self.cut:
            return
        if conn == BUS and self.lossy.get((src, dst), 0.0) > self.rng.random():
            return  # dropped at the high-water mark
        if conn == REQ:
            ep = s.endpoints.get(dst)
            if ep != f"sim://{dst}/{d.incarnation}":
                return  # dialled an incarnation that is gone
        key = (src, dst, conn)
        t = max(self.t + self.rng.uniform(0.0002, 0.003), self._last.get(key, 0.0) + 1e-7)
        self._last[key] = t
        self.at(t, self._deliver, src, dst, conn, s.incarnation, d.incarnation, frames)

    def _deliver(self, src: str, dst: str, conn: int, s_inc: int, d_inc: int, frames: list[bytes]) -> None:
        s, d = self.nodes[src], self.nodes[dst]
        if not self._alive(d) or d.incarnation != d_inc or (src, dst) in self.cut:
            return
        if s.incarnation != s_inc:
            return  # the connection went with the sender's process
        if self.t < d.paused_until:
            key = (src, dst, conn)
            t = max(d.paused_until, self._last.get(key, 0.0) + 1e-7)
            self._last[key] = t
            self.at(t, self._deliver, src, dst, conn, s_inc, d_inc, frames)
            return
        if src in self.liars and d.replica is not None and conn != REQ:
            if self.t < self.liars[src]:
                frames = lie(d.replica, src, conn == REP, frames, self.t)
            else:
                del self.liars[src]
        if conn == BUS:
            self._turn(d, lambda r: r.bus(src, frames[0], frames[1], self.t))
        elif conn == REQ:
            self._turn(d, lambda r: r.catchup_request(src.encode(), src, frames, self.t))
        else:
            self._turn(d, lambda r: r.fetch_reply(src, frames, self.t))

    # --- clients --------------------------------------------------------------------------------
    def client_op(self, nid: str, kind: str, key: bytes, value: bytes | int | None = None) -> Op:
        op = Op(len(self.ops), nid, kind, key, value, self.t)
        self.ops.append(op)
        self._deliver_op(op)
        return op

    def _deliver_op(self, op: Op) -> None:
        node = self.nodes[op.node]
        if not self._alive(node):
            op.result = "refused" if op.result == "pending" else op.result  # connection refused
            return
        if node.clients_paused or self.t < node.paused_until:
            node.client_queue.append(op)
            if self.t < node.paused_until:
                self.at(node.paused_until, self._release_queue, node.id, node.incarnation)
            return
        if op.kind == "setpx":
            value, ms = op.value  # type: ignore[misc]
            wire_op = ["se", op.key, value, 0, False, 1, ms]
        elif op.kind == "pexpire":
            wire_op = ["ex", op.key, 1, op.value, 0]
        elif op.kind == "hset":
            wire_op = ["hs", op.key, list(op.value), 0]  # type: ignore[arg-type]
        elif op.kind == "hdel":
            wire_op = ["hd", op.key, [op.value]]
        elif op.kind == "hincr":
            wire_op = ["hi", op.key, *op.value]  # type: ignore[misc]
        elif op.kind == "sadd" or op.kind == "srem":
            wire_op = ["sa" if op.kind == "sadd" else "sr", op.key, [op.value]]
        else:
            code = {"set": "s", "del": "d", "get": "g", "incr": "in", "persist": "pe"}[op.kind]
            wire_op = [code, op.key, op.value] if op.kind in ("set", "incr") else [code, op.key]
        ident = b"c%d" % op.id
        node.pending_ops[ident] = op
        payload = msgpack.packb([wire_op], use_bin_type=True)
        self._pending_write = op if op.kind != "get" else None
        self._turn(node, lambda r: r.client([[ident, payload]], self.t))
        self._pending_write = None

    def _release_queue(self, nid: str, inc: int) -> None:
        node = self.nodes[nid]
        if not self._alive(node) or node.incarnation != inc or self.t < node.paused_until:
            return
        if node.clients_paused:
            return
        queued, node.client_queue = node.client_queue, []
        for op in queued:
            self._deliver_op(op)

    _pending_write: Op | None = None

    def _note_stamps(self, node: SimNode, records: list[bytes]) -> None:
        """The version a client's write was stamped with (the checker needs it)."""
        op = self._pending_write
        if op is None or op.version is not None:
            return
        for rec in records:
            if rec[:1] == b"E":
                b = decode_batch(rec[1:])
                if b.origin == node.replica.origin:  # type: ignore[union-attr]
                    hlc = b.items[0][0]
                    op.version = (hlc, b.origin)
                    op.event = (b.origin, b.first_seq)
                    op.written = b.items[0][2]
                    op.items = list(b.items)
                    return

    def _client_reply(self, node: SimNode, frames: list[bytes]) -> None:
        ident = frames[0]
        if ident == FRONTEND_ID:
            return
        op = node.pending_ops.pop(ident, None)
        if op is None:
            return
        results = msgpack.unpackb(frames[1], raw=False)
        op.completed = self.t
        if isinstance(results, dict):
            op.result = "refused"
            return
        op.result = "ok"
        if op.kind == "get":
            op.got = results[0]

    # --- faults ---------------------------------------------------------------------------------
    def pause(self, nid: str, seconds: float) -> None:
        node = self.nodes[nid]
        if not self._alive(node):
            return
        node.paused_until = max(node.paused_until, self.t + seconds)
        self.note(f"pause {nid} for {seconds:.2f}s")
        self.at(node.paused_until, self._release_queue, nid, node.incarnation)

    def partition(self, pairs: set[tuple[str, str]], seconds: float) -> None:
        self.cut |= pairs
        self.note(f"cut {sorted(pairs)} for {seconds:.2f}s")
        self.at(self.t + seconds, self._heal_pairs, frozenset(pairs))

    def _heal_pairs(self, pairs: frozenset[tuple[str, str]]) -> None:
        self.cut -= pairs

    def set_clock(self, nid: str, offset_ms: float, drift: float = 0.0) -> None:
        node = self.nodes[nid]
        node.offset_ms, node.drift, node.drift_since = offset_ms, drift, self.t
        self.note(f"clock {nid} {offset_ms:+.0f} ms, drift {drift:+.1f} ms/s")

    def rot(self, nid: str, count: int) -> None:
        """``count`` keys vanish from a live replica's memory, as a bug or bad RAM would do it:
        nothing announces it, the version vector is unchanged, and only anti-entropy (digests at
        equal vectors) can find and repair it - from the other replicas, which must not delete
        their copies on seeing it missing here.  Only entries stamped above the replica's
        tombstone horizon: below it, a key it lacks reads as deleted and collected (the price of
        collecting tombstones), and the entry comes back from its log when it restarts."""
        node = self.nodes[nid]
        if not self._alive(node):
            return
        r = node.replica
        assert r is not None
        keys = sorted(k for k, e in r.ks.items() if e[0] > r.gc_horizon)
        self.rng.shuffle(keys)
        gone = r.ks.drop(keys[:count], 2**63 - 1)
        self.note(f"rot {nid}: {[k.decode() for k in gone]}")

    def damage(self, nid: str, kind: str) -> None:
        """Disk damage to a node that is down: its copies of writes are gone (see excuse)."""
        node = self.nodes[nid]
        assert not node.up
        done = {"snapshot": lambda: node.disk.corrupt_snapshot(self.rng),
                "segment": lambda: node.disk.drop_segment(self.rng),
                "wipe": lambda: node.disk.wipe() or True}[kind]()
        if done:
            self.note(f"damage {nid}: {kind}")
            node.down_vv, node.down_versions = {}, {}
            self._excuse_unheld(nid)

    def _holds(self, node: SimNode, op: Op) -> bool:
        assert op.event is not None and op.version is not None
        origin, seq = op.event
        if op.kind == "incr":  # (a counter entry's version says nothing of which increments it has)
            vv = node.replica.inbox.vv if self._alive(node) else node.down_vv  # type: ignore[union-attr]
            return vv.get(origin, 0) >= seq
        if op.kind in COLLECTION_KINDS or len(op.items) > 1:
            # (a hash's or set's write is in entries of other keys: each of them, then - or a
            # copy got by a transfer or repair, which names no event)
            vv = node.replica.inbox.vv if self._alive(node) else node.down_vv  # type: ignore[union-attr]
            if vv.get(origin, 0) >= seq:
                return True
            for hlc, pk, _v in op.items:
                if pk[:3] == parts.SET:
                    return False  # (a member's version is its state's latest: not which dots it has)
                if self._alive(node):
                    e = node.replica.ks.entry(pk)  # type: ignore[union-attr]
                    v = (e[0], e[1]) if e is not None else None
                else:
                    v = node.down_versions.get(pk)
                if v is None or v < (hlc, origin):
                    return False
            return True
        if self._alive(node):
            r = node.replica
            assert r is not None
            e = r.ks.entry(op.key)
            return r.inbox.vv.get(origin, 0) >= seq or (e is not None and (e[0], e[1]) >= op.version)
        v = node.down_versions.get(op.key)
        return node.down_vv.get(origin, 0) >= seq or (v is not None and v >= op.version)

    def _excuse_unheld(self, damaged: str) -> None:
        """Writes whose only copy was on the damaged disk may fairly be lost."""
        for op in self.ops:
            if op.kind == "get" or op.result != "ok" or op.excused or op.event is None:
                continue
            if not any(self._holds(n, op) for n in self.nodes.values() if n.id != damaged):
                op.excused = f"only {damaged} held it when its disk was damaged"
