"""The systems under test, started on 127.0.0.1 in a temp dir.

* :func:`start_redis` - one Redis master and two replicas (persistence off).
* :func:`start_zkv` - three zkv nodes, full mesh of peers, one TOML config each.
* :func:`start_bare` - the issue's calibration point: a single-process Python server with a
  dict (one node, nothing replicated; throughput only).

Each returns a :class:`Cluster`: a list of ``host:port`` client endpoints, node 0 being the one
that takes the writes (the Redis master / zkv ``node0``), plus how to measure its memory.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from bench import procs
from bench.resp import RespConnection, RespError, info_fields, ping_once

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ZKV_CMD = "{python} -m zkv node {config}"


class StartupError(Exception):
    """A node did not come up (the message carries the tail of its log)."""


@dataclass
class Node:
    name: str
    host: str
    port: int
    child: procs.Child

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Cluster:
    """The running nodes of one system; ``nodes[0]`` takes writes, ``nodes[1]`` (if any) is read
    for lag."""

    kind: str  # "redis", "zkv" or "bare"
    label: str  # what the report calls it
    nodes: list[Node]
    workdir: Path
    memory_mode: str  # "used_memory" (Redis INFO) or "rss" (RSS of the store process)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def writer(self) -> Node:
        return self.nodes[0]

    @property
    def reader(self) -> Node:
        return self.nodes[1]

    def children(self) -> list[procs.Child]:
        return [n.child for n in self.nodes]

    def stop(self) -> None:
        procs.stop_all(self.children())

    def check_alive(self) -> None:
        for n in self.nodes:
            if not n.child.alive():
                raise StartupError(f"{self.label} {n.name} exited (code {n.child.proc.returncode}); "
                                   f"log tail:\n{n.child.log_tail()}")


# --------------------------------------------------------------------------- waiting


def wait_until(what: str, check: Callable[[], bool], deadline_s: float,
               alive: Callable[[], None] | None = None, interval: float = 0.05) -> float:
    """Poll ``check`` until true; raise :class:`StartupError` after ``deadline_s``.  Returns seconds."""
    start = time.monotonic()
    end = start + deadline_s
    while True:
        if alive is not None:
            alive()
        if check():
            return time.monotonic() - start
        if time.monotonic() >= end:
            raise StartupError(f"timed out after {deadline_s:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_ping(cluster: Cluster, deadline_s: float) -> None:
    for n in cluster.nodes:
        try:
            wait_until(f"{cluster.label} {n.name} ({n.addr}) to answer PING",
                       lambda n=n: ping_once(n.host, n.port), deadline_s, cluster.check_alive)
        except StartupError as e:
            if "log tail" in str(e):
                raise
            raise StartupError(f"{e}; log tail:\n{n.child.log_tail()}") from None


def wait_replicated(cluster: Cluster, deadline_s: float) -> float:
    """Write a fresh key on node 0 and wait until every other node serves it.  Returns seconds."""
    key = f"bench:ready:{time.time_ns()}"
    with RespConnection(cluster.writer.host, cluster.writer.port) as w:
        reply = w.call("SET", key, "1")
        if isinstance(reply, RespError):
            raise StartupError(f"{cluster.label}: SET on {cluster.writer.name} failed: {reply.message}")
    start = time.monotonic()
    for n in cluster.nodes[1:]:
        with RespConnection(n.host, n.port) as r:
            remaining = max(0.1, deadline_s - (time.monotonic() - start))
            wait_until(f"{cluster.label} {n.name} to see a write made on {cluster.writer.name}",
                       lambda r=r: r.call("GET", key) == b"1", remaining, cluster.check_alive, 0.01)
    return time.monotonic() - start


# --------------------------------------------------------------------------- Redis


def redis_version() -> str:
    try:
        out = procs.run_capture(["redis-server", "--version"], timeout=10).stdout
    except (OSError, Exception):  # noqa: BLE001 - informational only
        return "unknown"
    for tok in out.split():
        if tok.startswith("v="):
            return tok[2:]
    return out.strip() or "unknown"


def start_redis(workdir: Path, label: str = "Redis", kind: str = "redis",
                memory_mode: str = "used_memory", deadline_s: float = 30.0) -> Cluster:
    """One master and two replicas, persistence off, each ``--daemonize no`` in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports = procs.free_ports(3)
    nodes: list[Node] = []
    cluster = Cluster(kind, label, nodes, workdir, memory_mode)
    try:
        for i, port in enumerate(ports):
            name = "master" if i == 0 else f"replica{i}"
            ndir = workdir / name
            ndir.mkdir(exist_ok=True)
            argv = ["redis-server", "--port", str(port), "--bind", procs.LOOPBACK,
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--dir", str(ndir), "--logfile", "", "--repl-diskless-sync-delay", "0"]
            if i > 0:
                argv += ["--replicaof", procs.LOOPBACK, str(ports[0])]
            child = procs.spawn(f"{label}:{name}", argv, log_path=workdir / f"{name}.log")
            nodes.append(Node(name, procs.LOOPBACK, port, child))
        wait_ping(cluster, deadline_s)
        for n in nodes[1:]:
            with RespConnection(n.host, n.port) as c:
                wait_until(f"{label} {n.name} master_link_status:up",
                           lambda c=c: info_fields(c.call("INFO", "replication") or b"")
                           .get("master_link_status") == "up",
                           deadline_s, cluster.check_alive, 0.1)
        wait_replicated(cluster, deadline_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


# --------------------------------------------------------------------------- zkv


def zkv_config_text(node_id: str, port: int, bus_ports: dict[str, int], data_dir: Path,
                    settings: Sequence[str] = ()) -> str:
    """The TOML for one node: its client port, its bus and every other node as a peer, plus
    ``settings`` (``key = value`` TOML lines, e.g. ``read_cache_mb = 0``)."""
    lines = [
        f'id = "{node_id}"',
        f'listen = "{procs.LOOPBACK}:{port}"',
        f'bus = "tcp://{procs.LOOPBACK}:{bus_ports[node_id]}"',
        f'data_dir = "{data_dir}"',
        'fsync = "everysec"',
        *settings,
    ]
    for peer, bport in bus_ports.items():
        if peer != node_id:
            lines += ["", "[[peers]]", f'id = "{peer}"', f'bus = "tcp://{procs.LOOPBACK}:{bport}"']
    return "\n".join(lines) + "\n"


def zkv_argv(template: str, config: Path) -> list[str]:
    """Expand the node command template (``{python}`` and ``{config}``) into argv."""
    return [part.format(python=sys.executable, config=str(config)) for part in shlex.split(template)]


def start_zkv(workdir: Path, cmd_template: str = DEFAULT_ZKV_CMD, deadline_s: float = 60.0,
              count: int = 3, settings: Sequence[str] = ()) -> Cluster:
    """Write ``count`` TOML configs, start each node in its own process group, wait for PING."""
    workdir.mkdir(parents=True, exist_ok=True)
    ids = [f"node{i}" for i in range(count)]
    ports = procs.free_ports(2 * count)
    client_ports = dict(zip(ids, ports[:count]))
    bus_ports = dict(zip(ids, ports[count:]))
    nodes: list[Node] = []
    cluster = Cluster("zkv", "zkv", nodes, workdir, "rss")
    try:
        for node_id in ids:
            data_dir = workdir / node_id
            data_dir.mkdir(exist_ok=True)
            cfg = workdir / f"{node_id}.toml"
            cfg.write_text(zkv_config_text(node_id, client_ports[node_id], bus_ports, data_dir, settings))
            child = procs.spawn(f"zkv:{node_id}", zkv_argv(cmd_template, cfg),
                                log_path=workdir / f"{node_id}.log", cwd=REPO_ROOT)
            nodes.append(Node(node_id, procs.LOOPBACK, client_ports[node_id], child))
        wait_ping(cluster, deadline_s)
        wait_replicated(cluster, deadline_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


# --------------------------------------------------------------------------- bare Python


def start_bare(workdir: Path, label: str = "bare Python", deadline_s: float = 30.0) -> Cluster:
    """The calibration server of ``bench/bare.py``: one process, a dict, nothing replicated."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = procs.free_ports(1)[0]
    argv = [sys.executable, str(REPO_ROOT / "bench" / "bare.py"), "--host", procs.LOOPBACK, "--port", str(port)]
    child = procs.spawn(label, argv, log_path=workdir / "bare.log", cwd=REPO_ROOT)
    cluster = Cluster("bare", label, [Node("bare", procs.LOOPBACK, port, child)], workdir, "rss")
    try:
        wait_ping(cluster, deadline_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


# --------------------------------------------------------------------------- memory probes


@dataclass
class MemoryProbe:
    """Where a node's memory is read: Redis INFO, or the RSS of chosen processes."""

    description: str
    pids: list[int]
    read: Callable[[], int]


def store_pids(root_pid: int) -> tuple[list[int], str]:
    """The zkv store process(es) under ``root_pid``: descendants whose cmdline contains "store".

    Falls back to the whole process tree (root and all descendants) when none matches, and
    says so in the returned description.
    """
    desc = procs.proc_descendants(root_pid)
    stores = [p for p in desc if "store_main" in procs.proc_cmdline(p)]
    stores = stores or [p for p in desc if "store" in procs.proc_cmdline(p)]
    if stores:
        return stores, f"VmRSS of the store process (pid {', '.join(map(str, stores))})"
    tree = [root_pid, *desc]
    return tree, (f"VmRSS of the whole node process tree (pids {', '.join(map(str, tree))}; "
                  "no process with 'store' in its cmdline)")


def memory_probe(cluster: Cluster, node: Node | None = None) -> MemoryProbe:
    node = node or cluster.writer
    if cluster.memory_mode == "used_memory":
        def read_used() -> int:
            with RespConnection(node.host, node.port) as c:
                return int(info_fields(c.call("INFO", "memory") or b"")["used_memory"])
        return MemoryProbe(f"INFO used_memory of the {node.name}", [node.child.pid], read_used)
    pids, description = store_pids(node.child.pid)

    def read_rss(pids: Sequence[int] = tuple(pids)) -> int:
        return sum(procs.proc_rss_bytes(p) for p in pids)
    return MemoryProbe(description, list(pids), read_rss)


def tree_rss(node: Node) -> int:
    """RSS of a node's whole process tree (informational)."""
    return sum(procs.proc_rss_bytes(p) for p in [node.child.pid, *procs.proc_descendants(node.child.pid)])
