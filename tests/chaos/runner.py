"""One chaos run, from cluster start to verdict: used by tests/chaos/test_chaos.py and bench/chaos.py.

This module owns the run's sequence and its report:

1. start an N-node cluster (``fsync = "everysec"``, frequent snapshots, a small backlog so that
   catch-up takes both pulls and full transfers);
2. run the writers (tests/chaos/workload.py) while the nemesis (tests/chaos/nemesis.py) injects
   one fault at a time, heals it, and pauses; a node that exits on its own is a crash;
3. stop the writers (each must end: a hung writer fails the run), heal everything, and wait
   until every node gives the same GET replies and ``zkv verify`` exits 0 (convergence time);
4. check the history against the final reads and the node logs (tests/chaos/checker.py);
5. print a summary; a failed run keeps its history (``history.jsonl``), its violations, node
   logs, configs and data directories in a directory it names.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos import tallies
from tests.chaos.checker import DEFAULT_SLACK, Verdict, Violation, check_finals, check_reads, scan_logs
from tests.chaos.history import FAIL, GET, OK, UNKNOWN, History
from tests.chaos.nemesis import Nemesis, NemesisConfig, NemesisError
from tests.chaos.netns import Partitions
from tests.chaos.workload import Gate, Workload, WorkloadConfig, all_keys
from tests.cluster.harness import Cluster, Node, wait_until

DEFAULT_SETTINGS: dict[str, Any] = {
    "fsync": "everysec", "heartbeat_ms": 100, "anti_entropy_ms": 300,
    "snapshot_records": 1000, "backlog": 2000,
}
DEFAULT_MAX_CLOCK_OFFSET_MS = 500


@dataclass
class RunConfig:
    nodes: int = 3
    seconds: float = 20.0  # of chaos (start, convergence and checks come on top)
    seed: int = 1
    nemesis: NemesisConfig = field(default_factory=NemesisConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    settings: dict[str, Any] = field(default_factory=dict)  # node config, over DEFAULT_SETTINGS
    pause: tuple[float, float] = (0.2, 1.0)  # seconds between faults
    converge_timeout: float = 60.0
    name: str = "chaos"

    @property
    def slack(self) -> float:
        """Operations closer than this count as concurrent: 50 ms, or the clock bound plus
        100 ms when clocks were skewed (a write may be stamped that far ahead)."""
        if "skew" not in self.nemesis.kinds:
            return DEFAULT_SLACK
        return self.settings.get("max_clock_offset_ms", DEFAULT_MAX_CLOCK_OFFSET_MS) / 1000 + 0.1


@dataclass
class RunResult:
    cfg: RunConfig
    history: History
    verdict: Verdict
    convergence: float | None  # seconds from heal to agreement, None if it never came
    verify_output: str
    elapsed: float
    root: Path
    kept: Path | None = None

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def summary(self) -> str:
        ops = self.history.ops
        res = Counter(o.result for o in ops)
        writes = sum(1 for o in ops if o.kind != GET)
        faults = Counter(f.kind for f in self.history.faults)
        v = self.verdict.counts()
        conv = f"{self.convergence:.2f}s" if self.convergence is not None else "never"
        lines = [
            f"{self.cfg.name}: {self.cfg.nodes} nodes, seed {self.cfg.seed}, {self.cfg.seconds:.0f}s of chaos "
            f"({', '.join(self.cfg.nemesis.kinds)}), {self.elapsed:.1f}s in all; t=0 at {self.history.wall(0.0)}",
            f"  ops {len(ops)} ({writes} writes): acknowledged {res[OK]}, refused {res[FAIL]}, indeterminate {res[UNKNOWN]}",
            f"  faults: {', '.join(f'{k} {n}' for k, n in sorted(faults.items())) or 'none'}",
            f"  convergence after healing: {conv}; slack {self.cfg.slack * 1000:.0f} ms",
            "  " + ", ".join(f"{k} {v[k]}" for k in ("lost", "resurrected", "divergent", "phantom", "crash"))
            + "".join(f", {k} {n}" for k, n in sorted(v.items())
                      if k not in ("lost", "resurrected", "divergent", "phantom", "crash")),
            f"  {'PASS' if self.ok else 'FAIL'}" + (f": history, violations and node logs kept in {self.kept}"
                                                     if self.kept else ""),
        ]
        return "\n".join(lines)

    def failure_report(self, limit: int = 15) -> str:
        return f"{self.summary()}\n{self.verdict.report(limit)}"


def read_all(node: Node, keys: list[str]) -> dict[str, str | None]:
    with node.client() as c:
        replies = c.pipeline([f"GET {k}".encode() for k in keys])
    out: dict[str, str | None] = {}
    for k, r in zip(keys, replies):
        if r.startswith(b"VALUE "):
            out[k] = r[6:].decode()
        elif r == b"NOT FOUND":
            out[k] = None
        else:
            raise AssertionError(f"{node.id}: GET {k} -> {r!r}")
    return out


def _agreed(cluster: Cluster, keys: list[str]) -> bool:
    reads = [read_all(n, keys) for n in cluster.nodes]
    return all(r == reads[0] for r in reads)


def converge(cluster: Cluster, keys: list[str], timeout: float,
             verify_prefix: list[str] | None = None) -> tuple[float | None, str]:
    """Wait until every node answers every key alike and ``zkv verify`` agrees; the seconds
    that took (None: not within ``timeout``) and verify's output."""
    t0 = time.monotonic()
    try:
        wait_until(lambda: _agreed(cluster, keys), timeout=timeout, interval=0.2,
                   what="every node to answer every key alike")
    except AssertionError:
        pass  # verify, below, says where they differ
    remaining = max(5.0, timeout - (time.monotonic() - t0))
    r = cluster.verify(timeout=remaining, prefix=verify_prefix)
    out = (r.stdout + r.stderr).strip()
    return (time.monotonic() - t0 if r.returncode == 0 else None), out


