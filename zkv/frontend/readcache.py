"""The frontend's read cache: recent values of keys, kept coherent with the store, bounded in bytes.

A GET answered here skips the frontend->store->frontend ZeroMQ round trip, which costs more than
Redis's whole request (see README, Figures).  Coherence comes from ordering, not from versions:
everything the store says to the frontend travels on ONE ZeroMQ connection, in the order the
store did it, and the cache changes only as those messages are handled:

* a reply to a GET fills the key with the value the store read;
* a reply to a SET or DEL (the write is applied and logged) sets a cached key to its new
  value, or to "absent" - before the client is told ``OK`` (keys not cached stay out);
* an invalidation drops keys the store changed for other reasons (writes replicated from peers,
  repairs, a full transfer), and is sent before any reply the store computed after the change;
  it also drops keys the store stopped tracking for the cache (past its bound), sent after the
  replies that may have cached them and before any later change to them could go untold.

So the cache holds, for every key in it, the value the store had when it last told the frontend
about that key, and the store always tells it before anyone on this node can have seen a newer
value.  Pure: no I/O.  Eviction is first-in first-out, by an estimate of bytes held.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from zkv.commands import WRITE_OPS

ENTRY_OVERHEAD = 180  # bytes of Python objects per entry beyond key and value (measured, rounded up)
MISS = object()  # what lookup() returns for a key it knows nothing about


# writes whose outcome the store decides: the cache forgets their keys (zkv.commands)
_OTHER_WRITES = WRITE_OPS - {"s", "d", "fa"}

class ReadCache:
    """Key -> last known value (None: known to be absent), at most ``budget`` bytes (estimated).

    On the path of every request, so entries are bare values in an OrderedDict (oldest first)
    and sizes are adjusted in place rather than recomputed."""

    __slots__ = ("budget", "size", "_d", "hits", "misses")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._d: OrderedDict[bytes, bytes | None] = OrderedDict()
        self.hits = 0  # reads answered here / sent to the store (counted by the caller)
        self.misses = 0

    def stats(self) -> dict[str, int]:
        return {"keys": len(self._d), "bytes": self.size, "budget": self.budget,
                "hits": self.hits, "misses": self.misses}

    def __len__(self) -> int:
        return len(self._d)

    def lookup(self, key: bytes) -> bytes | None | object:
        """The value, None for a key known to be absent, or ``MISS``."""
        return self._d.get(key, MISS)

    def put(self, key: bytes, value: bytes | None) -> None:
        """What the store just said about ``key``: its value, or None for no such key (as if it
        had answered a GET of it)."""
        self.learn((("g", key),), (value,))

    def _evict(self) -> None:
        d = self._d
        while self.size > self.budget:
            k, v = d.popitem(last=False)
            self.size -= len(k) + (0 if v is None else len(v)) + ENTRY_OVERHEAD

    def learn(self, ops: Sequence[Any], results: list[Any]) -> None:
        """What the store answered to a batch of operations (``zkv.commands``), before any
        client hears of it: a value read enters the cache, unless it has an expiry (the store
        sends it as ``[value, expiry]``, which is unwrapped here in ``results``); a value written (applied and
        logged) or a delete replaces the cached entry if there is one (kept in its place in the
        eviction order).  Writes do not add keys:
        a write-heavy load costs the cache nothing, and the store need only track what was
        read (see ``zkv.store.server``, ``_tracked``).

        Inlined ``put``: this runs for every request that reaches the store."""
        d = self._d
        get = d.get
        budget = self.budget
        size = self.size
        for i, (op, result) in enumerate(zip(ops, results)):
            code = op[0]
            if code == "g":
                key, value = op[1], result
                old = get(key, MISS)
                if value.__class__ is list or value.__class__ is str:
                    # [value, expiry]: a value that expires is not kept; nor a hash or set (str:
                    # WRONGTYPE), whose fields change without the key's name being written
                    if value.__class__ is list:
                        results[i] = value[0]  # type: ignore[index]
                    if old is not MISS:
                        del d[key]
                        size -= len(key) + (0 if old is None else len(old)) + ENTRY_OVERHEAD  # type: ignore[arg-type]
                    continue
            elif code == "i" and result.__class__ is dict:
                # INFO shows this node's cache too, beside what the store says of it
                result["read_cache"] = {**self.stats(), **(result.get("read_cache") or {})}
                continue
            elif code == "s" or code == "d":
                key = op[1]
                old = get(key, MISS)
                if old is MISS:
                    continue
                value = op[2] if code == "s" else None
            elif code in _OTHER_WRITES or code == "fa":
                # what they wrote depends on the store: forget the keys (FLUSHALL: every key)
                self.size = size  # (invalidate and clear keep ``self.size``: carry it across)
                if code == "fa":
                    self.clear()
                else:
                    self.invalidate(op[1][0::2] if code == "mn" else op[1:3] if code == "rn" else [op[1]])
                size = self.size
                continue
            else:
                continue
            vlen = 0 if value is None else len(value)
            cost = vlen + len(key) + ENTRY_OVERHEAD
            if cost > budget:
                if old is not MISS:
                    del d[key]
                    size -= len(key) + (0 if old is None else len(old)) + ENTRY_OVERHEAD  # type: ignore[arg-type]
                continue
            d[key] = value
            size += cost if old is MISS else vlen - (0 if old is None else len(old))  # type: ignore[arg-type]
        self.size = size
        if size > budget:
            self._evict()

    def invalidate(self, keys: Iterable[bytes]) -> None:
        d = self._d
        for key in keys:
            old = d.pop(key, MISS)
            if old is not MISS:
                self.size -= len(key) + (0 if old is None else len(old)) + ENTRY_OVERHEAD  # type: ignore[arg-type]

    def clear(self) -> None:
        self._d.clear()
        self.size = 0
