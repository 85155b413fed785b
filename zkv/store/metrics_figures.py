"""The store's figures that only ``/metrics`` needs, under INFO's key ``metrics``.

INFO's dict (``Replica.info`` plus the shell's ``_info_extra``) already carries most of what the
frontend's metrics endpoint exports (zkv.frontend.exposition).  What it lacks is gathered here,
as plain data msgpack can carry: each peer's lag behind us (zkv.store.peerlag), the duration
histograms of fsync and snapshots (zkv.histogram), catch-up requests sent by kind, and what the
PUB socket published or dropped.  INFO's text does not show this key; ``INFO json`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zkv.histogram import Buckets
from zkv.store.peerlag import SeqHistory


@dataclass(frozen=True, slots=True)
class PeerHeard:
    vv: Mapping[str, int]  # the version vector of its last heartbeat
    seen: float  # when that heartbeat came (monotonic)


def figures(history: SeqHistory, ours: Mapping[str, int], peers: Mapping[str, PeerHeard],
            now: float, histograms: Mapping[str, Buckets | None],
            requests_sent: Mapping[str, int], published: int, publish_dropped: int) -> dict[str, Any]:
    """``peers``: the peers heard since the store started (one never heard has no lag)."""
    lag = {}
    for peer, heard in peers.items():
        behind = history.lag(ours, heard.vv, now)
        lag[peer] = {"events": behind.events, "seconds": round(behind.seconds, 3),
                     "heard_s": round(max(0.0, now - heard.seen), 3)}
    return {
        "peer_lag": lag,
        "histograms": {name: b.figures() for name, b in histograms.items() if b is not None},
        "requests_sent": dict(requests_sent),
        "published_batches": published,
        "publish_dropped": publish_dropped,
    }
