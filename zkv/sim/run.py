"""One simulated run: a seeded schedule of client operations and overlapping faults, a heal, and
the checker; many runs; and the shrinking of a failing one to the faults it needs.

A schedule is drawn from the seed alone: the workload (SET, DELETE and GET on a handful of keys,
on random nodes) and a list of faults, each ``(time, kind, node, params)``.  Faults overlap at
random, and some come as compound templates that are known to be hard: a node restarted with
its clock behind while the others are paused; a node that writes alone past a snapshot, then
loses that snapshot; disk damage right after a crash, while peers have not caught up.  After the
active phase every fault is healed - all nodes up, links whole, clocks true - and the run waits
(in virtual time) until every replica holds the same data, then checks it (zkv.sim.checker).

``run(seed, keep=...)`` replays a seed with only some of its faults; ``shrink`` removes faults one
at a time while the run still fails, so a failure is reported with the short schedule that
shows it and a one-line command that replays it.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from zkv.sim.checker import Violation, check
from zkv.sim.world import SimError, World

KEYS = [b"k%d" % i for i in range(6)]
FAULT_KINDS = ("kill", "crash", "pause", "partition", "oneway", "lossy", "skew", "jump", "drift",
               "damage", "full", "behind_alone", "alone_lost_snapshot")
# One schedule in three also has an admitted peer that lies for a while (zkv.sim.liar), drawn
# apart from these.
LIAR_SHARE = 1 / 3
# Heartbeat periods drawn per schedule: the default, and half of it (drawn apart too).
HEARTBEATS_MS = (100, 200)
# One schedule in four also has a node that crash-loops: killed and restarted several times in
# a row, each start a new incarnation, writing in between (drawn apart too).  Every finished
# incarnation must be folded out of the vectors once healed (zkv.replication.folds).
CRASH_LOOP_SHARE = 1 / 4
# ("rot", keys vanishing from a replica's memory, is not drawn: a key lost silently below the
# tombstone horizon reads as deleted and cannot be repaired; tests/sim/test_scenarios.py runs it
# where anti-entropy can repair it.)


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str
    node: str
    seconds: float
    amount: float = 0.0  # ms of clock offset, loss probability, ...
    other: str = ""  # a second node, or the kind of damage

    def __str__(self) -> str:
        extra = f" {self.amount:+.0f}" if self.amount else ""
        return f"{self.at:6.2f}s {self.kind} {self.node}{' ' + self.other if self.other else ''} {self.seconds:.2f}s{extra}"


@dataclass
class Result:
    seed: int
    faults: list[Fault]
    violations: list[str] = field(default_factory=list)
    ops: int = 0
    acked: int = 0
    converged_after: float = 0.0
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def draw_faults(rng: random.Random, ids: list[str], active: float, count: int) -> list[Fault]:
    out = []
    for _ in range(count):
        at = rng.uniform(0.3, active - 0.5)
        kind = rng.choice(FAULT_KINDS)
        node = rng.choice(ids)
        other = rng.choice([i for i in ids if i != node])
        # most faults are short; some nodes stay down long enough for the others' tombstone
        # horizon to jump when they return
        seconds = rng.uniform(0.1, 2.5) if rng.random() < 0.8 else rng.uniform(3.0, 7.0)
        amount = 0.0
        if kind in ("skew", "jump"):
            amount = rng.choice([-1, 1]) * rng.choice([100, 400, 900, 3000, 8000])
        elif kind == "behind_alone":
            amount = -rng.choice([700, 1500, 3000, 6000])
        elif kind == "drift":
            amount = rng.choice([-1, 1]) * rng.choice([20, 100, 400])  # ms per second
        elif kind == "lossy":
            amount = rng.choice([0.2, 0.5, 1.0])
        elif kind == "damage":
            other = rng.choice(["snapshot", "segment", "wipe"])
        out.append(Fault(round(at, 3), kind, node, round(seconds, 3), amount, other))
    return sorted(out, key=lambda f: f.at)


def _apply(w: World, f: Fault) -> None:
    """Start a fault; its end is scheduled on the world's queue."""
    ids = sorted(w.nodes)
    n = f.node
    if f.kind == "kill" or f.kind == "crash":
        w.crash(n, machine=f.kind == "crash")
        w.at(w.t + f.seconds, w.start, n)
    elif f.kind == "pause":
        w.pause(n, f.seconds)
    elif f.kind == "partition":
        side = {n}
        pairs = {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
        w.partition(pairs, f.seconds)
    elif f.kind == "oneway":
        w.partition({(n, f.other)}, f.seconds)
    elif f.kind == "lossy":
        for p in ids:
            if p != n:
                w.lossy[(n, p)] = f.amount
        w.at(w.t + f.seconds, _unlossy, w, n)
    elif f.kind == "skew":  # restart under a skewed clock
        w.crash(n)
        w.set_clock(n, f.amount)
        w.at(w.t + f.seconds, w.start, n)
    elif f.kind == "jump":
        w.set_clock(n, w.nodes[n].offset_ms + f.amount)
    elif f.kind == "drift":
        w.set_clock(n, w.nodes[n].offset_ms, f.amount)
    elif f.kind == "damage":  # a crash, damage before any peer caught up, a restart later
        w.crash(n, machine=True)
        w.damage(n, f.other)
        w.at(w.t + f.seconds, w.start, n)
    elif f.kind == "rot":  # memory that lied: keys vanish from one replica; anti-entropy repairs
        # another node is down meanwhile: no horizon moves, so the loss stays repairable (a key
        # lost silently below the horizon reads as deleted: docs/guarantees.md)
        w.crash(f.other)
        w.rot(n, 1 + int(f.seconds))
        w.at(w.t + f.seconds, w.start, f.other)
    elif f.kind == "full":
        w.nodes[n].disk.full = True
        w.note(f"disk full on {n} for {f.seconds:.2f}s")
        w.at(w.t + f.seconds, _disk_room, w, n)
    elif f.kind == "behind_alone":
        # the others pause; n restarts with its clock behind, serves alone, then all resume
        for p in ids:
            if p != n:
                w.pause(p, f.seconds + 1.0)
        w.crash(n)
        w.set_clock(n, f.amount)
        w.at(w.t + 0.05, w.start, n)
        w.at(w.t + f.seconds + 1.0, _restart_true, w, n)
    elif f.kind == "liar":
        w.liars[n] = w.t + f.seconds
        w.note(f"{n} lies for {f.seconds:.2f}s")
    elif f.kind == "crash_loop":  # amount restarts, f.seconds apart, the last one left up
        for i in range(int(f.amount)):
            w.at(w.t + i * f.seconds, w.crash, n)
            w.at(w.t + i * f.seconds + f.seconds / 2, w.start, n)
    elif f.kind == "alone_lost_snapshot":
        # the others stop; n writes alone past a snapshot; n crashes and loses that snapshot;
        # the others come back first, then n
        others = [p for p in ids if p != n]
        for p in others:
            w.crash(p)
        w.at(w.t + f.seconds, _lose_snapshot, w, n, others)


def _unlossy(w: World, n: str) -> None:
    for k in [k for k in w.lossy if k[0] == n]:
        del w.lossy[k]


def _disk_room(w: World, n: str) -> None:
    w.nodes[n].disk.full = False


def _restart_true(w: World, n: str) -> None:
    w.crash(n)
    w.set_clock(n, 0.0)
    w.at(w.t + 0.05, w.start, n)


def _lose_snapshot(w: World, n: str, others: list[str]) -> None:
    w.crash(n)
    w.damage(n, "snapshot")
    for p in others:
        w.start(p)
    w.at(w.t + 0.5, w.start, n)


def run(seed: int, keep: set[int] | None = None, nodes: int = 0, active: float = 8.0,
        faults: int = 4, root: Path | None = None, heartbeat_ms: int = 0,
        counters: bool = True, expiry: bool = True, collections: bool = True) -> Result:
    """One schedule; ``keep``: indices of the seed's faults to apply (all if None); ``nodes``
    0: three, or five for every third seed; ``heartbeat_ms`` 0: drawn per seed, 100 or the
    default 200 (every timer but anti-entropy's follows it); ``counters``, ``expiry``: the
    workload also has counters, and keys that expire; ``collections``: hashes and sets (older
    regressions replay without)."""
    if nodes == 0:
        nodes = 5 if seed % 3 == 0 else 3
    rng = random.Random(seed)
    ids = [f"n{i}" for i in range(nodes)]
    drawn = draw_faults(random.Random(rng.getrandbits(64)), ids, active, faults)
    workload = random.Random(rng.getrandbits(64))
    world_seed = rng.getrandbits(64)
    liar = random.Random(rng.getrandbits(64))  # drawn last: the other draws stay as they were
    if liar.random() < LIAR_SHARE:  # (appended, so the other faults keep their indices)
        drawn.append(Fault(round(liar.uniform(0.3, active - 1.0), 3), "liar", liar.choice(ids),
                           round(liar.uniform(1.0, 5.0), 3)))
    hb_draw = random.Random(rng.getrandbits(64)).choice(HEARTBEATS_MS)
    heartbeat_ms = heartbeat_ms or hb_draw
    loop = random.Random(rng.getrandbits(64))  # drawn after the others: they stay as they were
    counting = random.Random(rng.getrandbits(64))  # (likewise)
    expiring = random.Random(rng.getrandbits(64))  # (likewise)
    grouping = random.Random(rng.getrandbits(64))  # (likewise)
    if loop.random() < CRASH_LOOP_SHARE:
        drawn.append(Fault(round(loop.uniform(0.3, active - 2.0), 3), "crash_loop", loop.choice(ids),
                           round(loop.uniform(0.1, 0.5), 3), float(loop.randint(3, 12))))
    chosen = [f for i, f in enumerate(drawn) if keep is None or i in keep]
    tmp = Path(tempfile.mkdtemp(prefix="zkv-sim-", dir=root or _scratch()))
    result = Result(seed, chosen)
    try:
        w = World(world_seed, tmp, nodes=nodes, heartbeat_ms=heartbeat_ms)
        for i in ids:
            w.at(0.0, w.start, i)
        # Bursts of operations with quiet spells between them: a node's log then ends well
        # before its last heartbeat, which is when a clock that went back can hurt.
        t = 0.05
        while t < active:
            end = t + workload.uniform(0.2, 1.5)
            while t < end:
                _schedule_op(w, workload, t, workload.choice(ids))
                t += workload.uniform(0.002, 0.04)
            t += workload.choice([0.0, 0.0, 0.5, 2.0, 4.0])
        if counters:
            t = 0.1
            while t < active:  # INCRs of two counters, now and then a SET or DEL of one
                _schedule_counter_op(w, counting, t, counting.choice(ids))
                t += counting.uniform(0.01, 0.12)
        if expiry:
            t = 0.1
            while t < active:  # SETs with and without PX, EXPIREs, PERSISTs, DELs of two keys
                _schedule_expiry_op(w, expiring, t, expiring.choice(ids))
                t += expiring.uniform(0.02, 0.2)
            for i in range(3):  # and a key set to expire, then left alone: reclaimed, then INCRs
                node = expiring.choice(ids)
                w.at(0.2 + i * 0.1, _op, w, node, "setpx", b"r%d" % i, (b"5", expiring.choice([100, 600])))
                for k in range(4):
                    w.at(expiring.uniform(1.0, active), _op, w, expiring.choice(ids), "incr", b"r%d" % i, 1)
        if collections:
            t = 0.1
            while t < active:  # HSET, HDEL, HINCRBY of two hashes, SADD, SREM of two sets, DELs
                _schedule_collection_op(w, grouping, t, grouping.choice(ids))
                t += grouping.uniform(0.01, 0.1)
        for f in chosen:
            w.at(f.at, _apply, w, f)
            if f.kind in ("behind_alone", "alone_lost_snapshot"):  # the node works alone
                start = f.at + 0.7
                count = 8 if f.kind == "behind_alone" else 110
                for i in range(count):
                    _schedule_op(w, workload, start + i * 0.008, f.node)
        try:
            w.run_until(active + 3.0)  # the last faults end (at most 2.5 s, plus a restart)
            _heal(w)
            t0 = w.t
            if not w.run_until(w.t + 60.0, stop=lambda: _converged(w)):
                result.violations.append("not converged 60 s (virtual) after healing: "
                                         + _state_line(w))
            result.converged_after = w.t - t0
            if not result.violations:
                result.violations += [str(v) for v in check(w.ops, *w.final_state(), now_ms=w.true_wall())]
        except SimError as exc:
            result.violations.append(str(exc))
        result.ops = len(w.ops)
        result.acked = sum(1 for op in w.ops if op.result == "ok")
        result.trace = w.trace
        for n in w.nodes.values():
            if n.up:
                n.disk.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _schedule_op(w: World, rng: random.Random, t: float, node: str) -> None:
    """A SET (half), DELETE (a quarter) or GET of one of a few keys, on ``node`` at ``t``."""
    r = rng.random()
    key = rng.choice(KEYS)
    if r < 0.5:
        w.at(t, _op, w, node, "set", key, b"v%d" % rng.getrandbits(48))
    elif r < 0.75:
        w.at(t, _op, w, node, "del", key, None)
    else:
        w.at(t, _op, w, node, "get", key, None)


COUNTER_KEYS = [b"c0", b"c1"]


def _schedule_counter_op(w: World, rng: random.Random, t: float, node: str) -> None:
    """An INCRBY of a small step (most), or a SET of a number or a DEL, of a counter key."""
    r = rng.random()
    key = rng.choice(COUNTER_KEYS)
    if r < 0.85:
        w.at(t, _op, w, node, "incr", key, rng.choice([1, 1, 1, 2, 5, -1]))
    elif r < 0.93:
        w.at(t, _op, w, node, "set", key, b"%d" % rng.randint(-5, 100))
    else:
        w.at(t, _op, w, node, "del", key, None)


EXPIRY_KEYS = [b"e0", b"e1"]


def _schedule_expiry_op(w: World, rng: random.Random, t: float, node: str) -> None:
    """A SET with PX (short or long), a plain SET, a PEXPIRE (some already past), a PERSIST, a
    DEL, an INCR (a counter that expires) or a GET of a key that expires."""
    r = rng.random()
    key = rng.choice(EXPIRY_KEYS)
    if r < 0.12:
        w.at(t, _op, w, node, "incr", key, rng.choice([1, 1, 2]))
        return
    r = rng.random()
    if r < 0.3:
        w.at(t, _op, w, node, "setpx", key, (b"x%d" % rng.getrandbits(32), rng.choice([50, 300, 1000, 4000])))
    elif r < 0.45:
        w.at(t, _op, w, node, "set", key, b"p%d" % rng.getrandbits(32))
    elif r < 0.65:
        w.at(t, _op, w, node, "pexpire", key, rng.choice([-1, 100, 500, 2000, 60_000]))
    elif r < 0.75:
        w.at(t, _op, w, node, "persist", key, None)
    elif r < 0.85:
        w.at(t, _op, w, node, "del", key, None)
    else:
        w.at(t, _op, w, node, "get", key, None)


HASH_KEYS, SET_KEYS = [b"h0", b"h1"], [b"s0", b"s1"]
FIELDS, MEMBERS = [b"f0", b"f1", b"f2"], [b"m0", b"m1", b"m2"]


def _schedule_collection_op(w: World, rng: random.Random, t: float, node: str) -> None:
    """An HSET, HDEL or HINCRBY of a few fields of a hash, an SADD or SREM of a few members of a
    set, or a DEL of the whole hash or set (which removes what that node holds)."""
    r = rng.random()
    if rng.random() < 0.5:
        key = rng.choice(HASH_KEYS)
        if r < 0.4:
            w.at(t, _op, w, node, "hset", key, (rng.choice(FIELDS), b"v%d" % rng.getrandbits(32)))
        elif r < 0.6:
            w.at(t, _op, w, node, "hdel", key, rng.choice(FIELDS))
        elif r < 0.93:
            w.at(t, _op, w, node, "hincr", key, (b"n", rng.choice([1, 1, 2, -1])))
        else:
            w.at(t, _op, w, node, "del", key, None)
        return
    key = rng.choice(SET_KEYS)
    if r < 0.55:
        w.at(t, _op, w, node, "sadd", key, rng.choice(MEMBERS))
    elif r < 0.93:
        w.at(t, _op, w, node, "srem", key, rng.choice(MEMBERS))
    else:
        w.at(t, _op, w, node, "del", key, None)


def _op(w: World, node: str, kind: str, key: bytes, value: bytes | int | None) -> None:
    w.client_op(node, kind, key, value)


def _heal(w: World) -> None:
    w.note("heal")
    w.cut.clear()
    w.lossy.clear()
    w.liars.clear()
    for n in w.nodes.values():
        n.disk.full = False
        n.paused_until = 0.0
        if n.offset_ms or n.drift:
            w.set_clock(n.id, 0.0)
        if not n.up:
            w.start(n.id)


def _converged(w: World) -> bool:
    reps = [n.replica for n in w.nodes.values()]
    if any(r is None for r in reps):
        return False
    first = reps[0]
    current = {r.origin for r in reps}
    for r in reps:
        if (r.inbox.vv != first.inbox.vv or r.ks.digest() != first.ks.digest() or r.sync is not None
                or r.held_back or r.inbox.pending_bytes or r.refuse_writes
                or r.folds.digest != first.folds.digest
                or r.wire_vv() != {o: s for o, s in r.inbox.vv.items() if o in current}):
            return False  # (every finished incarnation folded: vectors name the live ones only)
    return True


def _state_line(w: World) -> str:
    parts = []
    for n in w.nodes.values():
        r = n.replica
        if r is None:
            parts.append(f"{n.id}: down")
        else:
            parts.append(f"{n.id}: vv={r.inbox.vv} wire={sorted(r.wire_vv())} folds={r.folds.digest} "
                         f"keys={len(r.ks)} digest={r.ks.digest().hex()[:8]} "
                         f"sync={r.sync is not None} held={sorted(r.held_back)} pending={r.inbox.pending_bytes} "
                         f"refusing={bool(r.refuse_writes)}")
    return "; ".join(parts)


def shrink(seed: int, result: Result, **kw: object) -> Result:
    """Drop faults one at a time while the run still fails; the smallest failing schedule."""
    n = len(draw_faults(random.Random(random.Random(seed).getrandbits(64)),
                        [f"n{i}" for i in range(int(kw.get("nodes", 0)) or (5 if seed % 3 == 0 else 3))],  # type: ignore[arg-type]
                        float(kw.get("active", 8.0)), int(kw.get("faults", 4))))  # type: ignore[arg-type]
    keep = set(range(n))
    best = result
    changed = True
    while changed:
        changed = False
        for i in sorted(keep):
            trial = run(seed, keep - {i}, **kw)  # type: ignore[arg-type]
            if not trial.ok:
                keep -= {i}
                best = trial
                best.faults = trial.faults
                changed = True
    best.trace.insert(0, f"kept faults {sorted(keep)}")
    return best


def replay_command(seed: int, result: Result, kw: dict) -> str:
    keep = result.trace[0].split("kept faults ")[-1] if result.trace and result.trace[0].startswith("kept") else ""
    extra = "".join(f" --{k} {v}" for k, v in kw.items())
    keep_arg = f" --keep '{keep.strip('[]')}'" if keep else ""
    hashseed = os.environ.get("PYTHONHASHSEED")
    prefix = f"PYTHONHASHSEED={hashseed} " if hashseed else ""
    return f"{prefix}zkv sim --seed {seed}{keep_arg}{extra}"


def _scratch() -> str | None:
    """Memory-backed storage for the simulated disks, where there is some."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


def _many_one(seeds: range, seconds: float | None, kw: dict) -> tuple[int, list[Result]]:
    t0 = time.monotonic()
    fails = []
    done = 0
    for s in seeds:
        if seconds is not None and time.monotonic() - t0 > seconds:
            break
        r = run(s, **kw)
        done += 1
        if not r.ok:
            r.trace = r.trace[-200:]
            fails.append(r)
    return done, fails


def many(seeds: range, seconds: float | None = None, workers: int = 1,
         **kw: object) -> tuple[int, list[Result], float]:
    """Run seeds until done (or ``seconds`` passed), in ``workers`` processes (each takes every
    ``workers``-th seed); returns (runs, failures, seconds)."""
    t0 = time.monotonic()
    if workers <= 1:
        done, fails = _many_one(seeds, seconds, kw)
        return done, fails, time.monotonic() - t0
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        parts = pool.starmap(_many_one, [(seeds[i::workers], seconds, kw) for i in range(workers)])
    done = sum(p[0] for p in parts)
    fails = sorted((f for p in parts for f in p[1]), key=lambda r: r.seed)
    return done, fails, time.monotonic() - t0


__all__ = ["Fault", "Result", "Violation", "run", "many", "shrink", "replay_command"]
