"""Issue 2: a real 3-node cluster replicates, converges, survives bad input and a dead peer.

Also the node as one unit of processes and connections: last-writer-wins between concurrent
writers checked against the acknowledgement times of their writes, the supervisor's death
taking its children (and their ports) with it, a second node refused on a data_dir in use, and
the client limits (``max_clients``, the output buffer of a client that does not read).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.cluster.harness import REPO, Cluster, LineClient, Node, free_port, wait_until


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 3-node cluster for the tests here that write only keys of their own and take no node
    down, so they do not see each other: none counts keys, vectors or processes.  (A cluster
    start is 1.5-2 s of the machine's two cores; the tests that kill or count use ``cluster``.)"""
    c = Cluster(tmp_path_factory.mktemp("core")).start()
    try:
        yield c
    finally:
        c.kill()


def test_write_on_any_node_is_readable_on_every_node(shared_cluster: Cluster) -> None:
    for i, node in enumerate(shared_cluster.nodes):
        with node.client() as c:
            assert c.cmd(f"SET key{i} value {i} with spaces") == b"OK"
    for node in shared_cluster.nodes:
        for i in range(3):
            wait_until(lambda: node.get(f"key{i}") == f"VALUE value {i} with spaces".encode(),
                       what=f"key{i} on {node.id}")


def test_delete_replicates(shared_cluster: Cluster) -> None:
    a, b, c = shared_cluster.nodes
    with a.client() as ca:
        assert ca.cmd("SET gone 1") == b"OK"
    wait_until(lambda: c.get("gone") == b"VALUE 1")
    with b.client() as cb:
        assert cb.cmd("DELETE gone") == b"OK"
    for node in shared_cluster.nodes:
        wait_until(lambda: node.get("gone") == b"NOT FOUND", what=f"delete on {node.id}")


def test_replies_byte_for_byte_and_pipelining(shared_cluster: Cluster) -> None:
    node = shared_cluster.nodes[0]
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


def test_bad_input_gets_documented_replies_and_node_keeps_serving(shared_cluster: Cluster) -> None:
    node = shared_cluster.nodes[0]
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


LWW_SLACK_S = 0.005  # timestamps are wall-clock milliseconds: "after" means by more than this


@dataclass(frozen=True)
class Ack:
    """One acknowledged write: who made it, what, and when (wall clock) it was sent and OK'd."""

    writer: int
    key: str
    value: str | None  # None: a DELETE
    sent: float
    acked: float

    def reply(self) -> bytes:
        return b"NOT FOUND" if self.value is None else b"VALUE " + self.value.encode()


def lww_violations(acks: list[Ack], final: dict[str, bytes]) -> list[str]:
    """Why ``final`` (key -> GET reply, the same on every node) is not last-writer-wins over
    ``acks``; empty if it is.  The value must be that of some writer's last write to the key,
    and no write sent after that one was acknowledged (by more than the slack) may have lost."""
    problems = []
    for key, got in final.items():
        ops = [a for a in acks if a.key == key]
        if not ops:
            if got != b"NOT FOUND":
                problems.append(f"{key}: never written, reads {got[:40]!r}")
            continue
        last_of = {a.writer: a for a in ops}  # each writer's writes are in order
        winners = [a for a in last_of.values() if a.reply() == got]
        if not winners:
            problems.append(f"{key}: {got[:40]!r} is no writer's last write "
                            f"(last writes: {sorted((a.writer, a.value) for a in last_of.values())})")
            continue
        beaten = [(w, [a for a in ops if a.sent > w.acked + LWW_SLACK_S]) for w in winners]
        if all(later for _w, later in beaten):
            w, later = beaten[0]
            problems.append(f"{key}: {w.value!r} (writer {w.writer}, OK at {w.acked:.4f}) beat "
                            f"{later[-1].value!r} (writer {later[-1].writer}, sent at {later[-1].sent:.4f})")
    return problems


def test_lww_checker_rejects_first_writer_wins_and_lost_keys() -> None:
    """The checker of the next test, on histories whose answer is known."""
    acks = [Ack(0, "k", "first", 1.000, 1.001), Ack(1, "k", "second", 1.010, 1.011),
            Ack(1, "d", "x", 1.000, 1.001), Ack(0, "d", None, 1.010, 1.011)]
    assert lww_violations(acks, {"k": b"VALUE second", "d": b"NOT FOUND", "z": b"NOT FOUND"}) == []
    assert lww_violations(acks, {"k": b"VALUE first"})  # first writer wins
    assert lww_violations(acks, {"k": b"NOT FOUND"})  # the key was lost
    assert lww_violations(acks, {"d": b"VALUE x"})  # the delete was undone
    assert lww_violations(acks, {"z": b"VALUE x"})  # a value from nowhere
    close = [Ack(0, "c", "a", 1.000, 1.001), Ack(1, "c", "b", 1.002, 1.003)]  # within the slack
    assert lww_violations(close, {"c": b"VALUE a"}) == [] and lww_violations(close, {"c": b"VALUE b"}) == []


