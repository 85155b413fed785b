"""Hashes and sets across a partition, through the real replica core in the simulator: an SREM
and SADD on one side and an SREM of the same member on the other - the member stays (the other
SREM never saw the new add); HSETs of different fields on both sides - both stay; a DEL of a whole hash on one
side and an HSET of a new field on the other - the new field stays, the fields the DEL saw go;
and the checker's control: a member that comes back is seen.  The random schedules of
tests/sim/test_schedules.py have hashes and sets in their workload too (zkv.sim.run)."""

from __future__ import annotations

from pathlib import Path

from tests.sim.helpers import final_check, settle
from zkv.sim.checker import check
from zkv.sim.world import World
from zkv.store import parts
from zkv.store.orset import TAG_ADD, event


def _cut(w: World, a: str, others: list[str], seconds: float) -> None:
    w.partition({(a, b) for b in others} | {(b, a) for b in others}, seconds)


def _started(tmp_path: Path) -> World:
    w = World(11, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    return w


def test_concurrent_writes_across_a_partition_merge_by_the_rules(tmp_path: Path) -> None:
    w = _started(tmp_path)
    w.client_op("n0", "sadd", b"s", b"m")
    w.client_op("n0", "hset", b"h", (b"old", b"1"))
    w.client_op("n0", "hset", b"gone", (b"a", b"1"))
    settle(w, 1.0)
    _cut(w, "n0", ["n1", "n2"], 3.0)
    settle(w, 0.1)
    w.client_op("n0", "srem", b"s", b"m")
    w.client_op("n0", "sadd", b"s", b"m")  # a new dot the other side never sees before its SREM
    w.client_op("n1", "srem", b"s", b"m")
    w.client_op("n0", "hset", b"h", (b"left", b"L"))
    w.client_op("n1", "hset", b"h", (b"right", b"R"))
    w.client_op("n1", "del", b"gone", None)  # removes field a, which it saw
    w.client_op("n0", "hset", b"gone", (b"b", b"2"))  # a field the DEL never saw
    settle(w, 0.5)
    assert list(w.nodes["n1"].replica.ks.members(b"s")) == []  # type: ignore[union-attr]
    assert list(w.nodes["n0"].replica.ks.members(b"s")) == [b"m"]  # type: ignore[union-attr]
    assert final_check(w) == []
    for n in w.nodes.values():
        ks = n.replica.ks  # type: ignore[union-attr]
        assert list(ks.members(b"s")) == [b"m"], n.id
        assert {f: ks.field(b"h", f) for f in ks.fields(b"h")} == {b"old": b"1", b"left": b"L", b"right": b"R"}
        assert {f: ks.field(b"gone", f) for f in ks.fields(b"gone")} == {b"b": b"2"}
    assert sum(1 for op in w.ops if op.kind in ("sadd", "srem", "hset", "del") and op.result == "ok") == 10


def test_the_checker_sees_a_member_that_came_back(tmp_path: Path) -> None:
    """Control: a member's add that no client made, on every replica; the checker must say so."""
    w = _started(tmp_path)
    w.client_op("n0", "sadd", b"s", b"m")
    settle(w, 0.5)
    w.client_op("n1", "srem", b"s", b"m")
    settle(w, 1.0)
    assert check(w.ops, *w.final_state()) == []
    pk = parts.part_key(parts.SET, b"s", b"m")
    for n in w.nodes.values():
        n.replica.ks.apply_many("forger", [(2**60, pk, event(TAG_ADD, []))])  # type: ignore[union-attr]
    assert [v.kind for v in check(w.ops, *w.final_state())] == ["mismembered"]
