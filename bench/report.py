"""The report: machine facts, the result tables with PASS/MISS against targets, and JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.hop import HopResult, WakeResult
from bench.lag import LagResult
from bench.memory import MemoryResult
from bench.throughput import TESTS, BenchConfig, Summary

# (test, config name) -> (what is compared, op, limit).  Ratios are zkv / Redis.
THROUGHPUT_TARGETS: dict[tuple[str, str], tuple[str, str, float]] = {
    ("SET", "c50"): ("rps", ">=", 0.5),
    ("GET", "c50"): ("rps", ">=", 0.6),
    ("SET", "c50P16"): ("rps", ">=", 0.25),
    ("GET", "c50P16"): ("rps", ">=", 0.25),
    ("SET", "c1"): ("p50", "<=", 2.0),
    ("GET", "c1"): ("p50", "<=", 2.0),
}
LAG_P99_TARGET_MS = 10.0
MEMORY_RATIO_TARGET = 2.5


@dataclass
class Machine:
    date: str
    hostname: str
    nproc: int
    cpus_usable: int
    cpu_model: str
    kernel: str
    python: str
    redis: str
    loadavg_at_start: float  # 1-minute load average: other work on the machine skews everything
    cpu_busy_at_start: float  # fraction of all CPUs busy over 1 s just before starting anything


@dataclass
class Check:
    name: str
    value: float | None
    op: str
    limit: float

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.limit if self.op == ">=" else self.value <= self.limit

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (-1 if /proc/stat is unreadable)."""
    try:
        b0, t0 = _cpu_times()
        time.sleep(seconds)
        b1, t1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return -1.0
    return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def machine_info(redis_version: str) -> Machine:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = -1.0
    return Machine(datetime.now(timezone.utc).isoformat(timespec="seconds"), platform.node(),
                   os.cpu_count() or 0, usable, model, platform.release(),
                   sys.version.split()[0], redis_version, round(load1, 2), round(cpu_busy(), 3))


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


# --------------------------------------------------------------------------- tables


def throughput_checks(configs: list[BenchConfig], summaries: dict[str, dict[str, dict[str, Summary]]],
                      zkv: str, redis: str) -> list[Check]:
    checks: list[Check] = []
    if zkv not in summaries or redis not in summaries:
        return checks
    for cfg in configs:
        for test in TESTS:
            spec = THROUGHPUT_TARGETS.get((test, cfg.name))
            if not spec:
                continue
            what, op, limit = spec
            z, r = summaries[zkv][cfg.name][test], summaries[redis][cfg.name][test]
            val = ratio(z.rps, r.rps) if what == "rps" else ratio(z.p50_ms, r.p50_ms)
            name = f"{test} {cfg.label} {'ops/s' if what == 'rps' else 'p50 latency'} ratio"
            checks.append(Check(name, val, op, limit))
    return checks


def throughput_table(configs: list[BenchConfig], summaries: dict[str, dict[str, dict[str, Summary]]],
                     zkv: str, redis: str, repeats: int) -> list[str]:
    head = (f"{'test':<4} {'config':<10} {'n':>8} | {'zkv ops/s':>10} {'Redis ops/s':>11} {'ratio':>6} | "
            f"{'zkv p50':>8} {'Redis p50':>9} {'ratio':>6} | {'zkv p99':>8} {'Redis p99':>9} {'ratio':>6} | target")
    lines = [f"Throughput and latency (redis-benchmark -r 100000 -d 16, median of {repeats} interleaved runs; "
             "latency in ms; ratio = zkv/Redis)", head, "-" * len(head)]
    for cfg in configs:
        for test in TESTS:
            z, r = summaries[zkv][cfg.name][test], summaries[redis][cfg.name][test]
            target = ""
            spec = THROUGHPUT_TARGETS.get((test, cfg.name))
            if spec:
                what, op, limit = spec
                val = ratio(z.rps, r.rps) if what == "rps" else ratio(z.p50_ms, r.p50_ms)
                target = f"{'ops/s' if what == 'rps' else 'p50'} {op} {limit}x {Check('', val, op, limit).verdict}"
            lines.append(
                f"{test:<4} {cfg.label:<10} {cfg.requests:>8} | {fmt(z.rps, ',.0f'):>10} {fmt(r.rps, ',.0f'):>11} "
                f"{_x(ratio(z.rps, r.rps)):>6} | {fmt(z.p50_ms, '.3f'):>8} {fmt(r.p50_ms, '.3f'):>9} "
                f"{_x(ratio(z.p50_ms, r.p50_ms)):>6} | {fmt(z.p99_ms, '.3f'):>8} {fmt(r.p99_ms, '.3f'):>9} "
                f"{_x(ratio(z.p99_ms, r.p99_ms)):>6} | {target}")
    return lines


