"""How far each peer is behind this store, in events and in seconds (for ``/metrics``).

A peer announces, in every heartbeat, the version vector it has applied.  Set against ours,
that gives the events we hold and it has not announced: its lag in events.  Its lag in seconds
is how long ago the oldest of those events reached us, which needs to know *when* our vector
passed each value: ``SeqHistory`` keeps, per origin, samples ``(when, seq)`` taken by the store
loop at most every ``INTERVAL`` seconds while the vector moves.  The samples of an origin are
bounded (``MAX_SAMPLES``): when full, every other one of the older half is dropped (never the
first), so old history is kept at a coarser grain rather than forgotten - a peer stopped for an hour still
reads about an hour.

Both figures are as of the peer's last heartbeat, so a healthy peer reads a few heartbeat
intervals' worth of events and up to about one interval (plus ``INTERVAL``) of seconds; a peer
that stops (crashed, SIGSTOPped, cut off) reads a lag that grows with our writes and with time.
Pure: the caller passes the clock.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field

INTERVAL = 0.1  # seconds between samples of the version vector (while it moves)
MAX_SAMPLES = 512  # per origin; past it the older half is thinned


@dataclass(slots=True)
class Lag:
    events: int  # events we hold that the peer has not announced
    seconds: float  # how long ago the oldest of them reached us (0 when none)


@dataclass(slots=True)
class SeqHistory:
    """When our version vector reached which sequence number, per origin (sampled)."""

    interval: float = INTERVAL
    max_samples: int = MAX_SAMPLES
    next_at: float = 0.0
    times: dict[str, list[float]] = field(default_factory=dict)
    seqs: dict[str, list[int]] = field(default_factory=dict)

    def sample(self, now: float, vv: Mapping[str, int]) -> None:
        """Note our vector ``vv`` at ``now`` (at most once per ``interval``; cheap otherwise)."""
        if now < self.next_at:
            return
        self.next_at = now + self.interval
        for origin, seq in vv.items():
            seqs = self.seqs.get(origin)
            if seqs is None:
                self.seqs[origin] = [seq]
                self.times[origin] = [now]
                continue
            if seq == seqs[-1]:
                continue
            times = self.times[origin]
            if len(seqs) >= self.max_samples:
                half = len(seqs) // 2  # the oldest sample stays: it bounds every lag
                del seqs[1:half:2], times[1:half:2]
            seqs.append(seq)
            times.append(now)

    def lag(self, ours: Mapping[str, int], theirs: Mapping[str, int], now: float) -> Lag:
        """A peer that announced ``theirs``, against our vector ``ours``, at ``now``."""
        events = 0
        oldest = now
        for origin, seq in ours.items():
            have = theirs.get(origin, 0)
            if seq <= have:
                continue
            events += seq - have
            seqs = self.seqs.get(origin)
            if not seqs:
                continue  # not sampled yet: it arrived since the last sample
            # the first sample past what the peer has: the event after ``have`` was here by then
            i = bisect_right(seqs, have)
            if i < len(seqs):
                oldest = min(oldest, self.times[origin][i])
        return Lag(events, max(0.0, now - oldest) if events else 0.0)
