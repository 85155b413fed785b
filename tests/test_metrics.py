"""Unit tests of the pure parts of ``/metrics``: the config key, the histogram buckets, the
peers' lag history, request counting, the export of INFO's dict, and the HTTP endpoint's
handling of good and bad requests (a real socket on the loopback, no cluster).

The cluster test (tests/cluster/test_metrics_endpoint.py) scrapes real nodes.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from zkv.config import ConfigError, config_from_dict
from zkv.frontend import metrics_http
from zkv.frontend.exposition import (
    STORE_COUNTERS, STORE_GAUGES, FrontendFigures, NodeCollector, Scraper, store_families,
)
from zkv.frontend.metrics import MAX_NAMES, RequestMetrics
from zkv.frontend.metrics_http import BadRequest, MetricsEndpoint, parse_request_line
from zkv.histogram import Buckets
from zkv.store.peerlag import SeqHistory


def base(**extra: Any) -> dict[str, Any]:
    return {"id": "n1", "listen": "127.0.0.1:7000", "bus": "tcp://127.0.0.1:7100",
            "data_dir": "d", **extra}


# --- config ---------------------------------------------------------------------------------

def test_metrics_listen_is_off_unless_set() -> None:
    assert config_from_dict(base()).metrics_listen is None
    assert config_from_dict(base(metrics_listen="")).metrics_listen is None


@pytest.mark.parametrize("text, addr", [("127.0.0.1:9100", ("127.0.0.1", 9100)),
                                        ("[::1]:9100", ("::1", 9100)),
                                        ("0.0.0.0:0", ("0.0.0.0", 0)),
                                        ("localhost:7001", ("localhost", 7001))])
def test_metrics_listen_parses(text: str, addr: tuple[str, int]) -> None:
    assert config_from_dict(base(metrics_listen=text)).metrics_listen == addr


@pytest.mark.parametrize("value, words", [("9100", "cannot parse"), ("host:99999", "out of range"),
                                          (9100, "must be a string"), (True, "must be a string"),
                                          ("127.0.0.1:7000", "different ports")])
def test_bad_metrics_listen_is_one_clear_line(value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(base(metrics_listen=value))
    assert "metrics_listen" in str(exc.value) and words in str(exc.value)
    assert "\n" not in str(exc.value)


# --- histogram buckets ----------------------------------------------------------------------

def test_a_value_lands_in_the_first_bucket_whose_bound_is_not_below_it() -> None:
    b = Buckets((0.1, 1.0))
    for v in (0.0, 0.1, 0.10001, 1.0, 5.0, 5.0):
        b.observe(v)
    assert b.counts == [2, 2, 2]
    assert b.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 6)]
    assert b.count == 6 and b.total == pytest.approx(11.20001)
    b.observe(0.5, n=3)
    assert b.counts == [2, 5, 2] and b.total == pytest.approx(12.70001)


def test_buckets_travel_as_plain_data_and_bad_data_is_refused() -> None:
    b = Buckets((0.5,))
    b.observe(0.2)
    again = Buckets.from_figures(b.figures())
    assert again == b
    for bad in (None, {}, {"bounds": [1], "counts": [1], "sum": 0}, {"bounds": [2, 1], "counts": [0, 0, 0], "sum": 0},
                {"bounds": "x", "counts": [], "sum": 0}):
        assert Buckets.from_figures(bad) is None
    with pytest.raises(ValueError):
        b.add(Buckets((0.25,)))


# --- peers' lag -----------------------------------------------------------------------------

def test_lag_is_the_events_the_peer_lacks_and_the_age_of_the_oldest() -> None:
    h = SeqHistory(interval=0.1)
    h.sample(10.0, {"a@1": 5})
    h.sample(10.05, {"a@1": 9})  # within the interval: not sampled
    h.sample(11.0, {"a@1": 9, "b@1": 3})
    h.sample(12.0, {"a@1": 20, "b@1": 3})
    ours = {"a@1": 20, "b@1": 3}
    assert h.lag(ours, ours, 13.0).events == 0 and h.lag(ours, ours, 13.0).seconds == 0
    lag = h.lag(ours, {"a@1": 9, "b@1": 3}, 13.0)  # lacks a 10..20, here since the 12.0 sample
    assert lag.events == 11 and lag.seconds == pytest.approx(1.0)
    lag = h.lag(ours, {"a@1": 5}, 13.0)  # lacks a 6..20 (here by 11.0) and b 1..3 (by 11.0)
    assert lag.events == 15 + 3 and lag.seconds == pytest.approx(2.0)
    lag = h.lag(ours, {"a@1": 4}, 13.0)  # a 5 was here at the first sample already
    assert lag.events == 16 + 3 and lag.seconds == pytest.approx(3.0)
    assert h.lag(ours, {"a@1": 99, "b@1": 99}, 13.0).events == 0  # ahead of us: no lag


def test_lag_history_is_thinned_not_forgotten() -> None:
    h = SeqHistory(interval=1.0, max_samples=8)
    for t in range(100):
        h.sample(float(t), {"a@1": t + 1})
    assert len(h.seqs["a@1"]) <= 8 and h.seqs["a@1"] == sorted(h.seqs["a@1"])
    assert h.seqs["a@1"][-1] == 100
    lag = h.lag({"a@1": 100}, {"a@1": 0}, 100.0)  # lacks everything: about 100 s
    assert lag.events == 100 and lag.seconds == pytest.approx(100.0)
    lag = h.lag({"a@1": 100}, {"a@1": 99}, 100.0)  # lacks only the last one
    assert lag.seconds == pytest.approx(1.0)


# --- request counting -----------------------------------------------------------------------

def test_requests_are_counted_by_command_and_made_up_names_as_unknown() -> None:
    m = RequestMetrics()
    m.count([([b"SET", b"k", b"v"], True), ([b"set", b"k", b"v"], True), ([b"GET", b"k"], False)])
    m.count([([b"NOPE"], True), ([b"x" * 100], True), ([b"unknown"], True), ([b"PING"], True)])
    assert m.requests_by_command() == {"SET": 2, "GET": 1, "PING": 1, "unknown": 3}


def test_spellings_and_made_up_names_cannot_grow_the_table_without_bound() -> None:
    m = RequestMetrics()
    spellings = set()
    for i in range(2 ** 7):  # every case spelling of COMMAND, and as many made-up names
        spelled = bytes(c ^ 0x20 if i >> j & 1 else c for j, c in enumerate(b"COMMAND"))
        spellings.add(spelled)
        m.count([([spelled], True), ([b"junk%d" % i], True), ([b"more%d" % i], True)])
        assert len(m.counts) <= MAX_NAMES
    assert m.folded  # folded at least once, and nothing lost
    assert m.requests_by_command() == {"COMMAND": len(spellings), "unknown": 2 * 2 ** 7}


def test_a_chunk_is_timed_once_and_counted_per_request_by_kind() -> None:
    m = RequestMetrics()
    got = []
    assert m.writes([("g", b"k"), ("s", b"k", b"v")]) and m.writes([("d", b"k")])
    assert not m.writes([("g", b"k"), ("i",), ("n",)])
    t0 = time.perf_counter() - 0.0003  # went to the store 0.3 ms ago
    m.done(lambda group, results: got.append((group, results)), "g", ["r"], t0, 3, True)
    assert got == [("g", ["r"])]
    w, r = m.latency["write"], m.latency["read"]
    assert w.count == 3 and r.count == 0
    assert w.cumulative()[1][1] == 0 and w.cumulative()[-1][1] == 3  # > 0.25 ms
    assert 0.0009 <= w.total < 0.1


# --- export ---------------------------------------------------------------------------------

INFO = {
    "id": "node0", "origin": "node0@1", "keys": 7, "tombstones": 2, "uptime_s": 3,
    "vv": {"node0@1": 5, "node0@2": 4, "node1@9": 10},
    "stats": {"local_writes": 9, "remote_events": 10, "full_syncs": 1, "repaired_keys": 3},
    "memory": {"store_rss": 1000},
    "peers": {"node1": {"connected": True, "clock_offset_ms": 12, "lag": {"events": 4, "ms": 1500}},
              "node2": {"connected": False, "clock_offset_ms": None, "lag": {"events": 0, "ms": 0}}},
    "listeners": {"bus": {"accepted": 3, "open": 2, "handshake_failures": 1}, "catchup": "junk"},
    "metrics": {"peer_lag": {"node1": {"events": 6, "seconds": 2.5, "heard_s": 0.1}},
                "requests_sent": {"pull": 2, "buckets": 1},
                "histograms": {"fsync_seconds": Buckets((0.01,), [3, 1], 2.0).figures(),
                               "snapshot_seconds": "junk"}},
}


def samples(families: Any) -> dict[tuple[str, tuple], float]:
    """name, sorted labels -> value, from text exposition (parsed back, as Prometheus would)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    class Fixed(Collector):
        def collect(self) -> Any:
            return list(families)

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Fixed())
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_store_figures_are_exported_and_missing_ones_left_out() -> None:
    s = samples(store_families(INFO))
    assert s[("zkv_keys", ())] == 7 and s[("zkv_tombstones", ())] == 2
    assert s[("zkv_events_local_total", ())] == 9
    assert s[("zkv_full_transfers_total", ())] == 1
    assert s[("zkv_anti_entropy_repaired_keys_total", ())] == 3
    assert s[("zkv_events_applied_total", (("origin_node", "node0"),))] == 9
    assert s[("zkv_events_applied_total", (("origin_node", "node1"),))] == 10
    assert s[("zkv_replication_lag_events", (("peer", "node1"),))] == 6
    assert s[("zkv_replication_lag_seconds", (("peer", "node1"),))] == 2.5
    assert s[("zkv_replication_behind_seconds", (("peer", "node1"),))] == 1.5
    assert s[("zkv_peer_clock_offset_seconds", (("peer", "node1"),))] == 0.012
    assert ("zkv_peer_clock_offset_seconds", (("peer", "node2"),)) not in s  # not known yet
    assert s[("zkv_peer_connected", (("peer", "node2"),))] == 0
    assert s[("zkv_listener_handshake_failures_total", (("listener", "bus"),))] == 1
    assert s[("zkv_catchup_requests_sent_total", (("kind", "pull"),))] == 2
    assert s[("zkv_fsync_duration_seconds_bucket", (("le", "0.01"),))] == 3
    assert s[("zkv_fsync_duration_seconds_count", ())] == 4
    assert not any(name.startswith("zkv_snapshot_duration") for name, _ in s)  # junk: left out
    assert ("zkv_events_pulled_total", ()) not in s  # not sent: not reported as 0


