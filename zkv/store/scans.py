"""SCAN's cursors: iteration over the keyspace that survives writes, a bounded step at a time.

A scan starting at cursor 0 takes a copy of the keyspace's key list (one C-level list copy: a
pointer per key, tombstones included) and walks it a step per call; each step checks that a
key still exists (and matches) before returning it.  So, as Redis promises: every key present
from the first call to the last is returned (it is in the copy); a key deleted meanwhile is
not; a key added meanwhile may be missed; a key is returned at most once.  One call looks at no
more than ``count * LOOK_FACTOR`` positions, so it never stalls the store however many keys
were deleted; it may return fewer keys than asked, or none, with a non-zero cursor, as Redis
may.  A cursor is ``id << 32 | position``; at most ``MAX_SCANS`` walks are kept (the oldest is
dropped, and its cursor answers an error), and one unused for ``IDLE_S`` seconds is dropped.
Pure: the store hands in its keyspace and the time.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

MAX_SCANS = 64
IDLE_S = 300.0
LOOK_FACTOR = 10
MAX_COUNT = 100_000


class InvalidCursor(ValueError):
    pass


@dataclass(slots=True)
class _Walk:
    keys: list[bytes]
    used: float


class Scans:
    def __init__(self) -> None:
        self._walks: OrderedDict[int, _Walk] = OrderedDict()
        self._next_id = 1

    def step(self, ks, cursor: int, count: int, match: bytes | None, now: float,  # noqa: ANN001
             kind: str | None = None) -> tuple[int, list[bytes]]:
        """One SCAN call: the next cursor (0: done) and the keys of this step (of type ``kind``
        only, if given: "string", "hash", "set")."""
        for wid in [w for w, walk in self._walks.items() if now - walk.used > IDLE_S]:
            del self._walks[wid]
        if cursor == 0:
            wid = self._next_id
            self._next_id = self._next_id % 0x7FFF_FFFF + 1
            walk = _Walk(ks.key_list(), now)
            self._walks[wid] = walk
            while len(self._walks) > MAX_SCANS:
                self._walks.popitem(last=False)
            pos = 0
        else:
            wid, pos = cursor >> 32, cursor & 0xFFFF_FFFF
            walk = self._walks.get(wid)
            if walk is None or pos > len(walk.keys):
                raise InvalidCursor("invalid cursor")
            walk.used = now
            self._walks.move_to_end(wid)
        count = max(1, min(count, MAX_COUNT))
        keys = walk.keys
        end = min(len(keys), pos + count * LOOK_FACTOR)
        test = glob(match).fullmatch if match is not None else None
        out = []
        exists = ks.exists if kind is None else (lambda k: ks.kind(k) == kind)
        while pos < end and len(out) < count:
            k = keys[pos]
            pos += 1
            if exists(k) and (test is None or test(k)):
                out.append(k)
        if pos >= len(keys):
            del self._walks[wid]
            return 0, out
        return wid << 32 | pos, out


_GLOBS: dict[bytes, re.Pattern[bytes]] = {}
_NOTHING = re.compile(b"(?!)")


def _char_class(body: bytes, neg: bool) -> bytes:
    """A ``[...]`` of a glob as a regular expression: each character escaped, ranges kept (a
    range written backwards, ``[z-a]``, is the same range, as in Redis); an empty class matches
    no character (``[^]``: any)."""
    items, i = [], 0
    while i < len(body):
        c = body[i:i + 1]
        if c == b"\\" and i + 1 < len(body):
            c = body[i + 1:i + 2]
            i += 1
        if body[i + 1:i + 2] == b"-" and i + 2 < len(body):
            lo, hi = sorted((c, body[i + 2:i + 3]))
            items.append(re.escape(lo) + b"-" + re.escape(hi))
            i += 3
            continue
        items.append(re.escape(c))
        i += 1
    if not items:
        return b"[\\s\\S]" if neg else b"(?!)"
    return b"[" + (b"^" if neg else b"") + b"".join(items) + b"]"


def glob(pattern: bytes) -> re.Pattern[bytes]:
    """Redis's glob-style pattern (``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]``, ``\\`` escapes)
    as a compiled regular expression over bytes."""
    rx = _GLOBS.get(pattern)
    if rx is not None:
        return rx
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i:i + 1]
        i += 1
        if c == b"*":
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"\\" and i < n:
            out.append(re.escape(pattern[i:i + 1]))
            i += 1
        elif c == b"[":
            j = pattern.find(b"]", i + 1 if pattern[i:i + 1] in (b"^", b"!") else i)
            if j < 0:
                out.append(re.escape(c))
                continue
            body = pattern[i:j]
            i = j + 1
            neg = body[:1] in (b"^", b"!")
            if neg:
                body = body[1:]
            out.append(_char_class(body, neg))
        else:
            out.append(re.escape(c))
    try:
        rx = re.compile(b"".join(out), re.DOTALL)
    except re.error:  # (not expected: every piece is escaped; a pattern never stops the store)
        rx = _NOTHING
    if len(_GLOBS) > 1024:
        _GLOBS.clear()
    _GLOBS[pattern] = rx
    return rx
