"""A lying peer for the simulator: an admitted node whose messages claim more than is true.

While a node lies (``World.liars``), every message it sends is rewritten at delivery, where the
receiver's state is known, to claim what the trust model says is not believed
(docs/security.md, ``zkv.replication.claims``): events of the receiver's own incarnation and of
live nodes' current ones beyond what they announced - in heartbeat vectors, as made-up events
appended to pull replies, in a transfer's vector - entries of the receiver's own incarnation
stamped after its last write, a clock echo beyond what the receiver saved, and folds of live
incarnations (behind a heartbeat digest that makes the receiver ask for them).  The liar is
believed about its own events, and its lies about what a relay is still trusted with (earlier
incarnations, silent nodes) are not told: those are outside the guarantee.  If a lie is believed,
the checker sees a phantom value, a lost write, or vectors that differ.
"""

from __future__ import annotations

from typing import Any

import msgpack

from zkv.events import TOPIC_HEARTBEAT, Batch, decode_batch, encode_batch, node_of
from zkv.replication import catchup as wire
from zkv.store.replica import Replica
from zkv.store.snapshot import decode_chunk, encode_chunk

FORGED = b"forged"
KEYS = [b"k0", b"k1", b"k2"]  # keys of the simulator's workload: a forged write there shows
MORE = 1000  # how far beyond the truth a claim goes


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _bounded(r: Replica, liar: str, now: float) -> list[str]:
    """The origins whose claims ``r`` bounds now (other than the liar's own)."""
    ours = r.inbox.vv.get(r.origin, 0)
    out = [r.origin]
    for _node, (origin, _at) in r.claims.current.items():
        if (node_of(origin) != liar and origin not in out
                and r.claims.bound(origin, r.inbox.vv.get(origin, 0), ours, now) is not None):
            out.append(origin)
    return out


def lie(r: Replica, liar: str, conn_reply: bool, frames: list[bytes], now: float) -> list[bytes]:
    """``frames`` from ``liar`` to ``r`` (a bus message, or with ``conn_reply`` a catch-up
    reply), rewritten to claim more than is true where ``r`` must not believe it."""
    if not conn_reply and frames[0] == TOPIC_HEARTBEAT:
        hb = msgpack.unpackb(frames[1], raw=False)
        for origin in _bounded(r, liar, now):
            hb["vv"][origin] = hb["vv"].get(origin, 0) + MORE
        if r._clock_from_file:  # noqa: SLF001 - a wiped node must believe the echo (docs)
            hb.setdefault("seen", {})[r.id] = r.clock_saved + (MORE << 16)
        count, xor = hb.get("folds", [0, 0])
        hb["folds"] = [count + 1, xor ^ 1]  # a digest unlike anyone's: the receiver asks for folds
        return [frames[0], _pack(hb)]
    if not conn_reply:
        return frames
    verb = frames[0]
    if verb == wire.EVENTS:
        origin = frames[1].decode()
        if origin not in _bounded(r, liar, now):
            return frames
        # beyond the bound: within it, what a relay sends of a live node's events is trusted
        bound = r.claims.bound(origin, r.inbox.vv.get(origin, 0), r.inbox.vv.get(r.origin, 0), now)
        batches = [decode_batch(p) for p in frames[3:]]
        last_seq = batches[-1].last_seq if batches else 0
        last_hlc = batches[-1].items[-1][0] if batches else r.clock.last
        forged = Batch(origin, max(last_seq, bound or 0) + 1,
                       [(last_hlc + 1 + i, KEYS[i % len(KEYS)], FORGED) for i in range(3)])
        return [*frames[:3], *frames[3:], encode_batch(forged)]
    if verb == wire.FOLDS:
        # folds of live incarnations, at the receiver's own counts: believed, they would hide
        # what nodes are writing now from every vector
        page, more = msgpack.unpackb(frames[1], raw=False)
        page += [[o, r.inbox.vv.get(o, 0)] for o in _bounded(r, liar, now) if r.inbox.vv.get(o, 0)]
        return [verb, _pack([page, more])]
    if verb == wire.SNAPEND:
        meta = msgpack.unpackb(frames[2], raw=False)
        for origin in _bounded(r, liar, now):
            meta["vv"][origin] = meta["vv"].get(origin, 0) + MORE
        return [*frames[:2], _pack(meta)]
    if verb == wire.SNAPCHUNK:
        entries = decode_chunk(frames[2])
        entries.append([KEYS[0], r.clock.last + 1, r.origin, FORGED])
        return [*frames[:2], encode_chunk(entries)]
    if verb == wire.ENTRIES:
        horizon, buckets, entries = msgpack.unpackb(frames[1], raw=False)
        entries.append([KEYS[0], r.clock.last + 1, r.origin, FORGED])
        return [verb, _pack([horizon, buckets, entries])]
    return frames
