"""``zkv init``: one ready config per node of a new cluster (and, with ``--curve``, key pairs).

For machines: ``--hosts a,b,c`` gives node i the client address ``HOST:port`` and the bus
``tcp://HOST:bus_port`` on its host (a host named twice gets the next ports).  For one machine:
``--nodes N`` puts every node on 127.0.0.1 with ports ``port + i`` and ``bus_port + i``, the way
``configs/`` is laid out.  The catch-up port is fixed too (``bus_port + 100``), so a firewall
can name every port a node uses.  Each config lists every other node as a peer.  With ``curve`` each
node gets ``nodeI.secret`` / ``nodeI.public`` and its config names its secret file and carries
its peers' public keys inline, so a node needs only its ``.toml`` and ``.secret``.  With a
password, every config gets the same one.  ``plan`` is pure; ``write`` puts files on disk.
"""

from __future__ import annotations

import json
import os

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from zkv.config import usable_password


CATCHUP_OFFSET = 100  # catch-up port = bus port + this


class InitError(Exception):
    """The request cannot be turned into a cluster; the message is one line."""


@dataclass(frozen=True, slots=True)
class NodePlan:
    id: str
    host: str
    port: int
    bus_port: int

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def bus(self) -> str:
        return f"tcp://{self.listen.rsplit(':', 1)[0]}:{self.bus_port}"


@dataclass
class ClusterPlan:
    nodes: list[NodePlan]
    password: str | None = None
    publics: dict[str, str] = field(default_factory=dict)  # node id -> Z85 public key


def plan(hosts: list[str], port: int = 7000, bus_port: int = 7100) -> list[NodePlan]:
    if not hosts:
        raise InitError("no hosts: give --hosts HOST1,HOST2,... or --nodes N")
    if any(not h or any(c.isspace() for c in h) or "," in h for h in hosts):
        raise InitError(f"bad host list {','.join(hosts)!r}")
    seen: dict[str, int] = {}
    nodes = []
    for i, host in enumerate(hosts):
        k = seen.get(host, 0)
        seen[host] = k + 1
        p, b = port + k, bus_port + k
        if not (0 < p < 65536 and 0 < b < 65536):
            raise InitError(f"ports {p}/{b} for {host} are out of range")
        nodes.append(NodePlan(f"node{i}", host, p, b))
    ports = {(n.host, p) for n in nodes for p in (n.port, n.bus_port, n.bus_port + CATCHUP_OFFSET)}
    if len(ports) != 3 * len(nodes) or any(n.bus_port + CATCHUP_OFFSET > 65535 for n in nodes):
        raise InitError("client and bus ports overlap; choose --port and --bus-port further apart")
    return nodes


def render(node: NodePlan, cluster: ClusterPlan, data_root: str = "data") -> str:
    """The TOML config of ``node``."""
    lines = [
        f"# {node.id} of a {len(cluster.nodes)}-node zkv cluster, written by zkv init",
        f'id = "{node.id}"',
        f'listen = "{node.listen}"',
        f'bus = "{node.bus}"',
        f'data_dir = "{data_root}/{node.id}"',
        f"catchup_port = {node.bus_port + CATCHUP_OFFSET}",
    ]
    if cluster.password is not None:  # (a TOML basic string: JSON's escapes are TOML's)
        lines.append(f"password = {json.dumps(cluster.password, ensure_ascii=False)}")
    if cluster.publics:
        lines.append(f'secret_key = "{node.id}.secret"')
    for peer in cluster.nodes:
        if peer is node:
            continue
        lines += ["", "[[peers]]", f'id = "{peer.id}"', f'bus = "{peer.bus}"']
        if cluster.publics:
            lines.append(f'public_key = "{cluster.publics[peer.id]}"  # {peer.id}.public')
    return "\n".join(lines) + "\n"


GENERATE = "\0generate"  # ``password``: make one up


def _generated() -> str:
    """A random password that does not start with '-' (given back to ``--password`` one
    would read as an option)."""
    while True:
        pw = secrets.token_urlsafe(24)
        if not pw.startswith("-"):
            return pw


def write(directory: Path, nodes: list[NodePlan], curve: bool, password: str | None,
          force: bool = False) -> ClusterPlan:
    """Write ``nodeI.toml`` (and keys) into ``directory``; returns what was written.
    ``password``: the client password every config gets (GENERATE: a random one; None: none)."""
    from zkv.curve import keygen, load_public

    directory.mkdir(parents=True, exist_ok=True)
    targets = [directory / f"{n.id}{ext}" for n in nodes
               for ext in (".toml", *((".secret", ".public") if curve else ()))]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        raise InitError(f"{existing[0]} exists (use --force to replace)")
    if password is not None and password != GENERATE and not usable_password(password):
        raise InitError("a password must be non-empty, without spaces or control characters "
                        "(the plain protocol's AUTH could not send it)")
    cluster = ClusterPlan(nodes, _generated() if password == GENERATE else password)
    if curve:
        for n in nodes:
            keygen(directory / n.id, force=True)
            cluster.publics[n.id] = load_public(str(directory / f"{n.id}.public")).decode()
    for n in nodes:  # 0600: a config may hold the password
        path = directory / f"{n.id}.toml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(render(n, cluster))
        os.chmod(path, 0o600)  # (an existing file, replaced with --force, keeps its mode otherwise)
    return cluster
