"""Issue 10: ``password`` (Redis's requirepass) through real clients: nc-style plain text,
redis-cli -a, redis-py password=, redis-benchmark -a, HELLO 3 AUTH, and a brute-forcing
connection that is slowed down."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.cluster.harness import Cluster, Node

PASSWORD = "correct-horse-battery"
REDIS_CLI = "/usr/bin/redis-cli"
REDIS_BENCHMARK = "/usr/bin/redis-benchmark"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    c = Cluster(tmp_path_factory.mktemp("auth"), 2, password=PASSWORD).start()
    try:
        yield c.nodes[0]
    finally:
        c.stop()


def read_lines(s: socket.socket, n: int, timeout: float = 10) -> list[bytes]:
    s.settimeout(timeout)
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(65536)
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    return buf.split(b"\n")[:n]


def test_plain_protocol_needs_auth_first(node: Node) -> None:
    with socket.create_connection(("127.0.0.1", node.port)) as s:
        s.sendall(b"GET a\nSET a 1\nPING\nAUTH wrong\nAUTH " + PASSWORD.encode()
                  + b"\nSET a 1\nGET a\n")
        assert read_lines(s, 7) == [
            b"ERROR NOAUTH Authentication required", b"ERROR NOAUTH Authentication required",
            b"PONG", b"ERROR WRONGPASS invalid username-password pair or user is disabled.",
            b"OK", b"OK", b"VALUE 1"]


def test_redis_cli_with_and_without_a_password(node: Node) -> None:
    base = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(node.port)]
    out = subprocess.run([*base, "-a", PASSWORD, "--no-auth-warning", "SET", "cli", "yes"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "OK", out
    out = subprocess.run([*base, "-a", PASSWORD, "--no-auth-warning", "GET", "cli"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "yes", out
    out = subprocess.run([*base, "GET", "cli"], capture_output=True, text=True, timeout=30)
    assert "NOAUTH Authentication required" in out.stdout + out.stderr, out


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_password(node: Node, protocol: int) -> None:
    """redis-py sends AUTH (RESP2) or HELLO 3 AUTH default <password> (RESP3)."""
    kw = dict(host="127.0.0.1", port=node.port, socket_timeout=5, retry=Retry(NoBackoff(), 0),
              protocol=protocol)
    r = redis.Redis(password=PASSWORD, **kw)
    assert r.set(f"py{protocol}", "v") is True
    assert r.get(f"py{protocol}") == b"v"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(password="nope", **kw).get("x")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(username="bob", password=PASSWORD, **kw).get("x")
    with pytest.raises(redis.AuthenticationError, match="Authentication required"):
        redis.Redis(**{**kw, "protocol": 2}).get("x")  # NOAUTH


def test_redis_benchmark_with_a_password(node: Node) -> None:
    out = subprocess.run([REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(node.port), "-a", PASSWORD,
                          "-t", "set", "-n", "2000", "-c", "4", "-q"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "SET" in out.stdout, out
    r = redis.Redis(host="127.0.0.1", port=node.port, password=PASSWORD, protocol=2)
    assert r.exists("key:__rand_int__") == 1
    assert "NOAUTH" not in out.stdout + out.stderr


def test_repeated_wrong_passwords_are_slowed_down(node: Node) -> None:
    """Three wrong passwords are answered at once; the 4th, 5th and 6th each hold the
    connection (0.1 + 0.2 + 0.4 s); the right one still works afterwards, and another
    connection is not held meanwhile."""
    with socket.create_connection(("127.0.0.1", node.port)) as s:
        t0 = time.monotonic()
        s.sendall(b"AUTH a\nAUTH b\nAUTH c\n")
        assert len(read_lines(s, 3)) == 3
        fast = time.monotonic() - t0
        s.sendall(b"AUTH d\nAUTH e\nAUTH f\nAUTH " + PASSWORD.encode() + b"\nGET nothing\n")
        t1 = time.monotonic()
        with socket.create_connection(("127.0.0.1", node.port)) as other:
            other.sendall(b"PING\n")
            assert read_lines(other, 1) == [b"PONG"]
            other_took = time.monotonic() - t1
        lines = read_lines(s, 5)
        slow = time.monotonic() - t1
    assert lines[-2:] == [b"OK", b"NOT FOUND"], lines
    assert all(line.startswith(b"ERROR WRONGPASS") for line in lines[:3])
    assert fast < 0.5 and slow >= 0.65, (fast, slow)
    assert other_took < 0.5, other_took


def test_status_says_a_node_needs_a_password(node: Node) -> None:
    """zkv status of a password-protected port says what to add, not just "down"."""


    def status(*extra: str) -> tuple[int, str]:
        p = subprocess.run([sys.executable, "-m", "zkv", "status", f"127.0.0.1:{node.port}", *extra],
                           capture_output=True, text=True, timeout=30)
        return p.returncode, p.stdout + p.stderr

    assert "needs --password" in status()[1]
    assert "wrong --password" in status("--password", "nope")[1]
    rc, out = status("--password", PASSWORD)
    assert rc == 0 and "node0 up" in " ".join(out.split()), out
