"""Background write load at a fixed rate, run as its own process during the lag measurement.

Usage: ``python bench/loadgen.py --host 127.0.0.1 --port P --rate 5000``

Every ``--tick`` seconds it sends one pipelined batch of ``rate * tick`` SETs on random keys
``load:<n>`` (n < 100000, 16-byte values) over one connection and reads the replies.  If the
server falls behind, it does not pile up a backlog: the next batch starts when the previous
replies are in (so the offered rate drops to what the server sustains).  It stops when its
stdin reaches EOF (the harness closes it, or dies) or after ``--max-seconds``, then prints one
JSON line: ``{"sent": ..., "errors": ..., "seconds": ..., "rate": ...}``.
"""

from __future__ import annotations

import argparse
import json
import random
import select
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.resp import RespConnection  # noqa: E402


def stdin_closed() -> bool:
    r, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(r) and not sys.stdin.buffer.read1(4096)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=5000.0, help="SETs per second")
    ap.add_argument("--tick", type=float, default=0.005, help="seconds between batches")
    ap.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args(argv)
    if args.host != "127.0.0.1":
        ap.error("loadgen only talks to 127.0.0.1")

    per_tick = max(1, round(args.rate * args.tick))
    rng = random.Random(1)
    value = b"x" * 16
    sent = errors = 0
    start = time.monotonic()
    next_t = start
    with RespConnection(args.host, args.port, timeout=30.0) as conn:
        while time.monotonic() - start < args.max_seconds and not stdin_closed():
            cmds = []
            for _ in range(per_tick):
                k = b"load:%d" % rng.randrange(100_000)
                cmds.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$16\r\n%s\r\n" % (len(k), k, value))
            errors += sum(r != b"OK" for r in conn.pipeline(cmds))
            sent += per_tick
            next_t += args.tick
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # behind: no catch-up burst
    seconds = time.monotonic() - start
    print(json.dumps({"sent": sent, "errors": errors, "seconds": round(seconds, 3),
                      "rate": round(sent / seconds, 1) if seconds > 0 else 0.0}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
