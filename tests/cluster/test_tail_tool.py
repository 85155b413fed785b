"""Issue 10: ``zkv tail`` filters (``--key GLOB``, ``--origin``), ``--stats``, and catch-up
traffic shown apart from live events."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.cluster.harness import REPO, Cluster, wait_until
from zkv.tail import HEARD_S


def run_tail(cfg: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "zkv", "tail", str(cfg), "--all", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen[str], timeout: float = 20) -> str:
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        p.kill()
    return out


def test_tail_filters_by_key_and_origin(make_cluster) -> None:
    c: Cluster = make_cluster(3, heartbeat_ms=100).start()
    n0, n1, _n2 = c.nodes
    p = run_tail(n0.config_path, "--key", "user:*", "--origin", "node1", "-n", "3")
    deadline = time.monotonic() + 20
    i = 0
    while p.poll() is None and time.monotonic() < deadline:
        with n0.client() as a, n1.client() as b:
            a.cmd(f"SET user:{i} from-node0")  # wrong origin
            b.cmd(f"SET order:{i} from-node1")  # wrong key
            b.cmd(f"SET user:{i} from-node1")
        i += 1
        time.sleep(0.1)
    out = finish(p)
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert all("node1@" in line and "SET user:" in line and "from-node1" in line for line in lines), out


def test_tail_shows_catchup_apart_and_stats(make_cluster) -> None:
    import threading

    c: Cluster = make_cluster(3, heartbeat_ms=100, anti_entropy_ms=300).start()
    n0, n1, n2 = c.nodes
    n2.stop()
    with n0.client() as a:
        for i in range(200):
            a.cmd(f"SET k{i % 20} v{i}")
            if i % 9 == 0:
                a.cmd(f"DELETE k{i % 20}")
    p = run_tail(n0.config_path)
    stats = run_tail(n0.config_path, "--stats")
    out: list[str] = []
    stats_out: list[str] = []
    readers = [threading.Thread(target=lambda f=f, to=to: to.extend(f), daemon=True)
               for f, to in ((p.stdout, out), (stats.stdout, stats_out))]
    for r in readers:
        r.start()
    try:
        def tail_hears_both() -> bool:  # subscribed to both before node2 comes back and pulls
            for i, node in enumerate((n0, n1)):
                with node.client() as a:
                    a.cmd(f"SET tail-probe{i} x")
            return all(any(f"SET tail-probe{i} " in line for line in list(out)) for i in (0, 1))
        wait_until(tail_hears_both, timeout=20, interval=0.1,
                   what="zkv tail to print live events of node0 and node1")
        n2.start()
        wait_until(lambda: n2.get("k19") == n0.get("k19"), what="node2 to catch up")
        wait_until(lambda: any(" catch-up " in line for line in list(out))
                   and sum("events/s" in line for line in list(stats_out)) >= 2,
                   timeout=20, what="the catch-up lines and two --stats lines")
    finally:
        for t in (p, stats):
            t.terminate()
            try:
                t.wait(20)
            finally:
                t.kill()
    for r in readers:
        r.join(10)
    text = "".join(out)
    catchup = [line for line in text.splitlines() if " catch-up " in line]
    assert catchup, text[-2000:]
    assert any("-> a peer" in line or "-> node2" in line for line in catchup)
    # pulled events are not printed as live ones (only live events have '#seq SET/DEL')
    assert all("#" not in line.split(" catch-up ")[0] for line in catchup)
    stats_lines = [line for line in "".join(stats_out).splitlines() if "events/s" in line]
    assert len(stats_lines) >= 2 and "behind (events)" in stats_lines[-1], stats_lines


class _Tail:
    """``zkv tail ARGS``, started at once, its stderr read in the background, so that tails
    that do not depend on each other wait out their HEARD_S together."""

    def __init__(self, args: list[str]) -> None:
        import threading

        self.started = time.monotonic()
        self.p = subprocess.Popen([sys.executable, "-m", "zkv", "tail", *args], cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.p.stderr),  # type: ignore[arg-type]
                                       daemon=True)
        self.reader.start()

    def stderr_within(self, seconds: float, until: str | None = None) -> str:
        """Its stderr once it says ``until`` (at most ``seconds`` after it was started), or
        ``seconds`` after it was started (then it is stopped; it must still run)."""
        deadline = self.started + seconds
        try:
            while time.monotonic() < deadline:
                if self.p.poll() is not None:
                    self.reader.join(5)
                    raise AssertionError(f"zkv tail exited ({self.p.returncode}): {''.join(self.lines)}")
                if until is not None and until in "".join(self.lines):
                    break
                time.sleep(0.05)
        finally:
            self.kill()
        err = "".join(self.lines)
        assert "# tailing" in err, err
        return err

    def kill(self) -> None:
        self.p.kill()
        self.p.wait(10)
        self.reader.join(5)


def test_tail_says_when_it_hears_nothing_or_nothing_matches(make_cluster) -> None:
    """It used to print its header and wait for ever: on a port where nothing listens, and with
    --origin of a node that does not exist."""
    from tests.cluster.harness import free_port

    tails: list[_Tail] = []
    try:
        nowhere = _Tail([f"tcp://127.0.0.1:{free_port()}"])
        tails.append(nowhere)
        c = make_cluster(2, heartbeat_ms=100).start()
        cfg = str(c.nodes[0].config_path)
        unknown = _Tail([cfg, "--origin", "node9"])
        known = _Tail([cfg, "--origin", "node1"])
        tails += [unknown, known]
        err = nowhere.stderr_within(10, until="nothing heard from")
        assert "nothing heard from" in err, err
        err = unknown.stderr_within(10, until="no node or origin")
        assert "no node or origin 'node9'" in err, err
        err = known.stderr_within(HEARD_S + 0.5)  # past the time it would have said so
        assert "nothing" not in err.replace("# tailing", ""), err
        c.nodes[1].kill()  # with --all, a configured peer that sends nothing is named
        silent = _Tail([cfg, "--all"])
        tails.append(silent)
        err = silent.stderr_within(10, until="nothing heard from node1 (")
        assert "nothing heard from node1 (" in err, err
    finally:
        for t in tails:
            t.kill()
