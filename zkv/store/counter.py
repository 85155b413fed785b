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

The **expiry** is an absolute time (ms; 0: none) beside the value.  A SET or DEL writes both
(a SET without EX clears it, as in Redis); an EXPIRE or PERSIST writes the expiry alone, kept by
version like an increment; an INCR writes neither, so a counter keeps its time to live.  The
events after the mark are taken in version order (``view``): a value whose expiry has come by an
event's timestamp is gone before that event, so an INCR after it starts from nothing and an
EXPIRE after it finds no key - the same on a node that still holds the expired value and on one
that has dropped it (zkv.store.keyspace ``reclaim_expired``).  A concurrent EXPIRE and SET on
two nodes keep the SET's value, and the EXPIRE's time if it came after the SET; an EXPIRE never
brings back an older value.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zkv.clock import LOGICAL_BITS

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
    digits = value[1:] if value[:1] == b"-" else value
    if not digits.isdigit() or not digits.isascii() or len(value) > 64:  # (no '+', spaces or '_')
        return None
    if digits[:1] == b"0" and len(value) > 1:  # (no leading zeros, no -0)
        return None
    return int(value)


def tie_rank(value: bytes | None, exp: int = 0) -> tuple:
    """The order that settles two values held under the same version - which no two correct
    replicas do, except after a fault that lost events on one of them (a hole given up as
    lost, a snapshot gone): both then believe their state counts everything up to that
    version, and neither can be shown wrong.  So that every node still ends with the same
    value, the greater wins, as Cassandra settles equal timestamps: a deletion is least, an
    integer is above any other value and greater integers above smaller ones (a replica that
    missed increments holds less), other values by their bytes; then no expiry above a later
    one above an earlier one."""
    never = (1, 0) if not exp else (0, exp)
    if value is None:
        return (0, 0, b"", never)
    n = as_number(value)
    return ((1, 0, value) if n is None else (2, n, value)) + (never,)


