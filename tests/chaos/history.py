"""The record of a chaos run: every client operation and every fault, in run time.

This module owns the history's data types (``Op``, ``Fault``), the thread-safe ``History``
the writers and the nemesis append to, and its JSON-lines form (one object per line, ``"type":
"op"`` or ``"fault"``), which a failed run keeps for later reading (``History.load``).

Times are seconds since the run started (``time.monotonic()`` based), so they order events of
the test process; the nodes' own clocks are never consulted.  ``wall0`` is the wall-clock time
of that start, to find a moment of the run in the node logs (``History.wall``; a node running
under ``faketime`` logs its own skewed time).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Results of a client operation.
OK = "ok"  # the node acknowledged it (``OK``, or a GET's reply)
FAIL = "fail"  # the node refused it for certain (``ERROR clock skew ...`` and the like)
UNKNOWN = "unknown"  # no answer (timeout, disconnect, ``ERROR internal error``): it may have happened

SET, DELETE, GET = "set", "delete", "get"


@dataclass(slots=True)
class Op:
    """One client operation.  ``value``: the value a SET wrote, or the value a GET read
    (``None``: ``NOT FOUND``; unused for DELETE).  ``complete`` is when the reply came, or when
    the client gave up (``result == UNKNOWN``)."""

    writer: int
    kind: str
    key: str
    value: str | None
    node: str
    invoke: float
    complete: float
    result: str
    detail: str = ""

    def describe(self) -> str:
        what = {SET: f"SET {self.value!r}", DELETE: "DELETE", GET: f"GET -> {self.value!r}"}[self.kind]
        return (f"{what} by writer {self.writer} via {self.node} "
                f"(invoked {self.invoke:.3f}s, {self.result} at {self.complete:.3f}s"
                f"{', ' + self.detail if self.detail else ''})")


@dataclass(slots=True)
class Fault:
    """One fault the nemesis injected, from ``start`` until it was healed at ``end``."""

    kind: str
    node: str
    start: float
    end: float
    detail: str = ""

    def describe(self) -> str:
        return f"{self.kind} on {self.node} {self.start:.3f}s-{self.end:.3f}s{' (' + self.detail + ')' if self.detail else ''}"


@dataclass
class History:
    """Appended to by many threads; read once the run is over."""

    t0: float = field(default_factory=time.monotonic)
    wall0: float = field(default_factory=time.time)
    ops: list[Op] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        """Time 0 is now."""
        self.t0, self.wall0 = time.monotonic(), time.time()

    def wall(self, t: float) -> str:
        """Run time ``t`` as the local wall-clock time the node logs show."""
        stamp = self.wall0 + t
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) + f",{int(stamp % 1 * 1000):03d}"

    def add_op(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def dump(self, path: Path) -> None:
        with self._lock, open(path, "w") as f:
            f.write(json.dumps({"type": "meta", "wall0": self.wall0, "wall0_text": self.wall(0.0)}) + "\n")
            for fault in self.faults:
                f.write(json.dumps({"type": "fault", **asdict(fault)}) + "\n")
            for op in self.ops:
                f.write(json.dumps({"type": "op", **asdict(op)}) + "\n")

    @classmethod
    def load(cls, path: Path) -> History:
        h = cls(t0=0.0)
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            kind = rec.pop("type")
            if kind == "op":
                h.ops.append(Op(**rec))
            elif kind == "fault":
                h.faults.append(Fault(**rec))
            elif kind == "meta":
                h.wall0 = rec["wall0"]
        return h
