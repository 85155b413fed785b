"""The floor under zkv's single-client latency: one bare pyzmq round trip between two processes.

A zkv node is a frontend process and a store process joined by ZeroMQ (the fixed design), so a
request from a lone client (``redis-benchmark -c 1``) costs at least what Redis's whole request
costs plus one DEALER->ROUTER->DEALER round trip over ``ipc://``.  This measures that round trip
with nothing else in it: an echo server in a child process, 20-byte messages, blocking receives,
on the same machine and in the same run as the benchmark.  ``floor = Redis p50 + hop p50`` is
then the best -c1 p50 any code inside those two processes could reach.

It also measures what one message costs the process that receives it, in CPU time, when the
receiver sleeps between messages (as a store does between batches under moderate load): once
over ZeroMQ (ipc, a ROUTER woken by each DEALER message, pyzmq's recv_multipart) and once over
a plain Unix socket pair.  ZeroMQ delivers through a background I/O thread in each process, so
each message wakes two threads on the receiving side where a plain socket wakes one; the
figure is that, plus what pyzmq adds per message.

    python bench/hop.py            # prints p50/p99 in microseconds and the CPU per message
"""

from __future__ import annotations

import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import zmq

WARMUP = 200


@dataclass
class HopResult:
    samples: int
    p50_us: float
    p99_us: float
    error: str = ""


@dataclass
class WakeResult:
    """CPU time the receiving process spent per message, messages arriving every ``gap_ms``."""

    messages: int
    gap_ms: float
    zmq_us: float  # receiver CPU per message over ZeroMQ ipc (its app thread and I/O thread)
    socket_us: float  # the same over a plain Unix socket pair
    error: str = ""


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


RECEIVE_TIMEOUT_S = 30  # a receiver child whose sender died gives up instead of waiting for ever


def _receiving_end(transport: str, name: str) -> Callable[[], object]:
    """Bind the receiving end of ``transport`` under ``name``, say "ready", return its recv."""
    if transport == "zmq":
        s = zmq.Context.instance().socket(zmq.ROUTER)
        s.linger = 0
        s.rcvtimeo = RECEIVE_TIMEOUT_S * 1000
        s.bind(f"ipc://@{name}")
        _ready()
        return s.recv_multipart
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.settimeout(RECEIVE_TIMEOUT_S)
    listener.bind("\0" + name)  # Linux's abstract namespace: no file left behind
    listener.listen(1)
    _ready()
    conn, _ = listener.accept()
    conn.settimeout(RECEIVE_TIMEOUT_S)
    return lambda: conn.recv(65536)


def _sending_end(transport: str, name: str) -> tuple[Callable[[bytes], object], Callable[[], None]]:
    """Connect to the receiving end; returns its send and how to close it."""
    if transport == "zmq":
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.linger = 0
        s.connect(f"ipc://@{name}")
        return s.send, s.close
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect("\0" + name)
    return sock.send, sock.close


def _receiver_cpu(transport: str, name: str, count: int) -> None:
    """Child: receive ``count`` messages, then print the CPU seconds they cost this process."""
    recv = _receiving_end(transport, name)
    recv()  # the first message starts the clock (connection set-up is not counted)
    t0 = resource.getrusage(resource.RUSAGE_SELF)  # all threads, ZeroMQ's I/O thread included
    for _ in range(count):
        recv()
    t1 = resource.getrusage(resource.RUSAGE_SELF)
    sys.stdout.write(f"{(t1.ru_utime + t1.ru_stime) - (t0.ru_utime + t0.ru_stime)}\n")
    sys.stdout.flush()


def _wake_once(transport: str, count: int, gap_s: float, timeout_s: float) -> float:
    """Receiver CPU microseconds per message for one transport."""
    name = f"zkv-bench-wake-{os.getpid()}-{transport}"
    child = subprocess.Popen([sys.executable, __file__, "--receive", transport, name, str(count)],
                             stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout is None or child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{transport} receiver did not start")
        send, close = _sending_end(transport, name)
        try:
            msg = b"x" * 1000
            for _ in range(count + 1):
                send(msg)
                time.sleep(gap_s)
            out, _ = child.communicate(timeout=timeout_s)
        finally:
            close()
        return float(out.strip()) / count * 1e6
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def measure_wake(count: int = 1500, gap_ms: float = 1.0, timeout_s: float = 60.0) -> WakeResult:
    """CPU per received message, ZeroMQ vs a plain socket, the receiver idle between messages."""
    figures, errors = [], []
    for transport in ("zmq", "socket"):
        try:
            figures.append(_wake_once(transport, count, gap_ms / 1000, timeout_s))
        except Exception as e:  # noqa: BLE001 - a side figure: report, do not fail the run
            figures.append(float("nan"))
            errors.append(f"{transport}: {type(e).__name__}: {e}")
    return WakeResult(count, gap_ms, figures[0], figures[1], "; ".join(errors))


def _serve(endpoint: str, count: int) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.linger = 0
    s.rcvtimeo = RECEIVE_TIMEOUT_S * 1000  # an orphan (the harness killed) exits on its own
    s.bind(endpoint)
    _ready()
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
        if server.stdout is not None:
            server.stdout.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "--receive":
        _receiver_cpu(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        r = measure()
        print(f"pyzmq ipc round trip: p50 {r.p50_us:.1f} us, p99 {r.p99_us:.1f} us "
              f"({r.samples} samples){' ERROR ' + r.error if r.error else ''}")
        w = measure_wake()
        print(f"receiver CPU per message, one every {w.gap_ms:g} ms: ZeroMQ {w.zmq_us:.0f} us, "
              f"plain Unix socket {w.socket_us:.0f} us{' ERROR ' + w.error if w.error else ''}")
