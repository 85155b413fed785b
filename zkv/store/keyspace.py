"""The keyspace and its conflict rule: a last-writer-wins map with tombstones and a digest.

Every entry carries the version of the write that produced it, ``(hlc, origin)``.  A write is
applied only if its version is greater than the entry's current one, so applying the same set of
writes in any order, any number of times, ends in the same map (the rule is commutative,
associative and idempotent).  Two values under one version - only after a fault lost events on
one replica, whose compacted counter then differs - are settled by ``counter.tie_rank``.  A delete leaves a *tombstone* (value ``None``) carrying its
version, so an older SET that arrives later cannot bring the key back; tombstones are collected
only once every node has passed their timestamp (``collect_tombstones``).

The digest is an XOR of a 64-bit hash of each live entry, kept per bucket (bucket = crc32 of
the key) and updated on every change, so comparing two nodes costs one heartbeat and locating
a difference costs one bucket exchange.  Pure: no I/O.
"""

from __future__ import annotations

import heapq
import struct
import zlib
from collections.abc import Iterable, Iterator
from collections import deque
from hashlib import blake2b

from zkv.clock import physical
from zkv.store import parts
from zkv.store.counter import MAX_INT, MIN_INT, NONE, Counter, tie_rank
from zkv.store.orset import TAG_ADD, TAG_REMOVE, TAG_STATE, Member, dots, unpack_dot

# key -> (hlc, origin, value or None for a tombstone)
Entry = tuple[int, str, bytes | None]
BUCKETS = 1024
COMPACT_BUDGET = 4096  # counter keys one compaction pass looks at


def bucket_of(key: bytes) -> int:
    return zlib.crc32(key) & (BUCKETS - 1)


_MASK64 = (1 << 64) - 1
_origin_crcs: dict[str, int] = {}


def _origin_crc(origin: str) -> int:
    c = _origin_crcs.get(origin)
    if c is None:
        c = _origin_crcs[origin] = zlib.crc32(origin.encode())
    return c


def entry_hash(key: bytes, hlc: int, origin: str, value: bytes | memoryview,
               key_crc: int | None = None) -> int:
    """64-bit hash of one live entry: crc32 of the key and of origin+value, mixed with the
    timestamp by a multiplicative (Fibonacci) hash.  It is on every write's path, so it is
    built from C-speed crc32 rather than a cryptographic hash: it detects divergence, it does
    not resist an adversary (who could write to the bus anyway)."""
    kc = zlib.crc32(key) if key_crc is None else key_crc
    h = ((kc << 32) | zlib.crc32(value, _origin_crc(origin))) ^ hlc
    h = (h * _GOLDEN) & _MASK64
    return h ^ (h >> 29)


def wins(hlc: int, origin: str, current: Entry | None, value: bytes | None = None) -> bool:
    """The conflict rule: does a write of ``value`` stamped (hlc, origin) beat the current
    entry?  (``apply_many`` inlines it.)"""
    if current is None:
        return True
    if (hlc, origin) != (current[0], current[1]):
        return (hlc, origin) > (current[0], current[1])
    return value != current[2] and tie_rank(value) > tie_rank(current[2])


# hlc, origin index (high bit set: tombstone), the entry's hash (0 for a tombstone)
_HEADER = struct.Struct(">QIQ")
_HDR = _HEADER.size
_TOMB = 0x8000_0000  # (in the origin index: 2**30 origins, far beyond what restarts make)
_CTR = 0x4000_0000  # (in the origin index: the key has a counter state, zkv.store.counter)
_EXP = 0x2000_0000  # (in the origin index: an expiry time, 8 bytes, comes before the value)
_PART = 0x1000_0000  # (in the origin index: a hash's field or a set's member, zkv.store.parts)
_FLAGS = _TOMB | _CTR | _EXP | _PART
_ORIGIN = ~_FLAGS & 0xFFFF_FFFF  # (the origin index's own bits)
_HASH = parts.HASH
_RESERVED = parts.RESERVED
_FF = b"\xff"  # (every key at or above it begins with 0xFF: a cheap test before _RESERVED's)
_EXP_STRUCT = struct.Struct(">Q")
_pack_exp = _EXP_STRUCT.pack
_unpack_exp = _EXP_STRUCT.unpack_from
_VAL = _HEADER.size + _EXP_STRUCT.size  # where the value starts in an entry with an expiry
_GOLDEN = 0x9E3779B97F4A7C15
_BUCKET_MASK = BUCKETS - 1
_crc32 = zlib.crc32
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_pack_buckets = struct.Struct(f"<{BUCKETS}Q").pack  # every bucket hash, as the digest hashes them