def bare_lines(configs: list[BenchConfig], summaries: dict[str, dict[str, dict[str, Summary]]],
               zkv: str, redis: str, bare: str) -> list[str]:
    """The calibration server (bench/bare.py) beside Redis and zkv: how far zkv is from what one
    Python process with a dict does here, and how far that is from Redis."""
    head = (f"{'test':<4} {'config':<10} | {'bare ops/s':>10} {'bare/Redis':>10} {'zkv/bare':>8} | "
            f"{'bare p50':>8} {'zkv/bare p50':>12}")
    lines = ["Calibration: a bare single-process Python server with a dict (bench/bare.py: uvloop if "
             "installed, zkv's parser, no store process, no log, no replicas), same runs",
             head, "-" * len(head)]
    for cfg in configs:
        for test in TESTS:
            b = summaries.get(bare, {}).get(cfg.name, {}).get(test)
            z = summaries.get(zkv, {}).get(cfg.name, {}).get(test)
            r = summaries.get(redis, {}).get(cfg.name, {}).get(test)
            if b is None or z is None or r is None:
                continue
            lines.append(f"{test:<4} {cfg.label:<10} | {fmt(b.rps, ',.0f'):>10} {_x(ratio(b.rps, r.rps)):>10} "
                         f"{_x(ratio(z.rps, b.rps)):>8} | {fmt(b.p50_ms, '.3f'):>8} "
                         f"{_x(ratio(z.p50_ms, b.p50_ms)):>12}")
    return lines


def hop_lines(hop: HopResult, summaries: dict[str, dict[str, dict[str, Summary]]],
              zkv: str, redis: str, wake: WakeResult | None = None) -> list[str]:
    """The -c1 floor: Redis's p50 plus one bare frontend<->store ZeroMQ round trip; and what a
    ZeroMQ message costs the CPU of a receiver that sleeps between messages."""
    lines = [f"Single-client floor (bench/hop.py): a bare pyzmq ipc round trip between two processes, "
             f"p50 {hop.p50_us:.0f} us, p99 {hop.p99_us:.0f} us"
             + (f" ERROR {hop.error}" if hop.error else "")]
    if wake is not None:
        lines.append(f"Receiver CPU per message, one every {wake.gap_ms:g} ms: ZeroMQ ipc {wake.zmq_us:.0f} us, "
                     f"plain Unix socket {wake.socket_us:.0f} us ({_x(ratio(wake.zmq_us, wake.socket_us))})"
                     + (f" ERROR {wake.error}" if wake.error else ""))
    if hop.error or zkv not in summaries or redis not in summaries or "c1" not in summaries[zkv]:
        return lines
    for test in TESTS:
        z, r = summaries[zkv]["c1"][test], summaries[redis]["c1"][test]
        if z.p50_ms is None or r.p50_ms is None:
            continue
        floor = r.p50_ms + hop.p50_us / 1000
        lines.append(f"  {test} -c1: floor = Redis p50 {r.p50_ms:.3f} + hop {hop.p50_us / 1000:.3f} = "
                     f"{floor:.3f} ms = {_x(ratio(floor, r.p50_ms))} Redis; zkv p50 {z.p50_ms:.3f} ms = "
                     f"{_x(ratio(z.p50_ms, floor))} the floor")
    return lines


