"""Anti-entropy and ``zkv verify``: a divergence no event explains is found, named and repaired.

To make two nodes differ while their version vectors agree (what a bug or a lost repair would
leave behind), the test stops one node and appends a repair record to its log holding a key
no other node has.  With anti-entropy effectively off, ``zkv verify`` must exit 1 and name the
key; with it on, the key must spread to every node and ``zkv verify`` exit 0.
"""

from __future__ import annotations

from pathlib import Path

from tests.cluster.harness import Cluster, wait_until
from zkv.store.durability import encode_repair_record
from zkv.store.wal import WalWriter


def _plant_divergence(node_dir: Path, key: bytes, value: bytes) -> None:
    segments = sorted(node_dir.glob("wal-*.log"))
    assert segments, f"no log in {node_dir}"
    w = WalWriter(segments[-1], fsync="always")
    try:
        w.append([encode_repair_record(None, 0, [(key, 12345, "node1", value)])])
    finally:
        w.close()


def test_verify_names_a_divergent_key_and_anti_entropy_repairs_it(make_cluster) -> None:
    cluster: Cluster = make_cluster(3, heartbeat_ms=50, anti_entropy_ms=3_600_000).start()
    a, b, c = cluster.nodes
    with a.client() as ca:
        for i in range(50):
            assert ca.cmd(f"SET shared{i} {i}") == b"OK"
    assert cluster.verify(timeout=20).returncode == 0
    c.kill()  # SIGKILL: no clean-shutdown snapshot, so the next start replays the log
    _plant_divergence(c.data_dir, b"planted-key", b"only-here")
    c.start()
    assert c.get("planted-key") == b"VALUE only-here"
    r = cluster.verify(timeout=3)
    assert r.returncode == 1, r.stdout
    assert "DISAGREE" in r.stdout and "planted-key" in r.stdout, r.stdout

    # Now with anti-entropy on: every node stopped cleanly and started again, all at once, with
    # a short interval (c's snapshot at the clean stop keeps the planted key).
    for node in cluster.nodes:
        cluster.write_config(node, anti_entropy_ms=100)
    cluster.stop()
    cluster.start()
    for node in (a, b):
        wait_until(lambda: node.get("planted-key") == b"VALUE only-here", timeout=20,
                   what=f"anti-entropy to bring planted-key to {node.id}")
    r = cluster.verify(timeout=20)
    assert r.returncode == 0, r.stdout
    assert any(int(n.info().get("repaired_keys", 0)) > 0 for n in (a, b))
