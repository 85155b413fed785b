"""When a tombstone may be forgotten: the time below which a store holds every event there is.

A delete leaves a tombstone so that an older write arriving late cannot bring the key back.  It
may be dropped only once *every* node holds every event stamped before it: then no older write
of that key is still on its way anywhere.  Each store works out its own *stable* time - below it,
it holds every event of every origin - and announces it in its heartbeats; the minimum over all
configured nodes is the collection horizon.

How a store knows it holds every event of an origin below some time:

- its own current incarnation: everything (it stamped them);
- a peer's current incarnation: the peer's heartbeat says "my last event is ``seq`` and my clock
  is at ``hlc``"; once this store has applied up to ``seq``, it holds every event of that origin
  stamped below ``hlc`` (later events are stamped above it).  That time is its *frontier*, kept
  per origin and only ever raised;
- any other origin - an earlier incarnation of some node (``zkv.events.new_origin``), or a node
  no longer configured - issues no new events: the store holds all of it once its vector reaches
  the most that any node's last heartbeat announced for it, the down ones' included.  Until
  then its stable time is 0, since a peer may hold events of it that this store lacks (a node
  that lost its log tail, for one, lacks some of its own).

A configured peer never heard since this store started makes collection wait.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Announced:
    """What one peer's last heartbeat said."""

    origin: str  # its current incarnation
    seq: int  # its last event under it
    hlc: int  # a timestamp above every event it issued
    vv: dict[str, int]
    stable: int


@dataclass(slots=True)
class Horizon:
    my_origin: str
    peers: frozenset[str]  # configured peer node ids
    announced: dict[str, Announced] = field(default_factory=dict)  # node id -> last heartbeat
    frontier: dict[str, int] = field(default_factory=dict)  # origin -> all its events below this held

    def heard(self, node: str, a: Announced, vv: dict[str, int]) -> None:
        """Record a peer's heartbeat (``vv``: this store's version vector now)."""
        self.announced[node] = a
        self.advance(a.origin, vv)

    def advance(self, origin: str, vv: dict[str, int]) -> None:
        """After events of ``origin`` were applied: raise its frontier if we reached the seq its
        node last announced."""
        for a in self.announced.values():
            if a.origin == origin:
                if vv.get(origin, 0) >= a.seq and a.hlc > self.frontier.get(origin, 0):
                    self.frontier[origin] = a.hlc
                return

    def stable(self, now: int, vv: dict[str, int]) -> int:
        """A time below which this store holds every event of every origin (0: none known)."""
        t = now
        current = {self.my_origin}
        for p in self.peers:
            a = self.announced.get(p)
            if a is None:
                return 0
            current.add(a.origin)
            t = min(t, self.frontier.get(a.origin, 0))
        items = vv.items()
        for a in self.announced.values():
            if a.vv.items() <= items:
                continue  # (the common case, checked in C: it holds nothing we lack)
            for origin, seq in a.vv.items():
                if origin not in current and vv.get(origin, 0) < seq:
                    return 0  # a finished origin of which someone holds more than we do
        return t

    def collectable(self, now: int, vv: dict[str, int]) -> int:
        """The collection horizon: the minimum of our stable time and every configured peer's
        last announced one (0 while any has not been heard)."""
        t = self.stable(now, vv)
        for p in self.peers:
            a = self.announced.get(p)
            if a is None:
                return 0
            t = min(t, a.stable)
        return t
