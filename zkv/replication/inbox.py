"""Per-origin ordering of incoming batches: apply each event once, in sequence, never skip one.

Events of an origin reach a store from several directions: the origin's live PUB stream,
catch-up replies from any peer, a batch that was held back by a gap.  ``Inbox.offer`` decides,
from the version vector, which part of a batch is new, which is a duplicate, and which must wait
because an earlier one is missing (a *gap*, which the caller repairs by asking a peer).  Pure.
"""

from __future__ import annotations

from zkv.events import Batch


class Inbox:
    """Tracks, per origin, the highest contiguous seq applied (the version vector)."""

    def __init__(self, vv: dict[str, int] | None = None, max_pending: int = 10_000,
                 max_pending_bytes: int = 256 * 1024 * 1024) -> None:
        self.vv: dict[str, int] = dict(vv or {})
        self.max_pending = max_pending  # held batches per origin
        self.max_pending_bytes = max_pending_bytes  # keys and values held, all origins together
        self.pending_bytes = 0
        self._pending: dict[str, dict[int, Batch]] = {}

    def expected(self, origin: str) -> int:
        return self.vv.get(origin, 0) + 1

    def offer(self, batch: Batch) -> tuple[list[Batch], bool]:
        """Returns (batches ready to apply in order, gap_seen).

        The caller applies the returned batches and then calls ``applied`` for each.
        """
        origin = batch.origin
        exp = self.expected(origin)
        if batch.last_seq < exp:
            return [], False
        if batch.first_seq > exp:
            pend = self._pending.setdefault(origin, {})
            held = pend.get(batch.first_seq)
            # Past either bound a batch is not held: it is pulled again once the gap is filled.
            size = _size(batch)
            if self.pending_bytes + size > self.max_pending_bytes:
                return [], True
            if held is not None:
                if held.last_seq < batch.last_seq:  # keep the longer of two overlapping batches
                    pend[batch.first_seq] = batch
                    self.pending_bytes += size - _size(held)
            elif len(pend) < self.max_pending:
                pend[batch.first_seq] = batch
                self.pending_bytes += size
            return [], True
        ready = [batch.slice_from(exp)]
        ready.extend(self._take_pending(origin, ready[-1].last_seq + 1))
        return ready, bool(self._pending.get(origin))

    def hold(self, batch: Batch) -> None:
        """Keep ``batch`` pending again: the caller took it (``offer``, ``release``) but cannot
        apply it yet, since an earlier batch of its origin waits elsewhere (held back for the
        clock).  ``release`` hands it out once the vector reaches it."""
        pend = self._pending.setdefault(batch.origin, {})
        held = pend.get(batch.first_seq)
        if held is None or held.last_seq < batch.last_seq:
            pend[batch.first_seq] = batch
            self.pending_bytes += _size(batch) - (0 if held is None else _size(held))

    def release(self, origin: str) -> list[Batch]:
        """Held-back batches that became applicable (after ``advance``)."""
        return self._take_pending(origin, self.expected(origin))

    def _take_pending(self, origin: str, nxt: int) -> list[Batch]:
        ready: list[Batch] = []
        pend = self._pending.get(origin)
        while pend:
            # Held batches may overlap each other and what is ready; take any that joins up.
            usable = [b for f, b in pend.items() if f <= nxt]
            if not usable:
                break
            for b in usable:
                del pend[b.first_seq]
                self.pending_bytes -= _size(b)
            best = max(usable, key=lambda b: b.last_seq)
            if best.last_seq >= nxt:
                ready.append(best.slice_from(nxt))
                nxt = best.last_seq + 1
        return ready

    def applied(self, origin: str, last_seq: int) -> None:
        if last_seq > self.vv.get(origin, 0):
            self.vv[origin] = last_seq

    def advance(self, vv: dict[str, int]) -> None:
        """Raise the vector after a full state transfer covered ``vv``; drop stale pending."""
        for origin, seq in vv.items():
            if seq > self.vv.get(origin, 0):
                self.vv[origin] = seq
        for origin, pend in self._pending.items():
            floor = self.vv.get(origin, 0)
            for f in [f for f, b in pend.items() if b.last_seq <= floor]:
                self.pending_bytes -= _size(pend.pop(f))

    def has_pending(self, origin: str) -> bool:
        return bool(self._pending.get(origin))

    def gaps(self) -> dict[str, int]:
        """Origins with batches held behind a gap -> the first held sequence number."""
        return {o: min(p) for o, p in self._pending.items() if p}

    def held_ranges(self) -> dict[str, list[int]]:
        """Origins with batches held behind a gap -> [first, last] sequence numbers held."""
        return {o: [min(p), max(b.last_seq for b in p.values())] for o, p in self._pending.items() if p}

    def lowest_held_stamp(self) -> int | None:
        """The earliest timestamp among held batches (None: none held).  Events held here exist
        somewhere, so no horizon may pass them until they are applied everywhere."""
        low = None
        for pend in self._pending.values():
            for b in pend.values():
                if low is None or b.items[0][0] < low:  # stamps increase within a batch
                    low = b.items[0][0]
        return low


def _size(batch: Batch) -> int:
    """About how many bytes a held batch keeps in memory."""
    return sum(len(k) + (len(v) if v.__class__ is bytes else 0) + 48 for _h, k, v in batch.items)
