"""Where a hash's fields and a set's members live: each is an entry of its own in the keyspace.

A field ``f`` of hash ``k`` is the entry ``b"\\xff\\x00h" + len(k) + k + f`` (the length as 4
bytes), a member ``m`` of set ``k`` the entry ``b"\\xff\\x00s" + len(k) + k + m``.  So every field
is its own last-writer-wins register (and its own counter for HINCRBY), every member its own
observed-remove register (zkv.store.orset), and all of them replicate, persist, transfer and
repair as any other entry does; the keyspace keeps an index from each key to its live fields
and members.  Keys that begin with ``RESERVED`` are refused to clients.  Pure: no I/O.
"""

from __future__ import annotations

import struct

RESERVED = b"\xff\x00"  # the first bytes of every part's key, and of no client's key
HASH = b"\xff\x00h"
SET = b"\xff\x00s"
_LEN = struct.Struct(">I")


def part_key(kind: bytes, key: bytes, element: bytes) -> bytes:
    """The entry of ``element`` (a field, ``kind`` = HASH; a member, SET) of ``key``."""
    return kind + _LEN.pack(len(key)) + key + element


def split(pk: bytes) -> tuple[bytes, bytes, bytes]:
    """``part_key``'s inverse: (kind, key, element); ValueError if ``pk`` is not a part's key."""
    kind = pk[:3]
    if kind != HASH and kind != SET or len(pk) < 7:
        raise ValueError("not a part key")
    n = _LEN.unpack_from(pk, 3)[0]
    if 7 + n > len(pk):
        raise ValueError("not a part key")
    return kind, pk[7:7 + n], pk[7 + n:]
