"""Anti-entropy: finding and merging what two replicas hold differently at equal version vectors.

Two stores that announce the same version vector have applied the same events, so their data
should agree; their digests (``Keyspace.digest``) say whether it does.  When it does not - a bug,
a disk that lied, a repair that went wrong - the store asks the peer for its bucket hashes
(``differing_buckets``), then for the entries of the buckets that differ (``entries_reply``,
bounded in bytes), and merges them under the conflict rule (``merge``).

It only ever merges.  A key the peer lacks is never deleted because of that: absence is not
evidence of a delete (deletes travel as tombstones), and treating it as one lets a replica that
lost data delete it everywhere.  Each side takes the other's entries in its own round, so a
divergence ends with both sides' data and each key's winner under the conflict rule.  Pure.
"""

from __future__ import annotations

from zkv.events import DecodeError
from zkv.store.keyspace import BUCKETS, Keyspace, bucket_of
from zkv.store.snapshot import check_entries

MAX_DIFF_BUCKETS = 64  # buckets asked for per round
REPAIR_BYTES = 4 * 1024 * 1024  # keys and values per entries reply, about (at least one entry)

Entry = tuple[bytes, int, str, bytes | None]


def differing_buckets(mine: list[int], theirs: object) -> list[int]:
    """The buckets whose hashes differ (at most MAX_DIFF_BUCKETS); ``theirs`` is checked."""
    if theirs.__class__ is not list or len(theirs) != BUCKETS:
        raise DecodeError("bad bucket hashes")
    return [i for i in range(BUCKETS) if theirs[i] != mine[i]][:MAX_DIFF_BUCKETS]


def entries_reply(ks: Keyspace, buckets: list[int], max_bytes: int = REPAIR_BYTES,
                  horizon: int = 0) -> tuple[list[int], list[Entry]]:
    """The entries (tombstones included) of ``buckets``, in order, until about ``max_bytes``
    of keys and values, and at least one entry; returns the buckets begun and the entries.
    What does not fit is compared again in a later round (a partial bucket only merges)."""
    buckets = list(dict.fromkeys(buckets))[:MAX_DIFF_BUCKETS]  # no more than a peer asks
    by_bucket: dict[int, list[Entry]] = {b: [] for b in buckets}
    for e in ks.bucket_entries(buckets, horizon):  # one pass over the keyspace for all of them
        by_bucket[bucket_of(e[0])].append(e)
    sent: list[int] = []
    out: list[Entry] = []
    size = 0
    for b in buckets:
        if size > max_bytes:
            break
        sent.append(b)
        for e in by_bucket[b]:
            n = len(e[0]) + (len(e[3]) if e[3] is not None else 0)
            if out and size + n > max_bytes:
                return sent, out
            out.append(e)
            size += n
    return sent, out


def merge(ks: Keyspace, entries: list, floor: int = 0) -> list[Entry]:
    """Apply a peer's entries under the conflict rule; returns those that changed ``ks``.
    Nothing is removed.  ``floor``: our tombstone horizon (see ``Keyspace.apply_many``): an
    entry below it of a key we have no entry for was deleted here and collected."""
    check_entries(entries)  # a peer's reply: nothing reaches the keyspace unchecked
    changed = []
    for key, hlc, origin, value in entries:
        if ks.apply(key, hlc, origin, value, floor):
            changed.append((key, hlc, origin, value))
    return changed
