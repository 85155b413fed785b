"""The chaos run's checker: pure functions from a history and the final reads to violations.

This module owns the definitions of what a chaos run must show (unit-tested with hand-made
histories in tests/chaos/test_checker.py):

* **Identical data**: every node gives the same reply to a GET of every key (``divergent``).
* **No lost acknowledged write** (``lost``): the final value of a key must have been written by
  an operation W (a SET with that unique value; for ``NOT FOUND`` a DELETE, or no write at all)
  that was acknowledged or indeterminate, and no acknowledged SET or DELETE of that key was
  invoked more than ``slack`` seconds after W completed.  An operation that strictly follows
  another in real time must win; within ``slack`` the two count as concurrent (their
  timestamps come from clocks that may differ by that much).  An indeterminate W (no reply:
  timeout, disconnect) completes "never": it may have taken effect at any moment.
* **No resurrected delete** (``resurrected``): the same rule, reported as its own kind when the
  operation that should have won is an acknowledged DELETE and the key still has a value.
* **Nothing from nowhere** (``phantom``): a final value or a GET reply that no SET of the run
  wrote; ``failed-write-visible``: one written only by a SET the node refused for certain
  (``ERROR ...``); ``read-from-future``: a GET that returned a value whose SET was invoked
  after the GET completed.
* **No crash except by the nemesis** (``crash``): node logs with a Python traceback, a
  supervisor saying a child exited, or a store that failed to start.

Every violation names the key, the nodes, the value found and the operation expected, so a
failure reads without the history at hand.  The runner (tests/chaos/runner.py) adds its own
kinds: ``verify`` (no agreement after healing), ``unavailable`` (a node could not be read),
``stalled`` (a wait of the nemesis timed out, e.g. replication never caught up), ``harness``
(the run itself broke).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.chaos.history import DELETE, FAIL, GET, OK, SET, Fault, Op

INF = float("inf")
DEFAULT_SLACK = 0.05  # seconds: how close two operations may be and still count as concurrent

VIOLATION_KINDS = ("lost", "resurrected", "divergent", "phantom", "failed-write-visible", "read-from-future",
         "crash", "verify", "unavailable", "stalled", "harness")


@dataclass
class Violation:
    kind: str
    key: str | None
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


@dataclass
class Verdict:
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def counts(self) -> Counter[str]:
        return Counter(v.kind for v in self.violations)

    def report(self, limit: int = 20) -> str:
        lines = [str(v) for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"... and {len(self.violations) - limit} more ({dict(self.counts())})")
        return "\n".join(lines)


def settled_at(op: Op) -> float:
    """When an operation's effect was certainly in place: its reply, or never if it had none."""
    return op.complete if op.result == OK else INF


def _show(value: str | None) -> str:
    return "NOT FOUND" if value is None else repr(value)


def _near(faults: Iterable[Fault], since: float, limit: int = 3, margin: float = 2.0) -> str:
    """The first faults that were still running ``margin`` seconds before ``since`` or later."""
    hits = sorted((f for f in faults if f.end >= since - margin), key=lambda f: f.start)
    if not hits:
        return ""
    more = f" (+{len(hits) - limit} later)" if len(hits) > limit else ""
    return f"; faults from then on: {'; '.join(f.describe() for f in hits[:limit])}{more}"


