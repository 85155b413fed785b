"""``metrics_listen``: each node serves ``/metrics``, and what it says moves with the cluster.

A real three-node cluster, scraped over HTTP on the loopback and parsed as Prometheus would
(``prometheus_client.parser``).  While node0 takes SETs, overwrites and DELETEs on a small key
space, its request counters and latency histogram count exactly those requests, its events
counters count exactly those events, and node1 applies them under node0's name.  With node2
SIGSTOPped, node0 reports node2's replication lag rising in events and in seconds while node1's
falls back to 0; after SIGCONT node2's falls back too.  A scrape while node0's store is stopped
still answers (``zkv_store_up 0``) within the store timeout, and garbage sent to the metrics
port harms nothing.  A metrics port already taken stops the node at start, saying so.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.faults import frozen
from tests.cluster.harness import Node, free_port, wait_until

FAST = {"heartbeat_ms": 100, "anti_entropy_ms": 500}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def write_mix(node: Node, rounds: int) -> tuple[int, int, int]:
    """SETs, overwrites and DELETEs of 20 keys, and some GETs, pipelined; (sets, dels, gets)."""
    sets = dels = gets = 0
    with node.client() as c:
        for r in range(rounds):
            lines = []
            for i in range(20):
                lines.append(f"SET k{i} v{r}-{i}".encode())
                sets += 1
            for i in range(0, 20, 3):
                lines.append(f"DELETE k{i}".encode())
                dels += 1
            lines += [b"GET k1", b"GET k3"]
            gets += 2
            replies = c.pipeline(lines)
            assert replies[:20] == [b"OK"] * 20 and replies[-1] == b"NOT FOUND"
    return sets, dels, gets


def test_metrics_move_with_writes_and_lag_rises_while_a_peer_is_stopped(make_cluster) -> None:
    c = make_cluster(3, **FAST)
    ports = {}
    for n in c.nodes:
        ports[n.id] = free_port()
        c.write_config(n, metrics_listen=f"127.0.0.1:{ports[n.id]}")
    c.start()
    n0, n1, n2 = c.nodes
    m0, m1 = ports["node0"], ports["node1"]

    before = scrape(m0)
    assert get(before, "zkv_store_up") == 1 and get(before, "zkv_peer_connected", peer="node2") == 1
    sets, dels, gets = write_mix(n0, 10)
    after = scrape(m0)
    # the frontend counted every request by command, and timed each one
    for cmd, n in (("SET", sets), ("DELETE", dels), ("GET", gets)):
        assert get(after, "zkv_requests_total", command=cmd) - get(before, "zkv_requests_total", command=cmd) == n, cmd
    # each chunk of input timed once, its requests counted; a write's chunk as a write (a
    # chunk of GETs alone, should TCP split a pipeline there, as a read or not at all if the
    # read cache answered it)
    def timed(samples: Samples, kind: str) -> float:
        return get(samples, "zkv_request_duration_seconds_count", kind=kind)
    moved = timed(after, "write") - timed(before, "write")
    assert sets + dels <= moved <= sets + dels + gets
    assert moved + timed(after, "read") - timed(before, "read") <= sets + dels + gets
    assert get(after, "zkv_request_duration_seconds_bucket", kind="write", le="+Inf") == timed(after, "write")
    assert get(after, "zkv_request_duration_seconds_sum", kind="write") > 0
    # the store made one event per SET and per DELETE, and applied them under node0's name
    assert get(after, "zkv_events_local_total") - get(before, "zkv_events_local_total") == sets + dels
    made = get(after, "zkv_events_applied_total", origin_node="node0")
    assert made - get(before, "zkv_events_applied_total", origin_node="node0") == sets + dels
    assert get(after, "zkv_keys") == 20 - 7 and get(after, "zkv_tombstones") >= 1

    # node1 applies them under node0's name; its own request counters did not move
    def n1_applied() -> bool:
        return get(scrape(m1), "zkv_events_applied_total", origin_node="node0") == made
    wait_until(n1_applied, timeout=15, what="node1 to apply node0's events")
    assert get(scrape(m1), "zkv_requests_total", command="SET") == 0

    # node2 stopped: node0 reports its lag growing, node1's back to 0 once writes pause
    with frozen(n2):
        t_stop = time.monotonic()

        def lag_grew() -> bool:
            write_mix(n0, 1)
            s = scrape(m0)
            return (get(s, "zkv_replication_lag_events", peer="node2") >= 100
                    and get(s, "zkv_replication_lag_seconds", peer="node2") >= 1.0)
        wait_until(lag_grew, timeout=20, interval=0.05, what="node2's lag to rise on node0")
        s = scrape(m0)
        assert get(s, "zkv_replication_lag_seconds", peer="node2") <= time.monotonic() - t_stop + 0.5

        def node1_caught_up() -> bool:
            s = scrape(m0)
            return (get(s, "zkv_replication_lag_events", peer="node1") == 0
                    and get(s, "zkv_replication_lag_seconds", peer="node1") == 0
                    and get(s, "zkv_replication_lag_events", peer="node2") > 0)
        wait_until(node1_caught_up, timeout=10, what="node1's lag to be 0 while node2's is not")

    def node2_caught_up() -> bool:
        s = scrape(m0)
        return (get(s, "zkv_replication_lag_events", peer="node2") == 0
                and get(s, "zkv_replication_lag_seconds", peer="node2") == 0)
    wait_until(node2_caught_up, timeout=20, what="node2's lag to fall back to 0 after SIGCONT")


def test_a_scrape_answers_without_the_store_and_garbage_harms_nothing(make_cluster) -> None:
    c = make_cluster(1)
    (n0,) = c.nodes
    port = free_port()
    c.write_config(n0, metrics_listen=f"127.0.0.1:{port}")
    n0.seed_clock()
    c.start()
    for junk in (b"\x00" * 100 + b"\r\n\r\n", b"GET /metrics HTTP/1.1\r\n" + b"H: v\r\n" * 500,
                 b"GET /nothing HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100).split(b" ")[1] in (b"400", b"404")
    assert get(scrape(port), "zkv_store_up") == 1
    store = n0.child_pid("store")
    os.kill(store, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        s = scrape(port)
        assert time.monotonic() - t0 < 5
        assert get(s, "zkv_store_up") == 0 and ("zkv_clients", ()) in s and ("zkv_keys", ()) not in s
    finally:
        os.kill(store, signal.SIGCONT)
    wait_until(lambda: get(scrape(port), "zkv_store_up") == 1, timeout=10, what="the store back")
    assert n0.get("nothing") == b"NOT FOUND"


def test_a_metrics_port_in_use_stops_the_node_with_one_clear_line(make_cluster) -> None:
    c = make_cluster(1)
    (n0,) = c.nodes
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        c.write_config(n0, metrics_listen=f"127.0.0.1:{port}")
        n0.seed_clock()
        n0.start(wait=False)
        assert n0.proc is not None
        assert n0.proc.wait(30) != 0
    assert f"zkv: metrics_listen 127.0.0.1:{port}: address already in use" in n0.log()
