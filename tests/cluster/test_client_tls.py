"""Issue 10: TLS on the client port, with a throwaway CA made by ``openssl`` for the test.

redis-cli --tls, redis-py ssl=True and ``openssl s_client`` (the plain protocol) reach a TLS
node; a plain TCP client does not; with ``tls_ca_file`` a client without a certificate signed
by that CA is turned away.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.cluster.harness import Node, wait_until
from zkv.frontend.tls import HANDSHAKE_TIMEOUT

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

REDIS_CLI = "/usr/bin/redis-cli"

MAKE_CERTS = """
set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=zkv test CA"
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
printf "subjectAltName=IP:127.0.0.1,DNS:localhost\\n" > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext
openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=zkv client"
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2
openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 2 -subj "/CN=stranger"
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", "-c", MAKE_CERTS], cwd=d, check=True, capture_output=True, timeout=60)
    return d


def tls_client(node: Node, certs: Path, cert: str | None = None) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if cert:
        ctx.load_cert_chain(certs / f"{cert}.crt", certs / f"{cert}.key")
    raw = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def line(s: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def start_tls_node(make_cluster, certs: Path, **extra) -> Node:
    c = make_cluster(1, tls_cert_file=str(certs / "server.crt"),
                     tls_key_file=str(certs / "server.key"), **extra)
    node = c.nodes[0]
    node.start(wait=False)
    cert = "client" if "tls_ca_file" in extra else None

    def up() -> bool:
        assert node.proc is not None and node.proc.poll() is None, node.log()
        with tls_client(node, certs, cert) as s:
            s.sendall(b"PING\n")
            return line(s) == b"PONG\n"

    wait_until(up, timeout=30, what="the TLS node to answer")
    return node


def test_tls_client_port_with_redis_cli_redis_py_and_openssl(make_cluster, certs: Path) -> None:
    node = start_tls_node(make_cluster, certs)
    cli = [REDIS_CLI, "--tls", "--cacert", str(certs / "ca.crt"), "-h", "127.0.0.1",
           "-p", str(node.port)]
    assert subprocess.run([*cli, "SET", "t", "secret value"], capture_output=True, text=True,
                          timeout=30).stdout.strip() == "OK"
    r = redis.Redis(host="127.0.0.1", port=node.port, ssl=True,
                    ssl_ca_certs=str(certs / "ca.crt"), protocol=2, socket_timeout=5)
    assert r.get("t") == b"secret value"
    assert r.delete("t") == 1
    assert r.set("t", "again") is True
    s_client = subprocess.run(
        ["openssl", "s_client", "-quiet", "-CAfile", str(certs / "ca.crt"),
         "-connect", f"127.0.0.1:{node.port}", "-verify_return_error"],
        input="GET t\nSET u 1\nGET u\nQUIT\n", capture_output=True, text=True, timeout=30)
    assert s_client.stdout.splitlines() == ["VALUE again", "OK", "VALUE 1", "OK"], s_client
    # plain TCP gets no reply from a TLS port (the bytes are not a TLS handshake)
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as plain:
        plain.sendall(b"GET t\n")
        try:
            got = plain.recv(100)
        except (ConnectionError, socket.timeout):
            got = b""
        assert b"VALUE" not in got
    assert node.proc is not None and node.proc.poll() is None
    with tls_client(node, certs) as s:  # and the node still serves TLS clients
        s.sendall(b"GET t\n")
        assert line(s) == b"VALUE again\n"


def test_client_certificates_required_with_a_ca(make_cluster, certs: Path) -> None:
    node = start_tls_node(make_cluster, certs, tls_ca_file=str(certs / "ca.crt"))
    for cert in (None, "other"):  # no certificate; a self-signed one the CA did not sign
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with tls_client(node, certs, cert) as s:
                s.sendall(b"PING\n")
                if not line(s):
                    raise ConnectionError("closed")
    r = redis.Redis(host="127.0.0.1", port=node.port, ssl=True, ssl_ca_certs=str(certs / "ca.crt"),
                    ssl_certfile=str(certs / "client.crt"), ssl_keyfile=str(certs / "client.key"),
                    protocol=2, socket_timeout=5)
    assert r.ping() is True


def test_bad_tls_files_stop_the_node_with_one_line(make_cluster, certs: Path) -> None:
    c = make_cluster(1, tls_cert_file=str(certs / "server.crt"), tls_key_file=str(certs / "client.key"))
    node = c.nodes[0]
    node.start(wait=False)
    assert node.proc is not None
    code = node.proc.wait(30)
    assert code != 0
    assert "tls_cert_file" in node.log(), node.log()


def _silent(node: Node, n: int) -> list[socket.socket]:
    """``n`` TCP connections to the node that never send a ClientHello."""
    return [socket.create_connection(("127.0.0.1", node.port), timeout=10) for _ in range(n)]


def _closed_by_node(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the node has closed (EOF or reset)."""
    p = select.poll()
    for s in socks:
        p.register(s, select.POLLIN)
    closed = 0
    for fd, _ev in p.poll(0):
        s = socket.socket(fileno=os.dup(fd))
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        finally:
            s.close()
    return closed


def _ask(node: Node, certs: Path, request: bytes) -> bytes:
    """One request from a fresh, legitimate TLS client: its reply line, or b"" if closed."""
    with tls_client(node, certs) as s:
        s.sendall(request)
        return line(s)


def _tls_info(node: Node, certs: Path) -> dict:
    with tls_client(node, certs) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$4\r\njson\r\n")
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(65536)
        head, _, body = buf.partition(b"\r\n")
        size = int(head[1:])
        while len(body) < size:
            body += s.recv(65536)
    return json.loads(body[:size])


def test_silent_tls_handshakes_count_as_clients_and_time_out(make_cluster, certs: Path) -> None:
    """Issue: with max_clients = 100 and idle_timeout = 5, about 1,074 TCP connections that
    never send a ClientHello left a legitimate TLS client an SSLEOFError at once (no reply):
    handshakes counted toward nothing, asyncio gave them 60 s, and the frontend's descriptors,
    sized for max_clients, ran out.  Now a handshake in progress holds a client slot for at
    most HANDSHAKE_TIMEOUT seconds; a client past the limit is told so after its handshake."""
    node = start_tls_node(make_cluster, certs, max_clients=100, idle_timeout=5)
    silent = _silent(node, 1074)
    try:
        t0 = time.monotonic()
        refused = b"ERROR max number of clients reached\n"
        replies: list[bytes] = []

        def refused_once_all_are_accepted() -> bool:
            # every slot is held by a handshake in progress once the frontend has accepted the
            # first 100 silent ones (the kernel queues them first): served it cannot be then,
            # refused it is
            replies.append(_ask(node, certs, b"PING\n"))
            return replies[-1] == refused

        wait_until(refused_once_all_are_accepted, timeout=5, interval=0.1,
                   what="a legitimate client to be refused (it was served: handshakes not counted?)")
        wait_until(lambda: _closed_by_node(silent) == len(silent), timeout=HANDSHAKE_TIMEOUT + 5,
                   what="the node to close every silent connection")
        took = time.monotonic() - t0
        assert took < HANDSHAKE_TIMEOUT + 3, f"silent connections held {took:.1f}s"
        assert _ask(node, certs, b"PING\n") == b"PONG\n"

        def settled() -> dict | None:  # (the frontend reports its figures once a second)
            client = _tls_info(node, certs)["listeners"]["client"]
            return client if client["tls_handshaking"] == 0 and client["connections"] <= 1 else None

        client = wait_until(settled, timeout=5, what="INFO to show no handshake in progress")
        assert client["tls_handshake_failures"] >= 1000 and client["rejected"] >= 1, client
    finally:
        for s in silent:
            s.close()
    assert node.proc is not None and node.proc.poll() is None


def test_idle_timeout_closes_a_connection_still_in_its_tls_handshake(make_cluster, certs: Path) -> None:
    node = start_tls_node(make_cluster, certs, idle_timeout=1)
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as silent:
        t0 = time.monotonic()
        silent.settimeout(HANDSHAKE_TIMEOUT + 5)
        try:
            assert silent.recv(1) == b""
        except ConnectionResetError:
            pass
        took = time.monotonic() - t0
    assert took < HANDSHAKE_TIMEOUT - 1.5, f"closed after {took:.1f}s (idle_timeout = 1)"
    assert _ask(node, certs, b"PING\n") == b"PONG\n"


def test_status_says_a_port_speaks_tls(make_cluster, certs: Path) -> None:
    """zkv status without --tls on a TLS port says to add it; with it (and the CA) it is up."""
    node = start_tls_node(make_cluster, certs)

    def status(*extra: str) -> tuple[int, str]:
        p = subprocess.run([sys.executable, "-m", "zkv", "status", f"127.0.0.1:{node.port}", *extra],
                           capture_output=True, text=True, timeout=30)
        return p.returncode, p.stdout + p.stderr

    assert "use --tls" in status()[1]
    assert "--cacert" in status("--tls")[1]  # the test CA is not trusted by default
    rc, out = status("--tls", "--cacert", str(certs / "ca.crt"))
    assert rc == 0 and "node0 up" in " ".join(out.split()), out