def check_value(key: str, value: str | None, nodes: list[str], writes: list[Op], slack: float,
                faults: Iterable[Fault] = ()) -> Violation | None:
    """Does ``value`` (``None``: NOT FOUND), held by ``nodes``, respect last-writer-wins in
    real time over ``writes`` (the SETs and DELETEs of ``key``)?"""
    where = ",".join(nodes)
    if value is None:
        sources = [w for w in writes if w.kind == DELETE and w.result != FAIL]
        settled = max([-INF, *(settled_at(w) for w in sources)])  # no write at all: absent
        source_text = (f"the latest DELETE that could explain it: {max(sources, key=settled_at).describe()}"
                       if sources else "no DELETE of this key: absent since the start")
    else:
        matches = [w for w in writes if w.kind == SET and w.value == value]
        sources = [w for w in matches if w.result != FAIL]
        if not matches:
            return Violation("phantom", key, f"key {key}: {value!r} on {where}, which no SET of this key wrote")
        if not sources:
            return Violation("failed-write-visible", key, f"key {key}: {value!r} on {where}, written only by "
                             f"the refused {matches[0].describe()}")
        settled = max(settled_at(w) for w in sources)
        source_text = f"written by {sources[0].describe()}"
    followers = [w for w in writes if w.result == OK and w.invoke > settled + slack
                 and not (value is None and w.kind == DELETE)
                 and not (w.kind == SET and w.value == value)]
    if not followers:
        return None
    last = max(followers, key=lambda w: w.invoke)
    kind = "resurrected" if value is not None and last.kind == DELETE else "lost"
    first = min(followers, key=lambda w: w.invoke)
    also = f"; the first of the {len(followers)} acknowledged ops that follow it: {first.describe()}" \
        if len(followers) > 1 else ""
    return Violation(kind, key, (
        f"key {key}: {_show(value)} on {where} ({source_text}); expected {last.describe()}, which "
        f"follows it by more than {slack * 1000:.0f} ms{also}{_near(faults, first.invoke)}"))


def check_finals(ops: Iterable[Op], finals: dict[str, dict[str, str | None]], slack: float = DEFAULT_SLACK,
                 faults: Iterable[Fault] = ()) -> list[Violation]:
    """``finals``: node id -> key -> value read after healing and convergence.  Every key that
    any operation touched must be in every node's reads."""
    faults = list(faults)
    writes: dict[str, list[Op]] = defaultdict(list)
    keys: set[str] = set()
    for op in ops:
        keys.add(op.key)
        if op.kind in (SET, DELETE):
            writes[op.key].append(op)
    out: list[Violation] = []
    for key in sorted(keys):
        holders: dict[str | None, list[str]] = defaultdict(list)
        for node in sorted(finals):
            holders[finals[node].get(key)].append(node)
        if len(holders) > 1:
            per_node = ", ".join(f"{','.join(ns)}: {_show(v)}" for v, ns in holders.items())
            out.append(Violation("divergent", key, f"key {key}: nodes disagree: {per_node}"))
        for value, nodes in holders.items():
            v = check_value(key, value, nodes, writes[key], slack, faults)
            if v is not None:
                out.append(v)
    return out


def check_reads(ops: Iterable[Op]) -> list[Violation]:
    """Every value a GET returned was written by a SET that was not refused and that was
    invoked before the GET completed."""
    ops = list(ops)
    by_value = {op.value: op for op in ops if op.kind == SET}
    out: list[Violation] = []
    for op in ops:
        if op.kind != GET or op.result != OK or op.value is None:
            continue
        src = by_value.get(op.value)
        if src is None or src.key != op.key:
            out.append(Violation("phantom", op.key, f"key {op.key}: {op.describe()}, a value no SET of this key wrote"))
        elif src.result == FAIL:
            out.append(Violation("failed-write-visible", op.key,
                                 f"key {op.key}: {op.describe()}, written only by the refused {src.describe()}"))
        elif src.invoke > op.complete:
            out.append(Violation("read-from-future", op.key,
                                 f"key {op.key}: {op.describe()} before its {src.describe()}"))
    return out


_CRASH = re.compile(r"Traceback \(most recent call last\)|process exited with code|failed to start")


def scan_logs(logs: dict[str, str]) -> list[Violation]:
    """Crashes in node logs (node id -> log text): tracebacks (with their exception line), a
    supervisor reporting a child's death, a child that failed to start.  A nemesis's SIGKILL
    takes the whole node at once, so it leaves none of these lines."""
    out: list[Violation] = []
    for node, text in sorted(logs.items()):
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if not _CRASH.search(line):
                continue
            if line.startswith("Traceback"):
                exc = next((lt for lt in lines[i + 1:i + 200] if lt and not lt[0].isspace()), "?")
                out.append(Violation("crash", None, f"{node}: traceback ending in {exc.strip()!r}"))
            else:
                out.append(Violation("crash", None, f"{node}: {line.strip()}"))
    return out
