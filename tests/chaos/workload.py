"""The chaos workload: writer threads doing SET, DELETE and GET on a small key space.

This module owns the writers and the ``Gate`` that decides which nodes they may use.  Each
writer picks a random usable node per operation, over the plain-text protocol, and records
every operation it sent in the ``History`` with its result: ``ok``, ``fail`` (the node refused
it for certain) or ``unknown`` (no reply: timeout, disconnect - it may or may not have
happened).  An operation that could not even connect is not recorded (it was never sent).
Every SET writes a value unique in the run (``w<writer>.<counter>``), so any value read names
the operation that wrote it.  Most operations go to a few hot keys (overwrites, deletes and
conflicts all the time), renamed at every fault boundary (``k<phase>.<N>``: the nemesis starts
a new phase when a fault starts, at each restart or SIGCONT, and when it ends), so what was
written during a part of a fault is never overwritten after it, and its fate shows in the
final state.  A share goes to many cold
keys (``c<N>``), each written only now and then over the whole run, so damage to old data
(snapshots, wiped disks) shows too.  Writers are bounded in count and in time, and paced to ``rate``
operations a second in total so the nodes keep the two shared cores.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass

from tests.chaos import tallies
from tests.chaos.history import DELETE, FAIL, GET, OK, SET, UNKNOWN, History, Op
from tests.cluster.harness import Cluster, LineClient

# ERROR replies after which the write certainly did not happen; any other (``internal error``:
# the store did not answer its frontend) leaves it indeterminate.
_DEFINITE_ERRORS = (b"ERROR clock skew", b"ERROR max number of clients", b"ERROR unknown command",
                    b"ERROR wrong number of arguments")


class Gate:
    """Which nodes the writers may use, and how many operations are in flight on each.

    ``quiesce(node)`` closes a node to new operations and waits until none is in flight on it,
    so a nemesis that legitimately loses un-replicated data can first make sure there is none.
    ``killed(node)`` tells the writers that their connections to it are dead (they reconnect
    instead of sending an operation into a closed socket, which would be recorded as
    indeterminate).
    """

    def __init__(self, node_ids: list[str]) -> None:
        self.ids = list(node_ids)
        self.closed: set[str] = set()
        self.inflight: Counter[str] = Counter()
        self.epoch: Counter[str] = Counter()
        self.phase = 0  # the hot keys' generation: bumped at each fault boundary
        self.cond = threading.Condition()

    def next_phase(self) -> None:
        with self.cond:
            self.phase += 1

    def killed(self, node: str) -> None:
        with self.cond:
            self.epoch[node] += 1

    def acquire(self, rnd: random.Random) -> str | None:
        with self.cond:
            usable = [n for n in self.ids if n not in self.closed]
            if not usable:
                return None
            node = rnd.choice(usable)
            self.inflight[node] += 1
            return node

    def release(self, node: str) -> None:
        with self.cond:
            self.inflight[node] -= 1
            self.cond.notify_all()

    def close(self, node: str) -> None:
        """No new operations on ``node`` (those in flight finish or time out)."""
        with self.cond:
            self.closed.add(node)

    def quiesce(self, node: str, timeout: float) -> None:
        with self.cond:
            self.closed.add(node)
            if not self.cond.wait_for(lambda: self.inflight[node] == 0, timeout):
                raise AssertionError(f"operations on {node} still in flight after {timeout}s")

    def open(self, node: str) -> None:
        with self.cond:
            self.closed.discard(node)


@dataclass
class WorkloadConfig:
    writers: int = 4
    keys: int = 30  # hot keys per phase
    cold_keys: int = 1000
    cold_share: float = 0.2  # of operations, on a cold key
    rate: float = 300.0  # operations a second, all writers together
    max_ops: int = 1_000_000  # per writer
    op_timeout: float = 5.0  # longer than any SIGSTOP the nemesis holds
    set_share: float = 0.6
    delete_share: float = 0.15  # the rest are GETs
    # of operations, apart from those: an INCR of a counter; a SET PX of a key that expires
    # (tests.chaos.tallies)
    incr_share: float = 0.1
    expiring_share: float = 0.05


def all_keys(cfg: WorkloadConfig, phases: int) -> list[str]:
    """Every key the writers may have touched in phases 0..``phases``."""
    return [f"k{p}.{i}" for p in range(phases + 1) for i in range(cfg.keys)] + \
        [f"c{i}" for i in range(cfg.cold_keys)]


def pick_key(rnd: random.Random, cfg: WorkloadConfig, phase: int) -> str:
    if cfg.cold_keys and rnd.random() < cfg.cold_share:
        return f"c{rnd.randrange(cfg.cold_keys)}"
    return f"k{phase}.{rnd.randrange(cfg.keys)}"


def classify(reply: bytes, kind: str) -> tuple[str, str | None, str]:
    """``(result, value read, detail)`` of one reply line."""
    if kind == GET:
        if reply == b"NOT FOUND":
            return OK, None, ""
        if reply.startswith(b"VALUE "):
            return OK, reply[6:].decode(), ""
    elif reply == b"OK":
        return OK, None, ""
    text = reply.decode(errors="replace")[:200]
    return (FAIL if reply.startswith(_DEFINITE_ERRORS) else UNKNOWN), None, text


class Writer(threading.Thread):
    def __init__(self, wid: int, cluster: Cluster, gate: Gate, history: History, cfg: WorkloadConfig,
                 seed: int, stop: threading.Event, deadline: float, tally: tallies.Tally) -> None:
        super().__init__(name=f"chaos-writer-{wid}", daemon=True)
        self.wid, self.cluster, self.gate, self.history, self.cfg = wid, cluster, gate, history, cfg
        self.tally = tally
        self.rnd = random.Random(f"{seed}-writer-{wid}")
        self.stop_event, self.deadline = stop, deadline
        self.nodes = {n.id: n for n in cluster.nodes}
        self.conns: dict[str, tuple[int, LineClient]] = {}  # node -> (gate epoch, connection)
        self.count = 0

    def run(self) -> None:
        interval = self.cfg.writers / self.cfg.rate
        next_at = time.monotonic()
        while not self.stop_event.is_set() and self.count < self.cfg.max_ops and time.monotonic() < self.deadline:
            node = self.gate.acquire(self.rnd)
            if node is None:
                self.stop_event.wait(0.05)
                continue
            try:
                self.one_op(node)
            finally:
                self.gate.release(node)
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)  # pacing to the configured rate, not waiting for an event
        for _epoch, c in self.conns.values():
            c.close()

    def _conn(self, node_id: str) -> LineClient | None:
        epoch = self.gate.epoch[node_id]
        if node_id in self.conns and self.conns[node_id][0] != epoch:
            self._drop(node_id)
        if node_id not in self.conns:
            node = self.nodes[node_id]
            try:
                c = LineClient(node.port, timeout=self.cfg.op_timeout, host=node.host, netns=node.netns)
            except OSError:
                self.stop_event.wait(0.02)  # that node is down: the next op picks again
                return None
            self.conns[node_id] = (epoch, c)
        return self.conns[node_id][1]

    def _drop(self, node_id: str) -> None:
        entry = self.conns.pop(node_id, None)
        if entry is not None:
            entry[1].close()

    def one_op(self, node_id: str) -> None:
        c = self._conn(node_id)
        if c is None:
            return
        r = self.rnd.random()
        if r < self.cfg.incr_share + self.cfg.expiring_share:
            self._tallied(node_id, c, r < self.cfg.incr_share)
            return
        key = pick_key(self.rnd, self.cfg, self.gate.phase)
        r = self.rnd.random()
        if r < self.cfg.set_share:
            kind, value = SET, f"w{self.wid}.{self.count}"
            line = f"SET {key} {value}"
        elif r < self.cfg.set_share + self.cfg.delete_share:
            kind, value, line = DELETE, None, f"DELETE {key}"
        else:
            kind, value, line = GET, None, f"GET {key}"
        self.count += 1
        invoke = self.history.now()
        try:
            reply = c.cmd(line)
        except (OSError, ConnectionError, socket.timeout) as exc:
            self._drop(node_id)
            self.history.add_op(Op(self.wid, kind, key, value, node_id, invoke, self.history.now(), UNKNOWN,
                                   type(exc).__name__))
            return
        result, read, detail = classify(reply, kind)
        if result != OK:
            self._drop(node_id)
        self.history.add_op(Op(self.wid, kind, key, read if kind == GET else value, node_id, invoke,
                               self.history.now(), result, detail))


    def _tallied(self, node_id: str, c: LineClient, incr: bool) -> None:
        """An INCR, or a SET PX of a new key, in RESP (its reply is one line)."""
        self.count += 1
        if incr:
            key = self.rnd.choice(tallies.COUNTERS)
            request = tallies.resp("INCR", key)
        else:
            px = self.rnd.choice([tallies.SHORT_PX, tallies.LONG_PX])
            key, value = f"e{self.wid}.{self.count}", f"x{self.wid}.{self.count}"
            request = tallies.resp("SET", key, value, "PX", str(px))
        sent_at = tallies.now()
        try:
            c.send(request)
            result = tallies.classify_resp(c.read_line())
        except (OSError, ConnectionError, socket.timeout):
            result = UNKNOWN
        if result != OK:
            self._drop(node_id)
        if incr:
            self.tally.incr(key, result)
        else:
            self.tally.add(tallies.Expiring(key, value, px, sent_at, result))


class Workload:
    """Start ``cfg.writers`` writers; ``finish`` stops them and checks that every one ended."""

    def __init__(self, cluster: Cluster, gate: Gate, history: History, cfg: WorkloadConfig, seed: int,
                 seconds: float, tally: tallies.Tally | None = None) -> None:
        self.stop = threading.Event()
        deadline = time.monotonic() + seconds
        self.tally = tally if tally is not None else tallies.Tally()
        self.writers = [Writer(w, cluster, gate, history, cfg, seed, self.stop, deadline, self.tally)
                        for w in range(cfg.writers)]

    def start(self) -> None:
        for w in self.writers:
            w.start()

    def finish(self, timeout: float) -> list[str]:
        """Stop and join the writers; the names of any still running after ``timeout``."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for w in self.writers:
            w.join(max(0.0, deadline - time.monotonic()))
        return [w.name for w in self.writers if w.is_alive()]
