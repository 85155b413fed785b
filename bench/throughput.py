"""Throughput and latency with redis-benchmark: run it, parse its ``--csv`` output, take medians.

redis-benchmark 7.x prints, with ``--csv``::

    "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    "SET","69783.67","0.414","0.128","0.375","0.639","1.023","2.935"

Latencies are per request as seen by the client (with ``-P`` they include the wait for the
whole pipeline batch).
"""

from __future__ import annotations

import csv
import io
import statistics
import subprocess
import time
from dataclasses import dataclass, field

from bench import procs

KEYSPACE = 100_000  # -r: keys key:000000000000 .. key:000000099999
VALUE_SIZE = 16  # -d
TESTS = ("SET", "GET", "INCR", "HSET", "SADD")


@dataclass(frozen=True)
class BenchConfig:
    """One redis-benchmark load shape."""

    name: str
    clients: int
    pipeline: int
    requests: int

    @property
    def label(self) -> str:
        return f"-c{self.clients} -P{self.pipeline}"


@dataclass(frozen=True)
class TestResult:
    """One line of redis-benchmark's CSV."""

    test: str
    rps: float
    avg_ms: float
    min_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class RunOutcome:
    """One redis-benchmark invocation against one target."""

    target: str
    config: str
    seconds: float
    results: dict[str, TestResult] = field(default_factory=dict)
    error: str = ""
    settle_seconds: float | None = None  # before the run: until every replica had caught up


def default_configs(scale: float) -> list[BenchConfig]:
    """The three load shapes; request counts sized for ~2-5 s per run on Redis at scale 1."""
    def n(base: int) -> int:
        return max(1000, int(base * scale))
    return [
        BenchConfig("c1", 1, 1, n(20_000)),
        BenchConfig("c50", 50, 1, n(100_000)),
        BenchConfig("c50P16", 50, 16, n(300_000)),
    ]


def benchmark_argv(host: str, port: int, cfg: BenchConfig, tests: str = "set,get,incr,hset,sadd") -> list[str]:
    return ["redis-benchmark", "-h", host, "-p", str(port), "-t", tests,
            "-n", str(cfg.requests), "-r", str(KEYSPACE), "-d", str(VALUE_SIZE),
            "-c", str(cfg.clients), "-P", str(cfg.pipeline), "--csv"]


def parse_csv(text: str) -> dict[str, TestResult]:
    """redis-benchmark ``--csv`` output -> ``{"SET": TestResult, ...}`` (unknown lines ignored)."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    out: dict[str, TestResult] = {}
    header: list[str] | None = None
    for row in rows:
        if row[0] == "test":
            header = row
            continue
        if header is None or len(row) != len(header):
            continue
        rec = dict(zip(header, row))
        try:
            out[rec["test"]] = TestResult(
                test=rec["test"], rps=float(rec["rps"]),
                avg_ms=float(rec["avg_latency_ms"]), min_ms=float(rec["min_latency_ms"]),
                p50_ms=float(rec["p50_latency_ms"]), p95_ms=float(rec["p95_latency_ms"]),
                p99_ms=float(rec["p99_latency_ms"]), max_ms=float(rec["max_latency_ms"]))
        except (KeyError, ValueError):
            continue
    return out


def run_once(target: str, host: str, port: int, cfg: BenchConfig, timeout: float) -> RunOutcome:
    """One redis-benchmark run; never raises for a failing target (the error is recorded)."""
    start = time.monotonic()
    try:
        cp = procs.run_capture(benchmark_argv(host, port, cfg), timeout=timeout)
    except subprocess.TimeoutExpired:
        return RunOutcome(target, cfg.name, time.monotonic() - start, error=f"timed out after {timeout:.0f}s")
    elapsed = time.monotonic() - start
    results = parse_csv(cp.stdout)
    missing = [t for t in TESTS if t not in results]
    error = ""
    if cp.returncode != 0 or missing:
        detail = (cp.stderr.strip() or cp.stdout.strip()).splitlines()[-3:]
        error = f"exit {cp.returncode}, missing {missing}: {' | '.join(detail)}"
    return RunOutcome(target, cfg.name, elapsed, results, error)


@dataclass
class Summary:
    """Medians over the repeated runs of one (target, config, test)."""

    runs: int
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    rps_all: list[float]


def summarize(outcomes: list[RunOutcome], test: str) -> Summary:
    rs = [o.results[test] for o in outcomes if test in o.results]
    if not rs:
        return Summary(0, None, None, None, [])
    return Summary(len(rs), statistics.median(r.rps for r in rs), statistics.median(r.p50_ms for r in rs),
                   statistics.median(r.p99_ms for r in rs), [r.rps for r in rs])
