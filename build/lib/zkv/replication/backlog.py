"""The in-memory backlog: recent event batches of every origin, to answer "events of X after N".

Like Redis's replication backlog, it is bounded (``limit`` events and ``limit_bytes`` bytes per
origin, whichever is reached first; the newest batch is always kept); a request that
reaches back before what it still holds is told so, and the asker falls back to a full state
transfer.  Batches are kept encoded, exactly as they travelled, so serving them costs no
re-encoding.  Pure: no I/O.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(slots=True)
class _OriginLog:
    firsts: list[int] = field(default_factory=list)  # first seq of each batch, ascending
    lasts: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    events: int = 0
    bytes: int = 0

    def trim(self, limit: int, limit_bytes: int) -> None:
        drop = 0
        while drop < len(self.firsts) - 1:
            size = self.lasts[drop] - self.firsts[drop] + 1
            if self.events - size < limit and self.bytes <= limit_bytes:
                break  # never fewer than ``limit`` events while within the byte bound
            self.events -= size
            self.bytes -= len(self.payloads[drop])
            drop += 1
        if drop:
            del self.firsts[:drop], self.lasts[:drop], self.payloads[:drop]


class TooOld(Exception):
    """The backlog no longer holds the start of what was asked; ``oldest`` is its first seq."""

    def __init__(self, oldest: int) -> None:
        super().__init__(oldest)
        self.oldest = oldest


class Backlog:
    def __init__(self, limit: int, limit_bytes: int = 1 << 62) -> None:
        self.limit = limit
        self.limit_bytes = limit_bytes
        self._logs: dict[str, _OriginLog] = {}

    def add(self, origin: str, first_seq: int, last_seq: int, payload: bytes) -> None:
        """Record a batch; batches of one origin must be added in seq order without gaps."""
        log = self._logs.get(origin)
        if log is None:
            log = self._logs[origin] = _OriginLog()
        elif log.lasts and first_seq != log.lasts[-1] + 1:
            # A gap (e.g. after a full state transfer): what we held no longer joins up.
            log.firsts.clear(), log.lasts.clear(), log.payloads.clear()
            log.events = log.bytes = 0
        log.firsts.append(first_seq)
        log.lasts.append(last_seq)
        log.payloads.append(payload)
        log.events += last_seq - first_seq + 1
        log.bytes += len(payload)
        if log.events > self.limit + self.limit // 4 or log.bytes > self.limit_bytes:
            log.trim(self.limit, self.limit_bytes)

    def oldest(self, origin: str) -> int | None:
        log = self._logs.get(origin)
        return log.firsts[0] if log and log.firsts else None

    def newest(self, origin: str) -> int:
        log = self._logs.get(origin)
        return log.lasts[-1] if log and log.lasts else 0

    def since(self, origin: str, after: int, max_events: int = 10_000,
              max_bytes: int = 32 * 1024 * 1024) -> tuple[list[bytes], bool]:
        """Encoded batches holding the events of ``origin`` after seq ``after``.

        Returns (payloads, more).  The first payload may start before ``after + 1``; the
        receiver skips what it already has.  Raises TooOld when ``after + 1`` is no longer held.
        """
        log = self._logs.get(origin)
        if log is None or not log.lasts or log.lasts[-1] <= after:
            return [], False
        if log.firsts[0] > after + 1:
            raise TooOld(log.firsts[0])
        i = bisect.bisect_right(log.lasts, after)
        out: list[bytes] = []
        n = size = 0
        while i < len(log.payloads) and n < max_events and (not out or size < max_bytes):
            out.append(log.payloads[i])
            n += log.lasts[i] - max(log.firsts[i], after + 1) + 1
            size += len(log.payloads[i])
            i += 1
        return out, i < len(log.payloads)
