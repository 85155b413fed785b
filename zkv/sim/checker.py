"""What a simulated run must show once healed: pure functions from the operations and the final
state of every replica to violations.

The simulator knows the version ``(hlc, origin)`` every write was stamped with, so the rule is
exact rather than real-time: for each key, among the writes that were acknowledged and not
excused (their only copies destroyed by disk damage, as the fsync mode allows), the one with
the highest version - the one the conflict rule must pick - bounds the final state:

* ``lost``: it was a SET, and the final entry is older, or missing while no later DELETE
  (whose tombstone may have been collected) was stamped;
* ``resurrected``: it was a DELETE, and the final entry is a value older than the delete;
* ``phantom``: a final value no write of the run produced with that version;
* ``divergent``: two replicas hold different data (live entries and version vectors);
* ``miscounted``: a counter (a key that had INCRs) whose final value is not what the rule
  gives for every write of it that was stamped (zkv.store.counter: the last SET or DEL plus
  every increment after it) - checked exactly when none of its writes was excused;
* ``misexpired``: a key that had expiries whose final value or expiry is not what the rule gives
  for every write of it that was stamped (``expiring_state``), or that is served though that
  expiry has passed - checked exactly when none of its writes was excused;
* ``misfielded``: a hash's field whose final value is not the counter rule's for every write of
  it that was stamped (HSET, HDEL, HINCRBY and the deletes a whole-key DEL wrote);
* ``mismembered``: a set's member whose final live dots are not the observed-remove rule's: the
  dots of its stamped SADDs that no stamped event named (so an SADD an SREM did not see stays)
  - both checked exactly when none of the key's writes was excused.
"""

from __future__ import annotations

from dataclasses import dataclass

from zkv.clock import physical
from zkv.sim.world import COLLECTION_KINDS, Op
from zkv.store import parts
from zkv.store.counter import as_int
from zkv.store.orset import TAG_ADD, pack_dot

Entry = tuple[int, str, bytes | None]  # (hlc, origin, value or None for a tombstone)


@dataclass(frozen=True)
class Violation:
    kind: str
    key: bytes
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.key!r}: {self.detail}"


def check(ops: list[Op], finals: dict[str, dict[bytes, Entry]],
          vvs: dict[str, dict[str, int]], now_ms: int = 0) -> list[Violation]:
    out: list[Violation] = []
    names = sorted(finals)
    live = {n: {k: e for k, e in finals[n].items() if e[2] is not None} for n in names}
    first = names[0]
    for n in names[1:]:
        if live[n] != live[first]:
            diff = sorted(set(live[n].items()) ^ set(live[first].items()))[:3]
            out.append(Violation("divergent", diff[0][0] if diff else b"", f"{first} and {n} differ: {diff}"))
        if vvs[n] != vvs[first]:
            out.append(Violation("divergent", b"", f"version vectors of {first} and {n} differ: "
                                                     f"{vvs[first]} / {vvs[n]}"))
    final = live[first]
    whole = finals[first]  # tombstones included
    expiring = {op.key for op in ops if op.kind in ("setpx", "pexpire", "persist")}
    counters = {op.key for op in ops if op.kind == "incr"} - expiring
    collections = {op.key for op in ops if op.kind in COLLECTION_KINDS}
    out += _check_counters(ops, counters, whole)
    out += _check_expiring(ops, expiring, whole, now_ms)
    out += _check_collections(ops, collections, whole)
    final = {k: e for k, e in final.items()
             if k not in counters and k not in expiring and k not in collections and k[:2] != parts.RESERVED}
    ops = [op for op in ops if op.key not in counters and op.key not in expiring and op.key not in collections]
    deletes: dict[bytes, list[tuple[int, str]]] = {}  # every stamped DELETE, acknowledged or not
    for op in ops:
        if op.kind == "del" and op.version is not None:
            deletes.setdefault(op.key, []).append(op.version)
    written = {(op.version, op.value) for op in ops if op.kind == "set" and op.version is not None}
    for key, (hlc, origin, value) in final.items():
        if ((hlc, origin), value) not in written:
            out.append(Violation("phantom", key, f"value {value!r} at {(hlc, origin)} was never written"))
    required: dict[bytes, Op] = {}
    for op in ops:
        if op.kind == "get" or op.result != "ok" or op.excused or op.version is None:
            continue
        cur = required.get(op.key)
        if cur is None or op.version > cur.version:  # type: ignore[operator]
            required[op.key] = op
    for key, op in sorted(required.items()):
        e = whole.get(key)
        have = (e[0], e[1]) if e is not None else None
        assert op.version is not None
        if op.kind == "set":
            if have is None:
                # no entry: fine only if a later DELETE's tombstone was collected
                if any(v > op.version for v in deletes.get(key, ())):
                    continue
                out.append(Violation("lost", key, f"acknowledged SET #{op.id} {op.value!r} at "
                                                  f"{op.version} on {op.node}; no entry on any node"))
            elif have < op.version:
                out.append(Violation("lost", key, f"acknowledged SET #{op.id} {op.value!r} at "
                                                  f"{op.version} on {op.node}; final {e}"))
        elif e is not None and e[2] is not None and have < op.version:
            # (a value: an older tombstone reads the same as the delete's, deleted)
            out.append(Violation("resurrected", key, f"acknowledged DELETE #{op.id} at {op.version} "
                                                     f"on {op.node}; final {e}"))
    return out