def _finals(cluster: Cluster, keys: list[str]) -> tuple[dict[str, dict[str, str | None]], list[Violation]]:
    finals, problems = {}, []
    for n in cluster.nodes:
        try:
            finals[n.id] = read_all(n, keys)
        except (OSError, ConnectionError, AssertionError) as exc:
            problems.append(Violation("unavailable", None, f"{n.id} could not be read after healing: {exc}"))
    return finals, problems


def _crashed(cluster: Cluster, history: History, nemesis: Nemesis) -> list[Violation]:
    """Nodes that exited on their own (the nemesis heals every fault it makes before returning)."""
    out = []
    for n in cluster.nodes:
        if n.proc is not None and n.proc.poll() is not None:
            out.append(Violation("crash", None, f"{n.id} exited with code {n.proc.returncode} at "
                                 f"{history.now():.3f}s, not by the nemesis"))
            nemesis.revive(n)
    return out


def _heal(cluster: Cluster, history: History, nemesis: Nemesis, aborted: bool) -> list[Violation]:
    """After the chaos: every node that died on its own is a crash (unless a fault was cut
    short: its nodes may be down by the nemesis's hand); then heal everything."""
    try:
        problems = [] if aborted else _crashed(cluster, history, nemesis)
        nemesis.heal_all()
    except NemesisError as exc:
        return [Violation("crash", None, f"could not heal: {exc}")]
    return problems


