"""Snapshot file speed: write and read back a snapshot of N entries (default 1,000,000).

    .venv/bin/python bench/snapshot_big.py [--entries 1000000] [--max-seconds 20]

Moved here from the unit tests (tests/test_snapshot.py), where a 1M-entry round trip cost the
suite several seconds and its timing bound said nothing about correctness (the round-trip tests
there cover that).  It writes the snapshot with ``zkv.store.snapshot.write_snapshot`` to a
temporary directory, reads it back with ``read_snapshot`` (checksums verified, every chunk
decoded), checks the entry count and metadata, and prints the figures.  Exit status 1 if the
round trip is wrong or takes longer than ``--max-seconds`` (a regression guard, not a target).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from zkv.store.snapshot import read_snapshot, write_snapshot  # noqa: E402


def entries(n: int) -> list[tuple[bytes, int, str, bytes | None]]:
    return [(b"k%09d" % i, 1_700_000_000_000 + i, "node-a", b"v%09d" % i) for i in range(n)]


def round_trip(n: int, directory: Path) -> dict[str, float]:
    """Write and read back ``n`` entries; the figures, or AssertionError if the data differ."""
    path = directory / "big.snap"
    data = entries(n)
    t0 = time.perf_counter()
    written = write_snapshot(path, data, {"vv": {"node-a": n}})
    t1 = time.perf_counter()
    meta, chunks = read_snapshot(path)
    count = sum(len(c) for c in chunks)
    t2 = time.perf_counter()
    assert written == n and count == n, f"wrote {written}, read {count}, expected {n}"
    assert meta == {"vv": {"node-a": n}}, meta
    return {"write_s": t1 - t0, "read_s": t2 - t1, "total_s": t2 - t0,
            "file_mb": os.path.getsize(path) / 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--max-seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zkv-snapbench-") as tmp:
        try:
            fig = round_trip(args.entries, Path(tmp))
        except AssertionError as exc:
            print(f"snapshot round trip wrong: {exc}", file=sys.stderr)
            return 1
    print(f"{args.entries:,} entries: write {fig['write_s']:.2f}s, read+verify+decode "
          f"{fig['read_s']:.2f}s, file {fig['file_mb']:.1f} MB")
    if fig["total_s"] > args.max_seconds:
        print(f"slower than --max-seconds {args.max_seconds}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