def test_concurrent_conflicting_writes_converge_to_the_last_write(shared_cluster: Cluster) -> None:
    keys = [f"hot{i}" for i in range(20)]
    errors: list[BaseException] = []
    acks: list[Ack] = []

    def writer(w: int, node_idx: int) -> None:
        rnd = random.Random(w)
        mine: list[Ack] = []
        try:
            with shared_cluster.nodes[node_idx].client() as c:
                for n in range(300):
                    k = rnd.choice(keys)
                    value = None if rnd.random() < 0.2 else f"w{w}-{n}"
                    sent = time.time()
                    assert c.cmd(f"DEL {k}" if value is None else f"SET {k} {value}") == b"OK"
                    mine.append(Ack(w, k, value, sent, time.time()))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            acks.extend(mine)

    threads = [threading.Thread(target=writer, args=(w, w % 3)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a writer did not finish in 60 s"
    assert not errors, errors
    assert len(acks) == 6 * 300

    def view(node: Node) -> list[bytes]:
        with node.client() as c:
            return c.pipeline([f"GET {k}".encode() for k in keys])

    def converged() -> bool:
        views = [view(n) for n in shared_cluster.nodes]
        return views[0] == views[1] == views[2]

    wait_until(converged, timeout=20, what="identical data on all nodes")
    final = dict(zip(keys, view(shared_cluster.nodes[0])))
    problems = lww_violations(acks, final)
    assert not problems, "not last-writer-wins:\n" + "\n".join(problems)
    assert shared_cluster.verify().returncode == 0


def test_500_concurrent_connections(shared_cluster: Cluster) -> None:
    node = shared_cluster.nodes[1]
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
    wait_until(lambda: shared_cluster.nodes[2].get("conn499") == b"VALUE 499")


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


def _gone(pid: int) -> bool:
    """The process has exited (no longer exists, or is a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _port_free(port: int) -> bool:
    """Nobody listens on 127.0.0.1:port (bound as the node binds it: SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def test_children_exit_and_free_their_ports_when_only_the_supervisor_is_killed(make_cluster) -> None:
    c = make_cluster(1, heartbeat_ms=50).start()
    node = c.nodes[0]
    assert node.proc is not None
    store, frontend = node.child_pid("store"), node.child_pid("frontend")
    assert not _port_free(node.port) and not _port_free(node.bus_port)
    os.kill(node.proc.pid, signal.SIGKILL)  # the supervisor alone, not its process group
    node.proc.wait(10)
    try:
        wait_until(lambda: _gone(store) and _gone(frontend), timeout=15,
                   what="the store and the frontend to exit after their supervisor")
    finally:
        for pid in (store, frontend):  # orphans of a failed check must not outlive the test
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _port_free(node.port) and _port_free(node.bus_port), timeout=10,
               what="the client and bus ports to come free")
    with pytest.raises(OSError):
        LineClient(node.port, timeout=1)


def test_a_second_node_on_a_data_dir_in_use_fails_at_start(make_cluster) -> None:
    c = make_cluster(1).start()
    first = c.nodes[0]
    with first.client() as cl:
        assert cl.cmd("SET mine 1") == b"OK"
    second = Node("node0", free_port(), free_port(), c.root / "second.toml", first.data_dir,
                  c.root / "second.log")
    c.write_config(second, peers=[])
    second.start(wait=False)
    assert second.proc is not None
    try:
        code = second.proc.wait(30)
    finally:
        second.kill()  # if it did start, it must not outlive the test
    assert code != 0
    lines = [line for line in second.log().splitlines() if "in use" in line]
    assert len(lines) == 1 and str(first.data_dir) in lines[0], second.log()
    assert _port_free(second.port), "the refused node left its client port open"
    assert first.get("mine") == b"VALUE 1"  # the first node is untouched and still serving
    assert first.stop() == 0
    first.start()
    assert first.get("mine") == b"VALUE 1"


def _start_with_the_store_held(node: Node) -> int:
    """Start ``node`` and SIGSTOP its store as soon as it exists (still starting); its pid."""
    node.start(wait=False)

    def store() -> int | None:
        try:
            return node.child_pid("store")
        except (AssertionError, FileNotFoundError, ProcessLookupError):
            return None

    pid = wait_until(store, 10, interval=0.002, what="the store process")
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_the_client_port_opens_only_once_the_store_is_ready(make_cluster) -> None:
    """The frontend starts beside the store (its start-up overlaps the store's) but opens the
    client port only when the store is ready: a store held (SIGSTOP) during start-up keeps the
    port closed while the frontend process waits, and the node answers once the store runs."""
    c = make_cluster(1)
    node = c.nodes[0].seed_clock()
    pid = _start_with_the_store_held(node)
    try:
        frontend = wait_until(lambda: "frontend" in _roles(node), 10, what="the frontend process")
        assert frontend
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # the frontend is up and waiting, its port closed
            assert _port_free(node.port), "the client port opened before the store was ready"
            time.sleep(0.05)
    finally:
        os.kill(pid, signal.SIGCONT)
    node.wait_ready()
    with node.client() as cl:
        assert cl.cmd("SET k v") == b"OK" and cl.cmd("GET k") == b"VALUE v"


def test_a_frontend_that_dies_while_the_store_starts_stops_the_node_cleanly(make_cluster) -> None:
    """The frontend waits for the store beside it; if it dies meanwhile, the supervisor says
    so once the store is ready, stops the store and exits non-zero (it used to die of a broken
    pipe, with a traceback, and leave the store running)."""
    c = make_cluster(1)
    node = c.nodes[0].seed_clock()
    pid = _start_with_the_store_held(node)
    try:
        frontend = wait_until(lambda: "frontend" in _roles(node) and node.child_pid("frontend"),
                              10, what="the frontend process")
        os.kill(frontend, signal.SIGKILL)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert node.proc is not None
    code = node.proc.wait(30)
    assert code != 0, node.log()
    assert "frontend failed to start" in node.log() and "Traceback" not in node.log(), node.log()
    wait_until(lambda: _gone(pid), 10,
               what="the store to exit with the node")


def _roles(node: Node) -> set[str]:
    roles = set()
    for pid in node.children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except FileNotFoundError:
            continue
        roles |= {r for r in ("store", "frontend") if f"zkv.{r}_main".encode() in cmd}
    return roles


def test_connections_beyond_max_clients_are_refused(make_cluster) -> None:
    c = make_cluster(1, max_clients=3).start()
    node = c.nodes[0]
    held = [node.client() for _ in range(3)]
    try:
        assert [h.cmd("PING") for h in held] == [b"PONG"] * 3
        with node.client() as extra:
            extra.send(b"PING\n")
            assert extra.read_line() == b"ERROR max number of clients reached"
            with pytest.raises((ConnectionError, OSError)):
                extra.read_line()  # and the server closed it
        with node.client() as extra:  # a Redis client is told in RESP
            extra.send(_resp(b"PING"))
            assert extra.read_line().rstrip(b"\r") == b"-ERR max number of clients reached"
        with node.client() as silent:  # one that sends nothing is told too, in plain text
            assert silent.read_line() == b"ERROR max number of clients reached"
        assert [h.cmd("PING") for h in held] == [b"PONG"] * 3  # the others are unaffected
        held.pop().close()

        def admitted() -> bool:
            with node.client() as again:
                return again.cmd("PING") == b"PONG"

        wait_until(admitted, timeout=10, what="a freed slot to admit a new client")
    finally:
        for h in held:
            h.close()


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_a_client_that_does_not_read_is_disconnected_past_the_output_limit(make_cluster) -> None:
    """README: a client that sends requests but does not read its replies is disconnected once
    more than 256 MiB of them pile up.  The limit is a constant of the frontend, so the test
    uses big values: 24 GETs of a 16 MiB value owe 384 MiB.  The limit counts replies already
    waiting when another is written (one reply bigger than it still reaches a reader), so the
    GETs go in separate packets, each read on its own while the store is stopped (SIGSTOP),
    and their replies are written one by one when it resumes."""
    c = make_cluster(1, read_cache_mb=0).start()  # every GET through the store
    node = c.nodes[0]
    value = b"v" * (16 * 1024 * 1024)
    with node.client() as w:
        w.send(_resp(b"SET", b"big", value))
        assert w.read_line() == b"+OK\r"
    gets = 24
    reply_size = len(b"VALUE ") + len(value) + 1
    store = node.child_pid("store")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # little room in our kernel
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(10)
        s.connect(("127.0.0.1", node.port))
        os.kill(store, signal.SIGSTOP)
        try:
            for _ in range(gets):
                s.sendall(b"GET big\n")  # ... and read nothing
                time.sleep(0.01)  # one packet, one read by the idle frontend
        finally:
            os.kill(store, signal.SIGCONT)
        wait_until(lambda: "closing a client that has" in node.log(), timeout=30,
                   what="the frontend to drop the client that does not read")
        got = 0
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except ConnectionError:
            pass  # reset: the frontend aborted the connection
    assert got < gets * reply_size, f"all {got} bytes of replies arrived: the client was not dropped"
    with node.client() as again:  # the node goes on serving everyone else
        assert again.cmd("SET small 1") == b"OK"
        assert again.cmd("GET small") == b"VALUE 1"


def test_tail_prints_events_of_writes(shared_cluster: Cluster) -> None:
    a = shared_cluster.nodes[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "zkv", "tail", str(a.config_path), "--all", "-n", "2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def write_until_seen() -> bool:
            with shared_cluster.nodes[0].client() as c0, shared_cluster.nodes[1].client() as c1:
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
    r = subprocess.run([sys.executable, "-m", "zkv", "status", str(cluster.nodes[1].config_path),
                        "--json"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)["nodes"]["node1"]
    origin0 = cluster.nodes[0].info()["origin"]
    assert info["id"] == "node1" and info["keys"] == 1 and info["vv"][origin0] == 1
    assert set(info["peers"]) == {"node0", "node2"}
