"""The frontend's request figures for ``/metrics``: requests by command, latency by command.

Counted on the request path, so counted cheaply: plain dicts and ``zkv.histogram.Buckets``
touched by the event loop's one thread, no lock and no ``prometheus_client`` object, and only
on a node with ``metrics_listen`` (without it the frontend never builds a ``RequestMetrics``
and its request path runs exactly as before).  ``zkv.frontend.exposition`` reads them at scrape
time.

*Requests by command*: ``dispatch``/``before_auth`` are wrapped (``wrap``), so every request
parsed is counted under its command name as sent (upper-cased when exported); a name that is no
command of zkv's is counted as ``unknown``, so what a client makes up cannot grow the table.

*Latency*: the requests of one chunk of input go to the store together and are answered
together (zkv.frontend.server), so they are timed together: from handing them to the store link
until their replies have been encoded and handed to the connection's transport (``timed``); each
request of the chunk counts that duration once under its command.  Requests answered without
the store (PING, a read the read cache answers, when nothing else of their chunk goes to the
store) are not timed.  Neither is what WAIT and ``min_acks`` then wait for peers: those replies
are written later than the store's answer.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from zkv.commands import before_auth, dispatch, known_commands
from zkv.histogram import LATENCY_BOUNDS, Buckets

UNKNOWN = b"unknown"  # the counter of names that are no command
MAX_NAMES = 256  # spellings kept apart (SET, set, Set...); past it a known name counts upper-cased

Dispatch = Callable[..., Any]


class MetricsListenError(Exception):
    """``metrics_listen`` could not be bound (one line, for the node's log and exit code)."""


class RequestMetrics:
    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.known = known_commands()
        self.counts: dict[bytes, int] = {UNKNOWN: 0}  # name as sent -> requests
        self.latency: dict[bytes, Buckets] = {}  # name as sent -> durations
        # The names counted since the connection being served began its current chunk
        # (ClientConnection._process clears it, then takes them for the chunk's timing).
        self.names: list[bytes] = []
        self.dispatch = self.wrap(dispatch)
        self.before_auth = self.wrap(before_auth)

    # --- the request path -------------------------------------------------------------------
    def wrap(self, disp: Dispatch) -> Dispatch:
        """``disp`` (dispatch or before_auth), counting each request under its command."""
        counts, names, admit = self.counts, self.names, self._admit

        def counted(args: list[bytes], is_resp: bool, resp3: bool = False) -> Any:
            name = args[0]
            if name not in counts:
                name = admit(name)
            counts[name] += 1
            names.append(name)
            return disp(args, is_resp, resp3)
        return counted

    def _admit(self, name: bytes) -> bytes:
        """The counter a name not seen before counts under (made if need be)."""
        upper = name.upper()
        if upper not in self.known:
            return UNKNOWN
        if len(self.counts) >= MAX_NAMES:
            name = upper
        self.counts.setdefault(name, 0)
        return name

    def timed(self, names: list[bytes], callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """``callback`` (a chunk's completion), timing the chunk's requests ``names``."""
        t0 = time.perf_counter()

        def done(results: Any) -> None:
            callback(results)
            self.observe(names, time.perf_counter() - t0)
        return done

    def observe(self, names: list[bytes], seconds: float) -> None:
        """Each of ``names`` took ``seconds``."""
        i = bisect_left(self.bounds, seconds)
        latency = self.latency
        for name in names:
            b = latency.get(name)
            if b is None:
                b = latency[name] = Buckets(self.bounds)
            b.counts[i] += 1
            b.total += seconds

    # --- scrape time ------------------------------------------------------------------------
    def requests_by_command(self) -> dict[str, int]:
        """Command (upper case; ``unknown``) -> requests, spellings folded together."""
        out: dict[str, int] = {}
        for name, n in self.counts.items():
            key = "unknown" if name == UNKNOWN else name.upper().decode("ascii", "replace")
            out[key] = out.get(key, 0) + n
        return out

    def latency_by_command(self) -> dict[str, Buckets]:
        out: dict[str, Buckets] = {}
        for name, b in self.latency.items():
            key = "unknown" if name == UNKNOWN else name.upper().decode("ascii", "replace")
            if key in out:
                out[key].add(b)
            else:
                out[key] = Buckets(b.bounds, list(b.counts), b.total)
        return out
