"""Recovery and catch-up figures: how long a node takes to come back, and how fast it catches up.

    .venv/bin/python bench/recovery.py [--keys 1000000]

1. Loads KEYS keys into a 2-node cluster (pipelined MSET over RESP), then reads the longest
   snapshot fork pause from INFO.
2. Clean restart of node0 (SIGTERM writes a snapshot): time from start to PONG, and the store's
   own "recovered ... in Ns" figure (snapshot load).
3. SIGKILL of node0 after more writes, restart: recovery from snapshot + log replay.
4. Catch-up: node1 is stopped (SIGKILL), EVENTS writes go to node0, node1 restarts; time until
   node1's version vector equals node0's gives events/s.

Everything runs on 127.0.0.1 in a temporary directory and is cleaned up at exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resp_cmd(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self) -> bytes:
        line = self._line()
        if line[:1] == b"$":
            n = int(line[1:])
            if n < 0:
                return b""
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(1 << 20)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        return line

    def call(self, *args: bytes) -> bytes:
        self.s.sendall(resp_cmd(*args))
        return self.reply()

    def close(self) -> None:
        self.s.close()


class BenchNode:
    def __init__(self, root: Path, nid: str, peers: list[tuple[str, int]], bus: int) -> None:
        self.id, self.port, self.bus = nid, free_port(), bus
        self.cfg = root / f"{nid}.toml"
        self.log = root / f"{nid}.log"
        lines = [f'id = "{nid}"', f'listen = "127.0.0.1:{self.port}"', f'bus = "tcp://127.0.0.1:{bus}"',
                 f'data_dir = "{root / nid}"', 'snapshot_records = 100000']
        for pid, pbus in peers:
            lines += ["[[peers]]", f'id = "{pid}"', f'bus = "tcp://127.0.0.1:{pbus}"']
        self.cfg.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        t0 = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "zkv", "node", str(self.cfg)], cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                c = Conn(self.port)
                ok = c.call(b"PING") == b"+PONG"
                c.close()
                if ok:
                    return time.perf_counter() - t0
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.id} did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(120)

    def info(self) -> dict[str, str]:
        c = Conn(self.port)
        text = c.call(b"INFO").decode()
        c.close()
        return dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)

    def recovered_line(self) -> str:
        lines = [l for l in self.log.read_text().splitlines() if "recovered" in l]
        return lines[-1] if lines else ""


def load(port: int, keys: int, start: int = 0, batch: int = 1000, window: int = 32) -> float:
    c = Conn(port)
    t0 = time.perf_counter()
    pending = 0
    for i in range(start, start + keys, batch):
        args = [b"MSET"]
        for k in range(i, min(i + batch, start + keys)):
            args += [b"key:%d" % k, b"value-%010d" % k]
        c.s.sendall(resp_cmd(*args))
        pending += 1
        if pending >= window:
            c.reply()
            pending -= 1
    for _ in range(pending):
        c.reply()
    c.close()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=200_000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zkv-recovery-"))
    b0, b1 = free_port(), free_port()
    n0 = BenchNode(root, "node0", [("node1", b1)], b0)
    n1 = BenchNode(root, "node1", [("node0", b0)], b1)
    try:
        n0.start(), n1.start()
        secs = load(n0.port, args.keys)
        print(f"loaded {args.keys} keys in {secs:.1f}s ({args.keys / secs:,.0f} keys/s via MSET)")
        inf = n0.info()
        print(f"snapshots taken while loading: {inf.get('snapshot_taken')}, "
              f"longest fork pause {inf.get('snapshot_max_fork_pause_ms')} ms, "
              f"last snapshot write {inf.get('snapshot_last_seconds')} s")
        n0.stop(signal.SIGTERM)
        up = n0.start()
        print(f"clean restart: PONG after {up:.2f}s; store: {n0.recovered_line().split(' INFO ')[-1][:120]}")
        load(n0.port, args.keys // 10, start=args.keys)
        n0.stop(signal.SIGKILL)
        up = n0.start()
        print(f"restart after SIGKILL: PONG after {up:.2f}s; store: {n0.recovered_line().split(' INFO ')[-1][:120]}")
        # catch-up rate
        n1.stop(signal.SIGKILL)
        load(n0.port, args.events, start=2 * args.keys)
        target = n0.info()["vv"]
        t0 = time.perf_counter()
        n1.start()
        deadline = time.monotonic() + 600
        while n1.info()["vv"] != target and time.monotonic() < deadline:
            time.sleep(0.02)
        secs = time.perf_counter() - t0
        print(f"catch-up: node1 restarted and applied {args.events} missed events in {secs:.2f}s "
              f"(start-up included): {args.events / secs:,.0f} events/s")
    finally:
        n0.stop(signal.SIGKILL)
        n1.stop(signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(root)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
