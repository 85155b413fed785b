"""A real network partition, made with Linux network namespaces the test creates.

This module owns the partition test and the namespace plumbing it needs.  Each node runs in its
own network namespace with two veth links: a BUS link to a bridge in a "hub" namespace (the
replication network, 10.232.0.0/24) and a CLIENT link to a "client" namespace (a 10.231.0.x/30
per node), where the test makes its client sockets (``Node.netns``; a short-lived thread enters
the namespace to make each socket, the test process never does), so pytest reaches every
client port while the bus is cut.  Nothing is added to the host's own namespace: no address,
no link, no route.  The partition takes node0's bus link down at the bridge: no SIGSTOP, every
process keeps running and serving clients, and the kernel drops what crosses the cut.

Scenario: three nodes; keys written and replicated; node0 cut off from node1 and node2 for 5 s
(heartbeats mark the peers disconnected) while both sides write unique keys, the same keys with
different values (conflicts, each decided by a known later write), deletes of keys that existed
before, and deletes racing earlier SETs from the other side.  The test proves the partition is
real (nothing written on one side is readable on the other until the heal, while node2 gets
node1's writes), heals it, and requires within a deadline that every node answers every key
ever written with its last acknowledged write (so all agree, no write that was not overwritten
or deleted is lost, no delete is undone), that ``zkv verify`` run in the hub namespace exits 0,
and that the bus carries new writes across the former cut.

It fails when the feature is missing, each checked once by breaking a scratch copy of zkv:
without pulls (the catch-up channel), the writes made after the publishers' queues overflowed
(see HWM) never reach the other side; with arrival order instead of last-writer-wins, the
earlier write of a conflicting key survives; without tombstones, a SET older than a delete
brings the deleted key back.  The hash and set test does the same for their merge rules: an SADD against an SREM across the
cut, fields written on both sides, a whole-hash DEL against a new field, HINCRBYs on both sides.

Skipped when network namespaces cannot be created (not root, no
CAP_NET_ADMIN, no ``ip``), saying why - unless the environment sets ``ZKV_REQUIRE_NETNS=1``
(CI does, in ``.ci/run``): then that is a failure, so CI can never pass without this test.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster, Node, socket_in_netns, wait_until

HEARTBEAT_MS = 100
# Across a cut link TCP only retransmits: what a publisher queued during a short partition is
# delivered once the link is back, and nothing is lost.  A write bigger than the TCP send buffer
# stalls each cut connection, and a small ZeroMQ queue (``hwm``, in messages) then fills with
# heartbeats within ISOLATION_S, so the publishers drop everything written after that, as they
# would in a long partition under load: those writes can only cross by being pulled.
HWM = 5
BULK_KEYS, BULK_VALUE = 300, "x" * 1000
PARTITION_S = 5.0  # > the 2 s after which a silent peer counts as disconnected
ISOLATION_S = 2.0  # how long the partition must visibly hold before the test trusts it
CONVERGE_S = 30.0

_counter = itertools.count()
REQUIRE_ENV = "ZKV_REQUIRE_NETNS"  # "1": no network namespaces is a failure, not a skip


class NetError(Exception):
    """An ``ip`` command failed."""


def _ip(*args: str, ns: str | None = None) -> str:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise NetError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


@dataclass
class Net:
    """The namespaces, bridge and veth links of one test; ``teardown`` removes all of them.

    Every address and link lives in a namespace made here, so the addresses need not differ
    from those of another run, and nothing of it is visible in the host's own namespace."""

    tag: str  # prefix of every name, unique per process and test
    size: int
    namespaces: list[str] = field(default_factory=list)  # created so far, hub first

    @property
    def hub(self) -> str:
        return f"{self.tag}h"

    @property
    def clients(self) -> str:
        """The namespace the test's client sockets are made in."""
        return f"{self.tag}c"

    def node_ns(self, i: int) -> str:
        return f"{self.tag}n{i}"

    def bus_host(self, i: int) -> str:
        return f"10.232.0.{i + 1}"

    def client_host(self, i: int) -> str:
        return f"10.231.0.{4 * i + 2}"

    def hub_port(self, i: int) -> str:
        """The hub end of node i's bus link: taking it down cuts node i off the bus."""
        return f"b{i}"

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("link", "set", "lo", "up", ns=name)

    def setup(self) -> None:
        hub = self.hub
        self._add_ns(hub)
        self._add_ns(self.clients)
        _ip("link", "add", "name", "br0", "type", "bridge", "forward_delay", "0", ns=hub)
        _ip("addr", "add", "10.232.0.254/24", "dev", "br0", ns=hub)
        _ip("link", "set", "br0", "up", ns=hub)
        for i in range(self.size):
            ns = self.node_ns(i)
            self._add_ns(ns)
            _ip("link", "add", "name", "bus", "type", "veth", "peer", "name", self.hub_port(i), "netns", hub, ns=ns)
            _ip("addr", "add", f"{self.bus_host(i)}/24", "dev", "bus", ns=ns)
            _ip("link", "set", "bus", "up", ns=ns)
            _ip("link", "set", self.hub_port(i), "master", "br0", ns=hub)
            _ip("link", "set", self.hub_port(i), "up", ns=hub)
            client_end = f"c{i}"
            _ip("link", "add", "name", "cli", "type", "veth", "peer", "name", client_end,
                "netns", self.clients, ns=ns)
            _ip("addr", "add", f"10.231.0.{4 * i + 1}/30", "dev", client_end, ns=self.clients)
            _ip("link", "set", client_end, "up", ns=self.clients)
            _ip("addr", "add", f"{self.client_host(i)}/30", "dev", "cli", ns=ns)
            _ip("link", "set", "cli", "up", ns=ns)

    def cut(self, i: int) -> None:
        _ip("link", "set", self.hub_port(i), "down", ns=self.hub)

    def heal(self, i: int) -> None:
        _ip("link", "set", self.hub_port(i), "up", ns=self.hub)

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def teardown(self) -> list[str]:
        """Delete everything created (a netns takes its veths with it); the errors, if any."""
        errors = []
        for ns in reversed(self.namespaces):
            try:
                _ip("netns", "delete", ns)
            except NetError as exc:
                errors.append(str(exc))
        return errors


