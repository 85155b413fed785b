"""Replication lag: from a write's reply on node A until node B serves the new value.

For each sample: SET a fresh key ``lag:<run>:<i>`` on node A over one connection; the clock
starts when the ``+OK`` reply arrives.  A second connection to node B sends GET for that key
back to back (each GET waits for its reply) until the value comes back; the clock stops when
that reply arrives.  So a sample includes one GET round trip to node B (its resolution), but
never a stale match, since every key is new.  Samples that take longer than ``timeout_s``
count as timeouts and enter the percentiles at ``timeout_s``.

"Moderate load": while sampling, ``bench/loadgen.py`` runs as a separate process and writes
random keys to node A at a fixed rate (``bench/run.py`` picks half of zkv's measured SET -c50
rate), pipelined in batches every 5 ms: the same offered load on both systems.
"""

from __future__ import annotations

import json
import math
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.clusters import Cluster
from bench.resp import RespConnection, RespError

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"


@dataclass
class LagResult:
    target: str
    samples: int
    timeouts: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    load_rate_target: float
    load: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]) of unsorted ``values``."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def sample_lag(cluster: Cluster, samples: int, warmup: int, timeout_s: float,
               gap_s: float) -> tuple[list[float], int]:
    """Take ``warmup + samples`` measurements; returns (lags in ms of the last ``samples``, timeouts)."""
    a, b = cluster.writer, cluster.reader
    run = time.time_ns()
    lags: list[float] = []
    timeouts = 0
    with RespConnection(a.host, a.port) as wa, RespConnection(b.host, b.port) as rb:
        for i in range(warmup + samples):
            key = f"lag:{run}:{i}".encode()
            val = f"v{i}".encode()
            get = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
            reply = wa.call("SET", key, val)
            t0 = time.perf_counter()
            if reply != b"OK":
                raise RuntimeError(f"SET on {cluster.label} {a.name} failed: "
                                   f"{reply.message if isinstance(reply, RespError) else reply!r}")
            deadline = t0 + timeout_s
            while True:
                rb.send_raw(get)
                got = rb.read_reply()
                t1 = time.perf_counter()
                if got == val:
                    lag_ms = (t1 - t0) * 1000.0
                    break
                if t1 >= deadline:
                    lag_ms = timeout_s * 1000.0
                    if i >= warmup:
                        timeouts += 1
                    break
            if i >= warmup:
                lags.append(lag_ms)
            if gap_s > 0:
                time.sleep(gap_s)
    return lags, timeouts


def start_load(cluster: Cluster, rate: float, log_dir: Path) -> procs.Child | None:
    if rate <= 0:
        return None
    w = cluster.writer
    return procs.spawn(f"loadgen:{cluster.label}",
                       [sys.executable, str(LOADGEN), "--host", w.host, "--port", str(w.port),
                        "--rate", str(rate)],
                       log_path=log_dir / f"loadgen-{cluster.kind}.log", stdin=subprocess.PIPE,
                       capture_stdout=True)


def stop_load(child: procs.Child | None, timeout: float = 10.0) -> dict[str, Any]:
    """Close the load generator's stdin (its stop signal) and read its JSON summary."""
    if child is None:
        return {}
    summary: dict[str, Any] = {}
    try:
        assert child.proc.stdin is not None and child.proc.stdout is not None
        child.proc.stdin.close()
        r, _, _ = select.select([child.proc.stdout], [], [], timeout)
        line = child.proc.stdout.readline().decode(errors="replace").strip() if r else ""
        if line:
            summary = json.loads(line)
        else:
            summary = {"error": f"no summary from load generator; log: {child.log_tail(5)}"}
    except (OSError, ValueError) as e:
        summary = {"error": str(e)}
    finally:
        procs.stop(child, timeout=2.0)
    return summary


def measure(cluster: Cluster, samples: int, load_rate: float, log_dir: Path,
            timeout_s: float = 2.0, gap_s: float = 0.002) -> LagResult:
    """Lag from ``cluster.writer`` to ``cluster.reader`` under a fixed background write rate."""
    warmup = max(5, samples // 20)
    load = start_load(cluster, load_rate, log_dir)
    lags: list[float] = []
    timeouts = 0
    error = ""
    try:
        time.sleep(0.5 if load else 0.0)  # let the load reach its steady rate
        lags, timeouts = sample_lag(cluster, samples, warmup, timeout_s, gap_s)
    except (OSError, RuntimeError, ValueError) as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        load_summary = stop_load(load)
    return LagResult(cluster.label, len(lags), timeouts, percentile(lags, 50), percentile(lags, 99),
                     max(lags) if lags else None, sum(lags) / len(lags) if lags else None,
                     load_rate, load_summary, error)
