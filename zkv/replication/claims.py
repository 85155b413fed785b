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
  heard (within ``silent_s``: 2 s, or three heartbeat periods if longer).  A relay that races
  ahead of the node's next heartbeat is cut to what was announced; the rest is pulled once it
  is.  A heartbeat names its sender's own incarnation, never another node's;
- **a configured node not heard since this store started**, for ``silent_s`` after the start:
  nothing beyond what we hold (a restarted store would otherwise believe anything about a live
  node until that node's first heartbeat reached it);
- **anything else** - an earlier incarnation of a node, whose last events may survive only on
  its peers after a crash, or a node that is silent, down or no longer configured - is believed
  as relayed: an admitted key is trusted for what it relays there (docs/security.md).

The work one peer's heartbeats can cause is bounded too: a vector may name at most
``NEW_ORIGINS`` origins this store has not heard of, and each peer has a budget of heartbeat
bytes (``HeartbeatBudget``): about what a vector of the origins this store knows takes, per
heartbeat period; a heartbeat beyond it is dropped before it is decoded.  Pure: the store hands
in what it heard, with its own clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zkv.events import MAX_NAME, node_of

# Origins a heartbeat may name beyond those this store knows (a node that lost its data knows
# none; the cluster gets one origin per start of every node that wrote).  Past it, the rest are
# left out of that heartbeat's view; a store that lacks that many origins gets a full transfer
# at its first pull anyway, and with it every origin.
NEW_ORIGINS = 256
# Heartbeat bytes one peer may make this store decode (about 40 ns a byte): per heartbeat
# period, what a vector and a held map of the origins this store knows take (names as long as
# ours, 12 bytes of framing an entry), NEW_ORIGINS more at the longest names, and a fixed part
# for the rest; saved up to HB_BURST_BYTES, so that a store that knows few origins (a wiped one)
# still takes the larger heartbeats of a cluster that has many, one now and then.
HB_ENTRY_BYTES = 12
HB_BASE_BYTES = 16 * 1024
HB_BURST_BYTES = 1 << 20
SILENT_S = 2.0  # at least: a node unheard this long is not live, and relays are believed


@dataclass(slots=True)
class Claims:
    """What each node vouched for about its own current incarnation, and the bounds it sets."""

    own_origin: str
    nodes: frozenset[str]  # every configured node id, ours included
    started: float = 0.0  # when this store started (its clock)
    silent_s: float = SILENT_S
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
        node = node_of(origin)
        cur = self.current.get(node)
        if cur is None:
            if node in self.nodes and now - self.started < self.silent_s:
                return have  # not heard yet, and it may well be up: nothing beyond what we hold
            return None
        if cur[0] != origin or now - cur[1] >= self.silent_s:
            return None
        v = self.vouched.get(origin, 0)
        return v if v > have else have

    def vector(self, sender: str, vv: dict[str, int], mine: dict[str, int], our_seq: int,
               now: float) -> dict[str, int]:
        """``sender``'s vector as believed: claims about its own node's origins as they are,
        others cut to their bounds, and at most NEW_ORIGINS origins unknown here.  Returns
        ``vv`` itself when all of it is believed.

        Called for every heartbeat, so the common case - every origin known, nothing beyond a
        bound - costs set operations and one look-up per bounded origin (one per node)."""
        out: dict[str, int] | None = None
        unknown = vv.keys() - mine.keys() - self.vouched.keys()
        if len(unknown) > NEW_ORIGINS:
            drop = [o for o in vv if o in unknown][NEW_ORIGINS:]
            if drop:
                self.not_believed += len(drop)
                out = dict(vv)
                for o in drop:
                    del out[o]
        bounded = [self.own_origin]
        for node, (origin, heard) in self.current.items():
            if node != sender and now - heard < self.silent_s:
                bounded.append(origin)
        if now - self.started < self.silent_s and len(self.current) < len(self.nodes) - 1:
            bounded += [o for o in vv if o != self.own_origin and node_of(o) not in self.current
                        and node_of(o) != sender and node_of(o) in self.nodes]
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

    def cap(self, vv: dict[str, int], mine: dict[str, int], our_seq: int, now: float) -> None:
        """Cut, in place, a relayed vector (a full transfer's) to every bound: no claim about
        any node's current incarnation is taken from it beyond what that node announced."""
        for origin, seq in vv.items():
            b = self.bound(origin, mine.get(origin, 0), our_seq, now)
            if b is not None and seq > b:
                vv[origin] = b
                self.not_believed += 1

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


class HeartbeatBudget:
    """Heartbeat bytes each peer may make this store decode (see HB_BASE_BYTES)."""

    def __init__(self, period: float) -> None:
        self.period = period  # the heartbeat period, seconds
        self.tokens: dict[str, tuple[float, float]] = {}  # peer -> (bytes saved, when)
        self.dropped = 0

    def allow(self, peer: str, size: int, now: float, names_bytes: int, origins: int) -> bool:
        """May ``size`` bytes from ``peer`` be decoded, while this store knows ``origins``
        origins whose names take ``names_bytes``?"""
        per = heartbeat_bytes(names_bytes, origins)
        burst = max(3 * per, HB_BURST_BYTES)
        saved, at = self.tokens.get(peer, (burst, now))
        saved = min(burst, saved + (now - at) * per / self.period)
        if size > saved:
            self.tokens[peer] = (saved, now)
            self.dropped += 1
            return False
        self.tokens[peer] = (saved - size, now)
        return True


def heartbeat_bytes(names_bytes: int, origins: int) -> int:
    """The heartbeat bytes a peer may send per period, when this store knows ``origins``
    origins whose names take ``names_bytes``: its vector and held map twice over, NEW_ORIGINS
    more at the longest names, and a fixed part."""
    return (HB_BASE_BYTES + 2 * (names_bytes + HB_ENTRY_BYTES * origins)
            + NEW_ORIGINS * (MAX_NAME + HB_ENTRY_BYTES))