def _sweep_stale() -> None:
    """Delete the namespaces an earlier run of this module left when it was SIGKILLed (its pid
    is gone)."""
    for name, pid in re.findall(r"^(zkp(\d+)x\w+)", _ip("netns", "list"), re.M):
        if not Path(f"/proc/{pid}").exists():
            try:
                _ip("netns", "delete", name)
            except NetError:
                pass  # deleted meanwhile


def _unavailable(reason: str) -> None:
    """Skip, saying why; fail instead when the environment requires this test to run."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1 requires the partition test to run)")
    pytest.skip(reason)


def _in_host_namespace(net: Net) -> list[str]:
    """Lines of ``ip`` in the host's own namespace that show an address or link of ``net``."""
    return [line for line in (_ip("-o", "addr") + _ip("-o", "link")).splitlines()
            if " 10.231.0." in line or " 10.232.0." in line or net.tag in line]


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net(f"zkp{os.getpid()}x{next(_counter)}", 3)
    try:
        _sweep_stale()
        n.setup()
        socket_in_netns(n.clients).close()
    except (NetError, OSError, subprocess.SubprocessError) as exc:
        n.teardown()
        _unavailable(f"cannot create network namespaces: {exc}")
    try:
        assert not _in_host_namespace(n), f"the host's own namespace got: {_in_host_namespace(n)}"
        yield n
        assert not _in_host_namespace(n), f"the host's own namespace got: {_in_host_namespace(n)}"
    finally:
        errors = n.teardown()
        assert not errors, f"namespace clean-up failed: {errors}"


