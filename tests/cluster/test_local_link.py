"""Issue 10: the frontend-to-store link is closed to other local users.

An unprivileged user (uid 65534) on the node's machine tries to reach the store socket the
supervisor handed to its children.  With the old abstract-namespace socket it got in and could
write behind the frontend's back (its read cache then served stale values); now the socket sits
in a 0700 directory and ``connect()`` is refused.  The node's own processes still use it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster

NOBODY = 65534

PROBE = r"""
import os, socket, sys
os.setgid(65534); os.setuid(65534)
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path)
except PermissionError:
    print("denied")
else:
    print("connected")
"""


def _store_endpoint(node) -> str:
    with open(f"/proc/{node.child_pid('store')}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    i = argv.index(b"zkv.store_main")
    return argv[i + 2].decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (uid 65534)")
def test_another_local_user_cannot_reach_the_store(tmp_path: Path) -> None:
    c = Cluster(tmp_path, n=1).start()
    try:
        node = c.nodes[0]
        endpoint = _store_endpoint(node)
        assert endpoint.startswith("ipc://")
        path = endpoint[len("ipc://"):]
        if path.startswith("@"):
            path = "\0" + path[1:]  # abstract namespace: no file, no permissions
        probe = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True,
                               text=True, timeout=30)
        assert probe.stdout.strip() == "denied", (probe.stdout, probe.stderr)
        # the node itself still works through it, and the socket is not on a shared path
        with node.client() as cl:
            assert cl.cmd("SET k v") == b"OK"
            assert cl.cmd("GET k") == b"VALUE v"
        st = os.stat(os.path.dirname(path))
        assert st.st_mode & 0o777 == 0o700 and st.st_uid == os.geteuid()
        # a clean stop removes the socket
        assert node.stop() == 0
        assert not os.path.exists(path)
    finally:
        c.stop()


def test_link_directory_is_private_even_if_it_existed_open(tmp_path: Path) -> None:
    """A ``run`` directory left world-readable (by hand, a restore, a umask) is closed again."""
    from zkv.linkpath import make_link

    run = tmp_path / "d" / "run"
    run.mkdir(parents=True, mode=0o777)
    os.chmod(run, 0o777)
    stale = run / "store-999999999.sock"
    stale.touch()
    link = make_link(tmp_path / "d", "n0")
    assert os.stat(run).st_mode & 0o777 == 0o700
    assert not stale.exists()
    assert link.endpoint.startswith("ipc:///")
    assert len(os.fsencode(link.path)) <= 100
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(link.path))
    srv.close()
    link.remove()
    assert not link.path.exists()


def test_link_falls_back_to_a_private_temp_dir_for_a_deep_data_dir(tmp_path: Path) -> None:
    from zkv.linkpath import make_link

    deep = tmp_path / ("x" * 60) / ("y" * 60)
    link = make_link(deep, "n0")
    try:
        assert link.temp_dir is not None and link.path.parent == link.temp_dir
        assert os.stat(link.temp_dir).st_mode & 0o777 == 0o700
        assert len(os.fsencode(link.path)) <= 100
    finally:
        link.remove()
    assert not link.temp_dir.exists()
