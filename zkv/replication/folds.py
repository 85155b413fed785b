"""Folding finished incarnations out of version vectors, so that restarts do not grow them.

Every start of a store is a new origin (``zkv.events.new_origin``), and nothing ends an old one:
without folding, each heartbeat, pull decision and anti-entropy round would carry one entry per
start of every node that ever wrote.  An origin is *finished* once its node announced another
incarnation (or is not configured): it issues no new events.  A store *folds* a finished origin
``X`` at count ``F`` when it holds ``X`` through ``F`` with nothing of it waiting, held or being
pulled, and every configured peer's last heartbeat names ``X`` at exactly ``F`` and holds none
of it beyond - every node holds all of ``X`` there is.  A folded origin is left out of what goes
on the wire (heartbeats, anti-entropy); the store's own vector keeps it, so comparisons, pulls
and recovery are unchanged.

Folds are a grow-only map ``origin -> count`` merged by maximum, and they travel by gossip: a
heartbeat carries a digest of its sender's map (``Folds.digest``: how many, and an XOR of a
hash of each); a store whose digest differs asks for the map (``[FOLDS, after]`` on the
catch-up channel, a page at a time) and adopts each fold it holds the events for.  A fold it
lacks the events for (a node that lost its log tail, or its directory, after the fold) is a pull
of that origin instead, and until the maps agree - or a peer's map was read and nothing in it is
lacking, or is one this store's own map has been since it started - the store's stable time is
0, so no tombstone horizon passes events it may lack.

A fold never hides events: an origin whose count rises past its fold (events that surfaced
later, on a node that had them in its log) is named on the wire again, and folds again, at the
higher count, once every node holds them.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b

FOLD_PAGE = 4096  # folds in one reply to a FOLDS request


def fold_hash(origin: str, count: int) -> int:
    return int.from_bytes(blake2b(b"%s\0%d" % (origin.encode(), count), digest_size=8).digest(),
                          "big")


@dataclass(slots=True)
class Folds:
    """This store's folds, their digest, and which origins of its vector they hide."""

    final: dict[str, int] = field(default_factory=dict)  # origin -> count it was folded at
    count: int = 0
    xor: int = 0
    hidden: set[str] = field(default_factory=set)  # origins whose count in our vector is folded
    # Every digest this map has had since the store started: the map only grows, and the
    # store's vector too, so a peer whose digest is one of them hides nothing it lacks (a peer
    # that went down before our latest folds need not be read).
    had: set[tuple[int, int]] = field(default_factory=lambda: {(0, 0)})
    _sorted: list[str] | None = None

    @property
    def digest(self) -> tuple[int, int]:
        return (self.count, self.xor)

    def add(self, origin: str, count: int, vv: dict[str, int]) -> bool:
        """Record a fold of ``origin`` at ``count`` (the maximum wins); True if it is news."""
        old = self.final.get(origin)
        if old is not None and old >= count:
            return False
        if old is None:
            self.count += 1
            self._sorted = None
        else:
            self.xor ^= fold_hash(origin, old)
        self.xor ^= fold_hash(origin, count)
        self.final[origin] = count
        self.had.add((self.count, self.xor))
        self.recheck(origin, vv)
        return True

    def recheck(self, origin: str, vv: dict[str, int]) -> None:
        """After ``origin``'s count in our vector changed: hidden only while it is the count
        folded (beyond it, events surfaced that the fold did not count; below it, we lack some)."""
        f = self.final.get(origin)
        if f is not None and vv.get(origin) == f:
            self.hidden.add(origin)
        else:
            self.hidden.discard(origin)

    def wire(self, vv: dict[str, int]) -> dict[str, int]:
        """Our vector as heartbeats and anti-entropy carry it: without folded origins."""
        if not self.hidden:
            return dict(vv)
        return {o: vv[o] for o in vv.keys() - self.hidden}

    def page(self, after: str) -> tuple[list[list], bool]:
        """The folds whose origin sorts after ``after``: at most FOLD_PAGE, and whether more."""
        if self._sorted is None:
            self._sorted = sorted(self.final)
        names = self._sorted
        lo, hi = 0, len(names)
        while lo < hi:  # the first name > after
            mid = (lo + hi) // 2
            if names[mid] <= after:
                lo = mid + 1
            else:
                hi = mid
        part = names[lo:lo + FOLD_PAGE]
        return [[o, self.final[o]] for o in part], lo + FOLD_PAGE < len(names)


def foldable(wire: dict[str, int], current: set[str],
             busy: set[str], views: list[tuple[dict[str, int], dict[str, list[int]]]]) -> dict[str, int]:
    """The origins to fold now, with their counts: among those on the wire (``wire``), each
    that is no node's current incarnation (``current``), has nothing waiting, held or being
    pulled here (``busy``), and that every configured peer's last heartbeat - ``views``: its
    vector and its held map, one per configured peer - names at exactly our count and holds
    none of beyond it."""
    out = {}
    for origin, count in wire.items():
        if origin in current or origin in busy:
            continue
        if all(v.get(origin) == count and origin not in held for v, held in views):
            out[origin] = count
    return out