def counter_value(writes: list[tuple[tuple[int, str], object]]) -> bytes | None:
    """The counter rule stated directly (zkv.store.counter): the last SET/DEL by version, plus
    every increment (an int) stamped after it; a value that is not an integer reads as itself."""
    sets = [(v, x) for v, x in writes if not isinstance(x, int)]
    base, value = max(sets, default=((0, ""), None), key=lambda s: s[0])
    n = as_int(value)  # type: ignore[arg-type]
    if n is None:
        return value  # type: ignore[return-value]
    after = [x for v, x in writes if isinstance(x, int) and v > base]
    if value is None and not after:
        return None
    return b"%d" % (n + sum(after))  # type: ignore[arg-type]


def _check_counters(ops: list[Op], counters: set[bytes], whole: dict[bytes, Entry]) -> list[Violation]:
    out = []
    for key in sorted(counters):
        mine = [op for op in ops if op.key == key and op.kind != "get" and op.version is not None]
        if any(op.excused for op in mine):
            continue  # some of its writes may fairly be gone, or not: no exact total
        want = counter_value([(op.version, op.value) for op in mine])  # type: ignore[misc]
        e = whole.get(key)
        got = e[2] if e is not None else None
        if got != want:
            out.append(Violation("miscounted", key, f"final {got!r}, the rule gives {want!r} "
                                                    f"for its {len(mine)} stamped writes"))
    return out


def expiring_state(writes: list[tuple[tuple[int, str], object]]) -> tuple[bytes | None, int]:
    """The expiry rule stated directly (zkv.store.counter): the writes in version order; a value
    whose expiry has come by a write's time (its timestamp's wall-clock part) is gone before
    that write; a SET (``(value, when)`` with an expiry) or DEL writes the value and its
    expiry, an EXPIRE (``(when,)``; 0: PERSIST) sets the expiry of a value that is there."""
    value: bytes | None = None
    exp = 0
    for (hlc, _o), x in sorted(writes, key=lambda w: w[0]):
        if exp and exp <= physical(hlc):
            value, exp = None, 0
        if isinstance(x, (tuple, list)):
            if len(x) == 2:
                value, exp = x[0], x[1]
            elif value is not None:
                exp = x[0]
        elif isinstance(x, int):  # an increment: to a number, or from nothing
            if value is None:
                value = b"%d" % x
            elif as_int(value) is not None:
                value = b"%d" % (as_int(value) + x)  # type: ignore[operator]
        else:
            value, exp = x, 0  # type: ignore[assignment]
    return value, exp if value is not None else 0


def _check_expiring(ops: list[Op], keys: set[bytes], whole: dict[bytes, Entry],
                    now_ms: int) -> list[Violation]:
    out = []
    for key in sorted(keys):
        mine = [op for op in ops if op.key == key and op.kind != "get" and op.version is not None]
        if any(op.excused for op in mine):
            continue
        value, exp = expiring_state([(op.version, op.written) for op in mine])  # type: ignore[misc]
        e = whole.get(key)
        got = e[2] if e is not None else None
        if value is None or (exp and exp <= now_ms):
            # deleted, or expired: no value, or the expired one not yet reclaimed
            if got is not None and got != (value, exp):
                out.append(Violation("misexpired", key, f"final {got!r}; the rule gives "
                                     f"{(value, exp)!r} (gone at {now_ms})"))
        elif got != ((value, exp) if exp else value):
            out.append(Violation("misexpired", key, f"final {got!r}, the rule gives {(value, exp)!r} "
                                                    f"for its {len(mine)} stamped writes"))
    return out


def _check_collections(ops: list[Op], keys: set[bytes], whole: dict[bytes, Entry]) -> list[Violation]:
    """Every field and member of the hashes and sets, by the rules stated directly."""
    out = []
    for key in sorted(keys):
        mine = [op for op in ops if op.key == key and op.kind != "get" and op.version is not None]
        if any(op.excused for op in mine):
            continue
        events: dict[bytes, list[tuple[tuple[int, str], object]]] = {}
        for op in mine:
            for hlc, pk, value in op.items:
                if pk[:2] == parts.RESERVED:
                    events.setdefault(pk, []).append(((hlc, op.version[1]), value))  # type: ignore[index]
        for pk, writes in sorted(events.items()):
            e = whole.get(pk)
            got = e[2] if e is not None else None
            if pk[:3] == parts.HASH:
                want = counter_value(writes)
                if got != want:
                    out.append(Violation("misfielded", pk, f"final {got!r}, the rule gives {want!r} "
                                                           f"for its {len(writes)} stamped writes"))
                continue
            named = {(v[i], v[i + 1]) for _s, v in writes for i in range(1, len(v), 2)}  # type: ignore[arg-type, index]
            live = sorted(s for s, v in writes if v[0] == TAG_ADD and s not in named)  # type: ignore[index]
            want = b"".join(map(pack_dot, live)) if live else None
            if got != want:
                out.append(Violation("mismembered", pk, f"final {got!r}, the rule gives live dots {live}"))
    return out
