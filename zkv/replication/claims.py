"""What an admitted peer may claim about events, and how much of it this store believes.

A peer's key proves who sent a message, not that what it says is true.  A peer is believed
about its own node's events: its bus carries only them, its heartbeat announces how far its
current incarnation has gone.  About any other node's events it is a relay, and its claims -
a version vector in a heartbeat, events in a pull reply, the vector at the end of a full
transfer - are bounded here:

- **our own current incarnation**: nobody holds more of it than we issued, so no claim beyond
  our own sequence number is believed, and no event or entry of it is taken from anyone;
- **a live node's current incarnation**: no claim beyond what that node itself announced (its
  heartbeat's sequence number, or the last event its bus carried) is believed, while it is
  heard (``PEER_SILENT_S``).  A relay that races ahead of the node's next heartbeat is cut to
  what was announced; the rest is pulled once it is;
- **anything else** - an earlier incarnation of a node, whose last events may survive only on
  its peers after a crash, or a node that is silent, down or no longer configured - is believed
  as relayed: an admitted key is trusted for what it relays there (docs/security.md).

The work one heartbeat can cause is bounded too: a vector may name at most
``NEW_ORIGINS`` origins this store has not heard of, only of configured nodes, and a heartbeat
larger than its vector could be (``heartbeat_bytes``) is dropped before it is decoded.  Pure:
the store hands in what it heard, with its own clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zkv.events import MAX_NAME, node_of

# Origins a heartbeat may name beyond those this store knows (a node that lost its data knows
# none; the cluster gets one origin per start of every node).  Past it, the rest are left out
# of that heartbeat's view: the next heartbeats bring them once the first are known.
NEW_ORIGINS = 1024
# A heartbeat's size grows with its vector (and its held map): more than this many bytes per
# origin it may name, plus a fixed part, and it is dropped unread - decoding costs about 0.7 us
# a byte, so a flood of oversized heartbeats would otherwise stall the store.
HB_BYTES_PER_ORIGIN = 2 * (MAX_NAME + 12)
HB_BASE_BYTES = 64 * 1024
SILENT_S = 2.0  # a node unheard this long is not live: its relayed events are believed


@dataclass(slots=True)
class Claims:
    """What each node vouched for about its own current incarnation, and the bounds it sets."""

    own_origin: str
    nodes: frozenset[str]  # every configured node id, ours included
    vouched: dict[str, int] = field(default_factory=dict)  # origin -> highest seq its node vouched for
    current: dict[str, tuple[str, float]] = field(default_factory=dict)  # node -> (origin, heard at)
    not_believed: int = 0  # claims cut or dropped so far

    def heard(self, node: str, origin: str, seq: int, now: float) -> None:
        """``node``'s own heartbeat: its current incarnation is ``origin``, issued through ``seq``."""
        self.current[node] = (origin, now)
        self.vouch(origin, seq)

    def vouch(self, origin: str, seq: int) -> None:
        """``origin``'s own node vouched for events through ``seq`` (its heartbeat, or its bus)."""
        if seq > self.vouched.get(origin, 0):
            self.vouched[origin] = seq

    def bound(self, origin: str, have: int, our_seq: int, now: float) -> int | None:
        """The most of ``origin`` a relay is believed about (None: no bound); ``have``: what we
        hold of it, ``our_seq``: what our own current incarnation issued."""
        if origin == self.own_origin:
            return our_seq
        cur = self.current.get(node_of(origin))
        if cur is None or cur[0] != origin or now - cur[1] >= SILENT_S:
            return None
        v = self.vouched.get(origin, 0)
        return v if v > have else have

    def vector(self, sender: str, vv: dict[str, int], mine: dict[str, int], our_seq: int,
               now: float) -> dict[str, int]:
        """``sender``'s vector as believed: claims about its own node's origins as they are,
        others cut to their bounds; origins unknown here only of configured nodes, and at most
        NEW_ORIGINS of them.  Returns ``vv`` itself when all of it is believed.

        Called for every heartbeat, so the common case - every origin known, nothing beyond a
        bound - costs set operations and one look-up per bounded origin (one per node)."""
        out: dict[str, int] | None = None
        unknown = vv.keys() - mine.keys() - self.vouched.keys()
        if unknown:
            drop = [o for o in unknown if node_of(o) not in self.nodes]
            rest = [o for o in vv if o in unknown and node_of(o) in self.nodes]
            drop += rest[NEW_ORIGINS:]
            if drop:
                self.not_believed += len(drop)
                out = dict(vv)
                for o in drop:
                    del out[o]
        bounded = [self.own_origin]
        for node, (origin, heard) in self.current.items():
            if node != sender and now - heard < SILENT_S:
                bounded.append(origin)
        for origin in bounded:
            seq = vv.get(origin)
            if seq is None:
                continue
            b = self.bound(origin, mine.get(origin, 0), our_seq, now)
            if b is not None and seq > b:
                self.not_believed += 1
                if out is None:
                    out = dict(vv)
                out[origin] = b
        return vv if out is None else out

    def events(self, origin: str, first: int, last: int, have: int, our_seq: int,
               now: float) -> int:
        """How many of a relayed run ``first..last`` of ``origin``'s events are believed."""
        b = self.bound(origin, have, our_seq, now)
        if origin == self.own_origin:
            b = 0  # we issued them: a copy from anyone is never needed
        if b is None or last <= b:
            return last - first + 1
        self.not_believed += 1
        return max(0, b - first + 1)


def heartbeat_bytes(known: int) -> int:
    """The largest heartbeat believed from a peer when this store knows ``known`` origins."""
    return HB_BASE_BYTES + HB_BYTES_PER_ORIGIN * (known + NEW_ORIGINS)