@pytest.fixture
def ns_cluster(net: Net, tmp_path: Path) -> Iterator[Cluster]:
    """A 3-node cluster, node i in namespace ``net.node_ns(i)``; stopped before ``net`` goes."""
    cluster = Cluster(tmp_path, net.size, heartbeat_ms=HEARTBEAT_MS, anti_entropy_ms=500, hwm=HWM)
    for i, node in enumerate(cluster.nodes):
        node.host, node.bus_host = net.client_host(i), net.bus_host(i)
        node.prefix = net.exec_prefix(net.node_ns(i))
        node.netns = net.clients
    for node in cluster.nodes:
        cluster.write_config(node)
    try:
        yield cluster.start()
    finally:
        # Reconnected first, so the nodes' connections close cleanly instead of leaving sockets
        # that retransmit into a deleted namespace (and keep it, with its veths, alive).
        try:
            for i in range(net.size):
                net.heal(i)
        finally:
            cluster.stop()


def _set(node: Node, pairs: dict[str, str]) -> None:
    with node.client() as c:
        assert c.pipeline([f"SET {k} {v}".encode() for k, v in pairs.items()]) == [b"OK"] * len(pairs)


def _delete(node: Node, keys: list[str]) -> None:
    with node.client() as c:
        assert c.pipeline([f"DEL {k}".encode() for k in keys]) == [b"OK"] * len(keys)


def _read(node: Node, keys: list[str]) -> dict[str, bytes]:
    with node.client() as c:
        return dict(zip(keys, c.pipeline([f"GET {k}".encode() for k in keys])))


def _expected(value: str | None) -> bytes:
    return b"NOT FOUND" if value is None else b"VALUE " + value.encode()


def _connected_peers(node: Node) -> int:
    return int(node.info("replication")["connected_peers"])


def _pulled(node: Node) -> int:
    return int(node.info("replication")["pulled_events"])


def _assert_unseen(until: float, unseen: list[tuple[Node, list[str]]]) -> None:
    """Until ``until`` (monotonic), none of the nodes may hold any of its keys."""
    while True:
        for node, keys in unseen:
            seen = {k: v for k, v in _read(node, keys).items() if v != b"NOT FOUND"}
            assert not seen, f"{node.id} got writes from across the partition: {sorted(seen)[:5]}"
        if time.monotonic() >= until:
            return
        time.sleep(0.1)


