"""Write acknowledgements between stores, for ``WAIT`` and ``min_acks``: who has applied what.

Origin side (``Acked``): for each peer, the highest sequence number of our current origin it has
applied, learnt from its heartbeats (every ``heartbeat_ms``) and, promptly, from its ``ack``
messages.  A peer that restarts is a new incarnation: what it holds is what its first heartbeat
says (its recovery claims only what its log proves), so its figure starts again there, and
acks of its previous life that arrive late are ignored.  When a client waits for writes up to ``target``, the store publishes an ``ackreq``
right after those events, so each peer acknowledges as soon as it has applied them.

Peer side (``AckRequests``): origins that asked, and up to where; after each loop turn the
store acknowledges every origin whose applied sequence moved past what it last acknowledged,
and forgets a request once it is met.  Nothing is sent when nobody asks.  Pure: no sockets.
"""

from __future__ import annotations


class Acked:
    """Each peer's applied sequence of our origin: monotonic within one incarnation of the peer
    (a late message cannot lower it), started again by ``reset`` when the peer restarts."""

    def __init__(self, peers: frozenset[str]) -> None:
        self.peers = peers
        self.seq: dict[str, int] = {p: 0 for p in peers}

    def update(self, peer: str, seq: int) -> bool:
        """Record ``peer`` having applied our events through ``seq``; True if that is news."""
        if peer not in self.peers or seq <= self.seq[peer]:
            return False
        self.seq[peer] = seq
        return True

    def reset(self, peer: str, seq: int) -> bool:
        """The peer restarted: it holds ``seq`` now, whatever its previous life acknowledged."""
        if peer not in self.peers or seq == self.seq[peer]:
            return False
        self.seq[peer] = seq
        return True

    def count(self, target: int) -> int:
        return sum(1 for s in self.seq.values() if s >= target)


class AckRequests:
    """Acknowledgements origins have asked this store for."""

    def __init__(self, max_origins: int = 1024) -> None:
        self.wanted: dict[str, int] = {}  # origin -> sequence it waits for
        self.sent: dict[str, int] = {}  # origin -> what we last acknowledged
        self.max_origins = max_origins

    def want(self, origin: str, seq: int) -> None:
        if origin not in self.wanted and len(self.wanted) >= self.max_origins:
            return  # a flood of made-up origins: the real ones still get heartbeats
        self.wanted[origin] = max(seq, self.wanted.get(origin, 0))

    def due(self, vv: dict[str, int]) -> list[tuple[str, int]]:
        """``(origin, applied)`` to acknowledge now; requests that are met are forgotten."""
        out = []
        for origin, want in list(self.wanted.items()):
            have = vv.get(origin, 0)
            if have > self.sent.get(origin, 0):
                self.sent[origin] = have
                out.append((origin, have))
            if have >= want:
                del self.wanted[origin]
                self.sent.pop(origin, None)
        return out
