"""Regression tests for failures the chaos harness found, each cut down to its few steps.

This module owns one small real-cluster test per failure found by a chaos run, so it stays
fixed without a long run to show it again.  Each docstring names the run that found it.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.chaos.nemesis import kill_node
from tests.cluster.harness import Cluster, LineClient, Node, wait_until


def _cmd(node: Node, line: str) -> bytes:
    with LineClient(node.port, timeout=10, host=node.host, netns=node.netns) as c:
        return c.cmd(line)


def _snapshots_taken(node: Node) -> int:
    return int(node.info("persistence").get("snapshot_taken", 0))


def test_clock_ahead_is_not_kept_after_restart_on_true_clock(tmp_path: Path) -> None:
    """Found by ``bench/chaos.py --nodes 3 --seconds 600 --seed 1 --nemeses
    kill,stop,wipe,tail,snapshot,skew,partition`` on 4d8d3b3: node0 ran 30 s ahead (refusing
    writes, rightly), was restarted on the true clock, then cut off from its peers; alone it
    accepted writes, and they beat writes other nodes acknowledged up to 20 s later (41 lost or
    resurrected keys), and its peers held its events back for that long.  Its clock had come
    back from the snapshot taken while it ran ahead.

    Here: node0 runs 30 s ahead and takes a snapshot; it is restarted on the true clock while
    its peers are stopped, so it hears no peer and serves alone; it must refuse a write (its
    stamps would run 30 s past its own wall clock) or, if it acknowledges one, a write of the
    same key that node1 acknowledges a second later must win on every node."""
    exe = shutil.which("faketime")
    if exe is None:
        pytest.skip("faketime is not installed (bin/install-faketime)")
    cluster = Cluster(tmp_path, 3, heartbeat_ms=100, anti_entropy_ms=300, snapshot_records=100).start()
    a, b, c = cluster.nodes
    try:
        kill_node(a)
        a.prefix = [exe, "--exclude-monotonic", "-f", "+30s"]
        a.start()
        with b.client() as client:
            assert client.pipeline([f"SET pre{i} v".encode() for i in range(300)]) == [b"OK"] * 300
        wait_until(lambda: _cmd(a, "GET pre299") == b"VALUE v" and _snapshots_taken(a) > 0, timeout=20,
                   what="node0, 30 s ahead, to replicate the writes and take a snapshot")
        kill_node(a)
        a.prefix = []
        b.signal(signal.SIGSTOP)
        c.signal(signal.SIGSTOP)
        try:
            a.start()
            # Refusing is the right answer (its stamps would run 30 s ahead of its own wall
            # clock); if it accepts, the write below must still beat it.
            first = _cmd(a, "SET k from-node0")
            assert first == b"OK" or first.startswith(b"ERROR clock skew"), first
        finally:
            b.signal(signal.SIGCONT)
            c.signal(signal.SIGCONT)
        time.sleep(1.0)  # noqa: the real-time gap between the two writes is the thing under test
        assert _cmd(b, "SET k from-node1-later") == b"OK"
        want = b"VALUE from-node1-later"
        try:
            wait_until(lambda: all(_cmd(n, "GET k") == want for n in cluster.nodes), timeout=10,
                       what="the later write to win everywhere")
        except AssertionError:
            got = {n.id: _cmd(n, "GET k") for n in cluster.nodes}
            raise AssertionError(f"a write made 1 s later lost to node0's, stamped by the clock it kept "
                                 f"from its 30 s-ahead run: {got}\n{a.log()}") from None
    finally:
        kill_node(a)  # under faketime a SIGTERM would stop only the faketime process, not the node
        cluster.stop()
