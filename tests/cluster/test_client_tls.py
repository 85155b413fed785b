"""Issue 10: TLS on the client port, with a throwaway CA made by ``openssl`` for the test.

redis-cli --tls, redis-py ssl=True and ``openssl s_client`` (the plain protocol) reach a TLS
node; a plain TCP client does not; with ``tls_ca_file`` a client without a certificate signed
by that CA is turned away.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import redis

from tests.cluster.harness import Node, wait_until

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
