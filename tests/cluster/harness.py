"""Real zkv clusters for tests: subprocess nodes on free loopback ports, and a line client.

Every node runs as ``python -m zkv node CONFIG`` in its own session (process group), so a test
can SIGKILL or SIGSTOP the whole node, or one of its children, exactly as an operator could.
Nothing here mocks a socket, a ZeroMQ endpoint or a process.

By default everything is on 127.0.0.1.  A node's ``host`` (client address), ``bus_host`` and
``prefix`` (a command its processes run under, such as ``ip netns exec NS``) let a test place
nodes elsewhere, e.g. in network namespaces (tests/cluster/test_partition.py), and its
``netns`` names the namespace the test's own client sockets to it are made in.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768+).

    Port 0 would hand out an ephemeral port, which the kernel may give to some client socket
    (the tests open hundreds) before the node binds it; ports below the range are only taken by
    explicit binds.  The port is checked by binding it, and never handed out twice per run.
    """
    rnd = random.Random()
    for _ in range(1000):
        port = rnd.randrange(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def wait_until(cond: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except (OSError, ConnectionError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


_CLONE_NEWNET = 0x40000000


def socket_in_netns(netns: str, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket made inside the network namespace ``netns`` (a name from ``ip netns add``).

    A socket stays in the namespace it was made in, so only a short-lived thread enters the
    namespace (``setns`` moves the calling thread alone); the test process never leaves its own.
    """
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            made.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            made.append(exc)

    t = threading.Thread(target=make, name=f"netns-{netns}")
    t.start()
    t.join(10)
    if t.is_alive() or not made:
        raise OSError(f"could not make a socket in network namespace {netns}")
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def connect(host: str, port: int, timeout: float, netns: str | None = None) -> socket.socket:
    """A TCP connection to ``host:port`` from this process's namespace, or from ``netns``."""
    if netns is None:
        return socket.create_connection((host, port), timeout=timeout)
    sock = socket_in_netns(netns, socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class LineClient:
    """The plain-text protocol as nc speaks it: send lines, read one reply line each."""

    def __init__(self, port: int, timeout: float = 10.0, host: str = "127.0.0.1",
                 netns: str | None = None) -> None:
        self.sock = connect(host, port, timeout, netns)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def cmd(self, line: bytes | str) -> bytes:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\n")
        return self.read_line()

    def pipeline(self, lines: list[bytes]) -> list[bytes]:
        self.send(b"".join(line + b"\n" for line in lines))
        return [self.read_line() for _ in lines]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _die_with_test_run() -> None:
    """In the node's supervisor before exec: SIGKILL it if the test run dies (its children then
    stop too), so a killed or timed-out pytest never leaves nodes holding ports."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


@dataclass
class Node:
    id: str
    port: int
    bus_port: int
    config_path: Path
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"  # where the node listens for clients
    bus_host: str = "127.0.0.1"  # where its bus (and catch-up socket) binds
    prefix: list[str] = field(default_factory=list)  # the node runs as ``prefix + [python, ...]``
    netns: str | None = None  # the network namespace the test's clients of it connect from
    env: dict[str, str] = field(default_factory=dict)  # added to the node's environment at start
    peer_ids: list[str] = field(default_factory=list)  # the peers its config names
    password: str | None = None  # its config's client password (info() authenticates with it)

    @property
    def bus(self) -> str:
        return f"tcp://{self.bus_host}:{self.bus_port}"

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self, wait: bool = True) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "zkv", "node", str(self.config_path)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_test_run, env={**os.environ, **self.env} if self.env else None,
        )
        log.close()
        if wait:
            self.wait_ready()

    def seed_clock(self) -> Node:
        """Give the node a clock file, as an earlier run leaves one: a node with none (new or
        wiped) accepts writes only after hearing a peer, which a test that starts it alone,
        about something else, does not want (zkv.store.clockfile)."""
        from zkv.store import clockfile

        clockfile.create(self.data_dir)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.id} exited with {self.proc.returncode}:\n{self.log()}")
            with LineClient(self.port, timeout=2, host=self.host, netns=self.netns) as c:
                return c.cmd("PING") == b"PONG"
        wait_until(up, timeout, what=f"{self.id} to answer PING")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole node (supervisor, store, frontend) at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the clean way an operator stops a node."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def children(self) -> list[int]:
        """PIDs of the node's store and frontend processes."""
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []

    def child_pid(self, role: str) -> int:
        for pid in self.children():
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"zkv.{role}_main".encode() in f.read():
                    return pid
        raise AssertionError(f"no {role} process under {self.id}")

    def client(self) -> LineClient:
        return LineClient(self.port, host=self.host, netns=self.netns)

    def get(self, key: str) -> bytes:
        with self.client() as c:
            return c.cmd(f"GET {key}")

    def info(self, section: str | None = None) -> dict[str, str]:
        """``INFO`` over RESP on the client port, as ``field -> value`` (section headers dropped)."""
        args = [b"INFO"] + ([section.encode()] if section else [])
        req = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        if self.password is not None:
            pw = self.password.encode()
            req = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw) + req
        def line(s: socket.socket, buf: bytes) -> tuple[bytes, bytes]:  # (a reply's line, the rest)
            while b"\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed")
                buf += chunk
            head, _, rest = buf.partition(b"\r\n")
            return head, rest

        with connect(self.host, self.port, 10, self.netns) as s:
            s.sendall(req)
            buf = b""
            if self.password is not None:
                head, buf = line(s, buf)
                if head != b"+OK":
                    raise AssertionError(f"AUTH replied {head!r}")
            head, body = line(s, buf)
            if not head.startswith(b"$"):
                raise AssertionError(f"INFO replied {head!r}")
            size = int(head[1:])
            while len(body) < size + 2:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed")
                body += chunk
        fields: dict[str, str] = {}
        for line in body[:size].decode("utf-8", "replace").splitlines():
            if line and not line.startswith("#") and ":" in line:
                k, _, v = line.partition(":")
                fields[k] = v
        return fields

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


class Cluster:
    def __init__(self, root: Path, n: int = 3, curve: bool = False, **settings: Any) -> None:
        """``curve=True``: every node gets a key pair (zkv keygen's format) and the bus is closed
        to all but the configured peers."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.curve = curve
        self.nodes: list[Node] = []
        for i in range(n):
            nid = f"node{i}"
            self.nodes.append(Node(nid, free_port(), free_port(), root / f"{nid}.toml",
                                   root / nid, root / f"{nid}.log"))
        self.settings = settings
        for node in self.nodes:
            self.write_config(node)

    def write_config(self, node: Node, peers: list[Node] | None = None, **overrides: Any) -> None:
        peers = [p for p in self.nodes if p is not node] if peers is None else peers
        node.peer_ids = [p.id for p in peers]
        node.password = {**self.settings, **overrides}.get("password")
        lines = [f'id = "{node.id}"', f'listen = "{node.listen}"', f'bus = "{node.bus}"',
                 f'data_dir = "{node.data_dir}"']
        if self.curve:
            lines.append(f'secret_key = "{self.key_path(node)}.secret"')
        for k, v in {**self.settings, **overrides}.items():
            if isinstance(v, bool):
                lines.append(f"{k} = {str(v).lower()}")
            else:
                lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
        for i, p in enumerate(peers):
            lines += ["", "[[peers]]", f'id = "{p.id}"', f'bus = "{p.bus}"']
            if self.curve:  # both spellings: a certificate file, and the Z85 key inline
                key = f"keys/{p.id}.public" if i % 2 == 0 else self.public_key(p).decode()
                lines.append(f'public_key = "{key}"')
        node.config_path.write_text("\n".join(lines) + "\n")

    def key_path(self, node: Node) -> Path:
        """The node's key pair (``.secret`` and ``.public``), made on first use."""
        from zkv.curve import keygen

        base = self.root / "keys" / node.id
        if not Path(f"{base}.secret").exists():
            keygen(base)
        return base

    def public_key(self, node: Node) -> bytes:
        from zkv.curve import load_public

        return load_public(f"{self.key_path(node)}.public")

    def add_node(self) -> Node:
        i = len(self.nodes)
        node = Node(f"node{i}", free_port(), free_port(), self.root / f"node{i}.toml",
                    self.root / f"node{i}", self.root / f"node{i}.log")
        self.nodes.append(node)
        self.write_config(node)
        return node

    def start(self, formed: bool = True) -> Cluster:
        """Start every node; return once each answers and (``formed``) has heard every peer of
        it that runs, so a test's first write is accepted, replicated and counted by WAIT as on
        a cluster that has been up a while, not refused by a new node that has heard no peer
        yet.  (A test of nodes that announce themselves rarely passes ``formed=False``.)"""
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_ready()
        if formed:
            self.wait_formed()
        return self

    def wait_formed(self, timeout: float = 15.0) -> None:
        running = {n.id for n in self.nodes if n.proc is not None and n.proc.poll() is None}
        for node in self.nodes:
            if node.id in running:
                want = len(running.intersection(node.peer_ids))
                wait_until(lambda: int(node.info("replication")["connected_peers"]) >= want,
                           timeout, what=f"{node.id} to hear its {want} running peers")

    def stop(self) -> None:
        """Stop every node the clean way (SIGCONT, then SIGTERM), all at once: each node's
        shutdown (its final snapshot) overlaps the others' instead of queueing behind them.
        A node still running 20 s after its SIGTERM is SIGKILLed."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for node in running:
            try:
                node.signal(signal.SIGCONT)
                node.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            except ProcessLookupError:
                pass
        for node in running:
            try:
                node.proc.wait(20)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass
            node.kill()

    def kill(self) -> None:
        """SIGKILL every node (its whole process group) at once, and wait for each: how the
        fixtures end a test, where nothing is checked after the stop, so a clean shutdown (0.3-0.5
        s a node, its final snapshot) is not waited for.  A test that checks a clean stop calls
        stop() or Node.stop() itself."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for node in running:
            try:
                node.signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        for node in running:
            node.proc.wait(10)  # type: ignore[union-attr]

    def config_paths(self, nodes: list[Node] | None = None) -> list[str]:
        return [str(n.config_path) for n in (nodes or self.nodes)]

    def verify(self, nodes: list[Node] | None = None, timeout: float = 30.0,
               prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``zkv verify`` as an operator would (under ``prefix``, e.g. ``ip netns exec NS``)."""
        return subprocess.run(
            [*(prefix or []), sys.executable, "-m", "zkv", "verify", *self.config_paths(nodes),
             "--timeout", str(timeout)],
            cwd=REPO, capture_output=True, text=True, timeout=timeout + 30,
        )

    def logs(self) -> str:
        return "\n".join(f"--- {n.id} ---\n{n.log()}" for n in self.nodes)
