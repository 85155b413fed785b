"""What ``/metrics`` says: the node's figures as Prometheus metric families.

One endpoint per node, served by the frontend (zkv.frontend.metrics_http).  At each scrape the
frontend asks its store for INFO's dict over the store link (the same ``("i",)`` operation INFO
uses, so the store needs no new request) and turns it, with the frontend's own figures, into
metric families here.  ``prometheus_client`` does the exposition format (``generate_latest`` on
a private registry); nothing here formats text.

The names, their meaning and their labels are listed in docs/metrics.md; ``STORE_COUNTERS`` and
``STORE_GAUGES`` are the store's plain figures, by where they are in INFO's dict.  A figure the
store did not send (an older store, a scrape it did not answer in time) is left out, never
reported as 0; ``zkv_store_up`` says whether the store answered this scrape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from zkv import __version__
from zkv.events import node_of
from zkv.histogram import Buckets

log = logging.getLogger("zkv.frontend")

# (name without _total, help, path in INFO's dict)
STORE_COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("zkv_events_local", "Events made on this node by client writes (one per key a request "
     "writes or deletes); each is logged, applied here and published to the peers",
     ("stats", "local_writes")),
    ("zkv_events_received", "Events of other origins applied from peers' live bus batches",
     ("stats", "remote_events")),
    ("zkv_events_pulled", "Events applied from catch-up pulls (missing events asked of a peer)",
     ("stats", "pulled_events")),
    ("zkv_event_gaps", "Gaps seen in an origin's events (each one starts a pull)", ("stats", "gaps")),
    ("zkv_catchup_pulls", "Pull requests sent to peers for missing events",
     ("catchup", "pulls_sent")),
    ("zkv_catchup_requests_received", "Catch-up requests received from peers, served or refused",
     ("catchup", "requests_received")),
    ("zkv_catchup_requests_refused", "Catch-up requests refused (over a requester's rate limit)",
     ("catchup", "requests_refused")),
    ("zkv_full_transfers", "Full state transfers received from a peer and applied",
     ("stats", "full_syncs")),
    ("zkv_anti_entropy_repaired_keys", "Keys changed by anti-entropy repairs",
     ("stats", "repaired_keys")),
    ("zkv_tombstones_collected", "Tombstones dropped once every node had seen them",
     ("stats", "tombstones_collected")),
    ("zkv_expired_reclaimed", "Expired keys dropped from memory once the horizon passed them",
     ("stats", "expired_reclaimed")),
    ("zkv_writes_refused", "Frontend batches whose writes the store refused (clock too far off)",
     ("stats", "writes_refused")),
    ("zkv_bad_messages", "Messages from peers or strangers dropped as malformed or not theirs to "
     "send", ("stats", "bad_messages")),
    ("zkv_clock_held_events", "Events held back because they were stamped too far ahead of this "
     "node's clock", ("stats", "clock_held_events")),
    ("zkv_lost_events", "Events given up as lost (a hole no node could fill)",
     ("stats", "lost_events")),
    ("zkv_heartbeats_dropped", "Peers' heartbeats dropped over their rate or size budget",
     ("stats", "heartbeats_dropped")),
    ("zkv_bus_batches_published", "Event batches this node's bus socket published",
     ("metrics", "published_batches")),
    ("zkv_bus_publish_dropped", "Event batches the bus socket dropped (its high-water mark); "
     "peers pull them", ("metrics", "publish_dropped")),
    ("zkv_snapshots", "Snapshots written", ("snapshots", "taken")),
    ("zkv_fsync_delayed", "Background log syncs that had to wait for the previous one",
     ("background_fsync", "delayed")),
    ("zkv_fsync_errors", "Background log syncs that failed", ("background_fsync", "errors")),
)
STORE_GAUGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("zkv_keys", "Live keys", ("keys",)),
    ("zkv_tombstones", "Deleted keys kept as tombstones until every node has seen the delete",
     ("tombstones",)),
    ("zkv_expiring_keys", "Keys with an expiry, expired ones included until they are reclaimed",
     ("expiring_keys",)),
    ("zkv_store_resident_memory_bytes", "Resident memory of the store process",
     ("memory", "store_rss")),
    ("zkv_log_bytes", "Bytes of write-ahead log segments on disk", ("disk", "log_bytes")),
    ("zkv_snapshot_bytes", "Bytes of the snapshot on disk", ("disk", "snapshot_bytes")),
    ("zkv_store_uptime_seconds", "Seconds since the store process started", ("uptime_s",)),
    ("zkv_recovery_seconds", "How long the store's last start took to recover its data",
     ("recovery", "seconds")),
    ("zkv_full_transfer_running", "1 while a full state transfer from a peer is in progress",
     ("syncing",)),
)
# (name, help, key in INFO's "metrics" -> "histograms")
STORE_HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    ("zkv_fsync_duration_seconds", "Background fdatasync of the log (fsync = everysec)",
     "fsync_seconds"),
    ("zkv_snapshot_duration_seconds", "Writing a snapshot, fork to a finished file",
     "snapshot_seconds"),
    ("zkv_snapshot_fork_pause_seconds", "How long the store loop paused to fork for a snapshot",
     "fork_pause_seconds"),
)


@dataclass(slots=True)
class FrontendFigures:
    """The frontend's own figures at scrape time."""

    requests: Mapping[str, int]  # command -> requests
    latency: Mapping[str, Buckets]  # "read"/"write" -> durations
    connections: int
    max_clients: int
    refused: int  # connections refused past max_clients
    tls_handshake_failures: int
    rss: int
    cache_hits: int | None  # None: no read cache
    cache_misses: int | None


