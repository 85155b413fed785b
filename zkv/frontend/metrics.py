"""The frontend's request figures for ``/metrics``: requests by command, and their latency.

Counted on the request path, so counted cheaply: a plain dict and ``zkv.histogram.Buckets``
touched by the event loop's one thread, no lock and no ``prometheus_client`` object, and only
on a node with ``metrics_listen`` (without it the frontend never builds a ``RequestMetrics``,
and its request path is as before but for one ``is None`` test per chunk of input).
``zkv.frontend.exposition`` reads them at scrape time.

*Requests by command*: each chunk of input's parsed requests are counted by their command name
as sent (``count``: one dict update per request); spellings are folded together (upper case)
and names that are no command of zkv's into ``unknown`` at scrape time, or as soon as the table
holds ``MAX_NAMES`` names, so what a client makes up cannot grow it.

*Latency*: the requests of one chunk of input go to the store together and are answered
together (zkv.frontend.server), so they are timed together, once per chunk and not per request:
from handing them to the store link until their replies have been encoded and handed to the
connection's transport (``done``); each request of the chunk counts that duration once, in the
``write`` histogram if the chunk held a write, else in ``read``.  Chunks answered without the
store (PING; reads the read cache answers) are not timed.  Neither is what WAIT and ``min_acks``
then wait for peers: those replies are written later than the store's answer.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from zkv.commands import WRITE_OPS, known_commands
from zkv.histogram import LATENCY_BOUNDS, Buckets

UNKNOWN = "unknown"  # the command of names that are no command
MAX_NAMES = 256  # raw spellings counted apart before they are folded
_WRITE_OPS = frozenset(WRITE_OPS)
_first = itemgetter(0)


class MetricsListenError(Exception):
    """``metrics_listen`` could not be bound (one line, for the node's log and exit code)."""


class RequestMetrics:
    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.known = known_commands()
        self.counts: dict[bytes, int] = {}  # name as sent -> requests, since the last fold
        self.folded: dict[str, int] = {}  # command -> requests counted before the last fold
        self.latency = {"read": Buckets(bounds), "write": Buckets(bounds)}
        self.by_kind = (self.latency["read"], self.latency["write"])  # by "holds a write"

    # --- the request path -------------------------------------------------------------------
    def count(self, requests: list[tuple[list[bytes], bool]]) -> None:
        """Count a chunk's parsed requests by command."""
        counts = self.counts
        for args, _is_resp in requests:
            name = args[0]
            try:
                counts[name] += 1
            except KeyError:
                counts[name] = 1
        if len(counts) > MAX_NAMES:
            self._fold()

    def writes(self, ops: list[tuple]) -> bool:
        """Whether a chunk's store operations hold a write (its latency's kind)."""
        return not _WRITE_OPS.isdisjoint(map(_first, ops))

    def done(self, complete: Callable[[Any, Any], None], group: Any, results: Any,
             t0: float, n: int, write: bool) -> None:
        """``complete(group, results)``, then count its ``n`` requests as taking the time since
        ``t0`` (a ``perf_counter`` reading taken as the chunk went to the store)."""
        complete(group, results)
        seconds = time.perf_counter() - t0
        b = self.by_kind[write]
        b.counts[bisect_left(self.bounds, seconds)] += n
        b.total += seconds * n

    # --- scrape time ------------------------------------------------------------------------
    def command(self, name: bytes) -> str:
        upper = name.upper()
        return upper.decode("ascii") if upper in self.known else UNKNOWN

    def _fold(self) -> None:
        for name, n in self.counts.items():
            key = self.command(name)
            self.folded[key] = self.folded.get(key, 0) + n
        self.counts.clear()

    def requests_by_command(self) -> dict[str, int]:
        """Command (upper case; ``unknown``) -> requests."""
        out = dict(self.folded)
        for name, n in self.counts.items():
            key = self.command(name)
            out[key] = out.get(key, 0) + n
        return out
