"""Long chaos runs from the command line: the fault-injection harness of tests/chaos, for minutes.

    .venv/bin/python bench/chaos.py --nodes 3 --seconds 600 --seed 1 \\
        --nemeses kill,stop,wipe,tail,snapshot,skew

Starts a real cluster on free loopback ports, runs the writers (SET, DELETE, GET on a small key
space through random nodes) while the nemesis injects the chosen faults one at a time, heals
everything, waits for convergence, checks the history (no lost acknowledged write, no
resurrected delete, identical data and ``zkv verify`` exit 0, no crash but the nemesis's) and
prints a summary.  Exit status 0 when the run passed, 1 when it found violations (they are
printed, and the run's directory - history.jsonl, violations.txt, summary.txt, node logs,
configs and data - is kept and named), 2 on bad arguments.

``skew`` needs Debian's ``faketime`` (``bin/install-faketime``); without it, ``skew`` is dropped
with a message, or the run fails if ``ZKV_REQUIRE_FAKETIME=1``.  ``partition`` (not in the
default list) puts every node in a network namespace of its own and needs root; without
namespaces it is dropped with a message, or the run fails if ``ZKV_REQUIRE_NETNS=1``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.chaos.nemesis import KINDS, NemesisConfig  # noqa: E402
from tests.chaos.netns import Partitions  # noqa: E402
from tests.chaos.runner import RunConfig, run  # noqa: E402
from tests.chaos.workload import WorkloadConfig  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--seconds", type=float, default=600.0, help="seconds of chaos")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--nemeses", default="kill,stop,wipe,tail,snapshot,skew",
                   help=f"comma-separated, from {','.join(KINDS)}")
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--keys", type=int, default=30, help="hot keys per phase (plus 1,000 cold keys)")
    p.add_argument("--rate", type=float, default=300.0, help="operations a second, all writers together")
    p.add_argument("--compound", type=float, default=0.5,
                   help="probability of the compound variant of tail and skew (see tests/chaos/nemesis.py)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="node config setting, e.g. --set fsync=always (repeatable)")
    p.add_argument("--dir", type=Path, help="run directory (default: a new one under /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the run directory even when the run passes")
    p.add_argument("--converge-timeout", type=float, default=90.0)
    return p.parse_args(argv)


def _value(text: str) -> object:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def make_config(a: argparse.Namespace) -> RunConfig:
    kinds = tuple(k.strip() for k in a.nemeses.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise SystemExit(f"unknown nemeses {unknown}; choose from {','.join(KINDS)}")
    faketime = shutil.which("faketime")
    if "skew" in kinds and faketime is None:
        if os.environ.get("ZKV_REQUIRE_FAKETIME") == "1":
            raise SystemExit("skew needs faketime (bin/install-faketime) and ZKV_REQUIRE_FAKETIME=1")
        print("faketime is not installed (bin/install-faketime): running without the skew nemesis", file=sys.stderr)
        kinds = tuple(k for k in kinds if k != "skew") or ("kill",)
    settings = dict(kv.split("=", 1) for kv in a.settings)
    return RunConfig(
        nodes=a.nodes, seconds=a.seconds, seed=a.seed,
        nemesis=NemesisConfig(kinds=kinds, faketime=faketime, compound=a.compound),
        workload=WorkloadConfig(writers=a.writers, keys=a.keys, rate=a.rate),
        settings={k: _value(v) for k, v in settings.items()},
        converge_timeout=a.converge_timeout, name=f"chaos-{'-'.join(kinds)}")


def partitions(cfg: RunConfig) -> Partitions | None:
    """Namespaces when the run has the partition nemesis; else None (dropping it if they
    cannot be made)."""
    if "partition" not in cfg.nemesis.kinds:
        return None
    net = Partitions.create(cfg.nodes)
    if isinstance(net, Partitions):
        return net
    if os.environ.get("ZKV_REQUIRE_NETNS") == "1":
        raise SystemExit(f"{net} (and ZKV_REQUIRE_NETNS=1)")
    print(f"{net}: running without the partition nemesis", file=sys.stderr)
    cfg.nemesis.kinds = tuple(k for k in cfg.nemesis.kinds if k != "partition") or ("kill",)
    return None


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cfg = make_config(a)
    root = a.dir or Path(tempfile.mkdtemp(prefix=f"zkv-chaos-{time.strftime('%Y%m%d-%H%M%S')}-"))
    net = partitions(cfg)
    print(f"chaos run in {root}: {cfg.nodes} nodes, seed {cfg.seed}, {cfg.seconds:.0f}s, "
          f"nemeses {','.join(cfg.nemesis.kinds)}", flush=True)
    try:
        result = run(cfg, root, keep_root=None, keep_always=True, net=net)
    finally:
        if net is not None:
            errors = net.teardown()
            if errors:
                print(f"namespace clean-up failed: {errors}", file=sys.stderr)
    if result.ok and not a.keep and a.dir is None:
        shutil.rmtree(root, ignore_errors=True)
        result.kept = None
    print(result.failure_report(limit=40) if not result.ok else result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
