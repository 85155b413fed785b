"""Where the CPU goes: CPU time per request of each process, zkv next to Redis and the bare server.

The throughput table says how fast each system is on this machine's two shared cores; this says
what each request costs and who pays.  For each system it starts a fresh cluster, loads and
reads the benchmark's 100,000 keys (as ``bench/run.py`` does, so zkv's read cache holds them),
then runs ``redis-benchmark -t set`` at ``-c 50 -P 1`` and ``-c 50 -P 16`` (``--repeats`` times,
interleaved) and reads, from ``/proc``, the CPU time each process used during the run:

* zkv: node0's frontend and store (each with its ZeroMQ I/O thread; the store with the snapshot
  children it reaped), the other two nodes' processes as "peers";
* Redis: the master and the two replicas;
* the bare server (``bench/bare.py``);
* redis-benchmark itself (its own CPU time, read when it exits).

Prints microseconds of CPU per request, median over the repeats.

    .venv/bin/python bench/cpu.py              # about a minute
    .venv/bin/python bench/cpu.py --repeats 5
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import clusters, loader, procs, throughput  # noqa: E402
from bench.clusters import Cluster  # noqa: E402

SHAPES = [("c50", 50, 1, 100_000), ("c50P16", 50, 16, 300_000)]


def roles(cluster: Cluster) -> dict[str, list[int]]:
    """Role name -> the pids whose CPU counts for it."""
    if cluster.kind == "zkv":
        out: dict[str, list[int]] = {"frontend": [], "store": [], "supervisor": [], "peers": []}
        for i, node in enumerate(cluster.nodes):
            pids = [node.child.pid, *procs.proc_descendants(node.child.pid)]
            if i:
                out["peers"] += pids
                continue
            for pid in pids:
                cmd = procs.proc_cmdline(pid)
                role = "store" if "store_main" in cmd else "frontend" if "frontend_main" in cmd else "supervisor"
                out[role].append(pid)
        return out
    if cluster.kind == "redis":
        return {"master": [cluster.nodes[0].child.pid], "replicas": [n.child.pid for n in cluster.nodes[1:]]}
    return {"server": [cluster.nodes[0].child.pid]}


def measure(cluster: Cluster, clients: int, pipeline: int, requests: int) -> dict[str, float]:
    """One redis-benchmark SET run; role -> CPU microseconds per request (and "rps")."""
    who = roles(cluster)
    before = {r: sum(map(procs.proc_cpu_seconds, pids)) for r, pids in who.items()}
    rb0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cfg = throughput.BenchConfig("cpu", clients, pipeline, requests)
    cp = procs.run_capture(throughput.benchmark_argv(cluster.writer.host, cluster.writer.port, cfg, "set"),
                           timeout=300)
    rb1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = {r: sum(map(procs.proc_cpu_seconds, pids)) for r, pids in who.items()}
    out = {r: (after[r] - before[r]) / requests * 1e6 for r in who}
    out["redis-benchmark"] = ((rb1.ru_utime + rb1.ru_stime) - (rb0.ru_utime + rb0.ru_stime)) / requests * 1e6
    res = throughput.parse_csv(cp.stdout).get("SET")
    out["rps"] = res.rps if res else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="CPU time per request of each process (see the docstring)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    procs.install_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="zkv-bench-cpu-"))
    systems: list[Cluster] = []
    try:
        systems = [clusters.start_redis(tmp / "redis"), clusters.start_zkv(tmp / "zkv"),
                   clusters.start_bare(tmp / "bare")]
        for cl in systems:
            loader.load_keys(cl.writer.host, cl.writer.port, throughput.KEYSPACE, "key:%012d", throughput.VALUE_SIZE)
            loader.read_keys(cl.writer.host, cl.writer.port, throughput.KEYSPACE, "key:%012d")
        for name, clients, pipeline, requests in SHAPES:
            runs: dict[str, list[dict[str, float]]] = {cl.label: [] for cl in systems}
            for _ in range(args.repeats):
                for cl in systems:
                    cl.check_alive()
                    clusters.wait_replicated(cl, 60)
                    runs[cl.label].append(measure(cl, clients, pipeline, requests))
            print(f"SET -c {clients} -P {pipeline}: CPU microseconds per request (median of {args.repeats})")
            for label, rs in runs.items():
                keys = [k for k in rs[0] if k != "rps"]
                med = {k: statistics.median(r[k] for r in rs) for k in [*keys, "rps"]}
                total = sum(med[k] for k in keys if k != "redis-benchmark")
                parts = "  ".join(f"{k} {med[k]:.1f}" for k in keys)
                print(f"  {label:<12} {med['rps']:>9,.0f}/s  system {total:5.1f} us  ({parts})")
    finally:
        for cl in systems:
            cl.stop()
        procs.cleanup_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
