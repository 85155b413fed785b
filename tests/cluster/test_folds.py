"""Restarts do not grow what nodes exchange: real processes, killed and restarted over and over,
end with vectors that name only the live incarnations, and a node wiped after the fold gets back
every write the folded incarnations made (zkv.replication.folds)."""

from __future__ import annotations

import shutil

from tests.cluster.harness import Cluster, wait_until


def _vv(node) -> dict[str, str]:
    info = node.info("replication")
    return {"origins": [o for o in info["vv"].split(",") if o], "folded": int(info["origins_folded"]),
            "held": int(info["origins_held"])}


def test_a_crash_looping_node_leaves_only_live_incarnations_in_every_vector(make_cluster) -> None:
    c: Cluster = make_cluster(n=3, heartbeat_ms=100, fsync="always").start()
    n0, n1, n2 = c.nodes
    restarts = 4
    for i in range(restarts):
        with n0.client() as cl:
            assert cl.cmd(f"SET only{i} inc{i}") == b"OK"
            assert cl.cmd(f"SET shared{i % 2} v{i}") == b"OK"
            if i % 3 == 2:
                assert cl.cmd(f"DELETE only{i - 1}") == b"OK"
        wait_until(lambda i=i: n2.get(f"only{i}") == f"VALUE inc{i}".encode(), 10,
                   what=f"only{i} on node2")
        n0.kill()
        n0.start()
    with n1.client() as cl:
        assert cl.cmd("SET shared0 last") == b"OK"

    def folded() -> bool:
        views = [_vv(n) for n in c.nodes]
        return all(len(v["origins"]) <= 3 and v["folded"] >= restarts for v in views)
    wait_until(folded, 20, what="every old incarnation folded on every node")
    assert all(_vv(n)["held"] >= restarts + 1 for n in c.nodes)  # (kept inside each store)

    # a node that loses its data after the fold gets every write the folded incarnations made
    n1.kill()
    shutil.rmtree(n1.data_dir)
    n1.start()
    expected = {f"only{i}": (b"NOT FOUND" if i % 3 == 1 and i + 1 < restarts else f"VALUE inc{i}".encode())
                for i in range(restarts)}
    expected["shared0"] = b"VALUE last"

    def caught_up() -> bool:
        return all(n1.get(k) == v for k, v in expected.items())
    wait_until(caught_up, 20, what="the wiped node to hold the folded incarnations' writes")
    assert all(n.get(k) == v for n in (n0, n2) for k, v in expected.items())
    res = c.verify(timeout=20)
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: len(_vv(n1)["origins"]) <= 3, 10, what="the wiped node to fold too")
