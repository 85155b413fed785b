"""Network partitions for the chaos harness: every node in a network namespace of its own.

This module owns placing a chaos cluster in network namespaces and cutting nodes off the
replication bus, by reusing the machinery of tests/cluster/test_partition.py (``Net``: a hub
namespace with a bridge for the bus, one namespace per node, a client namespace the test's
sockets are made in; nothing is added to the host's own namespace).  A cut takes a node's bus
link down at the bridge: every process keeps running and serving clients, and the kernel drops
what crosses the cut.  It needs root (CAP_NET_ADMIN) and ``ip``; ``Partitions.create`` says
why when it cannot be had.
"""

from __future__ import annotations

import itertools
import os
import subprocess

from tests.cluster.harness import Cluster, Node, socket_in_netns
from tests.cluster.test_partition import Net, NetError, _sweep_stale

_counter = itertools.count()


class Partitions:
    def __init__(self, net: Net) -> None:
        self.net = net
        self.cut_now: set[int] = set()

    @classmethod
    def create(cls, size: int) -> Partitions | str:
        """Namespaces for ``size`` nodes, or the reason they cannot be made."""
        net = Net(f"zkp{os.getpid()}xc{next(_counter)}", size)
        try:
            _sweep_stale()
            net.setup()
            socket_in_netns(net.clients).close()
        except (NetError, OSError, subprocess.SubprocessError) as exc:
            net.teardown()
            return f"cannot create network namespaces: {exc}"
        return cls(net)

    def place(self, cluster: Cluster) -> None:
        """Put node i in namespace i (before the cluster starts)."""
        for i, node in enumerate(cluster.nodes):
            node.host, node.bus_host = self.net.client_host(i), self.net.bus_host(i)
            node.prefix = self.net.exec_prefix(self.net.node_ns(i))
            node.netns = self.net.clients
        for node in cluster.nodes:
            cluster.write_config(node)

    @property
    def verify_prefix(self) -> list[str]:
        """Where ``zkv verify`` runs: the hub, which reaches every bus."""
        return self.net.exec_prefix(self.net.hub)

    def cut(self, cluster: Cluster, nodes: list[Node]) -> None:
        for node in nodes:
            i = cluster.nodes.index(node)
            self.net.cut(i)
            self.cut_now.add(i)

    def heal(self) -> None:
        for i in sorted(self.cut_now):
            self.net.heal(i)
        self.cut_now.clear()

    def teardown(self) -> list[str]:
        """After the cluster has stopped: delete the namespaces; the errors, if any."""
        self.heal()
        return self.net.teardown()
