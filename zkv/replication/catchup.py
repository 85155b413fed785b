"""The catch-up channel's wire format: every request a store (or a tool) may send to a peer's
catch-up ROUTER, and every reply, in one place.

A request is a multipart message ``[VERB, args...]`` on a DEALER; the reply comes back on it.

=========================================  ==============================================
request                                    reply
=========================================  ==============================================
``[PULL, origin, after]``                  ``[EVENTS, origin, more, batch...]`` - encoded
                                           batches (zkv.events) holding origin's events
                                           after ``after``; ``more`` is ``b"1"`` if the
                                           reply was cut short - or ``[TOOOLD, origin]``
                                           when the backlog no longer reaches back
``[SNAP, tag, requester id]``             ``[SNAPCHUNK, tag, chunk]``... then
                                           ``[SNAPEND, tag, msgpack(meta)]`` (meta: ``vv``,
                                           ``gc_horizon``, ...), or ``[SNAPFAIL, tag]``
                                           (also when refused: not a configured peer,
                                           or too many transfers asked for)
``[BUCKETS]``                              ``[BUCKETS, msgpack([vv, bucket_hashes])]``
``[ENTRIES, msgpack([bucket, ...])]``      ``[ENTRIES, msgpack([gc_horizon, buckets,
                                           entries])]`` (zkv.replication.antientropy)
``[INFO]``                                 ``[INFO, msgpack(info dict)]`` (``zkv status``)
``[FOLDS, after]``                         ``[FOLDS, msgpack([[[origin, count], ...],
                                           more])]``: the folded origins that sort after
                                           ``after``, a page (zkv.replication.folds)
anything else                              ``[ERROR, b"unknown verb"]``
=========================================  ==============================================

Integers travel as ASCII digits in their own frame (``after``, ``more``); everything structured
is msgpack.  A store accepts a reply only for a request it still has outstanding with that peer.
"""

from __future__ import annotations

PULL = b"pull"
EVENTS = b"events"
TOOOLD = b"tooold"
SNAP = b"snap"
SNAPCHUNK = b"snapchunk"
SNAPEND = b"snapend"
SNAPFAIL = b"snapfail"
BUCKETS = b"buckets"
ENTRIES = b"entries"
INFO = b"info"
FOLDS = b"folds"
ERROR = b"error"


def pull(origin: str, after: int) -> list[bytes]:
    return [PULL, origin.encode(), b"%d" % after]


def snap(tag: bytes, requester: str) -> list[bytes]:
    return [SNAP, tag, requester.encode()]


def events(origin: bytes, more: bool, payloads: list[bytes]) -> list[bytes]:
    return [EVENTS, origin, b"1" if more else b"0", *payloads]
