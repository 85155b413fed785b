"""The floor under zkv's single-client latency: one bare pyzmq round trip between two processes.

A zkv node is a frontend process and a store process joined by ZeroMQ (the fixed design), so a
request from a lone client (``redis-benchmark -c 1``) costs at least what Redis's whole request
costs plus one DEALER->ROUTER->DEALER round trip over ``ipc://``.  This measures that round trip
with nothing else in it: an echo server in a child process, 20-byte messages, blocking receives,
on the same machine and in the same run as the benchmark.  ``floor = Redis p50 + hop p50`` is
then the best -c1 p50 any code inside those two processes could reach.

    python bench/hop.py            # prints p50/p99 in microseconds
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import zmq

WARMUP = 200


@dataclass
class HopResult:
    samples: int
    p50_us: float
    p99_us: float
    error: str = ""


def _serve(endpoint: str, count: int) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.linger = 0
    s.bind(endpoint)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for _ in range(count):
        s.send_multipart(s.recv_multipart())
    s.close()
    ctx.term()


def measure(samples: int = 5000, timeout_s: float = 60.0) -> HopResult:
    endpoint = f"ipc://@zkv-bench-hop-{os.getpid()}"
    total = samples + WARMUP
    server = subprocess.Popen([sys.executable, __file__, "--serve", endpoint, str(total)],
                              stdout=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.rcvtimeo = int(timeout_s * 1000)
    try:
        if server.stdout is None or server.stdout.readline().strip() != "ready":
            return HopResult(0, float("nan"), float("nan"), "echo server did not start")
        s.connect(endpoint)
        msg = b"x" * 20
        lat = []
        for _ in range(total):
            t0 = time.perf_counter()
            s.send(msg)
            s.recv()
            lat.append(time.perf_counter() - t0)
        lat = sorted(lat[WARMUP:])
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return HopResult(len(lat), statistics.median(lat) * 1e6, p99 * 1e6)
    except zmq.Again:
        return HopResult(0, float("nan"), float("nan"), f"no echo within {timeout_s}s")
    finally:
        s.close()
        ctx.term()
        server.kill()
        server.wait()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], int(sys.argv[3]))
    else:
        r = measure()
        print(f"pyzmq ipc round trip: p50 {r.p50_us:.1f} us, p99 {r.p99_us:.1f} us "
              f"({r.samples} samples){' ERROR ' + r.error if r.error else ''}")
