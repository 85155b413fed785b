"""Issue 10: ``zkv init`` writes configs a cluster runs from as they are.

``--nodes 3 --curve --password`` on one machine: the three nodes start from the written files
(in the directory an operator would cd into), talk CURVE to each other, require the password,
replicate, and ``zkv verify`` agrees.  ``--hosts`` is checked by reading what it wrote.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.cluster.harness import REPO, _die_with_test_run, wait_until
from zkv.config import load_config


def _free_run(n: int) -> int:
    """A base port with ``n`` free loopback ports from it."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 31000)
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port run")


def zkv(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zkv", *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout)


def line(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        buf = b""
        while buf.count(b"\n") < request.count(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf


def test_init_nodes_curve_password_runs_as_written(tmp_path: Path) -> None:
    port, bus = _free_run(3), _free_run(3)
    d = tmp_path / "cluster"
    out = zkv("init", "--nodes", "3", "--dir", str(d), "--curve", "--password",
              "--port", str(port), "--bus-port", str(bus))
    assert out.returncode == 0, out.stderr
    password = out.stdout.split("client password (in every config): ")[1].split()[0]
    assert zkv("init", "--nodes", "3", "--dir", str(d)).returncode == 2  # no silent overwrite
    procs = [subprocess.Popen([sys.executable, "-m", "zkv", "node", f"node{i}.toml"], cwd=d,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, preexec_fn=_die_with_test_run)
             for i in range(3)]
    try:
        for i in range(3):
            wait_until(lambda: line(port + i, b"PING\n") == b"PONG\n", timeout=30, what=f"node{i}")
        auth = b"AUTH " + password.encode() + b"\n"
        assert line(port, b"SET k v\n").startswith(b"ERROR NOAUTH")
        assert line(port, auth + b"SET k v\nDELETE k\nSET k w\n") == b"OK\nOK\nOK\nOK\n"
        wait_until(lambda: line(port + 2, auth + b"GET k\n") == b"OK\nVALUE w\n",
                   what="k on node2")
        v = zkv("verify", "node0.toml", "node1.toml", "node2.toml", "--timeout", "20", cwd=d)
        assert v.returncode == 0, v.stdout + v.stderr
        cfg = load_config(d / "node0.toml")
        assert cfg.keys is not None and all(p.public_key for p in cfg.peers)
        assert (d / "node0.secret").stat().st_mode & 0o777 == 0o600
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_init_hosts_gives_each_host_its_addresses(tmp_path: Path) -> None:
    out = zkv("init", "--hosts", "10.0.0.1,10.0.0.2,10.0.0.2", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    cfgs = [load_config(tmp_path / f"node{i}.toml") for i in range(3)]
    assert [c.listen for c in cfgs] == ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.2:7001"]
    assert [c.bus for c in cfgs] == ["tcp://10.0.0.1:7100", "tcp://10.0.0.2:7100", "tcp://10.0.0.2:7101"]
    assert [c.catchup_port for c in cfgs] == [7200, 7200, 7201]
    assert {p.id for p in cfgs[0].peers} == {"node1", "node2"}
    assert cfgs[1].peers[0].bus == "tcp://10.0.0.1:7100"
    assert cfgs[0].keys is None and cfgs[0].password is None
    assert zkv("init", "--dir", str(tmp_path)).returncode == 2
    assert zkv("init", "--hosts", "a,,b", "--dir", str(tmp_path / "x")).returncode == 2


def test_init_takes_a_chosen_password_or_makes_one(tmp_path: Path) -> None:
    """``--password VALUE`` writes that value (quotes and backslashes escaped as TOML wants);
    ``--password`` alone, last or before another option, writes a generated one."""
    chosen = 'my"se\\cret'
    out = zkv("init", "--nodes", "2", "--dir", str(tmp_path / "a"), "--password", chosen)
    assert out.returncode == 0, out.stderr
    assert load_config(tmp_path / "a" / "node1.toml").password == chosen
    for args in (["--password"], ["--password", "--port", "7300"]):
        out = zkv("init", "--nodes", "2", "--dir", str(tmp_path / "b"), "--force", *args)
        assert out.returncode == 0, out.stderr
        cfg = load_config(tmp_path / "b" / "node0.toml")
        assert cfg.password and len(cfg.password) >= 24 and not cfg.password.startswith("-")
        assert cfg.listen.endswith(":7300" if "--port" in args else ":7000")
    for bad in ("", "two words"):
        assert zkv("init", "--nodes", "2", "--dir", str(tmp_path / "c"), "--password", bad).returncode == 2
