"""What one requester may cost a store's catch-up channel: request rate, and snapshot transfers.

Every request is charged to its requester (the peer name CURVE authentication proved, or on an
open bus the connection it came on) from a token bucket.  The rate was set when a catch-up
looped (a chaos run with some eighty origins showed 500/s was too few); a peer catching up
now asks far less (below), so the defaults never slow one down, while a looping or hostile
client is cut to that rate.  Requests that scan the keyspace (ENTRIES) have a rate of their own,
shared by all requesters.  A full state transfer costs a forked snapshot and a stream of the
whole dataset, so it is served only to configured peers, one stream per peer, and at most a few
times a minute per peer.  Pure: the store asks, with its own clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# A store catching up asks once for each origin it lacks (one per start of every node), and
# again only after an answer that was cut short (REPLY_BYTES) or left it short of what a peer
# announced: a restart with a few hundred missed writes costs a few requests
# (tests/cluster/test_catchup_cost.py).  An answer asked again at once regardless was a loop
# at network speed: thousands a second, near these figures.
REQUEST_RATE = 2000.0  # requests per second per requester, sustained
REQUEST_BURST = 4000.0
SNAP_EVERY = 5.0  # seconds between snapshot transfers to one peer, sustained
SNAP_BURST = 3.0
MAX_REQUESTERS = 4096  # buckets kept; the longest-idle ones go first
MAX_REQUEST_BYTES = 1024 * 1024  # ZeroMQ drops a connection that sends a larger request
# Replies queued for one requester that does not read them are bounded by the catch-up
# socket's send high-water mark (messages) times the largest reply: a pull or repair reply
# carries about REPLY_BYTES (at least one batch or entry), so about 64 MiB per connection.
CATCHUP_SNDHWM = 16
REPLY_BYTES = 4 * 1024 * 1024
# An ENTRIES request scans the whole keyspace once (all its buckets in one pass): however many
# ask, at most this many a second are served (peers ask once per anti-entropy round at most).
ENTRIES_RATE = 2.0
ENTRIES_BURST = 6.0


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float


class RateLimit:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_REQUESTERS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.buckets: dict[object, Bucket] = {}
        self.refused = 0

    def allow(self, key: object, now: float, cost: float = 1.0) -> bool:
        b = self.buckets.pop(key, None)  # re-inserted below: the dict stays in idle order
        if b is None:
            b = Bucket(self.burst, now)
            while len(self.buckets) >= self.max_keys:
                del self.buckets[next(iter(self.buckets))]
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        self.buckets[key] = b
        if b.tokens < cost:
            self.refused += 1
            return False
        b.tokens -= cost
        return True


def snapshot_refusal(requester: str | None, peers: frozenset[str]) -> str | None:
    """Why a snapshot transfer is not served to ``requester`` (None: it may be)."""
    if requester is None:
        return "the request names no requester"
    if requester not in peers:
        return f"{requester!r} is not a configured peer"
    return None
