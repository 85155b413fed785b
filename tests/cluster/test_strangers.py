"""Strangers: connections that never finish a handshake, on every port of a keyed node.

The issue: under an open-file limit of 1,024, about 1,100 silent TCP connections to a node's
catch-up port (ZeroMQ accepts each one before the CURVE handshake, and kept it for 30 s) left
its store without a descriptor to open its next log segment at a snapshot, and it exited.
Now both ZeroMQ ports (bus PUB and catch-up ROUTER) close a connection that has not finished
its handshake after a few seconds, the store raises its own open-file limit as the frontend
does, and a file it cannot open (no descriptor left) is retried later instead of stopping it.

Each test: a keyed two-node cluster, node0 under ``prlimit --nofile=1024``; 5,000 silent
connections to each of node0's client, bus and catch-up ports while one client keeps writing
(with snapshots every ~100 writes); every write is answered OK, no process exits, node0's INFO
counts the strangers, and the ZeroMQ ones are gone a few seconds after they stop coming.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import threading
import time

import pytest

from tests.cluster.harness import Cluster, Node, free_port, wait_until
from tests.cluster.respclient import Resp, resp_cmd

STRANGERS = 5000  # silent connections to each port
EARLY = 100  # of them, opened first: the node must close these within the handshake timeout
HANDSHAKE_S = 5.0  # zkv's handshake timeout on the bus and catch-up sockets
STORM_S = 8.0  # seconds the strangers keep their connections (the writer writes meanwhile)
MAX_WRITES = 2500
ULIMIT = ["prlimit", "--nofile=1024:1024", "--"]
NO_RAISE = ["setpriv", "--bounding-set", "-sys_resource", "--"]


def _room_for_strangers() -> None:
    need = 3 * STRANGERS + 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(need, hard)))
    except (ValueError, OSError):
        pytest.skip(f"the test itself needs {need} open files (limits {soft}/{hard})")


class Strangers:
    """TCP connections to ``port`` that never send a byte (connected without blocking, so ones
    the listener's backlog cannot take yet do not hold the test up)."""

    def __init__(self, port: int, n: int) -> None:
        self.socks: list[socket.socket] = []
        self.closed: set[int] = set()  # indexes the far end closed
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            self.socks.append(s)

    def count_closed(self) -> int:
        """How many of them the node has closed (read what it sent; EOF or reset)."""
        p = select.poll()
        index = {}
        for i, s in enumerate(self.socks):
            if i not in self.closed:
                p.register(s, select.POLLIN)
                index[s.fileno()] = i
        for fd, _ev in p.poll(0):
            i = index[fd]
            s = self.socks[i]
            try:
                while s.recv(65536):
                    pass
            except BlockingIOError:
                continue  # open: what it read was a greeting
            except OSError:
                pass  # reset
            self.closed.add(i)
        return len(self.closed)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _info(conn: Resp) -> dict:
    """``INFO json`` on a connection opened before the storm (a new one might be refused)."""
    conn.send(resp_cmd("INFO", "json"))
    head = conn.line()
    assert head.startswith(b"$"), head
    size = int(head[1:])
    while len(conn.buf) < size + 2:
        chunk = conn.sock.recv(65536)
        assert chunk, "INFO connection closed"
        conn.buf += chunk
    body, conn.buf = conn.buf[:size], conn.buf[size + 2:]
    return json.loads(body)


class Writer(threading.Thread):
    """SETs on one connection, one at a time, until told to stop or MAX_WRITES."""

    def __init__(self, node: Node) -> None:
        super().__init__(daemon=True)
        self.client = node.client()
        self.replies: list[bytes] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(MAX_WRITES):
                if self.stop.is_set():
                    return
                self.replies.append(self.client.cmd(f"SET w{i} v{i}"))
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def last(self) -> str:
        return f"v{len(self.replies) - 1}"


def _keyed_pair(make_cluster, prefix: list[str]) -> tuple[Cluster, Node, int]:
    c = make_cluster(2, curve=True, snapshot_records=100)
    n0 = c.nodes[0]
    catchup_port = free_port()
    c.write_config(n0, catchup_port=catchup_port)
    n0.prefix = prefix
    c.start()
    return c, n0, catchup_port


def _storm(c: Cluster, n0: Node, catchup_port: int) -> tuple[dict, dict]:
    """The strangers against node0 while a writer writes; returns node0's INFO during the storm
    and after the strangers left.  Checks what must hold either way."""
    store, frontend = n0.child_pid("store"), n0.child_pid("frontend")
    watch = Resp(n0.port)
    writer = Writer(n0)
    writer.start()
    early = [Strangers(p, EARLY) for p in (n0.bus_port, catchup_port)]
    crowd: list[Strangers] = []
    t0 = time.monotonic()
    try:
        time.sleep(0.3)
        crowd = [Strangers(n0.port, STRANGERS)] + [
            Strangers(p, STRANGERS - EARLY) for p in (n0.bus_port, catchup_port)]
        # the first ones, silent since t0, are closed once the handshake timeout has passed
        def early_closed() -> bool:
            assert n0.proc is not None and n0.proc.poll() is None, f"node0 exited:\n{n0.log()}"
            return all(e.count_closed() == EARLY for e in early)

        wait_until(early_closed, timeout=HANDSHAKE_S + 7, interval=0.2,
                   what="node0 to close the silent bus and catch-up connections")
        closed_after = time.monotonic() - t0
        assert closed_after >= HANDSHAKE_S - 1, f"closed after {closed_after:.1f}s"
        time.sleep(max(0.0, STORM_S - (time.monotonic() - t0)))
        during = _info(watch)
    finally:
        for s in early + crowd:
            s.close()
        writer.stop.set()
        writer.join(30)
    assert writer.error is None, f"the writer failed: {writer.error!r}\n{c.logs()}"
    counts = {r: writer.replies.count(r) for r in set(writer.replies)}
    assert counts.keys() == {b"OK"}, f"writes not all OK: {counts}\n{c.logs()}"
    assert len(writer.replies) >= 300, counts
    assert n0.proc is not None and n0.proc.poll() is None, c.logs()
    assert (n0.child_pid("store"), n0.child_pid("frontend")) == (store, frontend), c.logs()

    def settled() -> dict | None:
        info = _info(watch)
        ls = info["listeners"]
        ok = ls["bus"]["open"] <= 1 and ls["catchup"]["open"] <= 1 and info["clients"] <= 3
        return info if ok else None

    after = wait_until(settled, timeout=HANDSHAKE_S + 10, interval=0.3,
                       what="the strangers' connections to be gone from node0's INFO")
    watch.close()
    with n0.client() as fresh:  # a new client is served, and the peer has every write
        assert fresh.cmd("PING") == b"PONG"
    n1 = c.nodes[1]
    last = writer.last()
    wait_until(lambda: n1.get(f"w{len(writer.replies) - 1}") == f"VALUE {last}".encode(),
               timeout=15, what="node1 to have node0's last write")
    return during, after


def test_strangers_on_every_port_of_a_node_that_may_not_raise_its_limit(make_cluster) -> None:
    """node0's processes are held at 1,024 descriptors: the store runs out of them while the
    strangers come, and must carry on (keep its log segment, retry the snapshot)."""
    _room_for_strangers()
    c, n0, catchup_port = _keyed_pair(make_cluster, [*ULIMIT, *NO_RAISE])
    during, after = _storm(c, n0, catchup_port)
    ls = during["listeners"]
    assert ls["store_open_files_limit"] == 1024, ls
    # it did run out: a log segment or a descriptor for the background sync it could not get
    ran_out = during["disk"]["log_open_failures"] + during["background_fsync"]["inline"]
    assert ran_out >= 1, (during["disk"], during["background_fsync"])
    for name in ("bus", "catchup"):
        assert ls[name]["handshake_failures"] >= EARLY, (name, ls)
        assert ls[name]["open_peak"] < 1024, (name, ls)
    assert after["listeners"]["bus"]["accepted"] >= ls["bus"]["accepted"]
    assert during["clients"] >= 900, during["clients"]  # the client port's strangers, as clients


@pytest.mark.soak  # (the suite runs the harsher case above, where the store does run out)
def test_strangers_on_every_port_of_a_node_that_raises_its_limit(make_cluster) -> None:
    """Started under a soft limit of 1,024 with room above it: the store raises its limit (as
    the frontend does) and holds every stranger until its handshake timeout, none refused for
    want of a descriptor."""
    _room_for_strangers()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 3 * STRANGERS:
        pytest.skip(f"hard open-file limit {hard} leaves no room to raise the soft one")
    c, n0, catchup_port = _keyed_pair(make_cluster, ["prlimit", "--nofile=1024:", "--"])
    during, _after = _storm(c, n0, catchup_port)
    ls = during["listeners"]
    peak = ls["bus"]["open_peak"] + ls["catchup"]["open_peak"]
    assert peak > 2048, f"at most {peak} stranger connections open at once: {ls}"
    assert ls["store_open_files_limit"] > 2 * STRANGERS, ls
    assert during["clients"] >= STRANGERS, during["clients"]
    assert "Too many open files" not in n0.log_path.read_text(), n0.log()