def lag_table(lags: list[LagResult]) -> list[str]:
    lines = ["Replication lag (write reply on node A -> value served by node B; ms)",
             f"{'system':<22} {'samples':>7} {'timeouts':>8} {'p50':>8} {'p99':>8} {'max':>8} "
             f"{'bg load target':>14} {'achieved':>9} | target"]
    for lg in lags:
        target = ""
        if lg.target.startswith("zkv"):
            target = f"p99 <= {LAG_P99_TARGET_MS:g} ms {Check('', lg.p99_ms, '<=', LAG_P99_TARGET_MS).verdict}"
        achieved = lg.load.get("rate") if isinstance(lg.load.get("rate"), (int, float)) else None
        lines.append(f"{lg.target:<22} {lg.samples:>7} {lg.timeouts:>8} {fmt(lg.p50_ms, '.3f'):>8} "
                     f"{fmt(lg.p99_ms, '.3f'):>8} {fmt(lg.max_ms, '.3f'):>8} {lg.load_rate_target:>12,.0f}/s "
                     f"{fmt(achieved, ',.0f'):>7}/s | {target}")
        if lg.error:
            lines.append(f"    error: {lg.error}")
    return lines


def memory_table(mems: list[MemoryResult], zkv: str, redis: str) -> list[str]:
    lines = ["Memory per key (key:<i> + 16-byte value; growth over the empty node, writer node; "
             "node1 = the same on the node that got the keys by replication)",
             f"{'system':<22} {'keys':>9} {'bytes/key':>10} {'node1 b/key':>11} {'load s':>7} {'GET check':>9} | method"]
    for m in mems:
        reader = m.extra.get("reader_bytes_per_key")
        lines.append(f"{m.target:<22} {m.keys:>9,} {fmt(m.bytes_per_key, '.1f'):>10} {fmt(reader, '.1f'):>11} "
                     f"{m.load_seconds:>7.1f} {f'{m.keys_checked_ok}/{m.keys_checked}':>9} | {m.method}")
        if m.error:
            lines.append(f"    error: {m.error}")
    by = {m.target: m for m in mems}
    if zkv in by and redis in by:
        r = ratio(by[zkv].bytes_per_key, by[redis].bytes_per_key)
        lines.append(f"ratio zkv/Redis: {_x(r)}  | target <= {MEMORY_RATIO_TARGET}x "
                     f"{Check('', r, '<=', MEMORY_RATIO_TARGET).verdict}")
    return lines


def all_checks(configs: list[BenchConfig], summaries: dict[str, dict[str, dict[str, Summary]]],
               lags: list[LagResult], mems: list[MemoryResult], zkv: str, redis: str) -> list[Check]:
    checks = throughput_checks(configs, summaries, zkv, redis)
    for lg in lags:
        if lg.target == zkv:
            checks.append(Check("zkv replication lag p99 ms", lg.p99_ms, "<=", LAG_P99_TARGET_MS))
    by = {m.target: m for m in mems}
    if zkv in by and redis in by:
        checks.append(Check("memory/key ratio", ratio(by[zkv].bytes_per_key, by[redis].bytes_per_key),
                            "<=", MEMORY_RATIO_TARGET))
    return checks


def checks_table(checks: list[Check]) -> list[str]:
    lines = ["Targets"]
    for c in checks:
        lines.append(f"  {c.verdict:<4}  {c.name:<40} {fmt(c.value, '.3f'):>8} {c.op} {c.limit:g}")
    passed = sum(c.passed is True for c in checks)
    lines.append(f"  {passed}/{len(checks)} targets met")
    return lines


def machine_lines(m: Machine) -> list[str]:
    lines = [f"zkv vs Redis benchmark, {m.date}",
             f"machine: {m.hostname}, {m.nproc} CPUs ({m.cpus_usable} usable), {m.cpu_model}, "
             f"Linux {m.kernel}; Python {m.python}; Redis {m.redis}",
             f"before starting: CPUs {m.cpu_busy_at_start:.0%} busy, load average {m.loadavg_at_start:g}"]
    if m.cpu_busy_at_start > 0.25:
        lines.append("WARNING: something else was using the CPUs when the benchmark started; "
                     "figures may be skewed")
    return lines


# --------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        d = asdict(obj)
        if isinstance(obj, Check):
            d["passed"] = obj.passed
        return d
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(doc), indent=2, sort_keys=False) + "\n")