class Keyspace:
    """The data of one node.  ``apply`` is the only way in.

    Each entry is stored as ONE bytes object: a 20-byte header (timestamp, index of the origin
    in this keyspace's own table of node ids, tombstone flag, and the entry's ``entry_hash``, so
    replacing it takes its hash out of the digest without hashing the old value again) followed
    by the value.  A tuple of
    (int, str, bytes) would cost about 100 bytes more per key; memory per key is what limits a
    store that keeps everything in RAM.  The origin index never leaves this object: entries go
    out (``entries``, ``entry``) with the origin's name.
    """

    __slots__ = ("_data", "_tombstones", "_buckets", "_origins", "_origin_index", "_origin_crcs",
                 "_counters", "_compact_queue", "_expiring", "_expiry_heap", "now_ms",
                 "_hashes", "_sets", "_live_parts", "_collections", "_shadowed")

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._tombstones: dict[bytes, int] = {}
        self._buckets: list[int] = [0] * BUCKETS
        self._origins: list[str] = []
        self._origin_index: dict[str, int] = {}
        self._origin_crcs: list[int] = []  # _origin_crc of each of _origins
        # keys with increments not yet compacted: their state (zkv.store.counter); the entry in
        # _data holds the value it renders, under the latest version in it, flagged _CTR
        self._counters: dict[bytes, Counter] = {}
        # counter keys (with their state: a key set and incremented again is queued anew, and
        # its old place is skipped), in the order they got increments
        self._compact_queue: deque[tuple[bytes, Counter]] = deque()
        # keys whose value has an expiry -> when (ms); and (when, key) in time order, some
        # stale, for reclaiming them (``reclaim_expired``)
        self._expiring: dict[bytes, int] = {}
        self._expiry_heap: list[tuple[int, bytes]] = []
        # the wall-clock time (ms) reads judge expiry by: the store sets it as time passes
        # (0: nothing has expired)
        self.now_ms = 0
        # hash key -> its live fields, set key -> its live members (zkv.store.parts: each is an
        # entry of its own), in the order they came; and how many parts are live in all
        self._hashes: dict[bytes, dict[bytes, None]] = {}
        self._sets: dict[bytes, dict[bytes, None]] = {}
        self._live_parts = 0
        # keys with a live field or member; and how many of them also have a live value (a
        # string hides them: both exist after concurrent writes of two types) - so that
        # ``len`` counts every key once without a pass over them
        self._collections = 0
        self._shadowed = 0

    def _index(self, origin: str) -> int:
        i = self._origin_index.get(origin)
        if i is None:
            if origin.__class__ is not str:  # checked before the tables change: they stay in step
                raise TypeError(f"origin must be a str, got {type(origin).__name__}")
            i = len(self._origins)
            if i >= _PART:
                raise ValueError("too many distinct origins")
            crc = _origin_crc(origin)
            self._origins.append(origin)
            self._origin_crcs.append(crc)
            self._origin_index[origin] = i
        return i

    def _decode(self, e: bytes) -> Entry:
        hlc, oi, _h = _HEADER.unpack_from(e)
        return hlc, self._origins[oi & ~_FLAGS], None if oi & _TOMB else e[_VAL if oi & _EXP else _HDR:]

    # --- reads -------------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        """The key's value; None if it has none, or its expiry is not after ``now_ms``."""
        e = self._data.get(key)
        if e is None:
            return None
        if e[8] & 0xA0:
            if e[8] & 0x80 or _unpack_exp(e, _HDR)[0] <= self.now_ms:
                return None
            return e[_VAL:]
        return e[_HDR:]

    def expiry(self, key: bytes) -> int:
        """When the key's value expires (ms since the epoch); 0: never, or no value."""
        return self._expiring.get(key, 0)

    def live(self) -> int:
        """Keys with a value that has not expired at ``now_ms``, and hashes and sets (DBSIZE):
        one pass over the keys with an expiry."""
        now, hashes, sets = self.now_ms, self._hashes, self._sets
        return len(self) - sum(1 for k, t in self._expiring.items()
                               if t <= now and k not in hashes and k not in sets)

    # --- hashes and sets (zkv.store.parts) ------------------------------------------------------
    def kind(self, key: bytes) -> str | None:
        """The key's type: a string's value hides any hash or set of the same key (both exist
        only after concurrent writes of two types), a hash hides a set; None: no key."""
        if key[:2] == _RESERVED:
            return None
        if self.get(key) is not None:
            return "string"
        if key in self._hashes:
            return "hash"
        if key in self._sets:
            return "set"
        return None

    @property
    def hashes(self) -> dict[bytes, dict[bytes, None]]:
        """Hash key -> its live fields (the keyspace's own dict: read, never change, it)."""
        return self._hashes

    @property
    def sets(self) -> dict[bytes, dict[bytes, None]]:
        """Set key -> its live members (likewise)."""
        return self._sets

    def exists(self, key: bytes) -> bool:
        """Whether a client's key has a value, a hash or a set (a field's or member's own entry
        is no client's key: SCAN's copy of the key list may hold one)."""
        if key[:2] == _RESERVED:
            return False
        return self.get(key) is not None or key in self._hashes or key in self._sets

    def fields(self, key: bytes) -> dict[bytes, None]:
        """The hash's live fields (empty: none); the dict is the keyspace's own, do not keep it."""
        return self._hashes.get(key) or {}

    def members(self, key: bytes) -> dict[bytes, None]:
        """The set's live members (likewise)."""
        return self._sets.get(key) or {}

    def field(self, key: bytes, name: bytes) -> bytes | None:
        return self.get(parts.part_key(parts.HASH, key, name))

    def dots(self, key: bytes, member: bytes) -> list:
        """The live dots of a set's member (zkv.store.orset): what an SADD or SREM saw."""
        pk = parts.part_key(parts.SET, key, member)
        e = self._data.get(pk)
        if e is None or e[8] & 0x80:
            return []
        if e[8] & 0x40:
            return list(self._counters[pk].live)  # type: ignore[union-attr]
        return [unpack_dot(e[_HDR:])]

    def _index_part(self, pk: bytes, live: bool) -> None:
        """Keep the index of live fields and members in step with part ``pk``'s entry."""
        kind, key, element = parts.split(pk)
        index, other = (self._hashes, self._sets) if kind == parts.HASH else (self._sets, self._hashes)
        elements = index.get(key)
        if live:
            if elements is None:
                elements = index[key] = {}
                if key not in other:
                    self._collections += 1
                    if self._has_value(key):
                        self._shadowed += 1
            if element not in elements:
                elements[element] = None
                self._live_parts += 1
        elif elements is not None and element in elements:
            del elements[element]
            self._live_parts -= 1
            if not elements:
                del index[key]
                if key not in other:
                    self._collections -= 1
                    if self._has_value(key):
                        self._shadowed -= 1

    def _has_value(self, key: bytes) -> bool:
        """Whether the key has a live entry of its own (expired or not)."""
        e = self._data.get(key)
        return e is not None and not e[8] & 0x80

    def _value_came(self, key: bytes, delta: int) -> None:
        """Key ``key`` (not a part's) got (+1) or lost (-1) its live value: if it also has a
        hash or set, it hides them from now on (or shows them)."""
        if key in self._hashes or key in self._sets:
            self._shadowed += delta

    def _collection_keys(self) -> list[bytes]:
        """Keys with a live field or member but no entry of their own (else they are listed
        with the entries)."""
        data = self._data
        return [k for k in {**self._hashes, **self._sets} if k not in data]

    @property
    def expiring(self) -> int:
        """Keys with an expiry, expired or not (reclaimed ones excluded)."""
        return len(self._expiring)

    def entry(self, key: bytes) -> Entry | None:
        e = self._data.get(key)
        return None if e is None else self._decode(e)

    def __len__(self) -> int:
        """Number of live keys (tombstones excluded; a hash or a set counts once, whatever its
        parts)."""
        return (len(self._data) - len(self._tombstones) - self._live_parts
                + self._collections - self._shadowed)

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def items(self) -> Iterator[tuple[bytes, Entry]]:
        decode = self._decode
        for k, e in self._data.items():
            yield k, decode(e)

    def key_list(self) -> list[bytes]:
        """Every key with an entry, tombstones included, and every hash and set, in a new
        list (for SCAN): not the parts' own entries."""
        if not self._live_parts:
            return list(self._data)  # (dead parts may be in it: ``exists`` is false for them)
        return [k for k in self._data if k[:2] != _RESERVED] + self._collection_keys()

    def keys_matching(self, test) -> list[bytes]:  # noqa: ANN001 - a compiled pattern's fullmatch
        """Every live key ``test`` accepts (KEYS: one pass over the whole keyspace)."""
        tomb, expiring, now = self._tombstones, self._expiring, self.now_ms
        out = [k for k in self._data if k not in tomb and test(k)
               and (k not in expiring or expiring[k] > now)]
        if self._live_parts:  # (not the parts' own entries; every hash and set whose key has no live value)
            data = self._data
            out = [k for k in out if k[:2] != _RESERVED]
            out += [k for k in {**self._hashes, **self._sets} if test(k) and (
                k not in data or k in tomb or (k in expiring and expiring[k] <= now))]
        return out

    def entries(self, horizon: int = 0) -> Iterator[tuple[bytes, int, str, bytes | list | None]]:
        """Every entry, tombstones included, as flat tuples (snapshot/transfer format); a key
        with a counter state has that state (``Counter.encode``) for its value, compacted to
        ``horizon`` (the store's tombstone horizon: a peer that takes the state then ignores
        whatever it holds of the key below it, which is settled here); a value with an expiry
        is ``[value, expiry]``."""
        export = self._export
        for k, e in self._data.items():
            yield k, *export(k, e, horizon)

    def _export(self, k: bytes, e: bytes, horizon: int) -> tuple[int, str, bytes | list | None]:
        h, o, v = self._decode(e)
        if e[8] & 0x40:
            return h, o, self._counters[k].compacted(horizon).encode()
        if e[8] & 0x10 and k[:3] == parts.SET:  # (a member travels as its state, never bare)
            return h, o, Member.start(None if v is None else unpack_dot(v), horizon).encode()
        if e[8] & 0x20:
            return h, o, [v, _unpack_exp(e, _HDR)[0]]
        return h, o, v

    @property
    def counters(self) -> int:
        """Keys with increments not yet compacted."""
        return len(self._counters)

    # --- writes ------------------------------------------------------------------------------
    def apply(self, key: bytes, hlc: int, origin: str, value: bytes | None, floor: int = 0) -> bool:
        """Apply one write under the conflict rule; True if it changed the map."""
        return self.apply_many(origin, ((hlc, key, value),), floor)[0] == 1

    def apply_many(self, origin: str, items: Iterable[tuple[int, bytes, bytes | None]],
                   floor: int = 0) -> tuple[int, int]:
        """``apply`` each ``(hlc, key, value)`` write of ``origin``, in order; returns how many
        changed the map and the highest timestamp among them (0 if none).

        ``floor`` is the store's tombstone-collection horizon: a write stamped below it, of a
        key that has no entry here, is skipped.  Every write below the horizon had reached this
        keyspace before tombstones below it were collected, so such a key was deleted since (its
        tombstone is gone); an old event that arrives again - pulled anew after a node recovered
        less than it had - must not bring it back.

        Every write of every node passes here, so the loop keeps everything in locals and
        inlines ``entry_hash``; the hash of the entry it replaces is read from that entry's
        header."""
        data = self._data
        get = data.get
        buckets = self._buckets
        origins = self._origins
        origin_crcs = self._origin_crcs
        tombstones = self._tombstones
        oi = self._origin_index.get(origin)
        if oi is None:
            oi = self._index(origin)
        ocrc = origin_crcs[oi]
        tomb_header = oi | _TOMB
        hashes, sets = self._hashes, self._sets
        changed = top = 0
        for hlc, key, value in items:
            if hlc > top:
                top = hlc
            cur = get(key)
            part = tomb = 0
            if cur is None:
                if hlc < floor:
                    continue  # deleted since, and its tombstone collected (see above)
                if key >= _FF and key[:2] == _RESERVED:  # a new field or member (zkv.store.parts)
                    if key[:3] != _HASH or (value.__class__ is not bytes and value is not None):
                        changed += self._counter_write(key, hlc, origin, value, cur, floor)
                        continue
                    part = _PART  # (a field's plain write: as a string's, and the index)
            if (value.__class__ is not bytes and value is not None) or (cur is not None and cur[8] & 0x60):
                # an increment, an expiry, a state, a member's write; or a key with a counter
                # state or an expiry
                changed += self._counter_write(key, hlc, origin, value, cur, floor)  # (zkv.store.counter)
                continue
            kc = _crc32(key)
            if cur is not None:
                chlc, coi, ch = _unpack_header(cur)
                if hlc < chlc:
                    continue
                tomb = coi & _TOMB
                part = coi & _PART
                coi &= _ORIGIN
                if hlc == chlc and (origin < origins[coi] or origin == origins[coi] and (
                        value == (None if tomb else cur[_HDR:])
                        or tie_rank(value) <= tie_rank(None if tomb else cur[_HDR:]))):
                    continue  # (older; or the same write again; or a tie, see tie_rank)
                if tomb:
                    del tombstones[key]
                else:
                    buckets[kc & _BUCKET_MASK] ^= ch
            if value is None:
                data[key] = _pack_header(hlc, tomb_header | part, 0)
                tombstones[key] = hlc
                if cur is not None and not tomb:
                    if part:
                        self._index_part(key, False)
                    elif hashes or sets:
                        self._value_came(key, -1)
            else:
                h = ((kc << 32) | _crc32(value, ocrc)) ^ hlc
                h = (h * _GOLDEN) & _MASK64
                h ^= h >> 29
                data[key] = _pack_header(hlc, oi | part, h) + value
                buckets[kc & _BUCKET_MASK] ^= h
                if (cur is None or tomb) and (part or hashes or sets):
                    if part:
                        self._index_part(key, True)
                    else:
                        self._value_came(key, 1)
            changed += 1
        return changed, top

    def _counter_write(self, key: bytes, hlc: int, origin: str, value: object,
                       cur: bytes | None, floor: int = 0) -> int:
        """A write to a key with a counter state or an expiry, or one that is not a plain SET
        or DEL: an increment (``value``: an int step), an expiring SET (``[value, expiry]``),
        an EXPIRE or PERSIST (``[expiry]``, 0: none), or a replica's counter state (a longer
        list, from a snapshot, transfer or repair; ``(hlc, origin)``: its latest version).
        Returns 1 if the key changed."""
        if key[:2] == _RESERVED:
            if key[:3] != parts.HASH:
                return self._member_write(key, hlc, origin, value, cur, floor)
            parts.split(key)  # (ValueError if it is not a field's key)
            if value.__class__ in (list, tuple) and len(value) in (1, 2):  # type: ignore[arg-type]
                raise ValueError("a hash's field has no expiry")
        was = NONE if cur is None else self._version(cur)
        c = self._counters.get(key)
        vc = value.__class__
        whole = None  # a SET, DEL or SET with an expiry: (value, expiry)
        if value is None or vc is bytes:
            whole = value, 0
        elif (vc is list or vc is tuple) and len(value) == 2:  # type: ignore[arg-type]
            whole = value[0], value[1]  # type: ignore[index]
            _check_expiry(whole[1])
            if whole[0].__class__ is not bytes:
                raise TypeError("an expiring value must be bytes")
        if c is None and cur is not None:
            held = (None, 0) if cur[8] & 0x80 else (
                (cur[_VAL:], _unpack_exp(cur, _HDR)[0]) if cur[8] & 0x20 else (cur[_HDR:], 0))
            if whole is not None:
                # A whole write on a plain entry: the last writer wins, as on apply_many's fast
                # path - with no floor (the entry holds what it holds, and anti-entropy repairs
                # it by version).
                stamp = (hlc, origin)
                if stamp < was or (stamp == was and (whole == held or tie_rank(*whole) <= tie_rank(*held))):
                    return 0
                self._store_counter(key, Counter.start(stamp, whole[0], 0, whole[1]), stamp, cur)
                return 1
            c = Counter.start(was, held[0], floor, held[1])
        elif c is None:
            c = Counter.start(was, None, floor)
        if vc is int:
            if not MIN_INT <= value <= MAX_INT:  # type: ignore[operator]
                raise ValueError("increment out of range")
            changed = c.increment((hlc, origin), value)  # type: ignore[arg-type]
        elif whole is not None:
            changed = c.set((hlc, origin), *whole)
        elif (vc is list or vc is tuple) and len(value) == 1:  # type: ignore[arg-type]
            _check_expiry(value[0])  # type: ignore[index]
            changed = c.expire((hlc, origin), value[0])  # type: ignore[index]
        elif vc is list or vc is tuple:  # (a snapshot's decoder gives tuples)
            changed = c.merge(Counter.decode(value))
        else:
            raise TypeError(f"a write's value must be bytes, None, an int, a list or a counter state, not {vc.__name__}")
        if not changed:
            return 0
        top = max(was, (hlc, origin))  # (every version in the state is at most one of these)
        self._store_counter(key, c, top, cur)
        return 1

    def _member_write(self, key: bytes, hlc: int, origin: str, value: object,
                      cur: bytes | None, floor: int) -> int:
        """A write to a set's member (zkv.store.orset): an SADD, an SREM or a replica's state.
        Returns 1 if the member changed.  (Its key was checked where it came in: a peer's
        batch, a snapshot, or the store's own op.)"""
        if value.__class__ not in (list, tuple) or not value or value[0] not in (TAG_ADD, TAG_REMOVE, TAG_STATE):  # type: ignore[arg-type, index]
            raise ValueError("a set's member takes an add, a remove or a state")
        m = self._counters.get(key)
        if m is None:
            m = Member.start(None if cur is None or cur[8] & 0x80 else unpack_dot(cur[_HDR:]), floor)
        tag = value[0]  # type: ignore[index]
        if tag == TAG_STATE:
            changed = m.merge(Member.decode(value))  # type: ignore[union-attr]
        elif tag == TAG_ADD:
            changed = m.add((hlc, origin), dots(value[1:]))  # type: ignore[union-attr, index]
        else:
            changed = m.remove((hlc, origin), dots(value[1:]))  # type: ignore[union-attr, index]
        if not changed:
            return 0
        self._store_counter(key, m, m.top(), cur)  # type: ignore[arg-type, union-attr]
        return 1

    def _version(self, e: bytes) -> tuple[int, str]:
        """An entry's version: ``(hlc, origin)`` from its header."""
        hlc, oi, _h = _unpack_header(e)
        return hlc, self._origins[oi & ~_FLAGS]

    def _store_counter(self, key: bytes, c: Counter, top: tuple[int, str], cur: bytes | None) -> None:
        """Write ``key``'s entry for state ``c`` under version ``top``: flagged while the state
        says more than one write would (``Counter.plain``), a plain entry (or tombstone) once
        it does not; a value's expiry goes in the entry, and into its hash."""
        was_live = False
        if cur is not None:
            _chlc, coi, ch = _unpack_header(cur)
            if coi & _TOMB:
                del self._tombstones[key]
            else:
                was_live = True
                self._buckets[_crc32(key) & _BUCKET_MASK] ^= ch
        part = key[:2] == _RESERVED
        if part and key[:3] == parts.SET:
            top = c.top()  # (a member's version is its state's, on every replica alike)
        thlc, torigin = top
        oi = self._index(torigin)
        flag = 0 if c.plain() else _CTR
        if flag:
            if self._counters.get(key) is not c:
                self._counters[key] = c
                self._compact_queue.append((key, c))
        else:
            self._counters.pop(key, None)
        value, exp = c.view()
        if part:
            flag |= _PART
            if was_live != (value is not None):
                self._index_part(key, not was_live)
        elif was_live != (value is not None):
            self._value_came(key, -1 if was_live else 1)
        if value is None:
            self._data[key] = _pack_header(thlc, oi | _TOMB | flag, 0)
            self._tombstones[key] = thlc
            self._expiring.pop(key, None)
            return
        if exp:
            flag |= _EXP
            payload = _pack_exp(exp) + value
            if self._expiring.get(key) != exp:
                self._expiring[key] = exp
                heap = self._expiry_heap
                heapq.heappush(heap, (exp, key))
                if len(heap) > 2 * len(self._expiring) + 4096:  # mostly rewritten keys' old times
                    heap[:] = [(t, k) for k, t in self._expiring.items()]
                    heapq.heapify(heap)
        else:
            payload = value
            self._expiring.pop(key, None)
        if part and key[:3] == parts.SET:
            # (a member's hash is its key and live dots alone: its entry's version is the latest
            # event that changed it here, which differs between replicas that applied the same
            # events in another order - one that removed nothing new changes nothing)
            h = entry_hash(key, 0, "", payload)
        else:
            h = entry_hash(key, thlc, torigin, payload)
        self._data[key] = _pack_header(thlc, oi | flag, h) + payload
        self._buckets[_crc32(key) & _BUCKET_MASK] ^= h

    def forget_counters_below(self, kept: set[bytes], horizon: int) -> tuple[list, list[bytes]]:
        """After a full transfer from a peer that holds every event below ``horizon``: the
        counter keys it did not send (``kept``: those it sent) were deleted there and collected
        below the horizon, so only their events at or after it remain (``Counter.
        forget_below``).  A key left with none is dropped.  Returns what the log needs to
        replay it: the entries of the keys that kept some (their states, whose mark is the
        horizon, win over the older events a replay applies first), and the keys dropped."""
        states, dropped = [], []
        for key, c in list(self._counters.items()):
            if key in kept:
                continue
            c.forget_below(horizon)
            cur = self._data[key]
            self._store_counter(key, c, self._version(cur), cur)
            gone = []
            if c.plain() and self._data[key][8] & 0x80:  # (nothing at or after the horizon: deleted, as on the peer)
                gone = self.drop([key], horizon)
            if gone:
                dropped += gone
            else:  # (what is left goes to the log, even a tombstone the horizon has not passed)
                states.append((key, *self._export(key, self._data[key], 0)))
        return states, dropped

    def compact_counters(self, horizon: int, budget: int = COMPACT_BUDGET) -> int:
        """Count, in their keys' values, the increments stamped below ``horizon`` (every node
        holds every event below it); keys left with none become plain entries.  Keys are taken
        in the order they got their increments, oldest first, up to ``budget`` of them (one that
        keeps some goes to the back): a call costs at most ``budget`` compactions, never a pass
        over every counter.  Returns how many keys have a counter state still."""
        queue, counters = self._compact_queue, self._counters
        for _ in range(min(budget, len(queue))):
            key, c = queue.popleft()
            if counters.get(key) is not c:
                continue  # (gone: set, deleted, compacted, dropped, or queued anew)
            c.compact(horizon)
            if not c.plain():
                queue.append((key, c))  # (its newer increments or expiry wait for a later horizon)
                continue
            cur = self._data[key]
            self._store_counter(key, c, self._version(cur), cur)
        return len(counters)

    def apply_entries(self, entries: Iterable[tuple[bytes, int, str, bytes | None]]) -> int:
        """``apply`` each ``(key, hlc, origin, value)`` entry (a snapshot's, a transfer's, a
        repair's); returns the highest timestamp among them (0 if none).

        The conflict rule makes the order of writes irrelevant, so the entries are applied
        origin by origin through ``apply_many``: on a million entries that costs a fifth less
        than one ``apply`` each."""
        by_origin: dict[str, list[tuple[int, bytes, bytes | None]]] = {}
        top = 0
        for key, hlc, origin, value in entries:
            items = by_origin.get(origin)
            if items is None:
                items = by_origin[origin] = []
            items.append((hlc, key, value))
            if hlc > top:
                top = hlc
        for origin, items in by_origin.items():
            self.apply_many(origin, items)
        return top

    def collect_tombstones(self, horizon: int) -> int:
        """Forget tombstones stamped before ``horizon``; returns how many were dropped.

        Safe only when every node has applied every write stamped before ``horizon``: then no
        older write of those keys is still on its way anywhere.
        """
        old = [k for k, h in self._tombstones.items() if h < horizon]
        for k in old:
            del self._tombstones[k]
            del self._data[k]
            self._counters.pop(k, None)
        return len(old)

    def reclaim_expired(self, horizon: int, margin_ms: int, budget: int = COMPACT_BUDGET) -> int:
        """Forget keys whose value expired before ``now_ms`` and ``margin_ms`` before the
        horizon, written (and their expiry set) before it; returns how many.

        Like collecting a tombstone: every node holds every write stamped below the horizon,
        so no older write of such a key is still on its way (one that arrives again finds no
        entry and is skipped, zkv.store.keyspace ``apply_many``'s floor).  The margin - twice
        the clock offset nodes may have - keeps any EXPIRE made while the key was alive on its
        node (so stamped near or before its expiry) below the horizon, so it has arrived.  A
        key whose state is not plain waits for its compaction.  No event is written: every
        node reclaims by its own horizon, reads hid the key from the moment it expired."""
        limit = min(self.now_ms, physical(horizon) - margin_ms)
        heap, expiring, data = self._expiry_heap, self._expiring, self._data
        later = []
        n = 0
        while heap and heap[0][0] <= limit and budget > 0:
            exp, key = heapq.heappop(heap)
            budget -= 1
            if expiring.get(key) != exp:
                continue  # (stale: rewritten since)
            e = data[key]
            hlc, oi, h = _unpack_header(e)
            if oi & _CTR or hlc >= horizon:
                later.append((exp, key))
                continue
            del data[key], expiring[key]
            self._buckets[_crc32(key) & _BUCKET_MASK] ^= h
            self._value_came(key, -1)  # (fields and members never expire)
            n += 1
        for item in later:
            heapq.heappush(heap, item)
        return n

    def absent(self, present: set[bytes], horizon: int, buckets: set[int] | None = None) -> list[bytes]:
        """Local keys a peer's state lacks (``present``: the keys it sent, all of them or those of
        ``buckets``) that are stamped before the peer's GC horizon: the peer deleted them and
        collected the tombstones, so they must go here too."""
        return [k for k, e in self._data.items()
                if _HEADER.unpack_from(e)[0] < horizon and k not in present
                and (buckets is None or bucket_of(k) in buckets)]

    def drop(self, keys: Iterable[bytes], horizon: int) -> list[bytes]:
        """Remove those of ``keys`` whose entry is stamped before ``horizon``; returns them."""
        dropped = []
        for k in keys:
            e = self._data.get(k)
            if e is None or _HEADER.unpack_from(e)[0] >= horizon:
                continue
            _hlc, oi, h = _HEADER.unpack_from(self._data.pop(k))
            self._counters.pop(k, None)
            self._expiring.pop(k, None)
            if oi & _TOMB:
                del self._tombstones[k]
            else:
                self._buckets[bucket_of(k)] ^= h
                if oi & _PART:
                    self._index_part(k, False)
                else:
                    self._value_came(k, -1)
            dropped.append(k)
        return dropped

    def drop_absent(self, present: set[bytes], horizon: int, buckets: set[int] | None = None) -> int:
        """``drop(absent(...))``; returns how many keys were dropped."""
        return len(self.drop(self.absent(present, horizon, buckets), horizon))

    # --- digest ------------------------------------------------------------------------------
    def digest(self) -> bytes:
        return blake2b(_pack_buckets(*self._buckets), digest_size=16).digest()

    def bucket_hashes(self) -> list[int]:
        return list(self._buckets)

    def bucket_entries(self, buckets: Iterable[int], horizon: int = 0) -> list[tuple[bytes, int, str, bytes | None]]:
        """Every entry (tombstones included) whose key falls in one of ``buckets`` (counter
        states compacted to ``horizon``, as ``entries``)."""
        wanted = set(buckets)
        export = self._export
        return [(k, *export(k, e, horizon)) for k, e in self._data.items() if bucket_of(k) in wanted]


def _check_expiry(exp: object) -> None:
    if exp.__class__ is not int or not 0 <= exp < 1 << 62:  # type: ignore[operator]
        raise ValueError("bad expiry time")
