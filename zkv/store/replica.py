"""The replica core: every decision a store makes, as a state machine without I/O.

A ``Replica`` owns the keyspace, the inbox (which events are applied, which wait for a gap),
the catch-up backlog, the hybrid clock, the tombstone horizon, the acknowledgements and what
each peer last said.  It never reads a clock, opens a socket or touches a file.  The shell that
drives it (``zkv.store.server`` in a real process, ``zkv.sim`` in the simulator) hands it what
happened, each time with the current monotonic time ``now``:

    client(msgs, now)                  batches from the frontend (``[identity, ..., payload]``)
    bus(peer, topic, payload, now)     a message on ``peer``'s PUB socket
    fetch_reply(peer, frames, now)     a reply on our catch-up DEALER to ``peer``
    catchup_request(ident, who, frames, now)   a request on our catch-up ROUTER
    tick(now)                          timers (heartbeat, anti-entropy, publish pacing, acks);
                                       ``next_timer()`` says when the next one is due

and carries out, in order, what it asks for: ``take()`` returns the outputs queued since the
last call, each a tuple whose first item is one of ``zkv.store.outputs``' verbs.  Order matters: a ``LOG``
comes before the replies and frames that announce what it holds, so with ``fsync = "always"``
nothing is acknowledged or served before it is on disk.

The wall clock is the one thing the core reads by itself: it is injected (``wall``), so the
simulator gives each replica a clock of its own, skewed, drifting or jumping as it likes.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from zkv.clock import HybridClock, physical, wall_ms
from zkv.commands import ACKS, FRONTEND_ID, INVALIDATE, MAX_VALUE, WRITE_OPS
from zkv.config import DEFAULT_HEARTBEAT_MS, Config
from zkv.events import (
    BATCH_BYTES, TOPIC_ACK, TOPIC_ACKREQ, TOPIC_CATCHUP, TOPIC_EVENTS, TOPIC_HEARTBEAT, Batch,
    DecodeError, Heartbeat, check_int, check_name, check_vv, decode_ack, decode_ackreq,
    decode_batch, decode_heartbeat, encode_ack, encode_ackreq, encode_batch, encode_heartbeat,
    node_of, split_items, vv_text,
)
from zkv.progress import Progress
from zkv.replication import catchup as wire
from zkv.replication.acks import Acked, AckRequests
from zkv.replication.antientropy import differing_buckets, merge
from zkv.replication.backlog import Backlog
from zkv.replication.claims import NEW_ORIGINS, SILENT_S, Claims, HeartbeatBudget
from zkv.replication.folds import FOLD_PAGE, Folds, foldable
from zkv.replication.horizon import Announced, Horizon
from zkv.replication.inbox import Inbox
from zkv.replication.limits import RateLimit
from zkv.store.serving import Serving
from zkv.replication.skew import Offsets, behind_peers, refusal
from zkv.replication.transfer import FullSync, implausible, stale_keys
from zkv.store.durability import Recovered, encode_event_record, encode_repair_records
from zkv.store.keyspace import Keyspace
from zkv.store.outputs import CLIENT, CLOCK, CONNECT, FETCH, LOG, PAUSE, PUBLISH, SNAPSHOT
from zkv.store.counter import MAX_INT, MIN_INT, as_int
from zkv.store.orset import decode_state
from zkv.store import hash_set_ops
from zkv.store.hash_set_ops import WRONGTYPE, removals
from zkv.store.scans import InvalidCursor, Scans, glob
from zkv.store.snapshot import check_entries, decode_chunk
from zkv.store.tracking import Tracking

log = logging.getLogger("zkv.store")

FETCH_TIMEOUT = 3.0  # seconds without an answer before a pull is asked of someone else
SYNC_TIMEOUT = 30.0  # seconds without a chunk before a full transfer is abandoned
# Local events are published at most once per publish_interval_ms, all those of the interval in
# one message (so peers wake up once for them), or as soon as this many have accumulated.
PUBLISH_MAX_EVENTS = 4096
PEER_SILENT_S = 2.0  # a peer unheard for this long counts as disconnected (INFO, logs)
BAD_LOG_EVERY = 10.0  # seconds between log lines about malformed peer messages
# Heartbeats during which every peer must have said it lacks the events before a hole (after
# we restarted) before those events are given up as lost and the ones after them claimed.
HOLE_GIVE_UP_HEARTBEATS = 5
# A peer sends a heartbeat every heartbeat_ms: those beyond twice that rate (after a burst of a
# few, as when our own loop was held up) are dropped unread, so no peer can make this store
# spend its time decoding heartbeats.
HB_RATE_FACTOR = 2.0
HB_BURST = 5.0
# Pulls one heartbeat may start: a store behind on many origins asks for more at each heartbeat
# and as each reply comes, and one that lacks most of them gets a full transfer at the first.
PULLS_PER_HEARTBEAT = 64
COUNTERS_OFF = ("INCR, DECR, INCRBY and DECRBY are off on this node (config key counters = "
                "false): see docs/data-model.md")
NO_COLLECTION_EXPIRY = "EXPIRE of a hash or a set is not supported: expiry applies to string keys"
HASH_SET_OPS = hash_set_ops.OPS
FLUSHALL_OFF = ("FLUSHALL and FLUSHDB are off on this node (config key allow_flushall = "
                "false): see docs/data-model.md")
# Heartbeats between two requests for one peer's folds (zkv.replication.folds), while its
# digest differs from ours.
FOLDS_ASK_EVERY = 5


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


@dataclass(slots=True)
class PeerView:
    hb: Heartbeat
    seen: float


class Replica:
    """One store's replication state and decisions (see the module docstring)."""

    def __init__(self, cfg: Config, rec: Recovered, origin: str, backlog: Backlog, now: float,
                 wall: Callable[[], int] = wall_ms, clock_floor: int | None = None) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.peer_ids = frozenset(p.id for p in cfg.peers)
        self.now = now
        self.out: list[tuple] = []
        self.backlog = backlog  # filled from the log by recovery
        self.ks: Keyspace = rec.keyspace
        # This start's incarnation: our events are (origin, 1), (origin, 2), ... under a name
        # never used before, so a log that lost its tail can never make us hand out an event
        # identity a peer already holds (see zkv.events).
        self.origin = origin
        # Bounded: a peer's timestamp more than max_clock_offset_ms ahead of our wall clock is
        # not adopted, and the events carrying one wait (see _apply_remote).
        # It never goes back across a restart: it starts above everything in the log and every
        # timestamp this node announced before (the persisted bound, zkv.store.clockfile).
        self.clock = HybridClock(wall, last=max(rec.max_hlc, clock_floor or 0),
                                 max_offset_ms=cfg.max_clock_offset_ms)
        self.clock_saved = clock_floor or 0  # the highest timestamp known to be on disk
        # Without the bound (a new or wiped data directory) the node does not know how far its
        # clock had gone, so it accepts no write until a peer tells it (Heartbeat.seen).
        self.clock_known = clock_floor is not None or not cfg.peers
        self._clock_from_file = clock_floor is not None  # then no peer can know a later one
        self.seen_hlc: dict[str, int] = {}  # node id -> highest hlc it announced, as we heard it
        self.echo_floor = 0  # the highest timestamp a peer heard us announce (Heartbeat.seen)
        self._hole_since: dict[str, float] = {}  # origin -> when a hole before held events was seen
        behind = physical(self.clock.last) - self.clock.wall()
        if behind > cfg.max_clock_offset_ms:
            log.warning("this node's wall clock is %d ms behind the last timestamp it issued or "
                        "announced before it stopped; it continues from that timestamp", behind)
        self.inbox = Inbox(rec.vv, max_pending_bytes=cfg.pending_mb * 1024 * 1024)
        for b in rec.held:  # events after a hole in the log: applied, but claimed only once
            self.inbox.offer(b)  # the missing ones have been pulled (they wait as a gap)
        self.gc_horizon = rec.gc_horizon
        self.peers: dict[str, PeerView] = {}
        self.endpoints: dict[str, str] = {}  # peer -> catch-up endpoint we dialled
        self.fetching: dict[str, tuple[str, float]] = {}  # origin -> (peer asked, when)
        self.horizon = Horizon(self.origin, self.peer_ids)  # when tombstones may go
        self.sync: FullSync | None = None
        # A transfer abandoned for entries stamped beyond our clock's bound is asked again only
        # once our wall clock (ms) has come within max_clock_offset_ms of them: before, it would
        # be abandoned again, at the cost of a forked snapshot on the sender each time.  Per
        # peer: one that sends made-up stamps must not stop transfers from the others.
        self._transfer_after_wall: dict[str, int] = {}
        # Events stamped beyond our clock's bound, per origin, waiting until our wall clock
        # comes within max_clock_offset_ms of them (later events of that origin wait behind).
        self.held_back: dict[str, Batch] = {}
        self.offsets = Offsets()  # each peer's wall clock minus ours (zkv.replication.skew)
        self.refuse_writes: str | None = None  # why client writes are refused (clock skew)
        self.ae_asked: tuple[str, float] | None = None  # (peer, when): anti-entropy outstanding
        self._bad_logged = -BAD_LOG_EVERY
        self._max_stable: dict[str, int] = {}  # peer -> highest stable time it announced
        self.acked = Acked(self.peer_ids)  # peers' applied seq of our origin
        self.peer_origins: dict[str, str] = {}  # each peer's incarnation, from its heartbeats
        # What a peer's claims about other nodes' events are believed up to (the trust model)
        self.claims = Claims(origin, self.peer_ids | {self.id}, started=now,
                             silent_s=max(SILENT_S, 3 * cfg.heartbeat_ms / 1000))
        # Peers' heartbeats are limited to what a peer announcing at our pace, or at the
        # default pace if ours is slower, may send: a store set to announce rarely still hears
        # a peer that announces at the default pace (a restarted one, say) at once.
        peer_period = min(cfg.heartbeat_ms, DEFAULT_HEARTBEAT_MS) / 1000
        self.hb_budget = HeartbeatBudget(peer_period)  # bytes each peer may send
        self.hb_limit = RateLimit(HB_RATE_FACTOR / peer_period, HB_BURST,
                                  max_keys=len(self.peer_ids) + 1)
        self.ack_requests = AckRequests()  # origins waiting for our acknowledgement
        # Finished incarnations left out of what goes on the wire (zkv.replication.folds)
        self.folds = Folds()
        self._folds_asked: tuple[str, float, tuple[int, int]] | None = None  # (peer, when, its digest)
        self._folds_lacking = False  # the map being read names events we lack
        self._folds_pages = 0  # pages of it read so far
        self._folds_ask_at: dict[str, float] = {}  # peer -> when its folds were last asked
        self._folds_read: dict[str, tuple[int, int]] = {}  # peer -> a digest read, nothing lacking
        # origin -> (peer, count): a peer folded it beyond what we hold - it holds those events
        # though its vector no longer names them (a hole there is pulled, never given up)
        self._folded_beyond: dict[str, tuple[str, int]] = {}
        self._ack_target = 0  # a client waits for peers to apply our events through this
        self.started = now
        self.frontend_stats: dict[str, int] = {}  # what the frontend reports once a second
        self.behind_since: dict[str, float] = {}  # peer -> since when it has events we lack
        self.stats = {"gaps": 0, "pulled_events": 0, "full_syncs": 0, "repaired_keys": 0,
                      "tombstones_collected": 0, "expired_reclaimed": 0, "local_writes": 0, "remote_events": 0,
                      "loop_turns": 0, "frontend_batches": 0, "bus_batches": 0,
                      "bad_messages": 0, "clock_held_events": 0, "writes_refused": 0,
                      "lost_events": 0, "heartbeats_dropped": 0}
        self._ae_turn = 0
        # At start-up, client requests wait until a peer has been heard or five heartbeats have
        # passed: a peer's heartbeat moves our clock past every event it holds (our own lost log
        # tail included, so a new write is stamped after the writes it may overwrite), and it
        # tells us whether our clock is too far ahead of the cluster's to accept writes.
        self.own_wait_until = now + 5 * cfg.heartbeat_ms / 1000 if self.peer_ids else 0.0
        self.clients_paused = False
        self._unpublished: list[tuple[int, bytes, bytes | None]] = []  # local events, in seq order
        self._unpublished_first = 0
        self._unpublished_payload: bytes | None = None  # their encoding, if they are one batch
        # Publishing is paced: after a publish, the next waits publish_interval_ms, gathering
        # what arrives meanwhile into one batch (each batch costs every peer a wake-up); after a
        # quiet spell the first event goes out at once, so light traffic sees no delay.
        self.publish_interval = cfg.publish_interval_ms / 1000
        self._next_publish = 0.0
        self._live_peers: set[str] = set()  # peers heard lately (for the log: up / silent)
        # What the frontend's read cache may hold, and must be told to drop (zkv.store.tracking)
        self.tracking = Tracking(max(10_000, cfg.read_cache_mb * 1024 * 1024 // 100))
        self.catchup_endpoint = ""  # ours, announced in heartbeats (set by the shell once bound)
        # INFO's figures the shell owns (disk, process); the core adds them to its own
        self.info_extra: Callable[[], dict[str, Any]] = dict
        self.serving = Serving(self)
        self.scans = Scans()  # SCAN's cursors (zkv.store.scans)
        self._hb_every = cfg.heartbeat_ms / 1000
        self._ae_every = cfg.anti_entropy_ms / 1000
        self._next_hb = self._next_ae = now

    # --- the shell's side ---------------------------------------------------------------------
    def take(self) -> list[tuple]:
        """The outputs queued since the last call, in the order they must be carried out."""
        out, self.out = self.out, []
        return out

    def next_timer(self) -> float:
        """When ``tick`` next has something to do (monotonic seconds)."""
        t = min(self._next_hb, self._next_ae)
        if self._unpublished and self._next_publish < t:
            t = self._next_publish
        return t

    def snapshot_state(self) -> tuple[Keyspace, dict[str, int], int, int]:
        """What a snapshot holds: keyspace, version vector, clock, tombstone horizon."""
        return self.ks, self.inbox.vv, self.clock.last, self.gc_horizon

    def snapshot_allowed(self) -> bool:
        """No snapshot mid-transfer: it would claim the transfer's vector before its end.  Nor
        while events wait behind a gap: those the log held after a hole are in the keyspace
        but not in the vector, and a snapshot would keep their effects while the log records
        that say they are unclaimed go - the next start would hold data no vector accounts
        for, which no peer can get and the tombstone horizon passes."""
        return self.sync is None and not self.inbox.gaps()

    def tick(self, now: float) -> None:
        """Run every timer that is due, and what waits for the end of a loop turn."""
        self.now = now
        self.stats["loop_turns"] += 1
        if now >= self._next_hb:
            if self._unpublished:
                self._publish()  # a heartbeat never announces events not yet sent
            self._fold()
            self._heartbeat()
            self._expire_fetches(now)
            self._release_held_back()
            self._resolve_holes()
            self._check_clock_skew()
            self._pause_clients_until_heard()
            self._reclaim_expired()
            self._next_hb = now + self._hb_every
        if now >= self._next_ae:
            self._anti_entropy()
            self._collect_tombstones()
            self._next_ae = now + self._ae_every
        if self.tracking.pending:
            self._invalidate()
        if self._unpublished and now >= self._next_publish:
            self._publish()
        if self.ack_requests.wanted:
            self._send_acks()

    def flush(self) -> None:
        """Before a clean stop: publish what is still held back by pacing."""
        if self._unpublished:
            self._publish()

    # --- local writes and reads from the frontend ---------------------------------------------
    def client(self, msgs: list[list[bytes]], now: float) -> None:
        """Every batch the frontend queued: apply, log once, publish once, reply to each."""
        self.now = now
        self.stats["frontend_batches"] += len(msgs)
        ks, clock, me = self.ks, self.clock, self.origin
        refuse = self.refuse_writes
        # One clock reading per turn: its writes take that stamp and the ones after it, each
        # above everything issued or observed before, and the clock then passes the last.
        stamp = clock.now()
        # Expiry is judged by the time this turn's writes are stamped with (at least the wall
        # clock; ahead of it after a peer's clock ahead was heard), as every node judges their
        # events (zkv.store.counter ``view``): an INCR or EXPIRE answers as the key will be.
        if ks.expiring:
            ks.now_ms = physical(stamp)
        # Local writes are stamped in order into ``items`` and applied to the keyspace in runs
        # (``apply_many``), the pending run always before any read, so each read sees every
        # write sent before it.
        items: list[tuple[int, bytes, bytes | None]] = []
        applied = 0
        replies = []
        track = self.tracking.keys.add if self.cfg.read_cache_mb else None
        hashes, sets = ks.hashes, ks.sets  # (a string write replaces a hash or set of its key)
        for frames in msgs:
            ident, payload = frames[0], frames[-1]
            try:
                ops = unpack(payload)
                if not isinstance(ops, list):
                    raise TypeError("not a list")
            except Exception:
                log.error("undecodable batch from the frontend; answering it with no results")
                replies.append((ident, []))
                continue
            results: list[Any] = []
            refused = False
            for op in ops:
                # The frontend only sends well-formed ops; anything else (another process on the
                # ipc socket) gets a null result, checked before it can touch the keyspace.
                try:
                    code = op[0]
                    if refuse is not None and code in WRITE_OPS:
                        results.append(None)
                        refused = True
                        continue
                    if code == "s":
                        key, value = op[1], op[2]
                        if key.__class__ is not bytes or value.__class__ is not bytes:
                            raise TypeError("SET needs bytes")
                        if key in hashes or key in sets:
                            stamp = _stamped(items, stamp, removals(ks, key))
                        items.append((stamp, key, value))
                        stamp += 1
                        results.append(None)
                        continue
                    if applied < len(items):
                        ks.apply_many(me, items[applied:])
                        applied = len(items)
                    if code == "g":
                        key = op[1]
                        value = ks.get(key)
                        if value is None and (key in hashes or key in sets):
                            results.append(WRONGTYPE)  # (never cached: zkv.frontend.readcache)
                            continue
                        if track is not None and key.__class__ is bytes:
                            track(key)
                            if value is not None and ks.expiring and ks.expiry(key):
                                # (the read cache must not keep it past its expiry: the
                                # frontend answers with the value and does not cache it)
                                value = [value, ks.expiry(key)]
                        results.append(value)
                    elif code == "d":
                        key = op[1]
                        if key.__class__ is not bytes:
                            raise TypeError("DEL needs bytes")
                        if key in hashes or key in sets:
                            stamp = _stamped(items, stamp, removals(ks, key))
                            results.append(1)
                        else:
                            results.append(0 if ks.get(key) is None else 1)
                        items.append((stamp, key, None))
                        stamp += 1
                    elif code == "n":
                        results.append(ks.live())
                    elif code == "i":
                        results.append(self.info())
                    elif code == "c":  # the frontend's own figures, once a second
                        self.frontend_stats = {**(op[3] if len(op) > 3 and op[3].__class__ is dict else {}),
                                               "clients": int(op[1]), "rss": int(op[2])}
                        results.append(None)
                    elif code == "w":  # WAIT / min_acks: every write before it, on our origin
                        target = self.inbox.vv.get(me, 0) + len(items)
                        results.append([target, self.acked.seq])
                        if target > self._ack_target:
                            self._ack_target = target
                    elif code == "sx":  # SET NX|XX|GET, SETNX, GETSET: checked against this node
                        key, value, cond = op[1], op[2], op[3]
                        if key.__class__ is not bytes or value.__class__ is not bytes or cond not in (0, 1, 2):
                            raise TypeError("bad conditional set")
                        old = ks.get(key)
                        if old is None and (key in hashes or key in sets):
                            if op[4]:
                                results.append(WRONGTYPE)
                                continue
                            old = b""  # (exists, for NX and XX)
                        written = cond == 0 or (cond == 1) == (old is None)
                        if written:
                            if key in hashes or key in sets:
                                stamp = _stamped(items, stamp, removals(ks, key))
                            items.append((stamp, key, value))
                            stamp += 1
                        results.append([int(written), old if op[4] else None])
                    elif code == "gd":  # GETDEL
                        key = op[1]
                        if key.__class__ is not bytes:
                            raise TypeError("GETDEL needs bytes")
                        old = ks.get(key)
                        if old is None and (key in hashes or key in sets):
                            results.append(WRONGTYPE)
                            continue
                        if old is not None:
                            if key in hashes or key in sets:  # (hidden by the value: as DEL does)
                                stamp = _stamped(items, stamp, removals(ks, key))
                            items.append((stamp, key, None))
                            stamp += 1
                        results.append(old)
                    elif code == "ap":  # APPEND: -1 if the value would pass MAX_VALUE
                        key, more = op[1], op[2]
                        if key.__class__ is not bytes or more.__class__ is not bytes:
                            raise TypeError("APPEND needs bytes")
                        old = ks.get(key)
                        if old is None and (key in hashes or key in sets):
                            results.append(WRONGTYPE)
                            continue
                        value = (old or b"") + more
                        if len(value) > MAX_VALUE:
                            results.append(-1)
                            continue
                        exp = ks.expiry(key) if old is not None else 0  # (APPEND keeps it)
                        items.append((stamp, key, [value, exp] if exp else value))
                        stamp += 1
                        results.append(len(value))
                    elif code == "sc":  # SCAN cursor count match [type]: [next cursor, keys] (str: error)
                        try:
                            results.append(list(self.scans.step(ks, op[1], op[2], op[3], self.now,
                                                                op[4] if len(op) > 4 else None)))
                        except InvalidCursor as exc:
                            results.append(str(exc))
                    elif code == "ks":  # KEYS pattern (one pass over every key)
                        results.append(ks.keys_matching(glob(op[1]).fullmatch))
                    elif code == "rk":  # RANDOMKEY (likewise)
                        live = ks.keys_matching(_any)
                        results.append(random.choice(live) if live else None)
                    elif code == "in":  # INCRBY: the new value, or why not (str)
                        key, step = op[1], op[2]
                        if (key.__class__ is not bytes or step.__class__ is not int
                                or not MIN_INT <= step <= MAX_INT):
                            raise TypeError("INCRBY needs a key and a 64-bit integer")
                        if not self.cfg.counters:
                            results.append(COUNTERS_OFF)
                            continue
                        old = ks.get(key)
                        n = as_int(old)
                        if old is None and (key in hashes or key in sets):
                            results.append(WRONGTYPE)
                            continue
                        if n is None:
                            results.append("value is not an integer or out of range")
                            continue
                        n += step
                        if not MIN_INT <= n <= MAX_INT:
                            results.append("increment or decrement would overflow")
                            continue
                        # (of an expired key: its stamp is past the expiry, so it counts from
                        # nothing on every node, zkv.store.counter ``view``)
                        items.append((stamp, key, step))
                        stamp += 1
                        results.append(n)
                    elif code == "se":  # SET with an expiry option (and NX|XX|GET), SETEX, PSETEX
                        key, value, cond, kind, amount = op[1], op[2], op[3], op[5], op[6]
                        if (key.__class__ is not bytes or value.__class__ is not bytes or cond not in (0, 1, 2)
                                or kind not in (1, 2, 3) or amount.__class__ is not int):
                            raise TypeError("bad SET with an expiry")
                        old = ks.get(key)
                        if old is None and (key in hashes or key in sets):
                            if op[4]:
                                results.append(WRONGTYPE)
                                continue
                            old = b""  # (exists, for NX and XX; it has no expiry to keep)
                        written = cond == 0 or (cond == 1) == (old is None)
                        if written:
                            if key in hashes or key in sets:
                                stamp = _stamped(items, stamp, removals(ks, key))
                            exp = _expiry(kind, amount, physical(stamp), ks.expiry(key) if old is not None else 0)
                            items.append((stamp, key, None if exp < 0 else [value, exp] if exp else value))
                            stamp += 1
                        results.append([int(written), old if op[4] else None])
                    elif code == "ex":  # EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT [NX|XX|GT|LT]: 0 or 1
                        key, kind, amount, flag = op[1], op[2], op[3], op[4]
                        if key.__class__ is not bytes or kind not in (1, 2) or amount.__class__ is not int:
                            raise TypeError("bad EXPIRE")
                        if ks.get(key) is None:
                            results.append(NO_COLLECTION_EXPIRY if key in hashes or key in sets else 0)
                            continue
                        cur = ks.expiry(key)
                        exp = _expiry(kind, amount, physical(stamp), 0)
                        if ((flag == 1 and cur) or (flag == 2 and not cur) or (flag == 3 and not (cur and exp > cur))
                                or (flag == 4 and cur and not exp < cur)):
                            results.append(0)
                            continue
                        items.append((stamp, key, None if exp < 0 else [exp]))  # (past: deleted now)
                        stamp += 1
                        results.append(1)
                    elif code == "pe":  # PERSIST: 1 if it had an expiry
                        key = op[1]
                        if key.__class__ is not bytes:
                            raise TypeError("PERSIST needs bytes")
                        if ks.get(key) is None or not ks.expiry(key):
                            results.append(0)
                            continue
                        items.append((stamp, key, [0]))
                        stamp += 1
                        results.append(1)
                    elif code == "gx":  # GETEX with EX|PX|EXAT|PXAT (kind 1, 2) or PERSIST (4)
                        key, kind, amount = op[1], op[2], op[3]
                        if key.__class__ is not bytes or kind not in (1, 2, 4) or amount.__class__ is not int:
                            raise TypeError("bad GETEX")
                        old = ks.get(key)
                        results.append(WRONGTYPE if old is None and (key in hashes or key in sets) else old)
                        if old is None or (kind == 4 and not ks.expiry(key)):
                            continue
                        exp = 0 if kind == 4 else _expiry(kind, amount, physical(stamp), 0)
                        items.append((stamp, key, None if exp < 0 else [exp]))
                        stamp += 1
                    elif code == "tt":  # TTL and its kin: [expiry, now] ms, or -2 (no key), -1 (none)
                        key = op[1]
                        if ks.get(key) is None:
                            results.append(-1 if key in hashes or key in sets else -2)
                        else:
                            exp = ks.expiry(key)
                            results.append([exp, physical(stamp)] if exp else -1)
                    elif code == "rn":  # RENAME, RENAMENX: a copy and a delete, in one batch
                        src, dst, nx = op[1], op[2], op[3]
                        if src.__class__ is not bytes or dst.__class__ is not bytes:
                            raise TypeError("RENAME needs bytes")
                        value = ks.get(src)
                        if value is None and not ks.exists(src):
                            results.append("no such key")
                        elif nx and ks.exists(dst):
                            results.append(0)
                        elif src == dst:
                            results.append(0 if nx else 1)
                        else:
                            # dst's hash or set goes, src's value or hash or set is copied, src goes
                            stamp = _stamped(items, stamp, removals(ks, dst))
                            if value is not None:
                                exp = ks.expiry(src)
                                items.append((stamp, dst, [value, exp] if exp else value))
                            else:
                                items.append((stamp, dst, None))
                                stamp = _stamped(items, stamp + 1, hash_set_ops.copies(ks, src, dst)) - 1
                            stamp = _stamped(items, stamp + 1, removals(ks, src))
                            items.append((stamp, src, None))
                            stamp += 1
                            ks.apply_many(me, items[applied:])  # (as after a hash or set op)
                            applied = len(items)
                            results.append(1)
                    elif code == "fa":  # FLUSHALL, FLUSHDB: a DEL of every key this node holds
                        if not self.cfg.allow_flushall:
                            results.append(FLUSHALL_OFF)
                            continue
                        for key in ks.keys_matching(_any):
                            if key in hashes or key in sets:
                                stamp = _stamped(items, stamp, removals(ks, key))
                            items.append((stamp, key, None))
                            stamp += 1
                        results.append(1)
                    elif code == "mn":  # MSETNX: every key or none
                        flat = op[1]
                        if (flat.__class__ is not list or not flat or len(flat) % 2
                                or any(x.__class__ is not bytes for x in flat)):
                            raise TypeError("MSETNX needs key/value pairs")
                        if any(ks.exists(k) for k in flat[0::2]):
                            results.append(0)
                            continue
                        for i in range(0, len(flat), 2):
                            items.append((stamp, flat[i], flat[i + 1]))
                            stamp += 1
                        results.append(1)
                    elif code in HASH_SET_OPS:  # (zkv.store.hash_set_ops)
                        result, writes = hash_set_ops.run(ks, op, self.cfg.counters)
                        if writes:
                            stamp = _stamped(items, stamp, writes)
                            # (applied now: a SET of the key after it, which is not, must
                            # find the hash or set it replaces)
                            ks.apply_many(me, items[applied:])
                            applied = len(items)
                        results.append(result)
                    else:
                        results.append(None)
                except (TypeError, IndexError, KeyError):
                    results.append(None)
            if refused:  # the frontend answers its writes with the reason (zkv.commands)
                self.stats["writes_refused"] += 1
                replies.append((ident, {"refused": refuse, "results": results}))
            else:
                replies.append((ident, results))
        if applied < len(items):
            ks.apply_many(me, items[applied:])
        if items:
            clock.issued(stamp - 1)
            first = self.inbox.vv.get(me, 0) + 1
            batch = Batch(me, first, items)
            payload = encode_batch(batch)
            if len(payload) <= BATCH_BYTES:
                self._commit([(batch, payload)], len(items))  # fsync=always: on disk now
            else:  # big values: several log records, none near the log's 1 GiB record limit
                payload = None
                runs = []
                seq = first
                for run in split_items(items):
                    b = Batch(me, seq, run)
                    runs.append((b, encode_batch(b)))
                    seq += len(run)
                self._commit(runs, len(items))
            self.stats["local_writes"] += len(items)
            if self._unpublished:
                self._unpublished.extend(items)
                self._unpublished_payload = None
            else:
                self._unpublished = items
                self._unpublished_first = first
                self._unpublished_payload = payload
            if len(self._unpublished) >= PUBLISH_MAX_EVENTS:
                self._publish()
        if self._ack_target:
            self._request_acks()
        if self.tracking.pending:
            self._invalidate()  # (none are made above: local writes are the frontend's own)
        out = self.out
        for ident, results in replies:
            out.append((CLIENT, [ident, pack(results)]))
        self.tracking.bound()  # (untracked keys are named at the end of the turn)

    def _request_acks(self) -> None:
        """A client waits for peers to apply our events through ``_ack_target``: publish them
        now (not at the next pacing slot), then ask every peer to acknowledge them."""
        target, self._ack_target = self._ack_target, 0
        if self.acked.count(target) == len(self.peer_ids):
            return
        if self._unpublished:
            self._publish()
        self.out.append((PUBLISH, [TOPIC_ACKREQ, encode_ackreq(self.origin, target)]))

    def _send_acks(self) -> None:
        """Tell the origins that asked how far we have applied their events (zkv.replication.acks)."""
        for origin, seq in self.ack_requests.due(self.inbox.vv):
            self.out.append((PUBLISH, [TOPIC_ACK, encode_ack(self.id, self.origin, origin, seq)]))

    def _on_ack(self, peer: str, seq: int, incarnation: str) -> None:
        """``peer``'s ``incarnation`` has applied our events through ``seq`` (a heartbeat or an
        ack says so).  If the peer restarted since, its figure starts again from ``seq``, lower
        or not - a new incarnation holds what its recovery proved, not what the old one said.
        The frontend gets the whole table (zkv.frontend.waits)."""
        ours = self.inbox.vv.get(self.origin, 0)
        if seq > ours:  # a lie, or a peer deceived: either way it holds none of them
            self.bad("ack", f"{peer} claims {seq} events of {self.origin}, which issued {ours}")
            return
        if self.peer_origins.get(peer) != incarnation:
            self.peer_origins[peer] = incarnation
            changed = self.acked.reset(peer, seq)
        else:
            changed = self.acked.update(peer, seq)
        if changed:
            self.out.append((CLIENT, [FRONTEND_ID, ACKS, pack(self.acked.seq)]))

    def _invalidate(self) -> None:
        """Tell the frontend which keys to drop (see zkv.store.tracking); to a frontend not
        connected yet, whose cache is empty, ZeroMQ drops it."""
        self.out.append((CLIENT, [FRONTEND_ID, INVALIDATE, pack(self.tracking.take())]))

    def _publish(self) -> None:
        """Send the local events not yet published as one batch (several, if they are big)."""
        payload = self._unpublished_payload
        if payload is None:
            payload = encode_batch(Batch(self.origin, self._unpublished_first, self._unpublished))
        if len(payload) <= BATCH_BYTES:
            payloads = [payload]
        else:
            payloads = []
            seq = self._unpublished_first
            for run in split_items(self._unpublished):
                payloads.append(encode_batch(Batch(self.origin, seq, run)))
                seq += len(run)
        self._unpublished = []
        self._unpublished_payload = None
        self._next_publish = self.now + self.publish_interval
        for payload in payloads:  # one the PUB socket drops shows up as a gap, and is pulled
            self.out.append((PUBLISH, [TOPIC_EVENTS, payload]))

    # --- replication: receiving ---------------------------------------------------------------
    def bus(self, peer: str, topic: bytes, payload: bytes, now: float) -> None:
        """A message on ``peer``'s bus.  A bus carries only its own node's events, heartbeats
        and acks: one that speaks for another node is dropped, so a peer (or whoever holds its
        key) can never speak for a third."""
        self.now = now
        try:
            if topic == TOPIC_EVENTS:
                self.stats["bus_batches"] += 1
                batch = decode_batch(payload)
                if node_of(batch.origin) != peer:
                    raise DecodeError(f"events of {batch.origin} on {peer}'s bus")
                self.claims.vouch(batch.origin, batch.last_seq)
                self._offer(batch, payload, via=None)
            elif topic == TOPIC_HEARTBEAT:
                if not self.hb_limit.allow(peer, now):
                    self.stats["heartbeats_dropped"] += 1
                    return
                vv = self.inbox.vv
                if not self.hb_budget.allow(peer, len(payload), now, sum(map(len, vv)), len(vv)):
                    self.stats["heartbeats_dropped"] += 1
                    return
                hb = decode_heartbeat(payload)
                if hb.id != peer:
                    raise DecodeError(f"a heartbeat of {hb.id!r} on {peer}'s bus")
                if node_of(hb.origin) != peer:
                    raise DecodeError(f"{peer}'s heartbeat names {hb.origin} as its incarnation")
                self._on_heartbeat(hb)
            elif topic == TOPIC_ACK:
                node, incarnation, origin, seq = decode_ack(payload)
                if node != peer:
                    raise DecodeError(f"an ack of {node!r} on {peer}'s bus")
                if origin == self.origin:
                    # One peer's messages arrive in order on its own socket: an ack of an
                    # incarnation not seen yet means the peer restarted (its first heartbeat
                    # may have gone out before we reconnected), and starts its figure again.
                    self._on_ack(peer, seq, incarnation)
            elif topic == TOPIC_ACKREQ:
                origin, seq = decode_ackreq(payload)
                if node_of(origin) != peer:
                    raise DecodeError(f"an ack request for {origin} on {peer}'s bus")
                self.ack_requests.want(origin, seq)
            elif topic == TOPIC_CATCHUP:
                pass  # a peer's notice for zkv tail
            else:
                self.bad("bus", "unknown topic")
        except DecodeError as exc:
            self.bad("bus", str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the node
            self.bad("bus", f"{type(exc).__name__}: {exc}")

    def bad(self, where: str, what: str) -> None:
        """A malformed or unexpected message from a peer (or a stranger): dropped, counted, and
        logged at most once per BAD_LOG_EVERY seconds."""
        self.stats["bad_messages"] += 1
        if self.now - self._bad_logged >= BAD_LOG_EVERY:
            self._bad_logged = self.now
            log.warning("dropped a bad %s message (%s); %d so far", where, what[:200],
                        self.stats["bad_messages"])

    def _offer(self, batch: Batch, payload: bytes | None, via: str | None) -> None:
        ready, gap = self.inbox.offer(batch)
        if ready:
            self._apply_remote(ready, payload if len(ready) == 1 and ready[0] is batch else None)
        origin = batch.origin
        if (gap and origin not in self.fetching and self.sync is None
                and origin not in self.held_back):
            self.stats["gaps"] += 1
            log.warning("gap in %s's events: have %d, got %d..%d; pulling the missing ones",
                        origin, self.inbox.vv.get(origin, 0), batch.first_seq, batch.last_seq)
            self._pull(origin, via)

    def _apply_remote(self, batches: list[Batch], payload: bytes | None) -> None:
        ks, clock = self.ks, self.clock
        runs = []
        writes = 0
        limit = clock.limit()
        for b in batches:
            origin = b.origin
            if origin in self.held_back:
                # An earlier batch of it waits for our clock: this one waits behind it, in the
                # inbox (which handed it out) - it may be in no other node's log, to pull again.
                self.inbox.hold(b)
                continue
            if b.items[-1][0] > limit:  # stamped too far ahead of our clock (events increase)
                b = self._hold_back(b, limit)
                payload = None
                if b is None:
                    continue
            clock.observe(ks.apply_many(origin, b.items, self.gc_horizon)[1])
            self.tracking.note_changes(b.items)
            runs.append((b, payload if payload is not None else encode_batch(b)))
            writes += len(b.items)
        if runs:
            self._commit(runs, writes)
            self.stats["remote_events"] += writes
            final = self.folds.final
            for b, _payload in runs:
                self.horizon.advance(b.origin, self.inbox.vv)
                if b.origin in final:  # events beyond a fold: named on the wire again
                    self.folds.recheck(b.origin, self.inbox.vv)

    def _commit(self, runs: list[tuple[Batch, bytes]], writes: int) -> None:
        """The step every event batch takes once applied to the keyspace, local or remote, in
        this order: its log record (with fsync=always, on disk once the shell has carried it
        out), then the catch-up backlog and the version vector - so nothing is served or
        announced before it is logged."""
        self.out.append((LOG, [encode_event_record(payload) for _b, payload in runs], writes))
        backlog_add, applied = self.backlog.add, self.inbox.applied
        for b, payload in runs:
            backlog_add(b.origin, b.first_seq, b.last_seq, payload)
            applied(b.origin, b.last_seq)

    def _hold_back(self, b: Batch, limit: int) -> Batch | None:
        """Keep the events of ``b`` stamped beyond ``limit`` (and, through the inbox, everything
        after them) until our wall clock comes within max_clock_offset_ms of them; return the
        part that may be applied now, or None."""
        cut = next(i for i, item in enumerate(b.items) if item[0] > limit)
        rest = Batch(b.origin, b.first_seq + cut, b.items[cut:])
        self.held_back[b.origin] = rest
        self.stats["clock_held_events"] += len(rest.items)
        ahead = physical(rest.items[0][0]) - self.clock.wall()
        log.warning("holding back %d events of %s from seq %d: stamped %d ms ahead of this node's "
                    "clock (max_clock_offset_ms = %d)", len(rest.items), b.origin, rest.first_seq,
                    ahead, self.cfg.max_clock_offset_ms)
        return Batch(b.origin, b.first_seq, b.items[:cut]) if cut else None

    def _resolve_holes(self) -> None:
        """Events held behind a hole that no peer can fill are claimed, the hole given up as lost.

        A log that lost a snapshot or a segment may still hold later events of an origin; they
        are applied but not counted until the missing ones arrive.  When every configured peer
        has, for HOLE_GIVE_UP_HEARTBEATS heartbeats, announced no more of that origin than we
        have and holds none of the missing ones behind a gap of its own (``Heartbeat.held``: no
        node holds them, they existed only in what we lost), waiting longer cannot help: the hole is recorded as lost, and the held events are claimed, so
        they reach every node (a peer that pulls them gets a full transfer)."""
        gaps = self.inbox.gaps()
        for origin in [o for o in self._hole_since if o not in gaps]:
            del self._hole_since[origin]
        for origin, first in gaps.items():
            since = self._hole_since.setdefault(origin, self.now)
            have = self.inbox.vv.get(origin, 0)
            if (self.sync is not None or origin in self.fetching or origin in self.held_back
                    or self.now - since < HOLE_GIVE_UP_HEARTBEATS * self._hb_every):
                continue
            # A peer whose folds we have not read may hold the hole folded (its vector no
            # longer names the origin); one that folded it beyond what we have holds it.
            beyond = self._folded_beyond.get(origin)
            if beyond is not None and beyond[1] > have:
                if origin not in self.fetching:
                    self._pull(origin, beyond[0])
                continue
            if self._folds_unsettled():
                continue
            views = [self.peers.get(p) for p in self.peer_ids]
            if any(v is None or v.seen <= since or v.hb.vv.get(origin, 0) > have
                   or _overlaps(v.hb.held.get(origin), have + 1, first - 1) for v in views):
                continue  # someone holds (part of) the hole: it may fill it, or give up its own
            del self._hole_since[origin]
            lost = first - have - 1
            self.stats["lost_events"] += lost
            log.error("events %d..%d of %s are held by no node (every peer has %d at most): "
                      "recorded as lost; the %s after them are claimed", have + 1, first - 1,
                      origin, have, "events")
            self.inbox.advance({origin: first - 1})
            self.out.append((LOG, encode_repair_records({origin: first - 1}, 0, []), 1))
            rel = self.inbox.release(origin)
            if rel:
                self._apply_remote(rel, None)
            self.horizon.advance(origin, self.inbox.vv)
            self.folds.recheck(origin, self.inbox.vv)

    def _release_held_back(self) -> None:
        """Offer again the held-back events whose time has come (checked every heartbeat)."""
        if not self.held_back:
            return
        limit = self.clock.limit()
        for origin, b in list(self.held_back.items()):
            if b.items[0][0] <= limit:
                del self.held_back[origin]
                log.info("releasing held-back events of %s from seq %d", origin, b.first_seq)
                self._offer(b, None, via=None)
                rel = self.inbox.release(origin)
                if rel:
                    self._apply_remote(rel, None)

    def _on_heartbeat(self, hb: Heartbeat) -> None:
        if hb.id == self.id:
            return
        if hb.id not in self.peer_ids:
            self.bad("heartbeat", f"from {hb.id!r}, which is not a configured peer")
            return
        self._connect(hb.id, hb.catchup)
        now = self.now
        self.claims.heard(hb.id, hb.origin, max(hb.seq, hb.vv.get(hb.origin, 0)), now)
        ours = self.inbox.vv.get(self.origin, 0)
        self._on_ack(hb.id, hb.vv.get(self.origin, 0), hb.origin)  # (not counted beyond ours)
        vv = self.claims.vector(hb.id, hb.vv, self.inbox.vv, ours, now)
        if vv is not hb.vv:
            hb = replace(hb, vv=vv)
        if hb.id not in self._live_peers:
            self._live_peers.add(hb.id)
            log.info("peer %s is up as %s (its vv: %s)", hb.id, hb.origin, vv_text(hb.vv))
        self.peers[hb.id] = PeerView(hb, now)
        mine = self.inbox.vv
        ahead = ([] if hb.vv.items() <= mine.items()  # (the common case, checked in C)
                 else [o for o, seq in hb.vv.items() if seq > mine.get(o, 0)])
        if ahead:
            self.behind_since.setdefault(hb.id, now)
        else:
            self.behind_since.pop(hb.id, None)
        if hb.stable > self._max_stable.get(hb.id, 0):
            self._max_stable[hb.id] = hb.stable
        if hb.wall:
            self.offsets.sample(hb.id, hb.wall, self.clock.wall())
            if self.refuse_writes is not None and self.clock_known:
                # refusing for skew: a clock just heard may settle it (the third of three, a
                # peer back on time), and writes should not wait for our next heartbeat
                self._check_clock_skew()
        self.clock.observe(hb.hlc)  # (not adopted if beyond our bound)
        if hb.hlc > self.seen_hlc.get(hb.id, 0):
            self.seen_hlc[hb.id] = hb.hlc
        self._learn_own_clock(hb.id, hb.seen.get(self.id, 0))
        self.horizon.heard(hb.id, Announced(hb.origin, hb.seq, hb.hlc, hb.vv, hb.stable), self.inbox.vv)
        if self.clients_paused:
            self._check_clock_skew()
            self._pause_clients_until_heard()
        if (hb.folds is not None and hb.folds not in self.folds.had
                and self._folds_read.get(hb.id) != hb.folds):
            self._ask_folds(hb.id, hb.folds)
        pulls = 0
        for origin in ahead:
            if (hb.vv[origin] > self.inbox.vv.get(origin, 0) and origin not in self.fetching
                    and self.sync is None and origin not in self.held_back):
                self._pull(origin, hb.id)
                pulls += 1
                if pulls >= PULLS_PER_HEARTBEAT:
                    break

    def _learn_own_clock(self, peer: str, echoed: int) -> None:
        """``peer`` heard us announce ``echoed`` (in an earlier life, maybe): our clock must not
        stamp below it.  Adopted within our clock's bound; beyond it (our wall clock far behind,
        or a peer that is wrong) writes are refused until the wall clock comes near it - the
        check runs at once, before any other request is taken."""
        news = not self.clock_known
        if echoed > self.clock_saved and self._clock_from_file:
            # We announce only what is on disk, and restarted above all of it: no peer heard
            # more from us.  A lie (or a peer deceived) would make us refuse writes.
            self.bad("heartbeat", f"{peer} echoes a timestamp this node never announced")
            return
        if echoed > self.echo_floor:
            news = True
            self.echo_floor = echoed
            if physical(echoed) - self.clock.wall() > self.cfg.max_clock_offset_ms:
                log.warning("%s heard this node announce a timestamp %d ms ahead of its wall clock",
                            peer, physical(echoed) - self.clock.wall())
        if not self.clock_known:
            self.clock_known = True
            log.info("clock bound learnt from %s", peer)
        if news:
            self._check_clock_skew()

    def _adopt_echo(self) -> None:
        if self.clock.last < self.echo_floor <= self.clock.limit():
            self.clock.issued(self.echo_floor)

    def _connect(self, peer: str, endpoint: str) -> None:
        """Dial ``peer``'s catch-up channel where its heartbeat says it is.  A peer that comes
        back on another endpoint restarted: a transfer it was streaming went with it."""
        cur = self.endpoints.get(peer)
        if cur == endpoint:
            return
        if cur is not None and self.sync is not None and self.sync.peer == peer:
            log.warning("%s restarted during a full state transfer from it; asking again", peer)
            self.sync = None
        self.endpoints[peer] = endpoint
        self.out.append((CONNECT, peer, endpoint))

    def _pull(self, origin: str, peer: str | None) -> None:
        """Ask ``peer`` for ``origin``'s events after what we have."""
        if origin == self.origin:
            return  # we issued them all: nobody holds more of them than we do
        have = self.inbox.vv.get(origin, 0)
        view = self.peers.get(peer) if peer is not None else None
        if view is None or view.hb.vv.get(origin, 0) <= have:
            # That peer has not announced what we need; ask one that has, or else the origin's
            # own node (a gap in its live stream shows before its heartbeat says how far it is).
            node = node_of(origin)  # (the origin's own node first, among equals)
            best = max(self.peers.values(), key=lambda v: (v.hb.vv.get(origin, 0), v.hb.id == node),
                       default=None)
            beyond = self._folded_beyond.get(origin)
            if best is not None and best.hb.vv.get(origin, 0) > have:
                peer = best.hb.id
            elif beyond is not None and beyond[1] > have and beyond[0] in self.peers:
                peer = beyond[0]  # it folded them: it holds them, though it names them nowhere
            elif node_of(origin) in self.endpoints and node_of(origin) in self.peers:
                peer = node_of(origin)
            else:
                return
        assert peer is not None
        self.out.append((FETCH, peer, wire.pull(origin, have)))
        self.fetching[origin] = (peer, self.now)

    def _announced_beyond(self, origin: str) -> bool:
        """Has a peer announced events of ``origin`` that we lack?"""
        have = self.inbox.vv.get(origin, 0)
        return any(v.hb.vv.get(origin, 0) > have for v in self.peers.values())

    def _expire_fetches(self, now: float) -> None:
        for origin, (_peer, since) in list(self.fetching.items()):
            if now - since > FETCH_TIMEOUT:
                del self.fetching[origin]
        if self.sync is not None:
            quiet = now - self.sync.last_chunk
            sender = self.peers.get(self.sync.peer)
            if quiet > SYNC_TIMEOUT:
                log.warning("full state transfer from %s stalled; abandoning it", self.sync.peer)
                self.sync = None
            elif quiet > PEER_SILENT_S and (sender is None or now - sender.seen > PEER_SILENT_S):
                # the sender went down: another peer can serve it (a live one's snapshot may
                # take longer, and it is waited for up to SYNC_TIMEOUT)
                log.warning("full state transfer from %s: it went silent; asking another peer",
                            self.sync.peer)
                self.sync = None
        if self.ae_asked is not None and now - self.ae_asked[1] > FETCH_TIMEOUT:
            self.ae_asked = None
        if self._folds_asked is not None and now - self._folds_asked[1] > FETCH_TIMEOUT:
            self._folds_asked = None

    def fetch_reply(self, peer: str, frames: list[bytes], now: float) -> None:
        """A reply on our DEALER to ``peer``: accepted only if it answers a request of ours
        still outstanding there (a stranger's or a stale reply is dropped and counted)."""
        self.now = now
        try:
            self._fetch_reply(peer, frames)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the node
            self.bad("catch-up reply", f"from {peer}: {type(exc).__name__}: {exc}")

    def _fetch_reply(self, peer: str, frames: list[bytes]) -> None:
        verb = frames[0]
        if verb == wire.EVENTS or verb == wire.TOOOLD:
            origin = check_name(frames[1].decode(), "origin")
            if self.fetching.get(origin, ("",))[0] != peer:
                self.bad("catch-up", f"{verb.decode()} for {origin} from {peer}, not asked")
                return
        if verb == wire.EVENTS:
            more = frames[2] == b"1"
            had = self.inbox.vv.get(origin, 0)
            cut = False
            for payload in frames[3:]:
                batch = decode_batch(payload)
                if batch.origin != origin:
                    raise DecodeError(f"events of {batch.origin} in a reply about {origin}")
                n = self.claims.events(origin, batch.first_seq, batch.last_seq,
                                       self.inbox.vv.get(origin, 0),
                                       self.inbox.vv.get(self.origin, 0), self.now)
                if n < len(batch.items):
                    # Beyond what the origin's own node announced: a relay that raced ahead of
                    # its heartbeat (the rest is pulled once it is announced), or a lie.
                    cut = True
                    if n == 0:
                        break
                    batch = Batch(origin, batch.first_seq, batch.items[:n])
                    payload = None
                self.stats["pulled_events"] += len(batch.items)
                self._offer(batch, payload, via=peer)
            self.fetching.pop(origin, None)
            # Again at once only if the answer moved us and something is still missing (it was
            # cut short, a peer announced more, batches wait behind a gap).  One that moved
            # nothing (empty, or its events held back for our clock) would come back the same:
            # a loop at network speed.  A peer's next heartbeat asks again if it has more.  An
            # answer cut to what the origin's node announced is not "cut short".
            if self.inbox.vv.get(origin, 0) > had and (
                    (more and not cut) or self._announced_beyond(origin)
                    or self.inbox.has_pending(origin)):
                self._pull(origin, peer)
        elif verb == wire.TOOOLD:
            self.fetching.pop(origin, None)
            if self.sync is None and self.clock.wall() >= self._transfer_after_wall.get(peer, 0):
                log.warning("%s no longer holds %s's events after %d; full state transfer from it",
                            peer, origin, self.inbox.vv.get(origin, 0))
                self._start_transfer(peer)
        elif verb == wire.FOLDS:
            if self._folds_asked is None or self._folds_asked[0] != peer:
                self.bad("catch-up", f"FOLDS from {peer}, not asked")
                return
            self._read_folds(peer, frames[1])
        elif verb in (wire.SNAPCHUNK, wire.SNAPEND, wire.SNAPFAIL):
            if self.sync is None or self.sync.peer != peer or frames[1:2] != [self.sync.tag]:
                self.bad("catch-up", f"{verb.decode()} from {peer}, not asked")
            elif verb == wire.SNAPCHUNK:
                self._transfer_chunk(frames[2])
            elif verb == wire.SNAPEND:
                self._transfer_end(peer, frames[2])
            else:
                self.sync = None
        elif verb == wire.BUCKETS or verb == wire.ENTRIES:
            if self.ae_asked is None or self.ae_asked[0] != peer:
                self.bad("catch-up", f"{verb.decode()} from {peer}, not asked")
                return
            if verb == wire.BUCKETS:
                vv, hashes = unpack(frames[1])
                check_vv(vv)
                diff = differing_buckets(self.ks.bucket_hashes(), hashes)
                self.ae_asked = None
                if vv == self.wire_vv() and diff:
                    self.out.append((FETCH, peer, [wire.ENTRIES, pack(diff)]))
                    self.ae_asked = (peer, self.now)
            else:
                self.ae_asked = None
                _horizon, buckets, entries = unpack(frames[1])
                self._repair(peer, buckets, entries)
        else:
            self.bad("catch-up", f"unknown reply {verb[:20]!r} from {peer}")

    def _start_transfer(self, peer: str) -> None:
        self.sync = FullSync(peer, os.urandom(8), set(), self.now,
                             progress=Progress(log, f"full state transfer from {peer} (entries)"))
        self.stats["full_syncs"] += 1
        self.out.append((FETCH, peer, wire.snap(self.sync.tag, self.id)))

    # --- folds (zkv.replication.folds) --------------------------------------------------------
    def _fold(self) -> None:
        """Fold the finished origins that every configured node holds whole, as its last
        heartbeat says (checked before each of ours)."""
        if self.sync is not None:
            return
        current = {self.origin}
        views = []
        for p in self.peer_ids:
            v = self.peers.get(p)
            if v is None or v.hb.folds is None:
                return  # a node not heard since we started may hold anything; one that does
                # not fold (an older release) learns of origins only from vectors
            current.add(v.hb.origin)
            views.append((v.hb.vv, v.hb.held))
        busy = {*self.inbox.gaps(), *self.held_back, *self.fetching}
        vv = self.inbox.vv
        for origin, count in foldable(self.folds.wire(vv), current, busy, views).items():
            self.folds.add(origin, count, vv)

    def _ask_folds(self, peer: str, digest: tuple[int, int]) -> None:
        """Read ``peer``'s folds (its digest differs from ours), from the first page."""
        if (self._folds_asked is not None or self.sync is not None
                or self.now - self._folds_ask_at.get(peer, -1e18) < FOLDS_ASK_EVERY * self._hb_every):
            return
        self._folds_ask_at[peer] = self.now
        self._folds_asked = (peer, self.now, digest)
        self._folds_lacking = False
        self._folds_pages = 0
        self.out.append((FETCH, peer, [wire.FOLDS, b""]))

    def _read_folds(self, peer: str, raw: bytes) -> None:
        """A page of ``peer``'s folds: adopt each whose events we hold; pull those we lack (a
        full transfer, if many); the next page, if there is one."""
        assert self._folds_asked is not None
        page, more = unpack(raw)
        if page.__class__ is not list or len(page) > FOLD_PAGE or more.__class__ is not bool:
            raise DecodeError("bad folds page")
        current = {self.origin, *(v.hb.origin for v in self.peers.values())}
        vv = self.inbox.vv
        lacking = []
        last = ""
        self._folds_pages += 1
        for item in page:
            if item.__class__ is not list or len(item) != 2:
                raise DecodeError("bad fold")
            origin, count = check_name(item[0], "origin"), check_int(item[1], "count")
            last = origin
            if origin in current or count == 0:  # a live incarnation is never finished, and a
                self.claims.not_believed += 1    # fold of nothing is made up: not believed
            elif vv.get(origin, 0) >= count:
                self.folds.add(origin, count, vv)
            else:
                lacking.append(origin)
                if count > self._folded_beyond.get(origin, ("", 0))[1]:
                    self._folded_beyond[origin] = (peer, count)
        if lacking:
            self._folds_lacking = True
            if len(lacking) > PULLS_PER_HEARTBEAT:
                if self.sync is None:
                    log.warning("%s folded %d origins of which this node lacks events; full "
                                "state transfer from it", peer, len(lacking))
                    self._start_transfer(peer)
            else:
                for origin in lacking:
                    if origin not in self.fetching and origin not in self.held_back:
                        self.out.append((FETCH, peer, wire.pull(origin, vv.get(origin, 0))))
                        self.fetching[origin] = (peer, self.now)
        # A map longer than the origins we know (and NEW_ORIGINS more) names origins we lack
        # anyway: no more pages of it (a transfer brings them), however many the peer offers.
        pages = 2 + (len(vv) + NEW_ORIGINS) // FOLD_PAGE
        if more and last and self.sync is None and self._folds_pages < pages:
            self._folds_asked = (peer, self.now, self._folds_asked[2])
            self.out.append((FETCH, peer, [wire.FOLDS, last.encode()]))
            return
        if not self._folds_lacking and not more:
            self._folds_read[peer] = self._folds_asked[2]
        self._folds_asked = None

    def _folds_unsettled(self) -> bool:
        """Does some peer's map of folds, not read yet or naming events we lack, differ from
        ours?  It may fold events we lack: our stable time is 0 meanwhile."""
        had = self.folds.had  # (ours, now and before: nothing in such a map is lacking)
        for p, v in self.peers.items():
            d = v.hb.folds
            if d is not None and d not in had and self._folds_read.get(p) != d:
                return True
        return False

    def wire_vv(self) -> dict[str, int]:
        """Our version vector as heartbeats and anti-entropy carry it (folds left out)."""
        return self.folds.wire(self.inbox.vv)

    def _transfer_chunk(self, chunk: bytes) -> None:
        assert self.sync is not None
        entries = decode_chunk(chunk)
        check_entries(entries)
        if self._within_clock(entries) is not entries:
            # The transfer would claim (in its vector) entries we did not apply: give it up
            # and ask again later, when our clock has come near them.
            top = physical(max(e[1] for e in entries))
            self._transfer_after_wall[self.sync.peer] = top - self.cfg.max_clock_offset_ms
            log.warning("full state transfer from %s carries entries stamped %d ms beyond this "
                        "node's clock bound; abandoning it until its clock comes near them",
                        self.sync.peer, top - self.clock.wall() - self.cfg.max_clock_offset_ms)
            self.sync = None
            return
        self.tracking.forget()
        self.sync.keys.update(e[0] for e in entries)
        entries = self._not_ours(entries)
        if self.gc_horizon:
            # An entry stamped below our tombstone horizon, of a key we hold nothing of, was
            # deleted here and its tombstone collected, as for events and repairs: a sender
            # that recovered less than it had must not bring the older write back (nor the log
            # keep it for the next start).
            floor, entry = self.gc_horizon, self.ks.entry
            entries = [e for e in entries if e[1] >= floor or entry(e[0]) is not None]
        self.clock.observe(self.ks.apply_entries(entries))
        self.sync.entries += len(entries)
        self.sync.last_chunk = self.now
        if self.sync.progress is not None:
            self.sync.progress.add(len(entries))
        self.out.append((LOG, encode_repair_records(None, 0, entries), len(entries)))

    def _transfer_end(self, peer: str, raw_meta: bytes) -> None:
        """The peer's snapshot has been applied whole: adopt the vector it covered, and drop
        the keys it provably deleted (zkv.replication.transfer)."""
        assert self.sync is not None
        meta = unpack(raw_meta)
        horizon = check_int(meta.get("gc_horizon", 0), "gc_horizon")
        vv = dict(check_vv(meta["vv"]))
        mine = self.inbox.vv
        why = implausible(horizon, vv, self._max_stable.get(peer, 0), self.gc_horizon,
                          self.clock.limit(), self.origin, mine.get(self.origin, 0))
        if why is not None:  # a lying or broken sender must not make us drop data
            self.bad("catch-up", f"a full transfer from {peer} is not believed: {why}")
            self.sync = None
            return
        # no more of a live node's events than it announced
        self.claims.cap(vv, mine, mine.get(self.origin, 0), self.now)
        dropped = self.ks.drop(stale_keys(self.ks, self.sync.keys, horizon, self.origin), horizon)
        states, forgotten = self.ks.forget_counters_below(self.sync.keys, horizon)  # (zkv.store.counter)
        dropped += forgotten
        self.tracking.forget()
        self.gc_horizon = max(self.gc_horizon, horizon)  # what the peer collected is gone
        self.inbox.advance(vv)
        self.out.append((LOG, encode_repair_records(vv, horizon, states, dropped), 1 + len(dropped) + len(states)))
        for origin in list(vv):
            rel = self.inbox.release(origin)
            if rel:
                self._apply_remote(rel, None)
            self.horizon.advance(origin, self.inbox.vv)
            self.folds.recheck(origin, self.inbox.vv)
        log.info("full state transfer from %s done: %d entries, %d stale keys dropped",
                 peer, self.sync.entries, len(dropped))
        self.sync = None
        # A snapshot now spares the next start replaying the whole transfer.
        if self.snapshot_allowed():
            self.out.append((SNAPSHOT,))

    def _not_ours(self, entries: list) -> list:
        """Entries a peer sent, minus those of our own current incarnation stamped after the
        last timestamp we issued: we never wrote them.  (Ours stamped before may be copies of
        writes this keyspace lost - anti-entropy repairs exactly that.)"""
        mine, last = self.origin, self.clock.last

        def ours_later(e: tuple) -> bool:  # (a counter's or member's state names versions of its own)
            return (e[2] == mine and e[1] > last) or (e[3].__class__ in (list, tuple) and any(
                o == mine and h > last for h, o in _state_stamps(e[3])))
        if not any(map(ours_later, entries)):
            return entries
        kept = [e for e in entries if not ours_later(e)]
        self.claims.not_believed += len(entries) - len(kept)
        return kept

    def _within_clock(self, entries: list) -> list:
        """Entries a peer sent (transfer, repair) minus those stamped beyond our clock's bound:
        those wait for a later round, when our wall clock has come near them."""
        limit = self.clock.limit()

        def beyond(e: tuple) -> bool:  # (a state's mark, dots, increments: none beyond it either)
            return e[1] > limit or (e[3].__class__ in (list, tuple) and any(
                h > limit for h, _o in _state_stamps(e[3])))
        if not any(map(beyond, entries)):
            return entries
        kept = [e for e in entries if not beyond(e)]
        self.stats["clock_held_events"] += len(entries) - len(kept)
        return kept

    def _repair(self, peer: str, buckets: list, entries: list) -> None:
        """Merge a peer's entries of buckets whose hashes differ at equal version vectors
        (only merge: see zkv.replication.antientropy)."""
        check_entries(entries)
        changed = merge(self.ks, self._not_ours(self._within_clock(entries)), self.gc_horizon)
        if changed:
            self.clock.observe(max(e[1] for e in changed))  # a later write is stamped after them
            self.tracking.forget()
            self.stats["repaired_keys"] += len(changed)
            self.out.append((LOG, encode_repair_records(None, 0, changed), len(changed) + 1))
            log.warning("anti-entropy with %s repaired %d keys in %d buckets",
                        peer, len(changed), len(buckets) if buckets.__class__ is list else 0)

    # --- replication: serving -----------------------------------------------------------------
    def catchup_request(self, ident: bytes, who: str | None, frames: list[bytes], now: float) -> None:
        """A request on our catch-up ROUTER (``frames``: verb and arguments), charged to
        ``who`` (the peer its key proved) or, on an open bus, to its connection."""
        self.now = now
        self.serving.request(ident, who, frames, now)

    # --- heartbeat, clock, tombstones, anti-entropy -------------------------------------------
    def _heartbeat(self) -> None:
        now = self.now
        for p in sorted(self._live_peers):
            if now - self.peers[p].seen >= PEER_SILENT_S:
                self._live_peers.discard(p)
                log.warning("peer %s silent for %.1fs: down or cut off; its writes will be pulled "
                            "when it is heard again", p, now - self.peers[p].seen)
        now_ts = self.clock.now()
        if self.clock_known and self.echo_floor <= self.clock.last:
            # Saved (and announced once durable, a heartbeat later) only once this clock is
            # known to be past what peers heard us announce: a clock file is the promise that
            # no peer heard more, and an echo beyond it is then taken for a lie.
            self.out.append((CLOCK, now_ts))
        hlc = self._announceable(now_ts)
        hb = Heartbeat(
            id=self.id, seq=self.inbox.vv.get(self.origin, 0), hlc=hlc, vv=self.wire_vv(),
            stable=self._stable(hlc), digest=self.ks.digest(),
            keys=len(self.ks), catchup=self.catchup_endpoint, peers=sorted(self.peer_ids),
            origin=self.origin, wall=self.clock.wall(), seen=dict(self.seen_hlc),
            held=self._held_ranges(), folds=self.folds.digest,
        )
        self.out.append((PUBLISH, [TOPIC_HEARTBEAT, encode_heartbeat(hb)]))

    def _held_ranges(self) -> dict[str, list[int]]:
        """What we hold beyond our vector: behind gaps, and held back for our clock."""
        held = self.inbox.held_ranges()
        for origin, b in self.held_back.items():
            lo, hi = held.get(origin, (b.first_seq, b.last_seq))
            held[origin] = [min(lo, b.first_seq), max(hi, b.last_seq)]
        return held

    def clock_persisted(self, value: int) -> None:
        """The shell saved ``value`` as the clock bound (zkv.store.clockfile): it may be announced."""
        if value > self.clock_saved:
            self.clock_saved = value

    def _announceable(self, now_ts: int) -> int:
        """The highest timestamp we may announce now: never one that is not on disk, so that no
        restart, whatever its wall clock, stamps below what peers heard from us."""
        return min(now_ts, self.clock_saved)

    def _stable(self, now_ts: int) -> int:
        """A time below which this store holds every event of every origin (zkv.replication.
        horizon), and below which no event that only this store holds was stamped: events held
        behind a hole hold it back until they are applied (and so spread)."""
        if self._folds_unsettled():
            return 0
        t = self.horizon.stable(self._announceable(now_ts), self.inbox.vv)
        low = self.inbox.lowest_held_stamp()
        return t if low is None else min(t, low - 1)

    def _check_clock_skew(self) -> None:
        """Refuse client writes while our stamps are too far off the cluster's clocks (see
        zkv.replication.skew); say so in the log when that starts and ends.  A peer that is
        down counts with the offset it last had: with one of three nodes down and another's
        clock far off, the median of the two live ones alone would be halfway between them,
        and the healthy node would refuse writes too."""
        self._adopt_echo()
        bound = self.cfg.max_clock_offset_ms
        wall = self.clock.wall()
        offsets = list(self.offsets.current.values())
        refuse = refusal(wall, physical(self.clock.last), offsets, bound)
        if refuse is None:
            ours = max(wall, physical(self.clock.last))
            refuse = behind_peers(ours, [physical(v.hb.hlc) + int(1000 * (self.now - v.seen))
                                         for v in self.peers.values()], bound)
        if not self.clock_known:
            refuse = ("clock unknown: this node has no record of its clock (a new or wiped data "
                      "directory) and accepts writes once it has heard a peer")
        elif self.echo_floor > self.clock.last:
            refuse = (f"clock skew: this node's clock is {physical(self.echo_floor) - wall} ms "
                      f"behind timestamps its peers heard it announce before (max_clock_offset_ms "
                      f"= {bound}); writes refused")
        if (refuse is None) != (self.refuse_writes is None):
            if refuse:
                log.error("%s", refuse)
            else:
                log.info("clock back within max_clock_offset_ms of the cluster's: accepting writes")
        self.refuse_writes = refuse

    def _pause_clients_until_heard(self) -> None:
        paused = not self.peers and self.now < self.own_wait_until
        if paused != self.clients_paused:
            self.clients_paused = paused
            self.out.append((PAUSE, paused))
            if paused:
                log.info("client requests wait until a peer has been heard (at most %d ms)",
                         5 * self.cfg.heartbeat_ms)
            else:
                log.info("serving client requests as %s", self.origin)

    def _collect_tombstones(self) -> None:
        """Below the horizon every node holds every event: tombstones there go, and counters'
        increments there are counted in their values (zkv.store.counter)."""
        if not self.ks.tombstones and not self.ks.counters and not self.ks.expiring:
            return
        horizon = min(self.horizon.collectable(self.clock.now(), self.inbox.vv),
                      self._stable(self.clock.now()))
        if horizon > self.gc_horizon:
            self.gc_horizon = horizon
            n = self.ks.collect_tombstones(horizon)
            self.stats["tombstones_collected"] += n
        if self.ks.counters:
            self.ks.compact_counters(self.gc_horizon)
        self._reclaim_expired()

    def _reclaim_expired(self) -> None:
        """Drop keys that expired before the horizon (zkv.store.keyspace ``reclaim_expired``):
        every heartbeat, so a cache that writes expiring keys fast does not outgrow it."""
        if self.ks.expiring:
            self.ks.now_ms = self.clock.wall()
            self.stats["expired_reclaimed"] += self.ks.reclaim_expired(
                self.gc_horizon, 2 * self.cfg.max_clock_offset_ms)

    def _anti_entropy(self) -> None:
        """Compare digests with one peer per round; on a mismatch at equal vectors, ask for buckets.

        Not with a peer that holds events behind a gap, nor while we do: those events are in
        its keyspace but not claimed, so its digest differs for a reason anti-entropy must not
        spread - should it lose them (a crash, a wipe) before they are claimed, copies merged
        elsewhere would be entries without events, which the tombstone horizon then passes
        on some nodes and not others.  They spread once claimed (zkv.store.replica
        ``_resolve_holes``) or pulled."""
        fresh = [v for v in self.peers.values()
                 if self.now - v.seen < 5 * self._hb_every and v.hb.id in self.endpoints
                 and not v.hb.held]
        if not fresh or self.sync is not None or self.inbox.gaps():
            return
        self._ae_turn += 1
        view = fresh[self._ae_turn % len(fresh)]
        if (view.hb.digest != self.ks.digest() and self.ae_asked is None
                and (view.hb.folds or (0, 0)) == self.folds.digest and view.hb.vv == self.wire_vv()):
            self.out.append((FETCH, view.hb.id, [wire.BUCKETS]))
            self.ae_asked = (view.hb.id, self.now)

    def _lag(self, peer: str, now: float) -> dict[str, int]:
        """How far we are behind ``peer``: events it announced that we lack, and for how long
        we have lacked some (0 when we have all it announced)."""
        view = self.peers.get(peer)
        if view is None:
            return {"events": 0, "ms": 0}
        mine = self.inbox.vv
        events = sum(max(0, seq - mine.get(o, 0)) for o, seq in view.hb.vv.items())
        since = self.behind_since.get(peer)
        return {"events": events, "ms": int((now - since) * 1000) if events and since else 0}

    def info(self) -> dict[str, Any]:
        """INFO's figures: replication state here, disk and process figures from ``info_extra``."""
        now = self.now
        return {**self.info_extra(),
            "id": self.id, "origin": self.origin, "keys": len(self.ks), "tombstones": self.ks.tombstones,
            "counter_keys": self.ks.counters, "expiring_keys": self.ks.expiring,
            "uptime_s": int(now - self.started), "clients": self.frontend_stats.get("clients", 0),
            "seq": self.inbox.vv.get(self.origin, 0), "vv": self.wire_vv(),
            "folded_origins": len(self.folds.final), "origins": len(self.inbox.vv),
            "digest": self.ks.digest().hex(), "gc_horizon": self.gc_horizon, "fsync": self.cfg.fsync,
            "peers": {p: {"connected": p in self.peers and now - self.peers[p].seen < PEER_SILENT_S,
                          "vv": dict(self.peers[p].hb.vv) if p in self.peers else {},
                          "clock_offset_ms": self.offsets.current.get(p),
                          "lag": self._lag(p, now), "acked": self.acked.seq.get(p, 0)}
                      for p in sorted(self.peer_ids)},
            "clock": {"refusing": self.refuse_writes or "",
                      "held_back_origins": sorted(self.held_back),
                      "behind_ms": max(0, physical(self.clock.last) - self.clock.wall()),
                      "saved": self.clock_saved},
            "syncing": self.sync is not None,
            "stats": {**self.stats, "claims_not_believed": self.claims.not_believed},
            "read_cache": {"tracked": len(self.tracking.keys), "tracked_max": self.tracking.max_keys}
            if self.cfg.read_cache_mb else {},
        }


def _expiry(kind: int, amount: int, now_ms: int, kept: int) -> int:
    """The absolute expiry (ms) an option asks for: ``amount`` ms from now (kind 1), at
    ``amount`` (2), or the key's own ``kept`` (3: KEEPTTL); -1 if that is not in the future
    (the key is deleted at once, as Redis does), 0 for none."""
    if kind == 3:
        return kept
    exp = now_ms + amount if kind == 1 else amount
    return exp if exp > now_ms else -1


def _state_stamps(value: list | tuple) -> list:
    """The versions a counter's or member's state (an entry's value, checked already) names;
    none for a value with its expiry."""
    state = decode_state(value)
    return [] if state is None else state.stamps()


def _stamped(items: list, stamp: int, writes: list) -> int:
    """Append ``writes`` ((key, value) pairs) to ``items``, stamped from ``stamp`` on; returns
    the next stamp."""
    for key, value in writes:
        items.append((stamp, key, value))
        stamp += 1
    return stamp


def _any(_key: bytes) -> bool:
    return True


def _overlaps(held: list[int] | None, lo: int, hi: int) -> bool:
    return held is not None and held[0] <= hi and held[1] >= lo

