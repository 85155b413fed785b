"""Issue 10: ``zkv status`` and INFO show an operator the cluster as it is.

A keyed cluster, reached through one config (which leads to its peers): every node up with the
same keys, then a paused node shown down and the exit code 1; client addresses with a password;
INFO's new figures; ``--watch`` refreshing until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.cluster.harness import REPO, wait_until
from zkv.status import Report, problems, row

FAST = {"heartbeat_ms": 100, "anti_entropy_ms": 500}


def status(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zkv", "status", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "160"})


def test_status_of_a_keyed_cluster_from_one_config(make_cluster) -> None:
    c = make_cluster(3, curve=True, password="pw", **FAST).start()
    n0, n1, n2 = c.nodes
    with n0.client() as cl:
        assert cl.cmd("AUTH pw") == b"OK"
        for i in range(50):
            cl.cmd(f"SET k{i % 10} v{i}")
            if i % 7 == 0:
                cl.cmd(f"DELETE k{i % 10}")
        keys = int(json.loads(status(str(n0.config_path), "--json").stdout)["nodes"]["node0"]["keys"])

    def agreed() -> bool:
        out = status(str(n0.config_path), "--json")
        rows = json.loads(out.stdout)["rows"]
        return out.returncode == 0 and [r["keys"] for r in rows] == [keys] * 3

    wait_until(agreed, timeout=20, what="all three nodes up with the same keys")
    out = status(str(n0.config_path))
    assert out.returncode == 0, out.stdout + out.stderr
    for n in ("node0", "node1", "node2"):
        assert n in out.stdout
    assert "DOWN" not in out.stdout and "memory" in out.stdout
    # over the client port, with the password
    out = status(n1.listen, "--password", "pw", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)["nodes"]["node1"]
    assert info["keys"] == keys and info["uptime_s"] >= 0 and info["memory"]["store_rss"] > 0
    assert status(n1.listen, "--json").returncode == 1  # no password: not answered, so "down"
    n2.signal(signal.SIGSTOP)
    try:
        out = status(str(n0.config_path))
        assert out.returncode == 1 and "node2 is down" in out.stdout, out.stdout
    finally:
        n2.signal(signal.SIGCONT)


def test_info_carries_the_operator_figures(make_cluster) -> None:
    c = make_cluster(2, **FAST).start()
    n0 = c.nodes[0]
    with n0.client() as held:
        held.cmd("SET a 1")

        def counted() -> bool:
            return int(n0.info().get("connected_clients", 0)) >= 1

        wait_until(counted, timeout=10, what="the frontend's client count in INFO")
        info = n0.info()
    for field in ("uptime_in_seconds", "used_memory_rss", "log_bytes", "snapshot_bytes"):
        assert field in info, field
    assert int(info["used_memory_rss"]) > 10_000_000
    assert "lag_events=0" in info["peer0"] and "acked=" in info["peer0"]


def test_status_watch_refreshes_until_interrupted(make_cluster) -> None:
    c = make_cluster(2, **FAST).start()
    p = subprocess.Popen([sys.executable, "-m", "zkv", "status", str(c.nodes[0].config_path),
                          "--watch", "--json"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                         # as from a terminal: a test run started as a background job hands its
                         # children SIGINT ignored, and Ctrl-C would never reach this one
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert p.stdout is not None
        seen = 0
        deadline = time.monotonic() + 20
        while seen < 2 and time.monotonic() < deadline:  # two refreshes, a second apart
            seen += '"rows"' in p.stdout.readline()
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=20)
    finally:
        p.kill()
    assert seen >= 2
    assert p.returncode == 0


def test_problems_name_down_and_lagging_nodes() -> None:
    info = {"id": "n1", "peers": {"n2": {"connected": True, "clock_offset_ms": 40,
                                         "lag": {"events": 12, "ms": 900}}}}
    reports = [Report("n1", info), Report("n3", None, "no heartbeat on its bus")]
    assert problems(reports, None) == ["n3 is down (no heartbeat on its bus)"]
    assert problems(reports, 500)[0] == "n1 lags 12 events, 900 ms (> 500 ms)"
    r = row(reports[0])
    assert r["behind_events"] == 12 and r["clock_offset_ms"] == -20


def test_verify_names_an_unreachable_node_and_reports_no_disagreement_it_did_not_see(make_cluster) -> None:
    c = make_cluster(3, **FAST).start()
    with c.nodes[0].client() as cl:
        assert cl.cmd("SET k v") == b"OK"
    c.nodes[2].kill()
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "zkv", "verify", *c.config_paths()], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t
    assert r.returncode == 1
    assert r.stdout.startswith("UNREACHABLE: node2"), r.stdout
    assert "DISAGREE" not in r.stdout and "catching up" not in r.stdout, r.stdout
    assert took < 10, f"verify took {took:.1f} s to give up on a node that sends nothing"
