"""Other local users read nothing of a node: its data directory is 0700 and its files 0600, a
config written by ``zkv init`` is 0600 (it may hold the password), and a node warns at start
when its data directory or a password-holding config is open to others.  Real processes: a
node is started, written to and snapshotted, then the modes of what it left are read."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from tests.cluster.harness import REPO, wait_until


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_nodes_files_are_private(make_cluster) -> None:
    c = make_cluster(1, snapshot_records=100)
    n0 = c.nodes[0]
    n0.start()
    with n0.client() as cl:
        for i in range(300):
            assert cl.cmd(f"SET card{i} 4111-1111-1111-{i:04d}") == b"OK"
    wait_until(lambda: (n0.data_dir / "snapshot.zkv").exists(), timeout=15, what="a snapshot")
    assert n0.stop() == 0
    assert _mode(n0.data_dir) == 0o700
    files = sorted(p for p in n0.data_dir.iterdir() if p.is_file())
    assert {p.name for p in files} >= {"LOCK", "snapshot.zkv", "clock"}
    assert any(p.name.startswith("wal-") for p in files)
    open_to_others = {p.name: oct(_mode(p)) for p in files if _mode(p) & 0o077}
    assert not open_to_others, open_to_others


def test_a_node_warns_about_an_open_data_dir(make_cluster) -> None:
    c = make_cluster(1)
    n0 = c.nodes[0]
    n0.data_dir.mkdir(parents=True, mode=0o755, exist_ok=True)
    n0.data_dir.chmod(0o755)
    n0.start()
    wait_until(lambda: "readable or writable by other users" in n0.log(), timeout=10,
               what="the warning about data_dir")
    assert n0.stop() == 0


def test_init_writes_configs_only_their_owner_reads(tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    r = subprocess.run([sys.executable, "-m", "zkv", "init", "--nodes", "3", "--dir", str(out),
                        "--password"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    configs = sorted(out.glob("*.toml"))
    assert len(configs) == 3
    assert all(_mode(p) == 0o600 for p in configs), {p.name: oct(_mode(p)) for p in configs}


def test_a_node_warns_about_a_password_config_others_can_read(make_cluster) -> None:
    c = make_cluster(1, password="s3cret")
    n0 = c.nodes[0]
    n0.config_path.chmod(0o644)
    n0.start()
    assert "holds the client password and other users may read it" in n0.log()
    assert n0.stop() == 0
