"""The store process: the shell around the replica core (zkv.store.replica) - its sockets, its
disk and its clock.  It feeds the core what arrives and carries out what the core asks for; every
decision is the core's.

Sockets, by role (all set up in ``_bind``):

    clients    ROUTER  bound on the node's internal ipc endpoint; the frontend's batches
    publisher  PUB     bound on ``bus``: our own event batches and heartbeats
    subscribers SUB    one per peer, connected to its ``bus``: what arrives on it is that
                       peer's (its own events, heartbeats, acks), whatever a message claims
    catchup    ROUTER  bound on ``tcp://<bus host>:<random port>``, advertised in heartbeats:
                       serves "events of X after N", full snapshots, bucket digests
    fetchers   DEALER  one per peer, connected to that peer's advertised catchup endpoint
    zap        REP     with keys configured: admits the peers' CURVE keys (zkv.curve)

Anyone who reaches ``publisher`` or ``catchup`` holds one of our descriptors from the moment
ZeroMQ accepts the connection until it is closed: a connection that has not finished its
handshake is closed after ``HANDSHAKE_TIMEOUT_MS`` (zkv.store.listeners counts them for INFO),
and the store raises its own open-file limit at start (``OPEN_FILES``).  Should descriptors
still run out, nothing the store fails to open stops it: a new log segment, a snapshot to send,
a socket to a peer are tried again later, and writes go on into the segment already open.

One event travels one way: local write -> keyspace -> log -> PUB -> peer SUB -> peer inbox ->
peer keyspace -> peer log.  The loop is single-threaded, so no state here needs a lock.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from typing import Any

import msgpack
import zmq

from zkv import fdlimit
from zkv.config import Config
from zkv.curve import ZapHandler, dial
from zkv.events import TOPIC_CATCHUP, new_origin, vv_text
from zkv.proc import rss_bytes
from zkv.replication.backlog import Backlog
from zkv.replication.limits import CATCHUP_SNDHWM, MAX_REQUEST_BYTES
from zkv.store import clockfile
from zkv.store.catchup_server import CatchupSender
from zkv.store.durability import SNAPSHOT as SNAPSHOT_FILE, Durability, Recovered
from zkv.store.listeners import ListenerWatch
from zkv.store.metrics_figures import PeerHeard, figures as metrics_figures
from zkv.store.outputs import (
    CLIENT, CLOCK, CONNECT, FETCH, LOG, PAUSE, PUBLISH, SERVE, SNAPSHOT, TRANSFER,
)
from zkv.store.peerlag import SeqHistory
from zkv.store.replica import Replica

log = logging.getLogger("zkv.store")

MAX_CLIENT_MSGS_PER_TURN = 256  # frontend batches taken per loop turn (one log append for all)
# No bus or catch-up message may be larger than this (ZeroMQ drops the connection of a peer that
# sends one): the largest value a client may write (512 MB) fits, and so does its log record.
MAX_MSG_BYTES = 768 * 1024 * 1024
# A connection to the bus or catch-up port must finish its ZeroMQ handshake (with keys: prove a
# peer's key) within this, or it is closed.  ZeroMQ's default, 30 s, let anyone who connects and
# says nothing hold one of our descriptors that long: about 1,100 of them at once left the store
# of a node under a 1,024 limit no descriptor to open its next log segment with.  A peer needs
# a few round trips.
HANDSHAKE_TIMEOUT_MS = 5_000
# The open-file limit the store asks for at start (zkv.fdlimit): its files and peers take a few
# dozen descriptors; the rest is room for connections that have not finished their handshake.
OPEN_FILES = 65_536


def snapshot_threshold(records: int) -> int:
    """Logged writes before the next snapshot: ``records``, give or take a quarter at random."""
    return int(records * random.uniform(0.75, 1.25))


class Store:
    def __init__(self, cfg: Config, clients_endpoint: str) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.clients_endpoint = clients_endpoint
        self.peer_keys = {p.id: p.public_key for p in cfg.peers}
        self.running = True
        self.disk = Durability(cfg.data_dir, cfg.id, cfg.fsync)
        backlog = Backlog(cfg.backlog, cfg.backlog_mb * 1024 * 1024)
        self.recovered: Recovered = self.disk.recover(on_batch=backlog.add)
        floor = clockfile.load(cfg.data_dir)
        self.clock_file = clockfile.ClockFile(cfg.data_dir, floor or 0)
        self.core = Replica(cfg, self.recovered, new_origin(cfg.id), backlog, time.monotonic(),
                            clock_floor=floor)
        self.core.info_extra = self._info_extra
        self.started = time.monotonic()
        self.seq_history = SeqHistory()  # when our vector reached what: peers' lag (/metrics)
        self.published = self.publish_dropped = 0  # event batches the PUB socket took / dropped
        # Every node logs every write, so without jitter all of them would snapshot at the
        # same moment, and the whole cluster would slow down at once.
        self._snapshot_at = snapshot_threshold(cfg.snapshot_records)
        self.ctx = zmq.Context()  # its own: a ZAP handler belongs to one context
        self._bind()
        self.core.catchup_endpoint = self.catchup_endpoint

    # --- set-up ------------------------------------------------------------------------------
    def _bind(self) -> None:
        ctx, cfg, keys = self.ctx, self.cfg, self.cfg.keys
        self.zap: ZapHandler | None = None
        if keys is not None:  # before any CURVE server socket: without a handler all get in
            self.zap = ZapHandler(ctx, {keys.public: self.id,
                                        **{p.public_key: p.id for p in cfg.peers if p.public_key}})
        elif not _loopback(cfg.bus_host):
            log.warning("the bus %s is reachable from other machines and has no keys: anyone who "
                        "can reach it can read every key and write to this cluster; configure "
                        "secret_key and the peers' public_key (zkv keygen)", cfg.bus)
        self.clients = ctx.socket(zmq.ROUTER)
        self.clients.linger = 0
        self.clients.sndhwm = 0  # a dropped reply would shift the frontend's FIFO matching
        self.clients.bind(self.clients_endpoint)
        self.publisher = self._bus_socket(zmq.PUB)
        self.publisher.linger = 0
        self.publisher.sndhwm = cfg.hwm
        if keys is not None:
            keys.serve(self.publisher)
        self.publisher.bind(cfg.bus)
        # One SUB per peer, so a message is known to come from the peer whose bus it arrived on
        # (with keys: whose key that bus proved), not from whoever a message says it is.
        self.subscribers: dict[zmq.Socket, str] = {}
        for p in cfg.peers:
            sub = self._bus_socket(zmq.SUB)
            sub.linger = 0
            sub.rcvhwm = cfg.hwm
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            dial(sub, p.bus, keys, p.public_key)
            self.subscribers[sub] = p.id
        self.catchup = self._bus_socket(zmq.ROUTER)
        self.catchup.linger = 0
        self.catchup.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.catchup.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)  # requests are small
        self.catchup.sndhwm = CATCHUP_SNDHWM  # replies a requester may leave unread
        if keys is not None:
            keys.serve(self.catchup)
        # before binding, so that no connection goes uncounted
        self.listeners = ListenerWatch({"bus": self.publisher, "catchup": self.catchup})
        host = cfg.bus_host
        base = f"tcp://[{host}]" if ":" in host else f"tcp://{host}"
        if cfg.catchup_port:
            self.catchup.bind(f"{base}:{cfg.catchup_port}")
            port = cfg.catchup_port
        else:
            port = self.catchup.bind_to_random_port(base)
        self.catchup_endpoint = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
        self.keyed = self.zap is not None  # CURVE: catch-up requesters are the peers their keys proved
        self.fetchers: dict[str, zmq.Socket] = {}  # peer -> DEALER to its catch-up channel
        self.fetcher_peer: dict[zmq.Socket, str] = {}
        self.requests_sent: dict[str, int] = {}  # catch-up requests we sent, by verb (INFO)
        self.redial: dict[str, str] = {}  # peer -> catch-up endpoint we could not dial yet
        self.poller = zmq.Poller()
        for s in (self.clients, *self.subscribers, self.catchup):
            self.poller.register(s, zmq.POLLIN)
        self.sender = CatchupSender(self.catchup, self.cfg.data_dir / SNAPSHOT_FILE,
                                    self.core.bad, self._notice)
        if self.zap is not None:
            self.poller.register(self.zap.sock, zmq.POLLIN)

    def _bus_socket(self, kind: int) -> zmq.Socket:
        """A socket for the bus between stores, which must notice a dead peer by itself.

        Across a partition that outlasts TCP's retransmissions (about 15 minutes on Linux) the
        sending side drops its connection, but a subscriber that only listens never learns its
        side is dead, and the two stores would stay split after the network heals.  ZeroMQ
        heartbeats (PING every 5 store heartbeats; no traffic for 50: close and reconnect) and
        TCP keepalive make every bus connection find out, and reconnect.  A connection that
        does not finish its handshake in HANDSHAKE_TIMEOUT_MS is closed."""
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
        hb = self.cfg.heartbeat_ms
        s.setsockopt(zmq.HEARTBEAT_IVL, 5 * hb)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 50 * hb)
        s.setsockopt(zmq.HEARTBEAT_TTL, 50 * hb)
        s.setsockopt(zmq.TCP_KEEPALIVE, 1)
        s.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 30)
        s.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 5)
        s.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_BYTES)  # a peer sending more is disconnected
        return s

    def _connect(self, peer: str, endpoint: str) -> None:
        """(Re)dial ``peer``'s catch-up channel; a bad endpoint is the peer's fault, not ours.
        A socket we cannot make now (no descriptor left) is tried again once a second."""
        old = self.fetchers.pop(peer, None)
        if old is not None:
            self.poller.unregister(old)
            del self.fetcher_peer[old]
            old.close(0)
        retrying = self.redial.pop(peer, None) is not None
        try:
            s = self._bus_socket(zmq.DEALER)
        except zmq.ZMQError as exc:
            if not retrying:
                log.error("cannot open a socket to %s's catch-up channel (%s); trying again "
                          "once a second", peer, exc)
            self.redial[peer] = endpoint
            return
        s.linger = 0
        try:
            dial(s, endpoint, self.cfg.keys, self.peer_keys.get(peer))
        except zmq.ZMQError as exc:
            s.close(0)
            self.core.bad("heartbeat", f"{peer}'s catch-up endpoint {endpoint[:100]!r}: {exc}")
            return
        self.poller.register(s, zmq.POLLIN)
        self.fetchers[peer] = s
        self.fetcher_peer[s] = peer

    # --- carrying out the core's outputs ------------------------------------------------------
    def _carry_out(self) -> None:
        for o in self.core.take():
            verb = o[0]
            if verb == CLIENT:
                self.clients.send_multipart(o[1])
            elif verb == LOG:
                self.disk.append(o[1], o[2])
            elif verb == PUBLISH:
                try:
                    self.publisher.send_multipart(o[1], zmq.NOBLOCK)
                    self.published += 1
                except zmq.Again:
                    self.publish_dropped += 1  # peers see the gap (or the next heartbeat) and pull
            elif verb == FETCH:
                sock = self.fetchers.get(o[1])
                if sock is not None:
                    name = o[2][0].decode("ascii", "replace")
                    self.requests_sent[name] = self.requests_sent.get(name, 0) + 1
                    try:
                        sock.send_multipart(o[2], zmq.NOBLOCK)
                    except zmq.Again:
                        pass  # unanswered, the request is asked again (FETCH_TIMEOUT)
            elif verb == SERVE:
                self.sender.send(o[1], o[2])
            elif verb == CONNECT:
                self._connect(o[1], o[2])
            elif verb == TRANSFER:
                self.sender.transfer(o[1], o[2], o[3])
                self._snapshot_for_transfer()
            elif verb == SNAPSHOT:
                self.disk.start_snapshot(*self.core.snapshot_state())
            elif verb == PAUSE:
                self.poller.modify(self.clients, 0 if o[1] else zmq.POLLIN)
            elif verb == CLOCK:
                self.clock_file.save(o[1])

    def _snapshot_for_transfer(self) -> None:
        """A transfer waits for a fresh snapshot: start one (again, if one could not start)."""
        if not self.sender.snap_waiters or self.disk.snapshot_running:
            return
        if not self.disk.start_snapshot(*self.core.snapshot_state()) and self.disk.broken:
            self.sender.snapshot_done(False)  # none will come: the requesters hear so

    def _notice(self, note: dict[str, Any]) -> None:
        try:
            self.publisher.send_multipart(
                [TOPIC_CATCHUP, msgpack.packb({"from": self.id, **note}, use_bin_type=True)],
                zmq.NOBLOCK)
        except zmq.Again:
            pass

    # --- main loop ---------------------------------------------------------------------------
    def run(self) -> None:
        core, sender = self.core, self.sender
        next_sync = time.monotonic()
        while self.running:
            now = time.monotonic()
            core.clock_persisted(self.clock_file.saved)
            core.tick(now)
            self.seq_history.sample(now, core.inbox.vv)
            if now >= next_sync:
                self.disk.sync()
                ok = self.disk.poll_snapshot()
                if ok is not None:
                    log.info("snapshot written in %.2fs (fork pause %.1f ms)",
                             self.disk.last_snapshot_seconds, self.disk.last_fork_pause_ms)
                    sender.snapshot_done(ok)
                for peer, endpoint in list(self.redial.items()):
                    self._connect(peer, endpoint)
                self._snapshot_for_transfer()
                next_sync = now + 1.0
            if (self.disk.records_since_snapshot >= self._snapshot_at and core.snapshot_allowed()
                    and self.disk.start_snapshot(*core.snapshot_state())):
                self._snapshot_at = snapshot_threshold(self.cfg.snapshot_records)
            if sender.pending:
                sender.flush()
            if sender.streams:
                sender.advance()
            self._carry_out()
            wake = min(core.next_timer(), next_sync)
            timeout = max(0, int(1000 * (wake - time.monotonic())) + 1)
            if sender.streams:
                timeout = min(timeout, 5) if sender.blocked else 0
            if sender.pending:
                timeout = min(timeout, 5)
            ready = dict(self.poller.poll(timeout))
            if self.clients in ready:
                self._receive_clients()
            for sub, peer in self.subscribers.items():
                if sub in ready:
                    self._receive_bus(peer, sub)
            if self.zap is not None and self.zap.sock in ready:
                for key in self.zap.handle():
                    core.bad("bus", f"a connection with key {key.decode()} was refused (not a configured peer)")
            if self.catchup in ready:
                self._receive_requests()
            for sock, peer in list(self.fetcher_peer.items()):
                if sock in ready:
                    self._receive_replies(peer, sock)
            self._carry_out()

    def _receive_clients(self) -> None:
        msgs = []
        for _ in range(MAX_CLIENT_MSGS_PER_TURN):
            try:
                msgs.append(self.clients.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        self.core.client(msgs, time.monotonic())
        self._carry_out()

    def _receive_bus(self, peer: str, sub: zmq.Socket) -> None:
        bus, now = self.core.bus, time.monotonic()
        for _ in range(1000):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.core.bad("bus", "a message of %d frames" % len(frames))
                continue
            bus(peer, frames[0], frames[1], now)

    def _receive_requests(self) -> None:
        now = time.monotonic()
        for _ in range(100):
            try:
                msg = self.catchup.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            who = msg[1].get("User-Id") if self.keyed and len(msg) > 1 else None
            frames = [f.bytes for f in msg]
            self.core.catchup_request(frames[0], who, frames[1:], now)

    def _receive_replies(self, peer: str, sock: zmq.Socket) -> None:
        now = time.monotonic()
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.core.fetch_reply(peer, frames, now)

    # --- INFO and shutdown -------------------------------------------------------------------
    def _info_extra(self) -> dict[str, Any]:
        rec = self.recovered
        return {
            "memory": {"store_rss": rss_bytes(), "frontend_rss": self.core.frontend_stats.get("rss", 0)},
            "disk": {**self.disk.disk_bytes(), "log_open_failures": self.disk.open_failures},
            "recovery": {"seconds": round(rec.seconds, 3), "snapshot_entries": rec.snapshot_entries,
                         "log_records": rec.log_records, "dropped_bytes": rec.dropped_bytes},
            "snapshots": {"taken": self.disk.snapshots_taken,
                          "last_fork_pause_ms": round(self.disk.last_fork_pause_ms, 2),
                          "max_fork_pause_ms": round(self.disk.max_fork_pause_ms, 2),
                          "last_seconds": round(self.disk.last_snapshot_seconds, 3)},
            "background_fsync": {} if self.disk.syncer is None else self.disk.syncer.stats(),
            "catchup": {"requests_sent": sum(self.requests_sent.values()),
                        "pulls_sent": self.requests_sent.get("pull", 0),
                        "requests_received": self.core.serving.received,
                        "requests_refused": self.core.serving.request_limit.refused},
            "listeners": {**self.listeners.figures(),
                          "client": self.core.frontend_stats.get("listener", {}),
                          "store_open_files_limit": fdlimit.current().soft,
                          "frontend_open_files_limit": self.core.frontend_stats.get("open_files", 0)},
            "metrics": self._metrics_figures(),
        }

    def _metrics_figures(self) -> dict[str, Any]:
        """What only /metrics needs (zkv.store.metrics_figures)."""
        core, disk = self.core, self.disk
        return metrics_figures(
            self.seq_history, core.inbox.vv,
            {p: PeerHeard(v.hb.vv, v.seen) for p, v in core.peers.items()}, time.monotonic(),
            {"snapshot_seconds": disk.snapshot_durations, "fork_pause_seconds": disk.fork_pauses,
             "fsync_seconds": None if disk.syncer is None else disk.syncer.durations},
            self.requests_sent, self.published, self.publish_dropped)

    def shutdown(self) -> None:
        """Clean stop: a snapshot, so the next start replays no log."""
        t0 = time.perf_counter()
        self.core.flush()
        try:
            self._carry_out()
            if not self.disk.broken:
                try:
                    self.disk.snapshot_now(*self.core.snapshot_state())
                except OSError as exc:  # the log holds everything: the next start replays it
                    log.error("no snapshot at shutdown (%s); the next start replays the log", exc)
                else:
                    log.info("clean shutdown: snapshot of %d keys written in %.2fs",
                             len(self.core.ks), time.perf_counter() - t0)
        finally:
            self.disk.close()
            self.clock_file.close()
            for s in [self.clients, self.publisher, *self.subscribers, self.catchup, *self.fetchers.values()]:
                s.close(0)
            self.listeners.stop()
            if self.zap is not None:
                self.zap.close()
            self.ctx.destroy(linger=0)


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _raise_open_file_limit() -> None:
    """Room for OPEN_FILES descriptors, as far as the system allows (zkv.fdlimit)."""
    before, after = fdlimit.raise_to(OPEN_FILES)
    if after.soft != before.soft:
        log.info("open-file limit raised from %d to %d", before.soft, after.soft)
    if after.soft < 4096:
        log.warning("open-file limit is %d (hard %d) and may not be raised: connections to the "
                    "bus and catch-up ports can take every descriptor (what the store cannot "
                    "open meanwhile it tries again later); raise it with ulimit -n or "
                    "LimitNOFILE=", after.soft, after.hard)


def main(cfg: Config, clients_endpoint: str, ready_fd: int | None,
         supervisor: int | None = None) -> int:
    """Entry point of the store process (see zkv.node); ``supervisor``: its pid."""
    from zkv.proc import die_with_parent, setup_logging, tune_gc

    setup_logging(cfg.id, "store")
    die_with_parent(parent=supervisor)
    _raise_open_file_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor turns Ctrl-C into SIGTERM
    store = Store(cfg, clients_endpoint)
    tune_gc()
    rec = store.recovered
    log.info("recovered %d keys (%d snapshot entries, %d log records) in %.2fs; vv=%s",
             len(store.core.ks), rec.snapshot_entries, rec.log_records, rec.seconds,
             vv_text(store.core.inbox.vv))

    def stop(_sig: int, _frm: object) -> None:
        store.running = False

    signal.signal(signal.SIGTERM, stop)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    try:
        store.run()
    finally:
        store.shutdown()
    return 0