def _chaos(cfg: RunConfig, cluster: Cluster, history: History, gate: Gate,
           net: Partitions | None, tally: tallies.Tally) -> list[Violation]:
    rnd = random.Random(f"{cfg.seed}-nemesis")
    nemesis = Nemesis(cluster, gate, history, rnd, cfg.nemesis, net)
    workload = Workload(cluster, gate, history, cfg.workload, cfg.seed, cfg.seconds + 60, tally)
    problems: list[Violation] = []
    aborted = False
    history.start()
    workload.start()
    deadline = time.monotonic() + cfg.seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(rnd.uniform(*cfg.pause))  # the schedule: time between faults
            nemesis.step()
            problems += _crashed(cluster, history, nemesis)
    except NemesisError as exc:
        aborted = True
        problems.append(Violation("crash", None, f"run stopped at {history.now():.3f}s: {exc}"))
    except AssertionError as exc:  # a wait of the nemesis timed out (e.g. replication stalled)
        aborted = True
        problems.append(Violation("stalled", None, f"run stopped at {history.now():.3f}s: {exc}"))
    finally:
        hung = workload.finish(timeout=cfg.workload.op_timeout + 10)
        problems += [Violation("crash", None, f"writer {name} did not stop") for name in hung]
        problems += _heal(cluster, history, nemesis, aborted)
    return problems


def _largest_skew(cfg: RunConfig) -> float:
    """Seconds: the largest clock offset the run's nemesis may set (its ``skews``, if used)."""
    if "skew" not in cfg.nemesis.kinds:
        return 0.0
    return max(abs(float(s.rstrip("s"))) for s in cfg.nemesis.skews)


def _keep(result: RunResult, keep_root: Path | None) -> Path:
    if keep_root is None:
        return result.root
    dest = keep_root / f"{result.cfg.name}-n{result.cfg.nodes}-seed{result.cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(result.root, dest, dirs_exist_ok=True, ignore_dangling_symlinks=True)
    return dest


def run(cfg: RunConfig, root: Path, keep_root: Path | None = None, keep_always: bool = False,
        net: Partitions | None = None) -> RunResult:
    """One run in ``root``; on failure (or with ``keep_always``) everything is kept under
    ``keep_root`` (default: ``root`` itself).  With ``net`` the nodes run in its network
    namespaces (needed by the ``partition`` nemesis); the caller tears it down afterwards."""
    t_start = time.monotonic()
    history = History()
    cluster = Cluster(root, cfg.nodes, **{**DEFAULT_SETTINGS, **cfg.settings})
    problems: list[Violation] = []
    conv, verify_out, finals = None, "", {}
    if net is not None:
        net.place(cluster)
    tally = tallies.Tally()
    try:
        cluster.start()
        gate = Gate([n.id for n in cluster.nodes])
        problems += _chaos(cfg, cluster, history, gate, net, tally)
        keys = all_keys(cfg.workload, gate.phase) + tally.keys
        conv, verify_out = converge(cluster, keys, cfg.converge_timeout,
                                    net.verify_prefix if net is not None else None)
        if conv is None:
            problems.append(Violation("verify", None, f"no agreement {cfg.converge_timeout:.0f}s after healing; "
                                      f"zkv verify:\n{verify_out}"))
        finals, unreadable = _finals(cluster, keys)
        problems += unreadable
    except Exception as exc:  # noqa: BLE001 - the run's files are kept and the failure reported
        problems.append(Violation("harness", None, f"run aborted at {history.now():.3f}s: "
                                  f"{type(exc).__name__}: {exc}"))
    finally:
        if net is not None:
            net.heal()  # so the nodes' connections close cleanly before the namespaces go
        cluster.stop()
    logs = {n.id: n.log_path.read_text(errors="replace") if n.log_path.exists() else "" for n in cluster.nodes}
    violations = problems + scan_logs(logs) + check_finals(history.ops, finals, cfg.slack, history.faults) \
        + check_reads(history.ops) + tallies.check(tally, finals, tallies.now(), _largest_skew(cfg))
    result = RunResult(cfg, history, Verdict(violations), conv, verify_out, time.monotonic() - t_start, root)
    history.dump(root / "history.jsonl")
    (root / "violations.txt").write_text("\n".join(map(str, violations)) + "\n")
    (root / "finals.json").write_text(json.dumps(finals, indent=1, sort_keys=True))
    if not result.ok or keep_always:
        result.kept = _keep(result, keep_root)
    (result.kept or root).joinpath("summary.txt").write_text(result.summary() + "\n")
    return result
