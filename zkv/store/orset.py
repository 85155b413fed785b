"""One member of a set: an observed-remove register whose concurrent add wins over a remove.

Every SADD of a member makes a *dot*, the version ``(hlc, origin)`` of its write, and names the
dots of that member it saw (which it replaces: a member re-added keeps one dot, not one per
SADD).  An SREM names the dots it saw, and removes exactly those.  A member is present while it
has a dot that no remove has named.  So an SADD on one node and a concurrent SREM of the same
member on another both apply everywhere and the member stays (the SREM never saw the new dot),
while an SREM after an SADD it saw removes it - on every node, whatever order the two arrive in,
however often: the state is the set of dots added and the set of dots removed, and both only
grow (union is commutative, associative and idempotent).

A removed dot is kept, with the version of the event that removed it, until the tombstone
horizon passes that event: below the horizon every node holds every event, so a dot below the
``mark`` that is not live was removed, and an add of it that arrives again (pulled anew after a
node recovered less) is ignored.  ``mark`` plays the part it
plays in a counter (zkv.store.counter): how far the state is settled.

A member with one live dot and nothing removed after its mark is *plain*: the keyspace keeps
just that dot in its entry (``pack_dot``), no object.  Pure: no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from zkv.store.counter import HIGH, NONE, Counter, Stamp, _check_stamp

_HLC = struct.Struct(">Q")
TAG_ADD = "a"  # an SADD event's value: ["a", h1, o1, h2, o2, ...] (the dots it saw)
TAG_REMOVE = "r"  # an SREM's: ["r", h1, o1, ...]
TAG_STATE = "S"  # a replica's state: ["S", mark hlc, mark origin, [live...], [removed...]]
# dots in one replica's state: live ones (one per SADD no other has seen yet) and removed ones
# (one per SADD-SREM cycle until the horizon passes it: more while a node is down)
MAX_DOTS = 1 << 16


def pack_dot(dot: Stamp) -> bytes:
    """A plain member's entry value: its one dot."""
    return _HLC.pack(dot[0]) + dot[1].encode()


def unpack_dot(raw: bytes) -> Stamp:
    return _HLC.unpack_from(raw)[0], raw[8:].decode()


