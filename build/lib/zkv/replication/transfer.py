"""Full state transfer: a peer's whole state, streamed as snapshot chunks, for a store that has
fallen behind every peer's backlog (or joins empty).

Serving side: ``SnapStream`` and ``advance_streams`` send a forked snapshot a few chunks per
loop turn, never blocking (a receiver that does not read only stalls its own stream).

Receiving side: ``FullSync`` tracks the transfer we asked for.  When it ends, the sender's
version vector becomes ours, and local keys the snapshot lacks may go - but only on positive
evidence that the sender saw our version and deleted it since (``stale_keys``); a sender that
claims more than it can hold is not believed (``implausible``).  Pure: no sockets here except
the one ``advance_streams`` is handed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from zkv.replication import catchup as wire
from zkv.store.keyspace import Keyspace


@dataclass(slots=True)
class FullSync:
    """A full state transfer we asked ``peer`` for; ``tag`` tells its messages from a stale one's."""

    peer: str
    tag: bytes
    keys: set[bytes]  # every key the snapshot carried so far
    last_chunk: float
    entries: int = 0
    progress: Any = None  # a zkv.progress.Progress: a log line a second while it runs


@dataclass(slots=True)
class SnapStream:
    """A snapshot we are streaming to a peer, a chunk at a time, never blocking the loop."""

    ident: bytes
    tag: bytes
    chunks: Iterator[bytes]
    meta: dict
    peer: str  # who asked (one stream per peer)
    progressed: float  # when a message of it last went out
    pending: list[bytes] | None = None  # frames that could not be sent yet (peer's queue full)
    ended: bool = False  # the last chunk has been taken (snapend is pending or sent)


def advance_streams(sock: zmq.Socket, streams: list[SnapStream], now: float,
                    stall: float) -> tuple[list[SnapStream], bool]:
    """Send a few chunks of each stream on the catch-up ROUTER without blocking; returns the
    streams still going and whether every one of them is blocked by its receiver.  A stream
    whose receiver has not taken a message for ``stall`` seconds is dropped (with its open
    snapshot file): a reader that never reads must not hold it for ever."""
    still = []
    blocked = 0
    for st in streams:
        keep = True
        if now - st.progressed > stall:
            continue
        try:
            for _ in range(4):
                if st.pending is None:
                    if st.ended:
                        break
                    chunk = next(st.chunks, None)
                    if chunk is None:
                        st.pending = [st.ident, wire.SNAPEND, st.tag,
                                      msgpack.packb(st.meta, use_bin_type=True)]
                        st.ended = True
                    else:
                        st.pending = [st.ident, wire.SNAPCHUNK, st.tag, chunk]
                sock.send_multipart(st.pending, zmq.NOBLOCK)
                st.pending = None
                st.progressed = now
            keep = not (st.ended and st.pending is None)
        except zmq.Again:
            blocked += 1
        except zmq.ZMQError:
            keep = False  # the asker is gone (ROUTER_MANDATORY): drop the stream
        if keep:
            still.append(st)
    return still, bool(still) and blocked == len(still)


def implausible(horizon: int, vv: dict[str, int], sender_max_stable: int, our_horizon: int,
                clock_limit: int, our_origin: str, our_seq: int) -> str | None:
    """Why a transfer's end cannot be believed, or None.  No node's tombstone horizon passes the
    highest stable time it ever announced, nor our clock's bound; and no node holds events of
    our current incarnation that we never issued."""
    if horizon > max(sender_max_stable, our_horizon):
        return f"its horizon {horizon} passes the stable time it announced ({sender_max_stable})"
    if horizon > clock_limit:
        return f"its horizon {horizon} lies beyond this node's clock bound"
    if vv.get(our_origin, 0) > our_seq:
        return f"it claims {vv[our_origin]} events of {our_origin}, which issued {our_seq}"
    return None


def stale_keys(ks: Keyspace, carried: set[bytes], horizon: int, our_origin: str) -> list[bytes]:
    """Local keys the sender's snapshot lacked that it provably saw and deleted since: stamped
    before its tombstone horizon.  The horizon is the evidence: every node held every event
    stamped below it when the sender collected its tombstones (zkv.replication.horizon), so the
    sender saw this write, and lacks the key only because a delete superseded it and was
    collected.  An event not yet seen anywhere is stamped above every frontier, so above the
    horizon - our own current incarnation's included: it stamps above the clock bound it
    persisted (or learnt from a peer), so above anything the sender could have reached without
    its writes (zkv.store.clockfile).  So no exception for them either: keeping one the sender
    deleted would leave it on this node alone, since every other node skips it as "deleted and
    collected".  (``our_origin`` stays in the signature for ``implausible``'s sake.)"""
    del our_origin
    return ks.absent(carried, horizon)