def test_real_partition_heals_to_last_writer_wins(net: Net, ns_cluster: Cluster) -> None:
    a, b, c = ns_cluster.nodes
    model: dict[str, str | None] = {}  # key -> the value of its last acknowledged write

    def write(node: Node, pairs: dict[str, str]) -> None:
        _set(node, pairs)
        model.update(pairs)

    def delete(node: Node, keys: list[str]) -> None:
        _delete(node, keys)
        model.update(dict.fromkeys(keys))

    def holds(node: Node, pairs: dict[str, str]) -> bool:
        return _read(node, list(pairs)) == {k: _expected(v) for k, v in pairs.items()}

    before = {f"pre{k}": f"v{k}" for k in range(20)}
    write(a, dict(list(before.items())[:10]))
    write(b, dict(list(before.items())[10:]))
    for node in (a, b, c):
        wait_until(lambda: holds(node, before), timeout=15, what=f"the first writes to reach {node.id}")
    pulled_before = {n.id: _pulled(n) for n in (a, b, c)}

    net.cut(0)
    cut_at = time.monotonic()
    bulk_a = {f"a-bulk{k}": f"{BULK_VALUE}{k}" for k in range(BULK_KEYS)}
    bulk_b = {f"b-bulk{k}": f"{BULK_VALUE}{k}" for k in range(BULK_KEYS)}
    write(a, bulk_a)
    write(b, bulk_b)
    wait_until(lambda: holds(c, bulk_b), timeout=10, what="node1's first writes to reach node2 in the partition")
    _assert_unseen(cut_at + ISOLATION_S, [(b, list(bulk_a)), (c, list(bulk_a)), (a, list(bulk_b))])
    wait_until(lambda: _connected_peers(a) == 0 and _connected_peers(b) == 1 and _connected_peers(c) == 1,
               timeout=PARTITION_S, what="heartbeats to show node0 disconnected from node1 and node2")

    only_a = {f"a-only{k}": f"a{k}" for k in range(10)}
    only_b = {f"b-only{k}": f"b{k}" for k in range(10)}
    write(a, only_a)
    write(b, only_b)
    delete(a, ["pre0", "pre1", "pre10"])
    delete(b, ["pre2", "pre11", "pre12"])
    # Conflicts, each decided by a write 50 ms later than the other side's (the HLCs follow the
    # shared wall clock): both0-4 won by node0, both5-9 by node1.  pre3: node1 SETs, node0
    # DELETEs later (its tombstone must beat the older SET); pre13 the other way round.
    write(b, {f"both{k}": f"b-loses{k}" for k in range(5)} | {"pre3": "b-set"})
    write(a, {f"both{k}": f"a-loses{k}" for k in range(5, 10)} | {"pre13": "a-set"})
    time.sleep(0.05)
    write(a, {f"both{k}": f"a-wins{k}" for k in range(5)})
    delete(a, ["pre3"])
    write(b, {f"both{k}": f"b-wins{k}" for k in range(5, 10)})
    delete(b, ["pre13"])
    wait_until(lambda: holds(c, only_b), timeout=10, what="node1's later writes to reach node2 in the partition")
    a_keys, b_keys = [*bulk_a, *only_a], [*bulk_b, *only_b]
    _assert_unseen(cut_at + PARTITION_S, [(b, a_keys), (c, a_keys), (a, b_keys)])

    net.heal(0)
    healed_at = time.monotonic()
    keys = sorted(model)
    want = {k: _expected(v) for k, v in model.items()}
    assert want["both0"] == b"VALUE a-wins0" and want["both9"] == b"VALUE b-wins9" and want["pre3"] == b"NOT FOUND"

    def converged() -> bool:
        return all(_read(node, keys) == want for node in (a, b, c))

    try:
        wait_until(converged, timeout=CONVERGE_S, interval=0.1, what="every node to hold the last write of every key")
    except AssertionError:
        wrong = {n.id: {k: v[:40] for k, v in _read(n, keys).items() if v != want[k]} for n in (a, b, c)}
        raise AssertionError(f"not converged {CONVERGE_S}s after healing; wrong answers: {wrong}\n"
                             f"{ns_cluster.logs()}") from None
    print(f"converged {time.monotonic() - healed_at:.2f}s after healing")

    r = ns_cluster.verify(timeout=20, prefix=net.exec_prefix(net.hub))
    assert r.returncode == 0, f"zkv verify:\n{r.stdout}{r.stderr}\n{ns_cluster.logs()}"
    # Each side's last writes were dropped by its publisher, so they crossed by being pulled;
    # if not, the test no longer exercises pulls (a bigger queue, a bigger TCP buffer).
    pulled = {n.id: _pulled(n) - pulled_before[n.id] for n in (a, b, c)}
    print(f"pulled after healing: {pulled}")
    assert all(pulled.values()), f"expected every node to pull events after healing: {pulled}"

    # The bus itself works again: a new write crosses where the cut was.
    write(a, {"after-heal": "x"})
    for node in (b, c):
        wait_until(lambda: node.get("after-heal") == b"VALUE x", timeout=10,
                   what=f"a write made after healing to reach {node.id}")


