"""A key's full state - a counter's increments, an expiry set apart from the value - and the
rules that make concurrent INCRs, SETs and EXPIREs converge.

A key that has been incremented keeps, beside its value, what merging needs: the **base** - the
last SET or DEL by the conflict rule, its version ``(hlc, origin)`` and value - and each
increment newer than it, by its own version.  The key's value is the base (as an integer; a
deleted or absent base counts 0) plus every increment stamped after the base.  So a SET
concurrent with an INCR resolves by their timestamps, the same way on every node, and
increments made concurrently on different nodes all count: 3 nodes that each INCR a key 1,000
times end at 3,000.  Increments are kept by version, so applying one twice counts it once, and
states merge by union.

Compaction keeps memory flat: below the tombstone horizon every node holds every event, so the
increments stamped below it are added to the base value and forgotten; ``mark`` says how far
the value already counts (or supersedes) increments.  Two replicas' states merge exactly
whatever either was compacted to: the one with the later ``mark`` has counted (or dropped)
everything the other holds up to it, and the other's later increments are added.
A base that is not an integer (``SET k abc`` concurrent with an INCR elsewhere) reads as itself;
increments after it wait for a SET that makes them count, or are dropped by it.

The **expiry** is a register of its own beside the value: ``(exp_at, exp)``, the version of the
last write that set it and the absolute time (ms; 0: none).  A SET or DEL writes both the value
and the expiry (a SET without EX clears it, as in Redis); an EXPIRE or PERSIST writes the expiry
alone; an INCR writes neither, so a counter keeps its time to live.  Each register takes its
latest write, so a concurrent EXPIRE and SET on two nodes keep the SET's value and whichever
expiry is later, and an EXPIRE never brings back an older value.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Stamp = tuple[int, str]  # (hlc, origin): the conflict rule's order
LOW = ""  # an origin below every real one
HIGH = "\U0010ffff"  # above every real one: (hlc, HIGH) is "after everything stamped hlc"
NONE: Stamp = (0, LOW)  # the version of "never written"
MAX_INT = (1 << 63) - 1
MIN_INT = -(1 << 63)


def as_int(value: bytes | None) -> int | None:
    """A value as Redis reads it for INCR - a decimal integer within 64 bits, no '+', no
    spaces, no leading zeros - or None; a missing value reads 0."""
    n = as_number(value)
    return n if n is not None and MIN_INT <= n <= MAX_INT else None


def as_number(value: bytes | None) -> int | None:
    """``as_int`` without the 64-bit bound: how a counter's value is read to add increments to
    it.  Increments from several nodes may add up past 64 bits (each was checked against its
    own node's value only); the sum stays a number on every node - GET shows its digits, and
    an INCR of it answers 'out of range' - so replicas that counted it at different moments
    agree."""
    if value is None:
        return 0
    if not value or len(value) > 64 or value[:1] == b"+" or value != value.strip():
        return None
    if (value[:1] == b"0" and len(value) > 1) or value[:2] == b"-0":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def tie_rank(value: bytes | None) -> tuple:
    """The order that settles two values held under the same version - which no two correct
    replicas do, except after a fault that lost events on one of them (a hole given up as
    lost, a snapshot gone): both then believe their state counts everything up to that
    version, and neither can be shown wrong.  So that every node still ends with the same
    value, the greater wins, as Cassandra settles equal timestamps: a deletion is least, an
    integer is above any other value and greater integers above smaller ones (a replica that
    missed increments holds less), other values by their bytes."""
    if value is None:
        return (0, 0, b"")
    n = as_number(value)
    return (1, 0, value) if n is None else (2, n, value)


@dataclass(slots=True)
class Counter:
    base: Stamp  # version of the SET/DEL the value starts from (NONE: none)
    value: bytes | None  # that write's value, plus the increments it counts up to ``mark``
    mark: Stamp  # increments at or before it are counted in ``value`` or superseded by ``base``
    incs: dict[Stamp, int] = field(default_factory=dict)  # increments after mark: version -> step
    total: int = 0  # the sum of ``incs``' steps (kept, not summed per write: a hot key has many)
    exp_at: Stamp = NONE  # version of the write that set the expiry (at least ``base``)
    exp: int = 0  # when the value expires (ms since the epoch); 0: never
    # ``value`` read as a number, and the value object it was read from (a hot counter renders
    # on every increment: its base is parsed once per SET or compaction, not per INCR)
    _num: int | None = field(default=0, init=False, repr=False, compare=False)
    _num_of: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.exp_at < self.base:  # (the base's own write set the expiry, at least)
            self.exp_at = self.base

    @classmethod
    def start(cls, base: Stamp, value: bytes | None, floor: int = 0, exp: int = 0) -> Counter:
        """The state of a key whose last write was ``value`` (expiring at ``exp``) at ``base``
        (NONE: none), on a store whose tombstone horizon is ``floor``: every event below it is
        settled here (a key with no entry was deleted and collected), so the mark starts there
        at least."""
        return cls(base, value, max(base, (floor - 1, HIGH)) if floor else base, exp_at=base, exp=exp)

    def compacted(self, horizon: int) -> Counter:
        """A copy compacted to ``horizon`` (this one unchanged): what goes to a peer."""
        c = Counter(self.base, self.value, self.mark, dict(self.incs), self.total, self.exp_at, self.exp)
        if horizon:
            c.compact(horizon)
        return c

    def forget_below(self, horizon: int) -> None:
        """A full transfer from a peer that holds every event below ``horizon`` lacks this key:
        whatever of it lies below the horizon was deleted there and collected.  What remains is
        the increments at or after it, from nothing."""
        mark = (horizon - 1, HIGH)
        if mark <= self.mark:
            return
        self.base, self.value, self.mark = NONE, None, mark
        self.incs = {s: d for s, d in self.incs.items() if s > mark}
        self.total = sum(self.incs.values())
        if self.exp_at <= mark:
            self.exp_at, self.exp = NONE, 0

    def render(self) -> bytes | None:
        """The key's value; None: deleted, and no increment since."""
        if self._num_of is not self.value or self.value is None:
            self._num, self._num_of = as_number(self.value), self.value
        n = self._num
        if n is None:
            return self.value  # not an integer: increments wait for a SET
        if self.value is None and not self.incs:
            return None
        return b"%d" % (n + self.total)

    def top(self) -> Stamp:
        """The latest version in the state (the entry's: its digest, its age)."""
        top = max(self.base, self.exp_at)
        return max(top, max(self.incs)) if self.incs else top

    def plain(self) -> bool:
        """Whether the state says no more than one write at ``top`` would: no increments, and
        the expiry set by the value's own write or settled (at or before the mark), so a plain
        entry (version, value, expiry) stands for it."""
        return not self.incs and self.exp_at <= self.mark

    def increment(self, stamp: Stamp, step: int) -> bool:
        """An INCR event; True if it changed the state (not a duplicate, not superseded)."""
        if stamp <= self.mark or stamp in self.incs:
            return False
        self.incs[stamp] = step
        self.total += step
        return True

    def set(self, stamp: Stamp, value: bytes | None, exp: int = 0) -> bool:
        """A SET or DEL (``exp``: its expiry, 0: none); True if it is newer than the mark
        (increments before it drop).  One at or before the mark is counted already: the value
        stands for every event up to the mark (a node that took a transfer of this state, then
        pulls old events, meets such SETs).  Its expiry is taken unless an EXPIRE after it
        set one."""
        if stamp <= self.mark:
            if (stamp == self.mark == self.base and value != self.value
                    and tie_rank(value) > tie_rank(self.value)):
                self.value = value  # (the same version, another value: see ``tie_rank``)
                return True
            return False
        self.base, self.value, self.mark = stamp, value, stamp
        self.incs = {s: d for s, d in self.incs.items() if s > stamp}
        self.total = sum(self.incs.values())
        if stamp > self.exp_at:
            self.exp_at, self.exp = stamp, exp
        return True

    def expire(self, stamp: Stamp, exp: int) -> bool:
        """An EXPIRE (``exp``: when) or PERSIST (0); True if it changed the expiry: it is the
        expiry's latest write, and not settled already (at or before the mark)."""
        if stamp <= self.mark or stamp < self.exp_at:
            return False
        if stamp == self.exp_at:  # (the same write again, or a tie: the later time wins)
            if exp <= self.exp:
                return False
        self.exp_at, self.exp = stamp, exp
        return True

    def compact(self, horizon: int) -> None:
        """Count the increments stamped below ``horizon`` (every node holds them) in the value."""
        mark = (horizon - 1, HIGH)
        if mark <= self.mark:
            return
        old = [s for s in self.incs if s < mark]
        n = as_number(self.value)
        folded = sum(self.incs[s] for s in old)
        if n is not None and old:
            self.value = b"%d" % (n + folded)
        for s in old:  # (a base that is not an integer: they are superseded by any later SET)
            del self.incs[s]
        self.total -= folded
        self.mark = mark

    def merge(self, other: Counter) -> bool:
        """Fold another replica's state of this key in; True if this one changed.

        The state with the later mark decides the value: every event at or before its mark had
        reached it - a SET's mark supersedes what came before, a compaction's mark is a horizon
        every event below which had reached every node - so its value stands for all of them
        (the other's base included, which is older, or it would have a later mark); the other
        adds its increments after that mark.  States at the same mark with different values are
        settled by ``tie_rank``.  Bases do not decide: a key whose increments were
        compacted into a plain entry starts again from that entry's latest version, which is
        an increment's, not a SET's."""
        before = (self.base, self.value, self.mark, len(self.incs), self.exp_at, self.exp)
        if (other.exp_at, other.exp) > (self.exp_at, self.exp):
            self.exp_at, self.exp = other.exp_at, other.exp  # (the expiry: its latest write)
        if (other.mark == self.mark and other.value != self.value
                and tie_rank(other.value) > tie_rank(self.value)):
            self.base, self.value = other.base, other.value  # (see ``tie_rank``)
        if other.mark > self.mark:
            mine = self.incs
            self.base, self.value, self.mark = other.base, other.value, other.mark
            self.incs = {s: d for s, d in other.incs.items() if s > self.mark}
            self.total = sum(self.incs.values())
            extra = mine
        else:
            extra = other.incs
        for s, d in extra.items():
            if s > self.mark and s not in self.incs:
                self.incs[s] = d
                self.total += d
        return (self.base, self.value, self.mark, len(self.incs), self.exp_at, self.exp) != before

    # --- wire form (snapshots, transfers, anti-entropy) ---------------------------------------
    def encode(self) -> list:
        out = [self.base[0], self.base[1], self.value, self.mark[0], self.mark[1],
               [[h, o, d] for (h, o), d in sorted(self.incs.items())]]
        if self.exp_at != self.base or self.exp:
            out += [self.exp_at[0], self.exp_at[1], self.exp]
        return out

    @classmethod
    def decode(cls, d: object) -> Counter:
        """From ``encode``'s form, checked (it may come from a peer): ValueError if malformed."""
        if d.__class__ not in (list, tuple) or len(d) not in (6, 9):  # type: ignore[arg-type]
            raise ValueError("bad counter state")
        bh, bo, value, mh, mo, incs = d[:6]  # type: ignore[index]
        eh, eo, exp = d[6:] if len(d) == 9 else (bh, bo, 0)  # type: ignore[index, arg-type]
        _check_stamp(bh, bo)
        _check_stamp(mh, mo)
        _check_stamp(eh, eo)
        if exp.__class__ is not int or not 0 <= exp < 1 << 63 or (eh, eo) < (bh, bo):
            raise ValueError("bad expiry")
        if value is not None and value.__class__ is not bytes:
            raise ValueError("bad counter value")
        if incs.__class__ not in (list, tuple):
            raise ValueError("bad counter increments")
        c = cls((bh, bo), value, (mh, mo), exp_at=(eh, eo), exp=exp)
        if c.base > c.mark:
            raise ValueError("counter base after its mark")
        for inc in incs:
            if inc.__class__ not in (list, tuple) or len(inc) != 3:
                raise ValueError("bad counter increment")
            h, o, step = inc
            _check_stamp(h, o)
            if step.__class__ is not int or not MIN_INT <= step <= MAX_INT:
                raise ValueError("bad counter step")
            if (h, o) <= c.mark:
                raise ValueError("counter increment at or before its mark")
            c.increment((h, o), step)
        return c


def _check_stamp(hlc: object, origin: object) -> None:
    if (hlc.__class__ is not int or not 0 <= hlc < 1 << 63  # type: ignore[operator]
            or origin.__class__ is not str or len(origin) > 256):  # type: ignore[arg-type]
        raise ValueError("bad counter version")
