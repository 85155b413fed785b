"""Chaos: concurrent writers on every node while nodes are SIGKILLed, SIGSTOPped and restarted.

At the end every node must hold identical data (``zkv verify`` exits 0) and every write that
was acknowledged with ``OK`` and not overwritten must be readable on every node.  The short run
is part of the normal suite; ``-m soak`` runs a long one.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from tests.cluster.harness import Cluster, LineClient


def _writer(cluster: Cluster, wid: int, stop: threading.Event, acked: dict[str, bytes],
            lock: threading.Lock, limit: int) -> None:
    """Write unique keys (so 'acknowledged' is checkable) to random live nodes until told to stop."""
    rnd = random.Random(wid)
    n = 0
    while not stop.is_set() and n < limit:
        node = rnd.choice(cluster.nodes)
        try:
            with LineClient(node.port, timeout=2) as c:
                for _ in range(50):
                    if stop.is_set() or n >= limit:
                        break
                    key = f"w{wid}-{n}"
                    value = f"v{n}".encode()
                    if c.cmd(f"SET {key} v{n}") == b"OK":
                        with lock:
                            acked[key] = value
                    n += 1
        except OSError:
            time.sleep(0.02)  # that node is down or paused: try another


def _chaos(cluster: Cluster, seconds: float, seed: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()
    writers = [threading.Thread(target=_writer, args=(cluster, w, stop, acked, lock, 100_000))
               for w in range(4)]
    for t in writers:
        t.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            victim = rnd.choice(cluster.nodes)
            action = rnd.choice(["kill", "stop", "term"])
            if action == "kill":
                victim.kill()
                time.sleep(rnd.uniform(0.1, 0.8))
                victim.start()
            elif action == "stop":
                victim.signal(signal.SIGSTOP)
                time.sleep(rnd.uniform(0.1, 1.0))
                victim.signal(signal.SIGCONT)
            else:
                victim.stop()
                victim.start()
            time.sleep(rnd.uniform(0.1, 0.5))
    finally:
        stop.set()
        for t in writers:
            t.join(30)
        for n in cluster.nodes:  # everything back up
            if n.proc is None or n.proc.poll() is not None:
                n.start()
            else:
                n.signal(signal.SIGCONT)
    return acked


def _check(cluster: Cluster, acked: dict[str, bytes]) -> None:
    r = cluster.verify(timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr + cluster.logs()
    keys = sorted(acked)
    for node in cluster.nodes:
        with node.client() as c:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                got = c.pipeline([f"GET {k}".encode() for k in chunk])
                missing = [k for k, g in zip(chunk, got) if g != b"VALUE " + acked[k]]
                assert not missing, f"{node.id} lost {len(missing)} acknowledged writes, e.g. {missing[:5]}"


def test_chaos_short(make_cluster) -> None:
    cluster = make_cluster(3, heartbeat_ms=50, anti_entropy_ms=300).start()
    acked = _chaos(cluster, seconds=12, seed=1)
    assert len(acked) > 500
    _check(cluster, acked)


@pytest.mark.soak
def test_chaos_soak(make_cluster) -> None:
    cluster = make_cluster(3, heartbeat_ms=50, anti_entropy_ms=300, snapshot_records=5000, backlog=2000).start()
    acked = _chaos(cluster, seconds=180, seed=7)
    _check(cluster, acked)