def test_a_scrape_without_the_store_still_answers() -> None:
    async def never() -> Any:
        await asyncio.sleep(10)

    fe = FrontendFigures({"SET": 3}, {}, 1, 10, 0, 0, 100, None, None)
    body = asyncio.run(Scraper(never, lambda: fe, 0.05).render()).decode()
    assert "zkv_store_up 0.0" in body and 'zkv_requests_total{command="SET"} 3.0' in body
    assert "zkv_keys" not in body


def test_a_figure_that_cannot_be_read_does_not_fail_the_scrape() -> None:
    c = NodeCollector()
    c.store = {"id": "n", "peers": {"node1": {"lag": {"events": "many"}}}}
    names = [f.name for f in c.collect()]  # no exception; the families before it are there
    assert "zkv_store_up" in names and "zkv_node_info" in names


# --- the HTTP endpoint ----------------------------------------------------------------------

def test_request_lines() -> None:
    assert parse_request_line(b"GET /metrics HTTP/1.1\r\n") == ("GET", "/metrics")
    assert parse_request_line(b"GET /metrics?x=1 HTTP/1.0\n") == ("GET", "/metrics")
    for bad in (b"\r\n", b"GET /metrics\r\n", b"hello there friend\r\n", b"G\xffT / HTTP/1.1\r\n",
                b"GET / /metrics HTTP/1.1\r\n"):
        with pytest.raises(BadRequest):
            parse_request_line(bad)


