"""The chaos nemesis: faults a real machine produces, injected into a running cluster one at a time.

This module owns the fault kinds and how each is done and healed, through real processes,
signals and files (nothing is mocked):

* ``kill``: SIGKILL the whole node (supervisor, store, frontend), or every node at once; restart.
* ``stop``: SIGSTOP every process of the node, SIGCONT it later.
* ``wipe``: the node's ``data_dir`` removed while it is down (a replaced disk).
* ``tail``: SIGKILL, then the newest log segment cut at a random point (what a machine crash
  does to a log written with ``fsync = "everysec"``: the unsynced end is gone, often mid-record).
* ``snapshot``: SIGKILL, 64 bytes in the middle part of ``snapshot.zkv`` inverted, restart.
* ``skew``: the node restarted under ``faketime`` with its wall clock moved (ahead within and
  beyond ``max_clock_offset_ms``, or behind), used by the writers for a while, then restarted
  with the true clock.
* ``partition``: one node (on five nodes, sometimes two) cut off the replication bus for
  0.5-5 s while the writers go on using every node (tests/chaos/netns.py; network namespaces,
  needs root).

``wipe``, ``tail`` and ``snapshot`` legitimately lose what the node alone held, so before them
the node is *quiesced*: the writers stop using it, and the nemesis waits until every peer's
version vector covers the victim's (every event it holds, its own and relayed, is held by every
live peer; in the compound ``tail``, by the one peer that is up).  Then losing its disk loses
no acknowledged write, and the checker stays strict.

``tail`` and ``skew`` also come in a compound variant (``NemesisConfig.compound``) that takes
other nodes down around the fault, to reach the states of issue 9's first and third scenarios:
a node restarting after a lost tail while the only peer holding its last events is stopped,
and a peer that never heard a skewed clock taking writes after the skewed node did.

Each fault starts a new *phase* of the writers' hot keys when it begins, at each restart or
SIGCONT, and when it ends (see tests/chaos/workload.py), so what one part of a fault did to the
data is not overwritten by the next part and shows in the final state.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.chaos.history import Fault, History
from tests.chaos.netns import Partitions
from tests.chaos.workload import Gate
from tests.cluster.harness import Cluster, Node, wait_until

ALL = ("kill", "stop", "wipe", "tail", "snapshot", "skew")
KINDS = (*ALL, "partition")  # partition: only where network namespaces can be made
CONTROL = "lose-writes"  # not a fault to survive: destroys the only copy of acknowledged writes
WAL_MAGIC = b"ZKVWAL1\n"  # the header every log segment starts with (zkv.store.wal.MAGIC)
SNAPSHOT = "snapshot.zkv"


class NemesisError(Exception):
    """A fault could not be healed (e.g. the node would not start again): the run stops."""


@dataclass
class NemesisConfig:
    kinds: tuple[str, ...] = ("kill", "stop")
    hold: tuple[float, float] = (0.2, 1.5)  # seconds a node stays down or stopped
    skew_hold: tuple[float, float] = (1.0, 3.0)  # seconds a node runs with a skewed clock
    skews: tuple[str, ...] = ("+5s", "+0.3s", "-3s", "+30s")  # faketime offsets, used in turn
    compound: float = 0.5  # probability of a kind's compound variant (tail, skew)
    partition_hold: tuple[float, float] = (0.5, 5.0)  # seconds a cut lasts (2 s: peers marked down)
    replicate_timeout: float = 20.0
    faketime: str | None = None  # path of the faketime program; None: no skew


def vv_of(node: Node) -> dict[str, int]:
    """The node's version vector from INFO (origins as today's or incarnation ids alike)."""
    text = node.info("replication").get("vv", "")
    out: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        origin, _, seq = part.rpartition("=")
        out[origin] = int(seq)
    return out


def covers(vv: dict[str, int], target: dict[str, int]) -> bool:
    return all(vv.get(o, 0) >= s for o, s in target.items())


def wait_replicated(victim: Node, peers: list[Node], timeout: float) -> float:
    """Wait until every peer holds every event ``victim`` holds; the seconds it took.  On a
    timeout, the message names what each peer still lacks."""
    t0 = time.monotonic()
    target = vv_of(victim)
    try:
        wait_until(lambda: all(covers(vv_of(p), target) for p in peers), timeout=timeout, interval=0.02,
                   what=f"every peer to hold {victim.id}'s events")
    except AssertionError as exc:
        have = {p.id: vv_of(p) for p in peers}
        lacking = {p: {o: f"{vv.get(o, 0)}<{s}" for o, s in target.items() if vv.get(o, 0) < s}
                   for p, vv in have.items()}
        raise AssertionError(f"{exc}; still lacking (peer: origin have<need): "
                             f"{ {p: d for p, d in lacking.items() if d} }") from None
    return time.monotonic() - t0


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            kids = []
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_node(node: Node) -> None:
    """SIGKILL every process of the node and wait until all are gone (their files and ports
    free, the data directory's lock released)."""
    if node.proc is None or node.proc.poll() is not None:
        return
    procs = _descendants(node.proc.pid)
    node.kill()
    wait_until(lambda: not any(_alive(p) for p in procs), timeout=10, what=f"{node.id}'s processes to exit")


def newest_segment(data_dir: Path) -> Path | None:
    """The newest log segment that holds at least one byte of records."""
    for seg in sorted(data_dir.glob("wal-*.log"), reverse=True):
        if seg.stat().st_size > len(WAL_MAGIC):
            return seg
    return None


def cut_tail(seg: Path, rnd: random.Random) -> str:
    """Cut the segment to its header plus 0-90 % of its records' bytes."""
    old = seg.stat().st_size
    new = len(WAL_MAGIC) + int((old - len(WAL_MAGIC)) * rnd.uniform(0.0, 0.9))
    os.truncate(seg, new)
    return f"{seg.name} cut from {old} to {new} bytes"


def flip_middle(path: Path, rnd: random.Random, count: int = 64) -> str:
    """Invert ``count`` bytes somewhere in the middle half of the file."""
    size = path.stat().st_size
    count = min(count, size)
    at = rnd.randrange(size // 4, max(size // 4 + 1, 3 * size // 4 - count))
    with open(path, "r+b") as f:
        f.seek(at)
        data = f.read(count)
        f.seek(at)
        f.write(bytes(b ^ 0xFF for b in data))
    return f"{count} bytes inverted at {at} of {size}"


class Nemesis:
    """Injects one fault at a time and heals it before returning.  Several kinds come in two
    variants, drawn at random: the plain fault, and a compound one that takes other nodes
    down around it to reach the states the plain fault cannot (see each method)."""

    def __init__(self, cluster: Cluster, gate: Gate, history: History, rnd: random.Random,
                 cfg: NemesisConfig, net: Partitions | None = None) -> None:
        self.cluster, self.gate, self.history, self.rnd, self.cfg = cluster, gate, history, rnd, cfg
        self.net = net
        self.base_prefix = {n.id: list(n.prefix) for n in cluster.nodes}  # e.g. ip netns exec NS
        self.actions: dict[str, Callable[[Node], tuple[str, str]]] = {  # -> (nodes hit, detail)
            "kill": self.kill, "stop": self.stop, "wipe": self.wipe, "tail": self.tail,
            "snapshot": self.snapshot, "skew": self.skew, "partition": self.partition,
            CONTROL: self.lose_writes}
        self._skews_done = 0

    def step(self) -> Fault:
        kind = self.rnd.choice(self.cfg.kinds)
        victim = self.rnd.choice(self.cluster.nodes)
        start = self.history.now()
        self.gate.next_phase()
        phase = self.gate.phase
        try:
            hit, detail = self.actions[kind](victim)
        finally:
            self._thaw(self.cluster.nodes, new_phase=False)
            self.gate.next_phase()
        keys = f"k{phase}.*" if self.gate.phase == phase + 1 else f"k{phase}.* to k{self.gate.phase - 1}.*"
        fault = Fault(kind, hit, start, self.history.now(), f"{detail}; hot keys {keys}")
        self.history.add_fault(fault)
        return fault

    # --- building blocks ---------------------------------------------------------------
    def _peers(self, victim: Node) -> list[Node]:
        return [n for n in self.cluster.nodes if n is not victim]

    def _kill(self, victim: Node) -> None:
        kill_node(victim)
        self.gate.killed(victim.id)

    def _start(self, *nodes: Node, new_phase: bool = True) -> None:
        """Start nodes and wait until they answer; a new phase of hot keys begins before the
        writers may use them (what was written before the restart is not overwritten after
        it) unless the fault goes on."""
        for n in nodes:
            self.gate.close(n.id)
            n.start(wait=False)
        for n in nodes:
            try:
                n.wait_ready()
            except AssertionError as exc:
                raise NemesisError(f"{n.id} did not come back: {exc}") from None
        if new_phase:
            self.gate.next_phase()
        for n in nodes:
            self.gate.open(n.id)

    def _freeze(self, nodes: list[Node]) -> None:
        """SIGSTOP, with the writers sent elsewhere (what they had in flight waits)."""
        for n in nodes:
            self.gate.close(n.id)
            n.signal(signal.SIGSTOP)

    def _thaw(self, nodes: list[Node], new_phase: bool = True) -> None:
        """SIGCONT; a new phase of hot keys begins, as after a restart."""
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.signal(signal.SIGCONT)
            self.gate.open(n.id)
        if new_phase:
            self.gate.next_phase()

    def _hold(self, span: tuple[float, float]) -> float:
        seconds = self.rnd.uniform(*span)
        time.sleep(seconds)  # the length of the fault is the thing under test
        return seconds

    def _quiesce(self, victim: Node, holders: list[Node] | None = None) -> str:
        """Writers off ``victim``; wait until ``holders`` (default: every peer) hold every
        event it holds."""
        self.gate.quiesce(victim.id, timeout=30)
        holders = self._peers(victim) if holders is None else holders
        took = wait_replicated(victim, holders, self.cfg.replicate_timeout)
        return f"{','.join(h.id for h in holders)} held all its events after {took * 1000:.0f} ms"

    def _compound(self) -> bool:
        return len(self.cluster.nodes) >= 3 and self.rnd.random() < self.cfg.compound

    # --- the faults --------------------------------------------------------------------
    def kill(self, victim: Node) -> tuple[str, str]:
        """SIGKILL one node, or (one time in four) every node at once; restart."""
        nodes = self.cluster.nodes if self.rnd.random() < 0.25 else [victim]
        for n in nodes:
            self._kill(n)
        held = self._hold(self.cfg.hold)
        self._start(*nodes)
        return ",".join(n.id for n in nodes), f"down {held:.2f}s"

    def stop(self, victim: Node) -> tuple[str, str]:
        victim.signal(signal.SIGSTOP)
        try:
            held = self._hold(self.cfg.hold)
        finally:
            self._thaw([victim])
        return victim.id, f"stopped {held:.2f}s"

    def wipe(self, victim: Node) -> tuple[str, str]:
        quiet = self._quiesce(victim)
        self._kill(victim)
        shutil.rmtree(victim.data_dir, ignore_errors=True)
        self._start(victim)
        return victim.id, quiet

    def tail(self, victim: Node) -> tuple[str, str]:
        """Plain: every peer holds the victim's events and hears it restart.  Compound (issue
        9's first scenario): the other peers (laggards) are down while the victim's last
        events reach only one peer, the holder; the victim loses its log tail; the holder is
        stopped and the victim restarts with the laggards, hearing only peers that lack its
        last events, and takes writes; then the holder continues.  Nothing acknowledged may be
        lost: the holder had every event the victim acknowledged before the crash."""
        if not self._compound():
            quiet = self._quiesce(victim)
            self._kill(victim)
            cut = self._cut(victim)
            self._start(victim)
            return victim.id, f"{quiet}; {cut}"
        holder = self.rnd.choice(self._peers(victim))
        laggards = [n for n in self._peers(victim) if n is not holder]
        for n in laggards:
            self._kill(n)
        self._hold((0.3, 1.0))  # writes the laggards miss
        quiet = self._quiesce(victim, [holder])
        self._kill(victim)
        cut = self._cut(victim)
        self._freeze([holder])
        self._start(victim, *laggards, new_phase=False)
        held = self._hold(self.cfg.hold)
        self._thaw([holder])
        return victim.id, (f"{quiet}; {cut}; restarted with {','.join(n.id for n in laggards)} (down meanwhile) "
                           f"while {holder.id} was stopped; served without it {held:.2f}s")

    def _cut(self, victim: Node) -> str:
        seg = newest_segment(victim.data_dir)
        return cut_tail(seg, self.rnd) if seg is not None else "no log records to cut"

    def snapshot(self, victim: Node) -> tuple[str, str]:
        """The victim is a node that has a snapshot (waiting for one to be taken if none has)."""
        def with_snapshot() -> list[Node]:
            return [n for n in self.cluster.nodes if (n.data_dir / SNAPSHOT).exists()]
        try:
            victim = self.rnd.choice(wait_until(with_snapshot, timeout=20, interval=0.1, what="a snapshot"))
        except AssertionError:
            pass
        quiet = self._quiesce(victim)
        self._kill(victim)
        snap = victim.data_dir / SNAPSHOT
        damage = flip_middle(snap, self.rnd) if snap.exists() and snap.stat().st_size else "no snapshot yet"
        self._start(victim)
        return victim.id, f"{quiet}; {damage}"

    def skew(self, victim: Node) -> tuple[str, str]:
        """Plain: the victim runs on a skewed clock and takes writes.  Compound (issue 9's
        third scenario): one peer (``other``) is down while the victim runs skewed and takes
        writes, so it never hears that clock; then the victim and the rest are stopped and
        ``other`` restarts and takes writes alone, later in real time than the victim's."""
        assert self.cfg.faketime, "skew needs faketime"
        offset = self.cfg.skews[self._skews_done % len(self.cfg.skews)]
        self._skews_done += 1
        compound = self._compound()
        other = self.rnd.choice(self._peers(victim))
        rest = [n for n in self._peers(victim) if n is not other]
        if compound:
            self._kill(other)
        self._kill(victim)
        base = self.base_prefix[victim.id]
        victim.prefix = [*base, *_faketime_prefix(self.cfg.faketime, offset)]
        try:
            self._start(victim, new_phase=False)
            held = self._hold(self.cfg.skew_hold)
            if compound:
                self._freeze([victim, *rest])
                self._start(other, new_phase=False)
                self._hold(self.cfg.hold)
                self._thaw([victim, *rest])
            self._kill(victim)
        finally:
            victim.prefix = base
        self._start(victim)
        how = f"; then {other.id} (down meanwhile) restarted alone" if compound else ""
        return victim.id, f"clock {offset} for {held:.2f}s{how}"

    def partition(self, victim: Node) -> tuple[str, str]:
        assert self.net is not None, "partition needs network namespaces"
        others = self._peers(victim)
        cut = [victim, *(self.rnd.sample(others, 1) if len(self.cluster.nodes) >= 5 and self.rnd.random() < 0.5 else [])]
        self.net.cut(self.cluster, cut)
        try:
            held = self._hold(self.cfg.partition_hold)
        finally:
            self.net.heal()
            self.gate.next_phase()
        return ",".join(n.id for n in cut), f"each cut off the bus {held:.2f}s"

    def lose_writes(self, victim: Node) -> tuple[str, str]:
        """The control: every peer down while the victim alone acknowledges writes, then its
        data_dir wiped.  Those writes existed nowhere else, so a run with this fault must fail
        with lost writes; if it passes, the harness cannot see a loss."""
        peers = self._peers(victim)
        for n in peers:
            self._kill(n)
        held = self._hold((0.5, 1.0))
        self._kill(victim)
        shutil.rmtree(victim.data_dir, ignore_errors=True)
        self._start(victim, *peers)
        return victim.id, f"acknowledged writes alone for {held:.2f}s, then wiped"

    def revive(self, node: Node) -> None:
        """Start a node that died on its own again."""
        self.gate.killed(node.id)
        self._start(node)

    def heal_all(self) -> None:
        """Every node connected, running, not stopped, on the true clock, open to the writers."""
        if self.net is not None:
            self.net.heal()
        for node in self.cluster.nodes:
            if node.prefix != self.base_prefix[node.id]:
                self._kill(node)
                node.prefix = self.base_prefix[node.id]
        self._thaw(self.cluster.nodes)
        down = [n for n in self.cluster.nodes if n.proc is None or n.proc.poll() is not None]
        self._start(*down)


_FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                  "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                  "/usr/lib/faketime/libfaketime.so.1", "/usr/local/lib/faketime/libfaketime.so.1")


def _faketime_prefix(faketime: str, offset: str) -> list[str]:
    """Run a node with its wall clock moved by ``offset``.  libfaketime is preloaded directly
    where Debian puts it: the ``faketime`` wrapper keeps a semaphore and a shared-memory file
    named by its pid in /dev/shm, which a SIGKILL leaves behind, and once a pid comes round
    again the next wrapper fails to start ("sem_open") - a 10-minute run lost a node that
    way.  CLOCK_MONOTONIC stays real: a faked one makes Python's timed waits hang."""
    lib = next((p for p in _FAKETIME_LIBS if os.path.exists(p)), None)
    if lib is None:
        return [faketime, "--exclude-monotonic", "-f", offset]
    return ["env", f"LD_PRELOAD={lib}", f"FAKETIME={offset}", "FAKETIME_DONT_FAKE_MONOTONIC=1"]
