"""Unit tests of the chaos checker (tests/chaos/checker.py) on hand-made histories.

Each rule is shown both ways: a history it must accept and the smallest one it must reject,
including the edges (concurrent within the slack, indeterminate writes, deletes of keys never
written, refused writes)."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.checker import check_finals, check_reads, scan_logs
from tests.chaos.history import DELETE, FAIL, GET, OK, SET, UNKNOWN, Fault, History, Op

NODES = ("n0", "n1", "n2")


def op(kind: str, key: str, value: str | None, invoke: float, complete: float, result: str = OK,
       writer: int = 0, node: str = "n0") -> Op:
    return Op(writer, kind, key, value, node, invoke, complete, result)


def everywhere(**values: str | None) -> dict[str, dict[str, str | None]]:
    return {n: dict(values) for n in NODES}


def kinds(violations) -> list[str]:
    return [v.kind for v in violations]


def test_last_acknowledged_write_wins() -> None:
    h = [op(SET, "k", "a", 0.0, 0.01), op(SET, "k", "b", 1.0, 1.01)]
    assert check_finals(h, everywhere(k="b")) == []
    [v] = check_finals(h, everywhere(k="a"))
    assert v.kind == "lost" and "'b'" in v.message and "n0,n1,n2" in v.message


def test_concurrent_writes_within_slack_may_go_either_way() -> None:
    h = [op(SET, "k", "a", 0.0, 0.10), op(SET, "k", "b", 0.12, 0.13, writer=1)]
    assert check_finals(h, everywhere(k="a"), slack=0.05) == []
    assert check_finals(h, everywhere(k="b"), slack=0.05) == []
    # b invoked 20 ms after a completed: concurrent under 50 ms of slack, ordered under 10 ms
    assert kinds(check_finals(h, everywhere(k="a"), slack=0.01)) == ["lost"]


def test_overlapping_writes_are_concurrent() -> None:
    h = [op(SET, "k", "a", 0.0, 2.0), op(SET, "k", "b", 1.0, 1.01, writer=1)]
    assert check_finals(h, everywhere(k="a")) == []
    assert check_finals(h, everywhere(k="b")) == []


def test_indeterminate_write_may_win_at_any_time() -> None:
    h = [op(SET, "k", "a", 0.0, 5.0, result=UNKNOWN), op(SET, "k", "b", 9.0, 9.01)]
    assert check_finals(h, everywhere(k="a")) == []
    assert check_finals(h, everywhere(k="b")) == []


def test_indeterminate_write_may_never_happen() -> None:
    h = [op(SET, "k", "a", 0.0, 0.01), op(SET, "k", "b", 1.0, 6.0, result=UNKNOWN)]
    assert check_finals(h, everywhere(k="a")) == []


def test_refused_write_must_not_be_visible() -> None:
    h = [op(SET, "k", "a", 0.0, 0.01), op(SET, "k", "b", 1.0, 1.01, result=FAIL)]
    assert check_finals(h, everywhere(k="a")) == []
    assert kinds(check_finals(h, everywhere(k="b"))) == ["failed-write-visible"]


def test_refused_write_does_not_have_to_win() -> None:
    h = [op(SET, "k", "a", 0.0, 0.01), op(DELETE, "k", None, 1.0, 1.01, result=FAIL)]
    assert check_finals(h, everywhere(k="a")) == []


def test_resurrected_delete() -> None:
    h = [op(SET, "k", "a", 0.0, 0.01), op(DELETE, "k", None, 1.0, 1.01)]
    assert check_finals(h, everywhere(k=None)) == []
    [v] = check_finals(h, everywhere(k="a"))
    assert v.kind == "resurrected" and "DELETE" in v.message


def test_write_after_delete_must_win() -> None:
    h = [op(DELETE, "k", None, 0.0, 0.01), op(SET, "k", "a", 1.0, 1.01)]
    assert kinds(check_finals(h, everywhere(k=None))) == ["lost"]


def test_set_after_delete_after_set_is_lost_not_resurrected() -> None:
    h = [op(SET, "k", "a", 0.0, 0.01), op(DELETE, "k", None, 1.0, 1.01), op(SET, "k", "b", 2.0, 2.01)]
    assert kinds(check_finals(h, everywhere(k="a"))) == ["lost"]
    assert check_finals(h, everywhere(k="b")) == []


def test_key_never_acknowledged_may_be_absent() -> None:
    h = [op(SET, "k", "a", 0.0, 0.5, result=UNKNOWN), op(DELETE, "j", None, 0.0, 0.01)]
    assert check_finals(h, everywhere(k=None, j=None)) == []
    assert check_finals(h, everywhere(k="a", j=None)) == []


def test_acknowledged_write_lost_to_absence() -> None:
    [v] = check_finals([op(SET, "k", "a", 0.0, 0.01)], everywhere(k=None))
    assert v.kind == "lost" and "NOT FOUND" in v.message


def test_any_of_several_deletes_may_be_the_source_of_absence() -> None:
    h = [op(DELETE, "k", None, 0.0, 0.01), op(SET, "k", "a", 1.0, 1.01), op(DELETE, "k", None, 2.0, 2.01)]
    assert check_finals(h, everywhere(k=None)) == []


def test_phantom_value() -> None:
    assert kinds(check_finals([op(SET, "k", "a", 0.0, 0.01)], everywhere(k="zzz"))) == ["phantom", ]


def test_value_of_another_key_is_phantom() -> None:
    h = [op(SET, "k", "a", 0.0, 0.01), op(SET, "j", "b", 0.0, 0.01)]
    assert kinds(check_finals(h, everywhere(k="b", j="b"))) == ["phantom"]


def test_divergence_names_each_node_and_checks_each_value() -> None:
    h = [op(SET, "k", "a", 0.0, 0.01), op(SET, "k", "b", 1.0, 1.01)]
    finals = everywhere(k="b")
    finals["n2"]["k"] = "a"
    vs = check_finals(h, finals)
    assert kinds(vs) == ["divergent", "lost"]
    assert "n0,n1: 'b'" in vs[0].message and "n2: 'a'" in vs[0].message
    assert "'a' on n2 " in vs[1].message


def test_missing_key_on_one_node_is_divergence() -> None:
    finals = everywhere(k="a")
    del finals["n1"]["k"]
    h = [op(SET, "k", "a", 0.0, 0.01)]
    assert kinds(check_finals(h, finals)) == ["divergent", "lost"]


def test_violation_names_faults_around_it() -> None:
    h = [op(SET, "k", "a", 0.0, 0.01), op(SET, "k", "b", 1.0, 1.01, node="n2")]
    [v] = check_finals(h, everywhere(k="a"), faults=[Fault("tail", "n2", 1.5, 2.5, "cut 300 bytes")])
    assert "tail on n2" in v.message and "via n2" in v.message


def test_reads() -> None:
    h = [op(SET, "k", "a", 1.0, 1.01), op(GET, "k", "a", 1.005, 1.02), op(GET, "k", None, 0.0, 0.01)]
    assert check_reads(h) == []
    assert kinds(check_reads([*h, op(GET, "k", "zz", 2.0, 2.01)])) == ["phantom"]
    assert kinds(check_reads([*h, op(GET, "k", "a", 0.0, 0.5)])) == ["read-from-future"]
    refused = [op(SET, "k", "b", 0.0, 0.01, result=FAIL), op(GET, "k", "b", 1.0, 1.01)]
    assert kinds(check_reads(refused)) == ["failed-write-visible"]
    # a GET that got no reply says nothing
    assert check_reads([op(GET, "k", "zz", 2.0, 2.01, result=UNKNOWN)]) == []


LOG_OK = """2026-12-02 00:00:00,000 node0 node INFO node node0 up in 0.50s
2026-12-02 00:00:01,000 node0 store ERROR clock skew: this node's clock is 3000 ms ahead
"""
LOG_CRASH = """2026-12-02 00:00:00,000 node1 node INFO node node1 up in 0.50s
Traceback (most recent call last):
  File "x.py", line 1, in <module>
    f()
OverflowError: int too big to convert
2026-12-02 00:00:02,000 node1 node ERROR store process exited with code 1; stopping the node
"""


def test_scan_logs() -> None:
    assert scan_logs({"node0": LOG_OK}) == []
    vs = scan_logs({"node0": LOG_OK, "node1": LOG_CRASH})
    assert kinds(vs) == ["crash", "crash"]
    assert "OverflowError: int too big" in vs[0].message and vs[0].message.startswith("node1")
    assert "store process exited with code 1" in vs[1].message


def test_history_round_trip(tmp_path: Path) -> None:
    h = History()
    h.add_op(op(SET, "k", "a", 0.0, 0.01, result=UNKNOWN))
    h.add_fault(Fault("kill", "n1", 0.5, 1.0))
    h.dump(tmp_path / "h.jsonl")
    back = History.load(tmp_path / "h.jsonl")
    assert back.ops == h.ops and back.faults == h.faults and back.wall0 == h.wall0
