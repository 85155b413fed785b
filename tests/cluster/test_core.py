"""Issue 2: a real 3-node cluster replicates, converges, survives bad input and a dead peer."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.cluster.harness import REPO, Cluster, LineClient, wait_until


def test_write_on_any_node_is_readable_on_every_node(cluster: Cluster) -> None:
    for i, node in enumerate(cluster.nodes):
        with node.client() as c:
            assert c.cmd(f"SET key{i} value {i} with spaces") == b"OK"
    for node in cluster.nodes:
        for i in range(3):
            wait_until(lambda: node.get(f"key{i}") == f"VALUE value {i} with spaces".encode(),
                       what=f"key{i} on {node.id}")


def test_delete_replicates(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    with a.client() as ca:
        assert ca.cmd("SET gone 1") == b"OK"
    wait_until(lambda: c.get("gone") == b"VALUE 1")
    with b.client() as cb:
        assert cb.cmd("DELETE gone") == b"OK"
    for node in cluster.nodes:
        wait_until(lambda: node.get("gone") == b"NOT FOUND", what=f"delete on {node.id}")


def test_replies_byte_for_byte_and_pipelining(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    with socket.create_connection(("127.0.0.1", node.port)) as s:
        # several requests in one packet, one request split over several, \r\n and \n endings
        s.sendall(b"SET a 1\r\nGET a\nGET missing\nDEL a\nGET a\nPING\nping\nGE")
        time.sleep(0.05)
        s.sendall(b"T a\nset  spaced  two  words \n")
        s.sendall(b"GET spaced\n")
        want = (b"OK\nVALUE 1\nNOT FOUND\nOK\nNOT FOUND\nPONG\nPONG\nNOT FOUND\nOK\n"
                b"VALUE  two  words \n")
        got = b""
        s.settimeout(10)
        while len(got) < len(want):
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
        assert got == want


def test_bad_input_gets_documented_replies_and_node_keeps_serving(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    with node.client() as c:
        assert c.cmd("FROB x") == b"ERROR unknown command 'FROB'"
        assert c.cmd("GET") == b"ERROR wrong number of arguments for 'GET'"
        assert c.cmd("GET a b") == b"ERROR wrong number of arguments for 'GET'"
        assert c.cmd("SET onlykey") == b"ERROR wrong number of arguments for 'SET'"
        assert c.cmd("REPL_SET a b") == b"ERROR unknown command 'REPL_SET'"
        assert c.cmd("REPL_DELETE a") == b"ERROR unknown command 'REPL_DELETE'"
        assert c.cmd(b"\xff\xfe\x00garbage \x01\x02").startswith(b"ERROR unknown command")
        assert c.cmd(b"SET bin \xff") == b"OK"
    with node.client() as c:
        c.send(b"SET big " + b"x" * (1024 * 1024 + 10) + b"\n")
        assert c.read_line() == b"ERROR line too long"
        with pytest.raises((ConnectionError, OSError)):
            for _ in range(3):
                c.cmd("PING")
    with node.client() as c:  # overlong without any newline at all
        c.send(b"y" * (1024 * 1024 + 100))
        assert c.read_line() == b"ERROR line too long"
    with node.client() as c:
        assert c.cmd("QUIT") == b"OK"
        with pytest.raises((ConnectionError, OSError)):
            c.read_line()
    with node.client() as c:
        assert c.cmd("PING") == b"PONG"
        assert c.cmd("GET bin") == b"VALUE \xff"


def test_concurrent_conflicting_writes_converge(cluster: Cluster) -> None:
    keys = [f"hot{i}" for i in range(20)]
    errors: list[BaseException] = []

    def writer(node_idx: int, seed: int) -> None:
        rnd = random.Random(seed)
        try:
            with cluster.nodes[node_idx].client() as c:
                for n in range(300):
                    k = rnd.choice(keys)
                    line = f"DEL {k}" if rnd.random() < 0.2 else f"SET {k} w{seed}-{n}"
                    assert c.cmd(line) == b"OK"
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i % 3, i)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors

    def snapshot(node):  # type: ignore[no-untyped-def]
        with node.client() as c:
            return c.pipeline([f"GET {k}".encode() for k in keys])

    def converged() -> bool:
        views = [snapshot(n) for n in cluster.nodes]
        return views[0] == views[1] == views[2]

    wait_until(converged, timeout=20, what="identical data on all nodes")
    assert cluster.verify().returncode == 0


def test_500_concurrent_connections(cluster: Cluster) -> None:
    node = cluster.nodes[1]
    clients = [LineClient(node.port) for _ in range(500)]
    try:
        for i, c in enumerate(clients):
            c.send(f"SET conn{i} {i}\n".encode())
        for c in clients:
            assert c.read_line() == b"OK"
        for i, c in enumerate(clients):
            c.send(f"GET conn{i}\n".encode())
        for i, c in enumerate(clients):
            assert c.read_line() == f"VALUE {i}".encode()
    finally:
        for c in clients:
            c.close()
    wait_until(lambda: cluster.nodes[2].get("conn499") == b"VALUE 499")


def test_killed_node_does_not_stop_the_others(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    c.kill()
    with a.client() as ca:
        assert ca.cmd("SET after-kill yes") == b"OK"
    wait_until(lambda: b.get("after-kill") == b"VALUE yes")
    assert c.children() == [] or c.proc.poll() is not None


def test_node_exits_when_a_child_dies_and_leaves_nothing_running(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    store = node.child_pid("store")
    frontend = node.child_pid("frontend")
    import os
    import signal

    os.kill(store, signal.SIGKILL)
    assert node.proc is not None
    code = node.proc.wait(30)
    assert code != 0
    wait_until(lambda: not os.path.exists(f"/proc/{frontend}") or open(f"/proc/{frontend}/stat").read().split()[2] == "Z",
               what="frontend to exit")
    with pytest.raises(OSError):
        LineClient(node.port, timeout=1)


def test_tail_prints_events_of_writes(cluster: Cluster) -> None:
    a = cluster.nodes[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "zkv", "tail", str(a.config_path), "--all", "-n", "2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def write_until_seen() -> bool:
            with cluster.nodes[0].client() as c0, cluster.nodes[1].client() as c1:
                c0.cmd("SET tailed-key tailed-value")
                c1.cmd("DEL other-key")
            return proc.poll() is not None

        wait_until(write_until_seen, timeout=20, interval=0.3, what="zkv tail to print two events")
        out = proc.stdout.read() if proc.stdout else ""
    finally:
        proc.kill()
        proc.wait()
    assert "node0" in out and "SET tailed-key tailed-value" in out
    assert "node1" in out and "DEL other-key" in out


def test_bad_config_fails_with_one_clear_line(tmp_path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('id = "n"\nlisten = "127.0.0.1:notaport"\nbus = "tcp://127.0.0.1:1"\ndata_dir = "d"\n')
    r = subprocess.run([sys.executable, "-m", "zkv", "node", str(cfg)], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "listen" in r.stderr and "notaport" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_port_in_use_fails_at_start(tmp_path) -> None:
    c = Cluster(tmp_path, n=1)
    node = c.nodes[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", node.port))
        s.listen()
        node.start(wait=False)
        assert node.proc is not None
        code = node.proc.wait(30)
    assert code != 0
    assert "address already in use" in node.log()


def test_status_reports_replication_state(cluster: Cluster) -> None:
    import json

    with cluster.nodes[0].client() as c:
        assert c.cmd("SET status-key 1") == b"OK"
    wait_until(lambda: cluster.nodes[1].get("status-key") == b"VALUE 1")
    r = subprocess.run([sys.executable, "-m", "zkv", "status", str(cluster.nodes[1].config_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    origin0 = cluster.nodes[0].info()["origin"]
    assert info["id"] == "node1" and info["keys"] == 1 and info["vv"][origin0] == 1
    assert set(info["peers"]) == {"node0", "node2"}
