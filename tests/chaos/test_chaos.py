"""Chaos runs in the test suite: real clusters, concurrent writers, one fault at a time, a strict checker.

This module owns the chaos tests; the harness is in this package (workload.py: writers and
history; nemesis.py: the faults; checker.py: the rules; runner.py: one run from start to
verdict).  The default suite runs 8 s of chaos (about 11 s with starts and checks), split
by fault family so a failure names its family: processes (SIGKILL, SIGSTOP); network
partitions (namespaces, root only), disks (wiped ``data_dir``, lost log tail, corrupted
snapshot), clocks (``faketime``) and all but clocks and partitions on five nodes run behind
``-m soak``, since the simulator runs those faults in every test run (and
tests/cluster/test_partition.py real partitions, tests/cluster/test_skew_and_forgery.py
faketime nodes, tests/cluster/test_durability.py and test_machine_faults.py damaged disks).  ``-m soak`` runs
ten-minute ones with every fault (``bench/chaos.py`` runs any length from the command line).

Every run must end with: identical GET replies on every node and ``zkv verify`` exit 0; no
acknowledged write lost and no delete undone (last writer wins in real time, beyond a slack of
50 ms, or the clock bound plus 100 ms when clocks were skewed); no value from nowhere; no
crash but the nemesis's.  A failed run keeps its history, violations, node logs and data under
``$ZKV_CHAOS_KEEP`` (default /tmp/zkv-chaos) and names the directory in the failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.chaos.nemesis import ALL, CONTROL, NemesisConfig
from tests.chaos.netns import Partitions
from tests.chaos.runner import RunConfig, run
from tests.chaos.workload import WorkloadConfig

KEEP = Path(os.environ.get("ZKV_CHAOS_KEEP", "/tmp/zkv-chaos"))


def _faketime(required: bool) -> str | None:
    """The faketime program; when missing, skip (``required``) or return None, unless
    ``ZKV_REQUIRE_FAKETIME=1``, which turns the skip into a failure."""
    exe = shutil.which("faketime")
    if exe is None:
        reason = "faketime (Debian package 'faketime', bin/install-faketime) is not installed"
        if os.environ.get("ZKV_REQUIRE_FAKETIME") == "1":
            pytest.fail(reason + " and ZKV_REQUIRE_FAKETIME=1")
        if required:
            pytest.skip(reason)
        print(reason + ": running without the skew nemesis")
    return exe


def _partitions(nodes: int, required: bool) -> Partitions | None:
    """Network namespaces for ``nodes`` nodes; when they cannot be made, skip (``required``)
    or return None, unless ``ZKV_REQUIRE_NETNS=1`` (CI), which turns that into a failure."""
    net = Partitions.create(nodes)
    if isinstance(net, Partitions):
        return net
    if os.environ.get("ZKV_REQUIRE_NETNS") == "1":
        pytest.fail(f"{net} (and ZKV_REQUIRE_NETNS=1)")
    if required:
        pytest.skip(net)
    print(f"{net}: running without the partition nemesis")
    return None


def _run(tmp_path: Path, name: str, nodes: int, seconds: float, kinds: tuple[str, ...], seed: int,
         **nemesis: object) -> None:
    faketime = _faketime(required=kinds == ("skew",)) if "skew" in kinds else None
    if faketime is None:
        kinds = tuple(k for k in kinds if k != "skew")
    net = _partitions(nodes, required=kinds == ("partition",)) if "partition" in kinds else None
    if net is None:
        kinds = tuple(k for k in kinds if k != "partition")
    cfg = RunConfig(nodes=nodes, seconds=seconds, seed=seed, name=name,
                    nemesis=NemesisConfig(kinds=kinds, faketime=faketime, **nemesis),
                    workload=WorkloadConfig())
    try:
        result = run(cfg, tmp_path / "run", keep_root=KEEP, net=net)
    finally:
        errors = net.teardown() if net is not None else []
    assert not errors, f"namespace clean-up failed: {errors}"
    print(result.summary())
    assert result.ok, result.failure_report()
    assert len(result.history.faults) >= 2, f"too few faults to mean anything:\n{result.summary()}"
    acked = sum(1 for o in result.history.ops if o.result == "ok" and o.kind != "get")
    assert acked >= 200, f"too few acknowledged writes to mean anything:\n{result.summary()}"


def test_chaos_processes(tmp_path: Path) -> None:
    """SIGKILL (one node, or every node at once) and SIGSTOP, with restarts."""
    _run(tmp_path, "processes", 3, 8, ("kill", "stop"), seed=1)


@pytest.mark.soak  # (the simulator runs these faults in every test run, through the real core)
def test_chaos_disks(tmp_path: Path) -> None:
    """Wiped data_dir, lost log tail (also with only a stopped peer holding the lost events),
    corrupted snapshot."""
    _run(tmp_path, "disks", 3, 9, ("wipe", "tail", "snapshot"), seed=2)


@pytest.mark.soak  # (likewise; tests/cluster/test_skew_and_forgery.py runs faketime nodes)
def test_chaos_clocks(tmp_path: Path) -> None:
    """A node restarted under faketime, 5 s ahead, then 0.3 s ahead, then 0.3 s behind (both
    within the bound); each time a peer that never heard the skewed clock takes writes alone
    after it.  (Clocks far behind are in the soak runs and bench/chaos.py: a node far behind
    that has no fresh word from its peers - just resumed, or cut off - cannot know it.)"""
    # 16 s: a node restarted on the true clock after running 5 s ahead refuses writes until
    # its wall clock passes its last stamp, so one such fault can take most of 10 s.
    _run(tmp_path, "clocks", 3, 11, ("skew",), seed=3, skew_hold=(0.5, 1.5), compound=1.0,
         skews=("+5s", "+0.3s", "-0.3s"))


@pytest.mark.soak
def test_chaos_five_nodes(tmp_path: Path) -> None:
    """Every fault but clock skew (which has its own test; the soak runs take it on five).
    A soak run: the simulator's budget in every test run takes five replicas on every third
    schedule, with every fault, overlapping."""
    _run(tmp_path, "five", 5, 10, tuple(k for k in ALL if k != "skew"), seed=4)


@pytest.mark.soak  # (the simulator partitions in every test run, and tests/cluster/test_partition.py
# cuts the bus for real - namespaces, writes on both sides, a cut outlasting TCP - in every run)
def test_chaos_partitions(tmp_path: Path) -> None:
    """A node cut off the replication bus (network namespaces; needs root, skipped without,
    a failure with ZKV_REQUIRE_NETNS=1) while the writers go on using every node."""
    _run(tmp_path, "partitions", 3, 8, ("partition",), seed=5, partition_hold=(0.5, 3.0))


def test_chaos_control_sees_lost_writes(tmp_path: Path) -> None:
    """The harness must fail a run that really loses acknowledged writes: every peer down
    while one node alone acknowledges writes, then that node's data_dir wiped."""
    cfg = RunConfig(nodes=3, seconds=0.5, seed=6, name="control",
                    nemesis=NemesisConfig(kinds=(CONTROL,)), workload=WorkloadConfig())
    result = run(cfg, tmp_path / "run")
    print(result.summary())
    assert not result.ok and result.verdict.counts()["lost"] > 0, result.summary()
    # (the counters' increments on the wiped node are lost too: miscounted)
    assert set(result.verdict.counts()) <= {"lost", "resurrected", "miscounted"}, result.failure_report()


@pytest.mark.soak
@pytest.mark.parametrize("nodes", [3, 5])
def test_chaos_soak(tmp_path: Path, nodes: int) -> None:
    _run(tmp_path, "soak", nodes, 600, (*ALL, "partition"), seed=nodes)