def test_partition_outlasting_tcp_retransmissions_heals(net: Net, ns_cluster: Cluster) -> None:
    """Linux gives up a connection whose data goes unacknowledged through ``tcp_retries2``
    retransmissions (15 by default: about 15 minutes).  Here 3 (a few seconds), set in the
    nodes' own namespaces, so an 8 s partition outlasts them: the senders drop their
    connections while the listening side (a subscriber sends nothing) would keep a dead one
    forever - unless the bus connections check their peers (ZeroMQ heartbeats)."""
    a, b, c = ns_cluster.nodes
    for i in range(net.size):
        subprocess.run([*net.exec_prefix(net.node_ns(i)), "sysctl", "-qw", "net.ipv4.tcp_retries2=3"],
                       check=True, timeout=10)
    _set(a, {"before": "1"})
    for node in (b, c):
        wait_until(lambda: node.get("before") == b"VALUE 1", timeout=15, what=f"first write on {node.id}")
    net.cut(0)
    _set(a, {"cut-a": "1"})
    _set(b, {"cut-b": "1"})
    # The partition must outlast the retransmissions (~3 s after the first unacknowledged send)
    # and be seen: node0 with no live peer.
    wait_until(lambda: _connected_peers(a) == 0, timeout=5, what="node0 to see its peers gone")
    time.sleep(8)  # noqa: the length of the partition is the thing under test
    net.heal(0)
    _set(a, {"after-a": "1"})
    _set(b, {"after-b": "1"})
    keys = ["before", "cut-a", "cut-b", "after-a", "after-b"]
    want = {k: b"VALUE 1" for k in keys}
    try:
        wait_until(lambda: all(_read(n, keys) == want for n in (a, b, c)), timeout=CONVERGE_S,
                   interval=0.2, what="every write on every node after the heal")
    except AssertionError:
        raise AssertionError(f"not converged: {[_read(n, keys) for n in (a, b, c)]}\n{ns_cluster.logs()}") from None
    wait_until(lambda: _connected_peers(a) == 2, timeout=10, what="node0 to hear both peers again")


def _inline(node: Node, *lines: str) -> list[bytes]:
    """Redis inline commands (lines ending in CR LF) through the node's client namespace; each
    reply as one line (a bulk reply: its value, or ``nil``)."""
    out = []
    with node.client() as cl:
        for line in lines:
            r = cl.cmd(line + "\r").rstrip(b"\r")
            if r.startswith(b"$"):
                r = b"nil" if r == b"$-1" else cl.read_line().rstrip(b"\r")
            out.append(r)
    return out


def test_partition_hashes_and_sets_merge_by_their_rules(net: Net, ns_cluster: Cluster) -> None:
    """Across a real cut: an SREM and SADD on one side and an SREM of the same member on the
    other - the member stays (the other SREM never saw the new add); fields written on both sides - all stay, the
    later write of a field both wrote wins; a DEL of a whole hash on one side and a new field on
    the other - the new field stays; HINCRBYs on both sides - all count
    (docs/data-model.md)."""
    a, b, c = ns_cluster.nodes
    assert _inline(a, "SADD s m", "HSET h old 1", "HSET gone a 1", "HINCRBY cnt n 1") == [b":1", b":1", b":1", b":1"]
    for node in (b, c):
        wait_until(lambda: _inline(node, "SISMEMBER s m", "HEXISTS gone a", "HGET cnt n") == [b":1", b":1", b"1"],
                   timeout=15, what=f"the first writes on {node.id}")
    net.cut(0)
    assert _inline(a, "SREM s m", "SADD s m", "HSET h left L", "HSET gone b 2", "HINCRBY cnt n 5",
                   "HSET h both A") == [b":1", b":1", b":1", b":1", b":6", b":1"]
    time.sleep(0.05)  # noqa: node1's write of 'both' must be stamped later than node0's
    assert _inline(b, "SREM s m", "HSET h right R", "UNLINK gone", "HINCRBY cnt n 7", "HSET h both B") == [
        b":1", b":1", b":1", b":8", b":1"]
    assert _inline(b, "SISMEMBER s m", "HEXISTS h left", "EXISTS gone") == [b":0", b":0", b":0"], (
        "node0's writes crossed the cut")
    net.heal(0)
    want = [b":1", b":4", b"L", b"R", b"B", b"1", b":0", b"2", b"13", b"+hash"]
    for node in (a, b, c):
        wait_until(lambda: _inline(node, "SISMEMBER s m", "HLEN h", "HGET h left", "HGET h right", "HGET h both",
                                   "HGET h old", "HEXISTS gone a", "HGET gone b", "HGET cnt n", "TYPE gone") == want,
                   timeout=CONVERGE_S, interval=0.2, what=f"the merged state on {node.id}")
    r = ns_cluster.verify(timeout=20, prefix=net.exec_prefix(net.hub))
    assert r.returncode == 0, f"zkv verify:\n{r.stdout}{r.stderr}\n{ns_cluster.logs()}"