@dataclass(slots=True)
class Member:
    mark: Stamp  # every event at or before it has been applied here (and everywhere)
    live: list[Stamp] = field(default_factory=list)  # dots no event has named (sorted)
    # removed dots -> the version of the earliest event that named them, kept while that is
    # after the mark: a replica that has not seen the removal may still hold the dot live
    gone: dict[Stamp, Stamp] = field(default_factory=dict)

    @classmethod
    def start(cls, dot: Stamp | None, floor: int = 0) -> Member:
        """The state of a plain entry (``dot``; None: no entry, or a plain tombstone) on a store
        whose tombstone horizon is ``floor`` (every event below it is settled here)."""
        mark = (floor - 1, HIGH) if floor else NONE
        return cls(mark, [dot] if dot is not None else [])

    def view(self) -> tuple[bytes | None, int]:
        """What the entry holds - a plain member's dot; any other live member's dots, so that
        the digest sees them (its state goes beside it) - or None if absent; no expiry."""
        return (b"".join(map(pack_dot, self.live)) if self.live else None), 0

    def top(self) -> Stamp:
        """The latest dot or removal in the state: its entry's version, the same on every
        replica that holds the same state (NONE: nothing, a tombstone collected at once)."""
        return max([*self.live[-1:], *self.gone.values()], default=NONE)

    def stamps(self) -> list[Stamp]:
        """Every version the state names (a peer's claims: ``zkv.store.replica`` bounds them)."""
        return [self.mark, *self.live, *self.gone, *self.gone.values()]

    def plain(self) -> bool:
        """One live dot and no removal after the mark: the entry's dot says it all (and no
        dots at all: a tombstone does)."""
        return not self.gone and len(self.live) <= 1

    # --- events -------------------------------------------------------------------------------
    def add(self, dot: Stamp, seen: list[Stamp]) -> bool:
        """An SADD stamped ``dot`` that saw ``seen``; True if the state changed."""
        changed = self.remove(dot, seen)
        if dot <= self.mark or dot in self.live or dot in self.gone:
            return changed  # (settled, here already, or removed since)
        self.live.append(dot)
        self.live.sort()
        return True

    def remove(self, stamp: Stamp, seen: list[Stamp]) -> bool:
        """An event stamped ``stamp`` (an SREM, or an SADD that replaces them) that names the
        dots ``seen``; True if the state changed."""
        changed = False
        gone = self.gone
        for d in seen:
            if d >= stamp:
                continue  # (an event names only what came before it: a dot from its future is a lie)
            if d in self.live:
                self.live.remove(d)
                changed = True
            if stamp > self.mark:
                r = gone.get(d)
                if r is None or stamp < r:  # (the earliest removal of each dot is kept)
                    gone[d] = stamp
                    changed = True
        return changed

    def merge(self, other: Member) -> bool:
        """Fold another replica's state of this member in; True if this one changed.  A dot at
        or before the later mark is live only if live there (that replica has applied its add,
        so if it does not hold it, it has applied a removal), or, at equal marks, in either; a
        dot after it is live in either.  A dot either has removed is removed."""
        before = (self.mark, self.live, self.gone)
        mark = max(self.mark, other.mark)
        if self.mark == other.mark:
            settled = {*self.live, *other.live}
        else:
            settled = set(self.live if self.mark > other.mark else other.live)
        gone = dict(self.gone)
        for d, r in other.gone.items():
            mine = gone.get(d)
            if mine is None or r < mine:  # (the earliest removal of each)
                gone[d] = r
        live = sorted({d for d in (*self.live, *other.live)
                       if (d > mark or d in settled) and d not in gone})
        self.mark, self.live, self.gone = mark, live, {d: r for d, r in gone.items() if r > mark}
        return (self.mark, self.live, self.gone) != before

    def compact(self, horizon: int) -> None:
        """Forget removals stamped below ``horizon`` (every node has applied them)."""
        mark = (horizon - 1, HIGH)
        if mark <= self.mark:
            return
        self.mark = mark
        self.gone = {d: r for d, r in self.gone.items() if r > mark}

    def compacted(self, horizon: int) -> Member:
        m = Member(self.mark, list(self.live), dict(self.gone))
        if horizon:
            m.compact(horizon)
        return m

    def forget_below(self, horizon: int) -> None:
        """A full transfer from a peer that holds every event below ``horizon`` lacks this
        member: whatever of it lies below the horizon was removed there and collected."""
        mark = (horizon - 1, HIGH)
        if mark <= self.mark:
            return
        self.mark = mark
        self.live = [d for d in self.live if d > mark]
        self.gone = {d: r for d, r in self.gone.items() if r > mark}

    # --- wire form ------------------------------------------------------------------------------
    def encode(self) -> list:
        return [TAG_STATE, self.mark[0], self.mark[1], flat(self.live),
                flat([x for d, r in sorted(self.gone.items()) for x in (d, r)])]

    @classmethod
    def decode(cls, d: object) -> Member:
        """From ``encode``'s form, checked (it may come from a peer): ValueError if malformed."""
        if d.__class__ not in (list, tuple) or len(d) != 5 or d[0] != TAG_STATE:  # type: ignore[arg-type, index]
            raise ValueError("bad set member state")
        _tag, mh, mo, live, gone = d  # type: ignore[misc]
        _check_stamp(mh, mo)
        pairs = dots(gone, 2 * MAX_DOTS)
        if len(pairs) % 2 or len(live) + len(gone) > 2 * MAX_DOTS:
            raise ValueError("bad set member state")
        m = cls((mh, mo), sorted(set(dots(live, MAX_DOTS))), dict(zip(pairs[0::2], pairs[1::2])))
        if any(r <= d for d, r in m.gone.items()):
            raise ValueError("bad set member state: a removal before its dot")
        if any(r <= m.mark for r in m.gone.values()) or set(m.live) & m.gone.keys():
            raise ValueError("bad set member state")
        return m


def decode_state(value: object) -> Member | Counter | None:
    """The state an entry's value carries - a set member's or a counter's - checked (it may
    come from a peer): ValueError if malformed; None for a value that is no state (bytes,
    None, a value with its expiry)."""
    if value.__class__ not in (list, tuple):
        return None
    if value and value[0] == TAG_STATE:  # type: ignore[index]
        return Member.decode(value)
    return None if len(value) == 2 else Counter.decode(value)  # type: ignore[arg-type]


def flat(stamps: list[Stamp]) -> list:
    out: list = []
    for h, o in stamps:
        out += (h, o)
    return out


def dots(raw: object, most: int = 0) -> list[Stamp]:
    """``flat``'s inverse, checked: ValueError if malformed, or more than ``most`` (0: any
    number; an event's are bounded by its batch's size)."""
    if raw.__class__ not in (list, tuple) or len(raw) % 2 or (most and len(raw) > 2 * most):  # type: ignore[arg-type]
        raise ValueError("bad dots")
    out = []
    for i in range(0, len(raw), 2):  # type: ignore[arg-type]
        h, o = raw[i], raw[i + 1]  # type: ignore[index]
        _check_stamp(h, o)
        out.append((h, o))
    return out


def event(tag: str, seen: list[Stamp]) -> list:
    """An SADD's (``TAG_ADD``) or SREM's (``TAG_REMOVE``) event value."""
    return [tag, *flat(seen)]