@dataclass(slots=True)
class Counter:
    base: Stamp  # version of the SET/DEL the value starts from (NONE: none)
    value: bytes | None  # that write's value, plus the events it counts up to ``mark``
    mark: Stamp  # events at or before it are counted in ``value``/``exp`` or superseded by ``base``
    incs: dict[Stamp, int] = field(default_factory=dict)  # increments after mark: version -> step
    total: int = 0  # the sum of ``incs``' steps (kept, not summed per write: a hot key has many)
    exp: int = 0  # when ``value`` expires (ms since the epoch; 0: never), as of ``mark``
    exps: dict[Stamp, int] = field(default_factory=dict)  # EXPIRE/PERSIST after mark: version -> when
    # ``value`` read as a number, and the value object it was read from (a hot counter renders
    # on every increment: its base is parsed once per SET or compaction, not per INCR)
    _num: int | None = field(default=0, init=False, repr=False, compare=False)
    _num_of: object = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def start(cls, base: Stamp, value: bytes | None, floor: int = 0, exp: int = 0) -> Counter:
        """The state of a key whose last write was ``value`` (expiring at ``exp``) at ``base``
        (NONE: none), on a store whose tombstone horizon is ``floor``: every event below it is
        settled here (a key with no entry was deleted and collected), so the mark starts there
        at least."""
        return cls(base, value, max(base, (floor - 1, HIGH)) if floor else base, exp=exp)

    def compacted(self, horizon: int) -> Counter:
        """A copy compacted to ``horizon`` (this one unchanged): what goes to a peer."""
        c = Counter(self.base, self.value, self.mark, dict(self.incs), self.total, self.exp, dict(self.exps))
        if horizon:
            c.compact(horizon)
        return c

    def forget_below(self, horizon: int) -> None:
        """A full transfer from a peer that holds every event below ``horizon`` lacks this key:
        whatever of it lies below the horizon was deleted there and collected.  What remains is
        the events at or after it, from nothing."""
        mark = (horizon - 1, HIGH)
        if mark <= self.mark:
            return
        self.base, self.value, self.mark, self.exp = NONE, None, mark, 0
        self.incs = {s: d for s, d in self.incs.items() if s > mark}
        self.total = sum(self.incs.values())
        self.exps = {s: t for s, t in self.exps.items() if s > mark}

    # --- what the state says ------------------------------------------------------------------
    def _number(self) -> int | None:
        if self._num_of is not self.value or self.value is None:
            self._num, self._num_of = as_number(self.value), self.value
        return self._num

    def view(self) -> tuple[bytes | None, int]:
        """The key's value (None: none) and its expiry (0: none).

        The events after the mark, in version order, from the base: a value whose expiry has
        come by an event's time (its timestamp's wall-clock part) is gone before that event -
        so an INCR after it counts from nothing and an EXPIRE after it finds no key, on every
        node, whether that node still holds the expired value or has long dropped it; an
        increment adds to a number (a value that is not one keeps it waiting for a SET); an
        EXPIRE or PERSIST sets the expiry of a value that is there."""
        n = self._number()
        exp = self.exp
        if not self.exps and (not exp or not self.incs or exp > max(self.incs)[0] >> LOGICAL_BITS):
            if n is None:  # (not an integer: increments wait for a SET)
                return self.value, exp if self.value is not None else 0
            if self.value is None and not self.incs:
                return None, 0
            return b"%d" % (n + self.total), exp
        return self._fold(self.value, exp, sorted([*self.incs.items(), *((s, (t,)) for s, t in self.exps.items())]))

    @staticmethod
    def _fold(value: bytes | None, exp: int, events: list) -> tuple[bytes | None, int]:
        """``view``'s walk: ``events`` are ``(version, step)`` and ``(version, (when,))``."""
        n = as_number(value) if value is not None else None
        alive = value is not None
        for (hlc, _o), e in events:
            if exp and exp <= hlc >> LOGICAL_BITS:  # expired before this event
                value, n, alive, exp = None, None, False, 0
            if e.__class__ is int:
                if not alive:
                    value, n, alive = None, e, True
                elif n is not None:
                    n += e
            elif alive:
                exp = e[0]
        if not alive:
            return None, 0
        return (b"%d" % n if n is not None else value), exp

    def render(self) -> bytes | None:
        """The key's value; None: deleted (or expired before a later event), and no increment since."""
        return self.view()[0]

    def top(self) -> Stamp:
        """The latest version in the state (the entry's: its digest, its age)."""
        top = self.base
        if self.incs:
            top = max(top, max(self.incs))
        if self.exps:
            top = max(top, max(self.exps))
        return top

    def stamps(self) -> list[Stamp]:
        """Every version the state names (a peer's claims: ``zkv.store.replica`` bounds them)."""
        return [self.base, self.mark, *self.incs, *self.exps]

    def plain(self) -> bool:
        """Whether the state says no more than one write at ``top`` would (no increments or
        EXPIREs after the mark), so a plain entry (version, value, expiry) stands for it."""
        return not self.incs and not self.exps

    # --- events -------------------------------------------------------------------------------
    def increment(self, stamp: Stamp, step: int) -> bool:
        """An INCR event; True if it changed the state (not a duplicate, not superseded)."""
        if stamp <= self.mark or stamp in self.incs:
            return False
        self.incs[stamp] = step
        self.total += step
        return True

    def set(self, stamp: Stamp, value: bytes | None, exp: int = 0) -> bool:
        """A SET or DEL (``exp``: its expiry, 0: none); True if it is newer than the mark
        (events before it drop).  One at or before the mark is counted already: the value
        stands for every event up to the mark (a node that took a transfer of this state, then
        pulls old events, meets such SETs)."""
        if stamp <= self.mark:
            if (stamp == self.mark == self.base and (value, exp) != (self.value, self.exp)
                    and tie_rank(value, exp) > tie_rank(self.value, self.exp)):
                self.value, self.exp = value, exp  # (the same version, another value: see ``tie_rank``)
                return True
            return False
        self.base, self.value, self.mark, self.exp = stamp, value, stamp, exp
        self.incs = {s: d for s, d in self.incs.items() if s > stamp}
        self.total = sum(self.incs.values())
        self.exps = {s: t for s, t in self.exps.items() if s > stamp}
        return True

    def expire(self, stamp: Stamp, exp: int) -> bool:
        """An EXPIRE (``exp``: when) or PERSIST (0); True if it changed the state (not settled
        already, at or before the mark; the same version twice: the later time)."""
        if stamp <= self.mark or self.exps.get(stamp, -1) >= exp:
            return False
        self.exps[stamp] = exp
        return True

    def compact(self, horizon: int) -> None:
        """Count the events stamped below ``horizon`` (every node holds them) in the value and
        its expiry."""
        mark = (horizon - 1, HIGH)
        if mark <= self.mark:
            return
        old = [(s, d) for s, d in self.incs.items() if s < mark]
        olde = [(s, (t,)) for s, t in self.exps.items() if s < mark]
        if old or olde:
            self.value, self.exp = self._fold(self.value, self.exp, sorted(old + olde))
            for s, _d in old:
                del self.incs[s]
            for s, _t in olde:
                del self.exps[s]
            self.total = sum(self.incs.values())
        self.mark = mark

    def merge(self, other: Counter) -> bool:
        """Fold another replica's state of this key in; True if this one changed.

        The state with the later mark decides the value: every event at or before its mark had
        reached it - a SET's mark supersedes what came before, a compaction's mark is a horizon
        every event below which had reached every node - so its value stands for all of them
        (the other's base included, which is older, or it would have a later mark); the other
        adds its events after that mark.  States at the same mark with different values are
        settled by ``tie_rank``.  Bases do not decide: a key whose increments were
        compacted into a plain entry starts again from that entry's latest version, which is
        an increment's, not a SET's."""
        before = (self.base, self.value, self.mark, self.exp, len(self.incs), len(self.exps))
        if (other.mark == self.mark and (other.value, other.exp) != (self.value, self.exp)
                and tie_rank(other.value, other.exp) > tie_rank(self.value, self.exp)):
            self.base, self.value, self.exp = other.base, other.value, other.exp  # (see ``tie_rank``)
        if other.mark > self.mark:
            mine, mine_e = self.incs, self.exps
            self.base, self.value, self.mark, self.exp = other.base, other.value, other.mark, other.exp
            self.incs = {s: d for s, d in other.incs.items() if s > self.mark}
            self.exps = {s: t for s, t in other.exps.items() if s > self.mark}
            self.total = sum(self.incs.values())
            extra, extra_e = mine, mine_e
        else:
            extra, extra_e = other.incs, other.exps
        for s, d in extra.items():
            if s > self.mark and s not in self.incs:
                self.incs[s] = d
                self.total += d
        for s, t in extra_e.items():
            if s > self.mark and self.exps.get(s, -1) < t:
                self.exps[s] = t
        return (self.base, self.value, self.mark, self.exp, len(self.incs), len(self.exps)) != before

    # --- wire form (snapshots, transfers, anti-entropy) ---------------------------------------
    def encode(self) -> list:
        out = [self.base[0], self.base[1], self.value, self.mark[0], self.mark[1],
               [[h, o, d] for (h, o), d in sorted(self.incs.items())]]
        if self.exp or self.exps:
            out += [self.exp, [[h, o, t] for (h, o), t in sorted(self.exps.items())]]
        return out

    @classmethod
    def decode(cls, d: object) -> Counter:
        """From ``encode``'s form, checked (it may come from a peer): ValueError if malformed."""
        if d.__class__ not in (list, tuple) or len(d) not in (6, 8):  # type: ignore[arg-type]
            raise ValueError("bad counter state")
        bh, bo, value, mh, mo, incs = d[:6]  # type: ignore[index]
        exp, exps = d[6:] if len(d) == 8 else (0, ())  # type: ignore[index, arg-type]
        _check_stamp(bh, bo)
        _check_stamp(mh, mo)
        if value is not None and value.__class__ is not bytes:
            raise ValueError("bad counter value")
        if incs.__class__ not in (list, tuple) or exps.__class__ not in (list, tuple):
            raise ValueError("bad counter events")
        _check_time(exp)
        c = cls((bh, bo), value, (mh, mo), exp=exp)
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
        for e in exps:
            if e.__class__ not in (list, tuple) or len(e) != 3:
                raise ValueError("bad expiry write")
            h, o, t = e
            _check_stamp(h, o)
            _check_time(t)
            if (h, o) <= c.mark:
                raise ValueError("expiry write at or before its mark")
            c.expire((h, o), t)
        return c


def _check_time(t: object) -> None:
    if t.__class__ is not int or not 0 <= t < 1 << 62:  # type: ignore[operator]
        raise ValueError("bad expiry time")


def _check_stamp(hlc: object, origin: object) -> None:
    if (hlc.__class__ is not int or not 0 <= hlc < 1 << 63  # type: ignore[operator]
            or origin.__class__ is not str or len(origin) > 256):  # type: ignore[arg-type]
        raise ValueError("bad counter version")
