"""Issue 10: client connections under an open-file limit, and ``idle_timeout``.

A node started under ``ulimit -n 1024`` either raises its limit (as Redis does) and serves
2,000 clients, or, when it may not raise it, lowers its effective ``max_clients`` and tells
every client past it so: no client is ever dropped without a word.
"""

from __future__ import annotations

import resource
import socket
import time

import pytest

from tests.cluster.harness import Node

CLIENTS = 2000
ULIMIT = ["prlimit", "--nofile=1024:1024", "--"]  # soft and hard
# root without CAP_SYS_RESOURCE: may not raise its hard limit (as any unprivileged user)
NO_RAISE = ["setpriv", "--bounding-set", "-sys_resource", "--"]


def _room_for_clients() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CLIENTS + 200:
        if hard != resource.RLIM_INFINITY and hard < CLIENTS + 200:
            pytest.skip(f"the test itself needs {CLIENTS + 200} open files (hard limit {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (CLIENTS + 200, hard))


def _many_clients(node: Node) -> list[bytes]:
    """Open CLIENTS connections at once, PING on each, and collect each one's first line."""
    socks = []
    try:
        for _ in range(CLIENTS):
            s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
            s.sendall(b"PING\n")
            socks.append(s)
        replies = []
        for s in socks:
            buf = b""
            try:
                while not buf.endswith(b"\n"):
                    chunk = s.recv(100)
                    if not chunk:
                        break
                    buf += chunk
            except OSError as exc:
                buf = f"<{type(exc).__name__}>".encode()
            replies.append(buf.rstrip(b"\n"))
        return replies
    finally:
        for s in socks:
            s.close()


def test_a_node_started_under_ulimit_1024_serves_2000_clients(make_cluster) -> None:
    _room_for_clients()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < CLIENTS + 100:
        pytest.skip(f"hard open-file limit {hard} leaves no room to raise the soft one")
    c = make_cluster(1)
    node = c.nodes[0]
    node.prefix = ["prlimit", "--nofile=1024:", "--"]  # the common soft limit, hard as it is
    node.start()
    replies = _many_clients(node)
    assert replies.count(b"PONG") == CLIENTS, {r: replies.count(r) for r in set(replies)}
    assert "open-file limit raised from 1024" in node.log_path.read_text()


def test_a_node_that_may_not_raise_its_limit_refuses_clients_with_a_reply(make_cluster) -> None:
    _room_for_clients()
    c = make_cluster(1)
    node = c.nodes[0]
    node.prefix = [*ULIMIT, *NO_RAISE]
    node.start()
    replies = _many_clients(node)
    counts = {r: replies.count(r) for r in set(replies)}
    served = counts.get(b"PONG", 0)
    refused = counts.get(b"ERROR max number of clients reached", 0)
    assert served + refused == CLIENTS, f"clients dropped without a word: {counts}"
    assert 900 <= served < 1024, counts
    log = node.log_path.read_text()
    assert "max_clients lowered from 10000 to" in log, log[-2000:]
    # the limit holds connections, not requests: once they are gone, new clients are served
    assert node.get("k") == b"NOT FOUND"


def test_idle_timeout_closes_silent_clients_only(make_cluster) -> None:
    c = make_cluster(1, idle_timeout=1)
    node = c.nodes[0]
    node.start()
    with node.client() as silent, node.client() as busy:
        t0 = time.monotonic()
        silent.sock.setblocking(False)
        while time.monotonic() - t0 < 8:
            assert busy.cmd("PING") == b"PONG"
            try:
                if silent.sock.recv(1) == b"":
                    break
            except BlockingIOError:
                pass
            time.sleep(0.2)
        took = time.monotonic() - t0
        assert 0.9 <= took < 4, f"a silent client was closed after {took:.1f}s (idle_timeout = 1)"
        assert busy.cmd("PING") == b"PONG", "an active client was closed"
