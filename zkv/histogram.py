"""Fixed-bucket histograms that cost a bisect and two additions to update.

Durations the frontend and the store measure (request latency, fsync, snapshots) are counted
here, in plain Python numbers, by the thread that measures them: no lock, no
``prometheus_client`` object on a hot path.  The frontend's ``/metrics`` endpoint turns them
into Prometheus histograms at scrape time (``zkv.frontend.exposition``); the store's travel to
it as ``Buckets.figures()`` (plain lists, so msgpack carries them).

A value lands in the first bucket whose upper bound is >= it (Prometheus's ``le``); values above
the last bound land in the implicit ``+Inf`` bucket.  Counts are per bucket here, cumulative
only in ``cumulative()``.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

# Seconds.  A request through the store takes some 50 us to some ms; a write that waits for a
# stalled disk or a busy loop, up to seconds.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0)
# fdatasync of a log segment, a snapshot's fork pause: ms to seconds.
DISK_BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Writing a whole snapshot: a fraction of a second to minutes.
SNAPSHOT_BOUNDS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(slots=True)
class Buckets:
    """One histogram: ``counts[i]`` values <= ``bounds[i]`` (and > the bound before), and
    ``counts[-1]`` the values above every bound; ``total`` is their sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("bucket bounds must increase")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        elif len(self.counts) != len(self.bounds) + 1:
            raise ValueError("one count per bound, plus one for +Inf")

    def observe(self, value: float, n: int = 1) -> None:
        """Count ``n`` values equal to ``value``."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.total += value * n

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, values <= it)`` per bucket, ``+Inf`` last: Prometheus's buckets."""
        out = []
        running = 0
        for bound, c in zip((*self.bounds, float("inf")), self.counts):
            running += c
            out.append((bound, running))
        return out

    def add(self, other: Buckets) -> None:
        """Fold ``other`` (same bounds) into this one."""
        if other.bounds != self.bounds:
            raise ValueError("different bucket bounds")
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.total += other.total

    def figures(self) -> dict[str, Any]:
        """A plain-data copy (for msgpack): ``{"bounds", "counts", "sum"}``."""
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.total}

    @classmethod
    def from_figures(cls, fig: Any) -> Buckets | None:
        """``figures()`` back into Buckets; None if ``fig`` is not a well-formed one."""
        try:
            bounds = tuple(float(b) for b in fig["bounds"])
            counts = [int(c) for c in fig["counts"]]
            return cls(bounds, counts, float(fig["sum"]))
        except (TypeError, KeyError, ValueError):
            return None
