"""Benchmark zkv against Redis on this machine, in one command.

    .venv/bin/python bench/run.py            # full run, about 5 minutes
    .venv/bin/python bench/run.py --quick    # about 1 minute, no memory step
    .venv/bin/python bench/run.py --dry-run  # both sides Redis: checks the harness itself

It installs Redis if missing (``bin/install-redis``), starts a Redis master with two replicas and
a three-node zkv cluster on free 127.0.0.1 ports in a temp dir, and measures on both:

1. throughput and latency with ``redis-benchmark`` (SET and GET at -c1 -P1, -c50 -P1 and
   -c50 -P16), each configuration repeated and interleaved Redis/zkv, medians reported;
2. replication lag, write on node A to read on node B, under a background write load of half
   zkv's measured SET rate;
3. memory per key after loading 1,000,000 keys into fresh clusters;
4. the single-client floor: one bare pyzmq round trip between two processes (``bench/hop.py``),
   which every zkv request pays on top of what Redis's whole request costs, and the CPU one
   ZeroMQ message costs a process that sleeps between messages, next to a plain socket's;
5. the issue's calibration point: a bare single-process Python server with a dict
   (``bench/bare.py``), run through the same redis-benchmark configurations, interleaved with the
   other two, so zkv's rates can be read as a fraction of what Python alone does here.

It prints a table with PASS/MISS against the targets and writes the same as JSON to
``bench/results/<timestamp>.json`` (or ``--json PATH``).  Progress goes to stderr.  Every
process it starts is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import clusters, hop, lag, loader, memory, procs, report, throughput  # noqa: E402
from bench.clusters import Cluster, StartupError  # noqa: E402
from bench.resp import ProtocolError  # noqa: E402
from bench.throughput import BenchConfig, RunOutcome, Summary  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTALL_REDIS = REPO_ROOT / "bin" / "install-redis"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
REDIS_LABEL = "Redis"
BARE_LABEL = "bare Python"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Benchmark zkv against Redis (see bench/README.md).")
    ap.add_argument("--quick", action="store_true",
                    help="~1 minute: 2 repeats, --scale 0.5, 200 lag samples, no memory step")
    ap.add_argument("--repeats", type=int, default=None, help="runs per configuration (default 3)")
    ap.add_argument("--scale", type=float, default=None,
                    help="multiply redis-benchmark request counts (default 1.0: 20k, 100k, 300k)")
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                    help="run the memory-per-key step (default on, off under --quick)")
    ap.add_argument("--memory-keys", type=int, default=1_000_000)
    ap.add_argument("--lag-samples", type=int, default=None, help="lag samples (default 500)")
    ap.add_argument("--lag-load-rate", type=float, default=None,
                    help="background SET/s on node A while sampling lag (0 = no load; default: half "
                         "of zkv's measured SET -c50 rate, or 5000 when throughput is skipped)")
    ap.add_argument("--skip-throughput", action="store_true", help="skip the redis-benchmark runs")
    ap.add_argument("--skip-lag", action="store_true", help="skip the replication-lag step")
    ap.add_argument("--run-timeout", type=float, default=180.0,
                    help="seconds before one redis-benchmark run is killed and counted as failed")
    ap.add_argument("--bare", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the bare single-process Python server (bench/bare.py) through "
                         "the throughput step, as a calibration point (default on)")
    ap.add_argument("--dry-run", action="store_true",
                    help="stand a second Redis master+2 replicas in for zkv (tests the harness)")
    ap.add_argument("--zkv-cmd", default=clusters.DEFAULT_ZKV_CMD,
                    help="node command; {python} and {config} are substituted (default: %(default)s)")
    ap.add_argument("--zkv-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config setting for every zkv node, as TOML (repeatable), e.g. "
                         "--zkv-set read_cache_mb=0")
    ap.add_argument("--start-timeout", type=float, default=60.0, help="seconds for a cluster to come up")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON here instead of bench/results/")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--no-install", action="store_true", help="do not run bin/install-redis")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any target is missed")
    args = ap.parse_args(argv)
    for kv in args.zkv_set:
        if "=" not in kv:
            ap.error(f"--zkv-set wants KEY=VALUE, got {kv!r}")
    quick = args.quick
    args.repeats = args.repeats or (2 if quick else 3)
    args.scale = args.scale or (0.5 if quick else 1.0)
    args.memory = (not quick) if args.memory is None else args.memory
    args.lag_samples = args.lag_samples or (200 if quick else 500)
    return args


# --------------------------------------------------------------------------- steps


def ensure_redis(no_install: bool) -> None:
    if not no_install:
        subprocess.run(["bash", str(INSTALL_REDIS)], check=True, stdout=sys.stderr)
    missing = [b for b in ("redis-server", "redis-benchmark") if shutil.which(b) is None]
    if missing:
        raise SystemExit(f"bench: {', '.join(missing)} not found (run bin/install-redis)")


def start_pair(tmp: Path, args: argparse.Namespace, tag: str) -> tuple[Cluster, Cluster]:
    """Start Redis (master + 2 replicas) and zkv (3 nodes, or Redis again under --dry-run)."""
    log(f"starting Redis master + 2 replicas ({tag})")
    redis = clusters.start_redis(tmp / f"redis-{tag}", deadline_s=args.start_timeout)
    log(f"  Redis up: {', '.join(n.addr for n in redis.nodes)}")
    try:
        if args.dry_run:
            log(f"starting a second Redis standing in for zkv ({tag}, --dry-run)")
            zkv = clusters.start_redis(tmp / f"zkv-{tag}", label="zkv (dry run: Redis)", kind="zkv",
                                       memory_mode="rss", deadline_s=args.start_timeout)
        else:
            log(f"starting zkv, 3 nodes ({tag}): {args.zkv_cmd}")
            zkv = clusters.start_zkv(tmp / f"zkv-{tag}", args.zkv_cmd, deadline_s=args.start_timeout,
                                     settings=[f"{k.strip()} = {v.strip()}" for k, _, v in
                                               (kv.partition("=") for kv in args.zkv_set)])
        log(f"  zkv up: {', '.join(n.addr for n in zkv.nodes)}")
    except BaseException:
        redis.stop()
        raise
    return redis, zkv


def warm_keyspace(cluster: Cluster) -> None:
    """Give every redis-benchmark key (key:%012d, n < 100000) a value, so GETs hit on both sides,
    then read each once where the benchmark runs, as a steady read load would have (this fills
    zkv's frontend read cache; for Redis it is one more pass over its dict)."""
    res = loader.load_keys(cluster.writer.host, cluster.writer.port, throughput.KEYSPACE,
                           "key:%012d", throughput.VALUE_SIZE)
    read_s = loader.read_keys(cluster.writer.host, cluster.writer.port, throughput.KEYSPACE, "key:%012d")
    log(f"  {cluster.label}: warmed {res.keys:,} keys in {res.seconds:.1f}s ({res.rate:,.0f}/s), "
        f"read them in {read_s:.1f}s"
        + (f", {res.errors} errors (first: {res.first_error})" if res.errors else ""))


def settle_replicas(cluster: Cluster, deadline_s: float = 120.0) -> float | None:
    """Wait until every replica has applied all earlier writes (a marker key reaches them all).

    So each run starts with idle replicas instead of ones still applying the previous run's
    writes.  Returns the seconds it took, or None if they did not catch up within the deadline.
    """
    try:
        return clusters.wait_replicated(cluster, deadline_s)
    except (StartupError, OSError, ProtocolError) as e:
        log(f"  {cluster.label}: replicas did not catch up: {e}")
        return None


def run_throughput(systems: list[Cluster], configs: list[BenchConfig], repeats: int,
                   timeout: float, outcomes: list[RunOutcome]) -> None:
    """Run every config ``repeats`` times, the systems interleaved; append to ``outcomes``."""
    systems = list(systems)  # the calibration server may drop out; the caller's list stays whole
    warmup = BenchConfig("warmup", 50, 1, max(1000, min(cfg.requests for cfg in configs)))
    for cl in systems:
        o = throughput.run_once(cl.label, cl.writer.host, cl.writer.port, warmup, timeout)
        log(f"  warm-up run {cl.label}: {o.seconds:.1f}s" + (f" ERROR {o.error}" if o.error else ""))
    for cfg in configs:
        for rep in range(repeats):
            for cl in list(systems):
                if cl.kind == "bare" and not all(c.alive() for c in cl.children()):
                    log(f"  {cl.label} exited; the runs go on without it")  # a side figure only
                    systems.remove(cl)
                    continue
                cl.check_alive()
                settle = settle_replicas(cl)
                o = throughput.run_once(cl.label, cl.writer.host, cl.writer.port, cfg, timeout)
                o.settle_seconds = settle
                outcomes.append(o)
                figures = "  ".join(f"{t} {r.rps:,.0f}/s p50 {r.p50_ms:.3f}ms" for t, r in o.results.items())
                log(f"  {cfg.label} run {rep + 1}/{repeats} {cl.label}: {figures} ({o.seconds:.1f}s; "
                    f"replicas caught up {report.fmt(settle, '.2f')}s before it)"
                    + (f" ERROR {o.error}" if o.error else ""))


def summarize(outcomes: list[RunOutcome], configs: list[BenchConfig],
              labels: tuple[str, ...]) -> dict[str, dict[str, dict[str, Summary]]]:
    """label -> config name -> test -> medians (from whatever runs completed)."""
    return {label: {cfg.name: {t: throughput.summarize([o for o in outcomes if o.target == label
                                                        and o.config == cfg.name], t)
                               for t in throughput.TESTS}
                    for cfg in configs}
            for label in labels}


def half_max_write_rate(outcomes: list[RunOutcome], zkv_label: str) -> float:
    """The issue's "moderate load" for the lag step: half of zkv's median SET -c50 rate."""
    s = throughput.summarize([o for o in outcomes if o.target == zkv_label and o.config == "c50"], "SET")
    return round(s.rps / 2, -2) if s.rps else 5000.0


def run_lag(redis: Cluster, zkv: Cluster, args: argparse.Namespace, tmp: Path,
            out: list[lag.LagResult]) -> None:
    for cl in (redis, zkv):
        cl.check_alive()
        res = lag.measure(cl, args.lag_samples, args.lag_load_rate, tmp)
        log(f"  {cl.label}: lag p50 {report.fmt(res.p50_ms, '.3f')} ms p99 {report.fmt(res.p99_ms, '.3f')} ms, "
            f"{res.timeouts} timeouts, background load {res.load}" + (f" ERROR {res.error}" if res.error else ""))
        out.append(res)


def run_memory(tmp: Path, args: argparse.Namespace, out: list[memory.MemoryResult]) -> None:
    redis, zkv = start_pair(tmp, args, "memory")
    try:
        for cl in (redis, zkv):
            log(f"  loading {args.memory_keys:,} keys into {cl.label}")
            res = memory.measure(cl, args.memory_keys)
            log(f"  {cl.label}: {report.fmt(res.bytes_per_key, '.1f')} bytes/key ({res.method[:70]}), "
                f"load {res.load_seconds:.1f}s, replicated after {report.fmt(res.replicated_seconds, '.2f')}s"
                + (f" ERROR {res.error}" if res.error else ""))
            out.append(res)
    finally:
        redis.stop()
        zkv.stop()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs.install_handlers()
    started = time.monotonic()
    ensure_redis(args.no_install)
    machine = report.machine_info(clusters.redis_version())
    tmp = Path(tempfile.mkdtemp(prefix="zkv-bench-"))
    log(f"work dir {tmp}")
    configs = throughput.default_configs(args.scale)
    outcomes: list[RunOutcome] = []
    summaries: dict[str, dict[str, dict[str, Summary]]] = {}
    lags: list[lag.LagResult] = []
    mems: list[memory.MemoryResult] = []
    hop_result: hop.HopResult | None = None
    wake_result: hop.WakeResult | None = None
    zkv_label = "zkv (dry run: Redis)" if args.dry_run else "zkv"
    status = "ok"
    try:
        if not (args.skip_throughput and args.skip_lag):
            redis, zkv = start_pair(tmp, args, "main")
            systems = [redis, zkv]
            try:
                if args.bare and not args.skip_throughput:
                    log("starting the bare Python calibration server (bench/bare.py)")
                    try:
                        systems.append(clusters.start_bare(tmp / "bare", BARE_LABEL, args.start_timeout))
                    except StartupError as e:  # a side figure: the comparison goes on without it
                        log(f"  no calibration server: {e}")
                log("warming the redis-benchmark keyspace on each")
                for cl in systems:
                    warm_keyspace(cl)
                if not args.skip_throughput:
                    log(f"throughput: {len(configs)} configs x {args.repeats} repeats, interleaved")
                    run_throughput(systems, configs, args.repeats, args.run_timeout, outcomes)
                    log("single-client floor: bare pyzmq ipc round trips")
                    try:
                        hop_result = hop.measure()
                    except Exception as e:  # noqa: BLE001 - the floor is a side figure; keep the run
                        hop_result = hop.HopResult(0, float("nan"), float("nan"), f"{type(e).__name__}: {e}")
                    log("receiver CPU per message: ZeroMQ vs a plain socket")
                    wake_result = hop.measure_wake()
                if not args.skip_lag:
                    if args.lag_load_rate is None:
                        args.lag_load_rate = half_max_write_rate(outcomes, zkv_label)
                    log(f"replication lag: {args.lag_samples} samples each, "
                        f"background load {args.lag_load_rate:,.0f} SET/s")
                    run_lag(redis, zkv, args, tmp, lags)
            finally:
                for cl in systems:
                    cl.stop()
        if args.memory:
            log("memory per key: fresh clusters")
            run_memory(tmp, args, mems)
    except StartupError as e:
        status = f"failed: {e}"
        log(status)
    except (OSError, ProtocolError, RuntimeError) as e:  # e.g. a node died mid-run
        status = f"failed: {type(e).__name__}: {e}"
        log(status)
    except (KeyboardInterrupt, SystemExit) as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else f"terminated ({e.code})"
        log(f"{status}; stopping everything")
    finally:
        procs.cleanup_all()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if outcomes:
        labels = (REDIS_LABEL, zkv_label) + ((BARE_LABEL,) if any(o.target == BARE_LABEL for o in outcomes) else ())
        summaries = summarize(outcomes, configs, labels)
    checks = report.all_checks(configs, summaries, lags, mems, zkv_label, REDIS_LABEL)
    lines = report.machine_lines(machine)
    if args.zkv_set:
        lines.append("zkv settings: " + ", ".join(args.zkv_set))
    if status != "ok":
        lines.append(f"status: {status}")
    if summaries:
        lines += [""] + report.throughput_table(configs, summaries, zkv_label, REDIS_LABEL, args.repeats)
    if summaries and any(o.target == BARE_LABEL for o in outcomes):
        lines += [""] + report.bare_lines(configs, summaries, zkv_label, REDIS_LABEL, BARE_LABEL)
    if hop_result is not None:
        lines += [""] + report.hop_lines(hop_result, summaries, zkv_label, REDIS_LABEL, wake_result)
    if lags:
        lines += [""] + report.lag_table(lags)
    if mems:
        lines += [""] + report.memory_table(mems, zkv_label, REDIS_LABEL)
    if checks:
        lines += [""] + report.checks_table(checks)
    elapsed = time.monotonic() - started
    lines += ["", f"total {elapsed:.0f}s"]
    print("\n".join(lines), flush=True)

    doc: dict[str, Any] = {
        "machine": machine, "status": status, "seconds": round(elapsed, 1),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "configs": configs, "runs": outcomes, "summaries": summaries, "lag": lags, "memory": mems,
        "hop": hop_result, "wake": wake_result, "checks": checks,
    }
    path = args.json or RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}{'-dry-run' if args.dry_run else ''}.json"
    report.write_json(doc, path)
    log(f"wrote {path}")
    if status != "ok":
        return 2
    if args.strict and any(c.passed is not True for c in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