def _dig(info: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    v: Any = info
    for key in path:
        if not isinstance(v, Mapping) or key not in v:
            return None
        v = v[key]
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add_buckets(family: HistogramMetricFamily, labels: list[str], b: Buckets) -> None:
    family.add_metric(labels, [(floatToGoString(le), n) for le, n in b.cumulative()], b.total)


def frontend_families(fe: FrontendFigures) -> Iterator[Metric]:
    c = CounterMetricFamily("zkv_requests", "Client requests by command, as parsed by the "
                            "frontend (names that are no command: unknown)", labels=["command"])
    for command, n in sorted(fe.requests.items()):
        c.add_metric([command], n)
    yield c
    h = _histogram("zkv_request_duration_seconds", "From handing a chunk of requests to the "
                   "store to writing their replies, counted once per request; kind: write if "
                   "the chunk held a write, else read (chunks answered without the store are "
                   "not timed)", ["kind"])
    for kind, b in sorted(fe.latency.items()):
        _add_buckets(h, [kind], b)
    yield h
    yield GaugeMetricFamily("zkv_clients", "Client connections open now", value=fe.connections)
    yield GaugeMetricFamily("zkv_max_clients", "Client connections allowed (max_clients, as "
                            "the open-file limit allows)", value=fe.max_clients)
    yield CounterMetricFamily("zkv_client_connections_refused", "Client connections refused "
                              "past max_clients", value=fe.refused)
    yield CounterMetricFamily("zkv_client_tls_handshake_failures", "TLS handshakes on the "
                              "client port that failed", value=fe.tls_handshake_failures)
    yield GaugeMetricFamily("zkv_frontend_resident_memory_bytes", "Resident memory of the "
                            "frontend process", value=fe.rss)
    if fe.cache_hits is not None:
        yield CounterMetricFamily("zkv_read_cache_hits", "Reads the frontend's read cache "
                                  "answered", value=fe.cache_hits)
        yield CounterMetricFamily("zkv_read_cache_misses", "Reads of one key the read cache "
                                  "sent on to the store", value=fe.cache_misses)


def store_families(info: Mapping[str, Any]) -> Iterator[Metric]:
    """INFO's dict -> metric families; a figure it lacks is left out."""
    node = str(info.get("id", ""))
    i = GaugeMetricFamily("zkv_node_info", "This node: its id, current origin (incarnation) "
                          "and zkv version", labels=["node", "origin", "version"])
    i.add_metric([node, str(info.get("origin", "")), __version__], 1)
    yield i
    for name, doc, path in STORE_COUNTERS:
        v = _dig(info, path)
        if v is not None:
            yield CounterMetricFamily(name, doc, value=v)
    for name, doc, path in STORE_GAUGES:
        v = _dig(info, path)
        if v is not None:
            yield GaugeMetricFamily(name, doc, value=v)
    clock = info.get("clock")
    if isinstance(clock, Mapping):
        yield GaugeMetricFamily("zkv_clock_refusing_writes", "1 while this node refuses client "
                                "writes because its clock is too far off the cluster's",
                                value=1 if clock.get("refusing") else 0)
    yield from _applied_families(info.get("vv"))
    yield from _peer_families(info.get("peers"), _dig_map(info, ("metrics", "peer_lag")))
    yield from _listener_families(info.get("listeners"))
    sent = _dig_map(info, ("metrics", "requests_sent"))
    c = CounterMetricFamily("zkv_catchup_requests_sent", "Catch-up requests sent to peers, by "
                            "kind (pull: missing events; buckets, entries: anti-entropy; snap: "
                            "a full transfer)", labels=["kind"])
    for kind, n in sorted(sent.items()):
        if isinstance(n, int):
            c.add_metric([str(kind)], n)
    yield c
    hists = _dig_map(info, ("metrics", "histograms"))
    for name, doc, key in STORE_HISTOGRAMS:
        b = Buckets.from_figures(hists.get(key)) if key in hists else None
        if b is not None:
            h = _histogram(name, doc, [])
            _add_buckets(h, [], b)
            yield h


def _dig_map(info: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
    v: Any = info
    for key in path:
        v = v.get(key) if isinstance(v, Mapping) else None
    return v if isinstance(v, Mapping) else {}


def _applied_families(vv: Any) -> Iterator[Metric]:
    """The version vector, summed per node: every event of a node's incarnations applied here
    (events are numbered from 1 per incarnation, without holes)."""
    if not isinstance(vv, Mapping):
        return
    per_node: dict[str, int] = {}
    for origin, seq in vv.items():
        if isinstance(seq, int):
            n = node_of(str(origin))
            per_node[n] = per_node.get(n, 0) + seq
    c = CounterMetricFamily("zkv_events_applied", "Events applied here, by the node they were "
                            "made on (this node's own included): its version vector, summed "
                            "over that node's incarnations", labels=["origin_node"])
    for n, total in sorted(per_node.items()):
        c.add_metric([n], total)
    yield c


def _peer_families(peers: Any, lag: Mapping[str, Any]) -> Iterator[Metric]:
    if not isinstance(peers, Mapping):
        return
    up = GaugeMetricFamily("zkv_peer_connected", "1 if the peer's heartbeats are arriving",
                           labels=["peer"])
    offset = GaugeMetricFamily("zkv_peer_clock_offset_seconds", "The peer's wall clock minus "
                               "this node's, from its recent heartbeats", labels=["peer"])
    behind_e = GaugeMetricFamily("zkv_replication_behind_events", "Events the peer has announced "
                                 "that this node has not applied yet", labels=["peer"])
    behind_s = GaugeMetricFamily("zkv_replication_behind_seconds", "How long this node has "
                                 "lacked events the peer announced (0: it lacks none)",
                                 labels=["peer"])
    for peer, p in sorted(peers.items()):
        if not isinstance(p, Mapping):
            continue
        up.add_metric([peer], 1 if p.get("connected") else 0)
        off = p.get("clock_offset_ms")
        if isinstance(off, (int, float)):
            offset.add_metric([peer], off / 1000)
        own_lag = p.get("lag")
        if isinstance(own_lag, Mapping):
            behind_e.add_metric([peer], own_lag.get("events", 0))
            behind_s.add_metric([peer], own_lag.get("ms", 0) / 1000)
    yield from (up, offset, behind_e, behind_s)
    lag_e = GaugeMetricFamily("zkv_replication_lag_events", "Events this node has applied that "
                              "the peer had not announced in its last heartbeat", labels=["peer"])
    lag_s = GaugeMetricFamily("zkv_replication_lag_seconds", "How long ago the oldest event this "
                              "node has and the peer had not announced reached this node",
                              labels=["peer"])
    heard = GaugeMetricFamily("zkv_peer_heartbeat_age_seconds", "Seconds since the peer's last "
                              "heartbeat arrived", labels=["peer"])
    for peer, figs in sorted(lag.items()):
        if isinstance(figs, Mapping):
            lag_e.add_metric([peer], figs.get("events", 0))
            lag_s.add_metric([peer], figs.get("seconds", 0))
            heard.add_metric([peer], figs.get("heard_s", 0))
    yield from (lag_e, lag_s, heard)


def _listener_families(listeners: Any) -> Iterator[Metric]:
    """The store's bus and catch-up ports: who connected, and who failed the handshake
    (strangers, wrong keys, bytes that are not ZeroMQ's)."""
    if not isinstance(listeners, Mapping):
        return
    accepted = CounterMetricFamily("zkv_listener_connections_accepted", "Connections accepted "
                                   "on the store's bus and catch-up ports (peers included)",
                                   labels=["listener"])
    open_ = GaugeMetricFamily("zkv_listener_connections_open", "Connections open now on the "
                              "store's bus and catch-up ports", labels=["listener"])
    failed = CounterMetricFamily("zkv_listener_handshake_failures", "Connections to the store's "
                                 "bus and catch-up ports closed because their handshake failed: "
                                 "strangers refused (no key, a key not admitted, not ZeroMQ, "
                                 "too slow)", labels=["listener"])
    for role in ("bus", "catchup"):
        c = listeners.get(role)
        if isinstance(c, Mapping):
            accepted.add_metric([role], c.get("accepted", 0))
            open_.add_metric([role], c.get("open", 0))
            failed.add_metric([role], c.get("handshake_failures", 0))
    yield from (accepted, open_, failed)


class NodeCollector(Collector):
    """Yields what was gathered for the scrape in progress (``frontend``, ``store``): the
    endpoint sets both, then calls ``generate_latest`` on the loop's thread."""

    def __init__(self) -> None:
        self.frontend: FrontendFigures | None = None
        self.store: Mapping[str, Any] | None = None
        self.store_seconds = 0.0

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("zkv_store_up", "1 if the store answered this scrape in time",
                                value=1 if self.store is not None else 0)
        yield GaugeMetricFamily("zkv_store_scrape_seconds", "How long the store took to answer "
                                "this scrape (the timeout, if it did not)", value=self.store_seconds)
        for part, families in ((self.frontend, frontend_families),
                               (self.store, store_families)):
            if part is None:
                continue
            try:
                yield from families(part)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - a figure we cannot read must not fail the scrape
                log.exception("metrics: skipped figures that could not be exported")


class Scraper:
    """One scrape: the store's figures (waited for at most ``store_timeout``), the frontend's,
    then ``generate_latest`` of a private registry holding only the node's collector."""

    def __init__(self, fetch_store: Callable[[], Awaitable[Mapping[str, Any] | None]],
                 frontend: Callable[[], FrontendFigures], store_timeout: float) -> None:
        self.fetch_store, self.frontend, self.store_timeout = fetch_store, frontend, store_timeout
        self.collector = NodeCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    async def render(self) -> bytes:
        t0 = time.perf_counter()
        try:
            store = await asyncio.wait_for(self.fetch_store(), self.store_timeout)
        except TimeoutError:
            store = None
        c = self.collector
        c.store, c.store_seconds = store, time.perf_counter() - t0
        c.frontend = self.frontend()
        return generate_latest(self.registry)
