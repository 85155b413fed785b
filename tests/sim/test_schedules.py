"""The simulator's CI budget: 25 s of seeded schedules of overlapping faults through
the real replica core, every one healed and checked; and the simulator's own promises (a seed
replays exactly; the checker sees a lost write).  Longer runs: ``ZKV_SIM_SECONDS=55`` (the
budget before the suite had to fit in 8 minutes on 2 cores), ``zkv sim --seconds 600``, or the
soak marker here (10 minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zkv.sim.checker import check
from zkv.sim.run import many, run, shrink
from zkv.sim.world import World

BUDGET_S = float(os.environ.get("ZKV_SIM_SECONDS", "25"))
# The floor under the number of schedules a budget runs, as a rate: 200 in 55 s, as before the
# budget was cut (about 18 a second run on two idle cores; under 7 with the machine shared).
MIN_RATE = 200 / 55


def _report(fails: list) -> str:
    lines = []
    for r in fails[:3]:
        small = shrink(r.seed, r)
        lines.append(f"seed {r.seed}: {small.violations[0][:400]}\n  faults: "
                     + "; ".join(str(f) for f in small.faults)
                     + f"\n  replay: zkv sim --seed {r.seed} --keep '{small.trace[0].split('faults ')[-1].strip('[]')}'")
    return "\n".join(lines)


# Seeds whose failure is known and open: each has its own strict-xfail test, which must start
# passing when the cause is fixed (tests/sim/test_hash_set_faults_sim.py); the budget's run
# leaves them out.
KNOWN_OPEN = {321}
_BUDGET_RUN = """
import json, os, sys
from zkv.sim.run import many
done, fails, secs = many(range(0, 1_000_000), float(sys.argv[1]), workers=os.cpu_count() or 1)
print(json.dumps({"done": done, "secs": secs, "fails": [[r.seed, r.violations[0][:400]] for r in fails]}))
"""


def test_seeded_schedules_with_compound_faults_end_converged_with_every_acknowledged_write() -> None:
    """Seeds 0, 1, 2, ... for the budget, in a process with PYTHONHASHSEED=0: the same seed is
    the same schedule in every run, so a failure here replays exactly (``zkv sim --seed``) and
    a run that passed once passes again on as fast a machine.  (Which schedules a run explores
    beyond those is the soak's and ``zkv sim``'s job.)"""
    res = subprocess.run([sys.executable, "-c", _BUDGET_RUN, str(BUDGET_S)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"}, timeout=BUDGET_S * 4 + 120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    done, secs = out["done"], out["secs"]
    fails = [f for f in out["fails"] if f[0] not in KNOWN_OPEN]
    print(f"{done} schedules in {secs:.1f}s ({done / secs:.1f}/s)")
    assert not fails, "\n".join(f"seed {seed}: {v}\n  replay: PYTHONHASHSEED=0 zkv sim --seed {seed}"
                                 for seed, v in fails[:3])
    assert done >= MIN_RATE * BUDGET_S, f"only {done} schedules ran in {secs:.0f}s"


@pytest.mark.soak
def test_long_simulation() -> None:
    seconds = float(os.environ.get("ZKV_SIM_SOAK_SECONDS", "600"))
    done, fails, secs = many(range(10_000_000, 20_000_000), seconds, workers=os.cpu_count() or 1)
    print(f"{done} schedules in {secs:.1f}s ({done / secs:.1f}/s)")
    assert not fails, _report(fails)


def test_a_seed_replays_exactly() -> None:
    a, b = run(7), run(7)
    assert a.trace == b.trace and a.ops == b.ops and a.acked == b.acked
    assert a.violations == b.violations


def test_the_checker_sees_a_write_a_replica_lost(tmp_path: Path) -> None:
    """Control: take an acknowledged write away from every replica; the checker must say so."""
    w = World(5, tmp_path)
    for i in w.nodes:
        w.start(i)
    w.run_until(1.0)
    op = w.client_op("n0", "set", b"k", b"v")
    w.run_until(3.0)
    assert op.result == "ok"
    finals, vvs = w.final_state()
    assert not check(w.ops, finals, vvs)
    for f in finals.values():
        del f[b"k"]
    assert [v.kind for v in check(w.ops, finals, vvs)] == ["lost"]
    finals["n1"][b"x"] = (1, "n9@0", b"nowhere")
    kinds = {v.kind for v in check(w.ops, finals, vvs)}
    assert kinds == {"lost", "divergent"}


def test_seeds_that_long_runs_found() -> None:
    """Schedules that once ended divergent, replayed (each names the rule that fixed it)."""
    regressions = {
        # anti-entropy spread entries of events held behind a gap; the holder was then wiped
        1003636: {1, 2},
        # a full transfer kept a stale key of the receiver's own incarnation
        1006146: {0, 1, 2, 3},  # (not the liar drawn since)
        # a snapshot taken while events the log held after a hole waited kept their effects
        # and dropped the records saying they were unclaimed
        3001319: {1, 2},
        4000757: {0, 1, 2, 3, 4},
        4001248: {0, 1, 2},
        # a node holding events behind a hole refused to serve full transfers: its peers could
        # not get its new writes, so announced a stable time of 0, so it believed none of
        # their transfers (whose horizon passed that) - a deadlock
        622: {1, 2},
    }
    for seed, keep in regressions.items():
        r = run(seed, keep, heartbeat_ms=100, counters=False, expiry=False, collections=False)  # (as found)
        assert r.ok, f"seed {seed}: {r.violations[:1]}"
    # with counters: a wiped node that took a compacted counter in a transfer, then pulled old
    # events, applied an old SET over it
    assert run(136, {0, 1, 3}, counters=True, expiry=False, collections=False).ok


def test_a_counter_that_lost_a_set_on_one_node_settles_the_same_everywhere() -> None:
    """Two nodes that each wrote alone past a lost snapshot, a crash-looping node, a liar and a
    skewed restart: one node lost a SET of a counter that its peers hold, and after compaction
    held the counter 10 short of the others under the same version, which anti-entropy could
    not settle until equal versions were ranked by value (zkv.store.counter.tie_rank)."""
    import subprocess
    import sys
    # (the core iterates some sets of names, whose order follows the process's hash seed: the
    # schedule was found, and fails, with PYTHONHASHSEED=0)
    code = "from zkv.sim.run import run; import sys; sys.exit(0 if run(80001815, counters=True, expiry=False, collections=False).ok else 1)"
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "0"},
                         timeout=120)
    assert res.returncode == 0


def test_checker_fixes_that_long_runs_found() -> None:
    """Seeds whose runs were right and the checker wrong."""
    # a store that died appending a write (disk full) was counted among that write's holders,
    # from its memory, so when the only disk that held it was damaged the loss was reported
    # instead of excused
    assert run(30001094, counters=False, expiry=False, collections=False).ok
    # an acknowledged DELETE whose tombstone only one node kept (from an abandoned transfer:
    # its event went with a lost snapshot) was called resurrected where the others held an
    # older tombstone of that key - a key that reads as deleted everywhere
    assert run(40001880, counters=False, expiry=False, collections=False).ok


def test_an_older_tombstone_is_no_resurrection_an_older_value_is(tmp_path: Path) -> None:
    w = World(6, tmp_path)
    for i in w.nodes:
        w.start(i)
    w.run_until(1.0)
    w.client_op("n0", "del", b"k")
    w.run_until(1.5)
    op = w.client_op("n0", "del", b"k")
    w.run_until(3.0)
    finals, vvs = w.final_state()
    assert op.version is not None
    for f in finals.values():
        f[b"k"] = (op.version[0] - 5, "n1@0", None)
    assert not check(w.ops, finals, vvs)
    for f in finals.values():
        f[b"k"] = (op.version[0] - 5, "n1@0", b"old")
    assert {v.kind for v in check(w.ops, finals, vvs)} >= {"resurrected"}