def exchange(port: int, data: bytes, shut: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def run_endpoint(check: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_http, "REQUEST_TIMEOUT", 0.3)

    async def render() -> bytes:
        return b"zkv_up 1\n"

    async def main() -> None:
        ep = MetricsEndpoint("127.0.0.1", 0, render)
        await ep.start()
        try:
            await asyncio.get_running_loop().run_in_executor(None, check, ep.port)
        finally:
            await ep.close()
    asyncio.run(main())


def test_endpoint_answers_metrics_and_refuses_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    def check(port: int) -> None:
        ok = exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nzkv_up 1\n")
        assert b"Content-Type: text/plain; version=0.0.4" in ok
        head = exchange(port, b"HEAD /metrics HTTP/1.0\n\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        assert exchange(port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
        assert exchange(port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
        assert exchange(port, b"\x16\x03\x01 garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert exchange(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
                        ).startswith(b"HTTP/1.1 400")
        assert exchange(port, b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"
                        ).startswith(b"HTTP/1.1 400")
        assert exchange(port, b"GET /metrics HTTP/1.1\r\n") == b""  # half a request, then EOF
        assert exchange(port, b"GET /met", shut=False) == b""  # too slow: closed at the timeout
        assert exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
    run_endpoint(check, monkeypatch)


def test_endpoint_port_in_use_is_one_clear_error() -> None:
    from zkv.frontend.metrics import MetricsListenError

    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            ep = MetricsEndpoint("127.0.0.1", s.getsockname()[1], lambda: None)  # type: ignore[arg-type]
            with pytest.raises(MetricsListenError, match="address already in use"):
                await ep.start()
    asyncio.run(main())


# --- docs/metrics.md and the dashboard tell the truth ------------------------------------------

def exported_names() -> tuple[set[str], set[str]]:
    """Every family name a node can export (a store with every figure, a read cache), and
    every name docs/metrics.md shows."""
    full = dict(INFO)
    full["metrics"] = {**INFO["metrics"], "histograms": {
        k: Buckets((1.0,)).figures() for k in ("fsync_seconds", "snapshot_seconds", "fork_pause_seconds")}}
    for _name, _doc, path in (*STORE_COUNTERS, *STORE_GAUGES):
        d = full
        for key in path[:-1]:
            d[key] = d = dict(d.get(key) or {})
        d[path[-1]] = 1
    full["clock"] = {"refusing": ""}
    c = NodeCollector()
    c.store = full
    c.frontend = FrontendFigures({"SET": 1}, {"write": Buckets((1.0,))}, 1, 2, 0, 0, 3, 4, 5)
    names = set()
    for f in c.collect():
        names.add(f.name + ("_total" if f.type == "counter" else ""))
    doc = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(zkv_[a-z_]+)`", doc))
    return names, documented


def test_every_exported_metric_is_documented_and_every_documented_one_exported() -> None:
    names, documented = exported_names()
    assert names - documented == set(), "exported but not in docs/metrics.md"
    assert documented - names == set(), "in docs/metrics.md but never exported"


def test_the_dashboard_is_json_and_asks_only_for_metrics_that_exist() -> None:
    dash = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana-zkv.json").read_text())
    names, _ = exported_names()
    used = set()
    for p in dash["panels"]:
        for t in p["targets"]:
            used |= set(re.findall(r"\b(zkv_[a-z_]+?)(?:_bucket|_sum|_count)?\{", t["expr"]))
    assert len(used) > 20
    assert used - names == set()
