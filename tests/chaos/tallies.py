"""Counters and expiring keys in the chaos workload, and the check of their final state.

The writers (tests.chaos.workload) send a share of their operations here instead of the SET /
DELETE / GET history: ``INCR`` of a few counter keys, and ``SET ... PX`` of keys unique in the
run, some expiring soon and some in a day.  Both go in RESP, so the node answers in RESP
(``:5``, ``+OK``, ``-ERR ...``) on one line.  ``Tally`` counts what each
got: an increment acknowledged, refused for certain, or unanswered (it may have happened).

Once healed, every node must hold each counter at its acknowledged increments at least and at
most those plus the unanswered ones; an expiring key acknowledged with a day to live must be
there with its value; one that expired must be gone on every node, once enough time has passed
for any skewed clock the nemesis used (``allowance``: the largest skew plus a margin).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tests.chaos.checker import Violation
from tests.chaos.history import FAIL, OK, UNKNOWN

COUNTERS = [f"ctr{i}" for i in range(3)]
SHORT_PX = 300  # ms: expires during the run
LONG_PX = 86_400_000  # a day: must be there at the end
MARGIN = 2.0  # s: beyond a key's expiry (and any skew) before it must be gone everywhere


@dataclass
class Expiring:
    key: str
    value: str
    px: int
    sent_at: float  # wall clock (time.time()) when the SET was sent
    result: str


@dataclass
class Tally:
    incrs: dict[str, dict[str, int]] = field(default_factory=lambda: {k: {OK: 0, FAIL: 0, UNKNOWN: 0}
                                                                      for k in COUNTERS})
    expiring: list[Expiring] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def incr(self, key: str, result: str) -> None:
        with self.lock:
            self.incrs[key][result] += 1

    def add(self, e: Expiring) -> None:
        with self.lock:
            self.expiring.append(e)

    @property
    def keys(self) -> list[str]:
        return COUNTERS + [e.key for e in self.expiring]


def resp(*args: str) -> bytes:
    """A RESP request (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def classify_resp(reply: bytes) -> str:
    """One RESP reply line: ``ok``, ``fail`` (refused for certain: clock skew, too many
    clients) or ``unknown``."""
    if reply[:1] in (b":", b"+"):
        return OK
    if reply.startswith((b"-ERR clock", b"-ERR max number of clients")):
        return FAIL
    return UNKNOWN


def check(tally: Tally, finals: dict[str, dict[str, str | None]], now: float,
          skew: float = 0.0) -> list[Violation]:
    """``finals``: node -> key -> value read once healed (None: NOT FOUND); ``now``: when;
    ``skew``: the largest clock offset (s) a node had while it took writes."""
    out: list[Violation] = []
    for node, values in sorted(finals.items()):
        for key, n in tally.incrs.items():
            got = values.get(key)
            low, high = n[OK], n[OK] + n[UNKNOWN]
            if not low <= int(got or 0) <= high:
                out.append(Violation("miscounted", key, f"{node} holds {got!r}; {n[OK]} increments were "
                                     f"acknowledged and {n[UNKNOWN]} unanswered (want {low}..{high})"))
        for e in tally.expiring:
            got = values.get(e.key)
            if e.px == LONG_PX and e.result == OK and got != e.value:
                out.append(Violation("lost", e.key, f"{node} holds {got!r}: SET PX {e.px} of {e.value!r} "
                                     "was acknowledged and has a day to live"))
            elif (e.px == SHORT_PX and got is not None
                  and now > e.sent_at + e.px / 1000 + skew + MARGIN):
                out.append(Violation("unexpired", e.key, f"{node} still serves {got!r}, "
                                     f"{now - e.sent_at:.1f}s after a SET PX {e.px}"))
    return out


def now() -> float:
    return time.time()
