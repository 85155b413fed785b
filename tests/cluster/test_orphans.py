"""A node's store and frontend never outlive its supervisor (``zkv node``): SIGKILLed, it takes
them with it, whether the store was busy at that moment or stopped (SIGSTOP) and continued
later.  Real processes; the supervisor alone is killed, not its process group."""

from __future__ import annotations

import os
import signal
import threading
import time

from tests.cluster.harness import Node, wait_until
from tests.cluster.test_core import _gone, _port_free


def _busy_writer(node: Node, stop: threading.Event) -> threading.Thread:
    """Pipelined SETs of 10 kB values as fast as the node takes them, until ``stop`` or the
    node goes."""

    def run() -> None:
        value = b"v" * 10_000
        try:
            with node.client() as c:
                i = 0
                while not stop.is_set():
                    lines = [b"SET busy%d %s" % (i + j, value) for j in range(50)]
                    c.pipeline(lines)
                    i += 50
        except (OSError, ConnectionError):
            pass  # the node went away, as it should

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _kill_supervisor(node: Node) -> tuple[int, int]:
    assert node.proc is not None
    store, frontend = node.child_pid("store"), node.child_pid("frontend")
    os.kill(node.proc.pid, signal.SIGKILL)  # the supervisor alone, not its process group
    node.proc.wait(10)
    return store, frontend


def _kill_leftovers(pids: tuple[int, ...]) -> None:
    """Orphans of a failed check must not outlive the test."""
    for pid in pids:
        if not _gone(pid):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def _expect_gone(node: Node, pids: tuple[int, ...], timeout: float) -> None:
    try:
        wait_until(lambda: all(_gone(p) for p in pids), timeout=timeout,
                   what="the store and the frontend to exit after their supervisor")
    finally:
        _kill_leftovers(pids)
    wait_until(lambda: _port_free(node.port) and _port_free(node.bus_port), timeout=10,
               what="the client and bus ports to come free")


def test_children_go_when_the_supervisor_is_killed_while_the_store_is_busy(make_cluster) -> None:
    c = make_cluster(1, snapshot_records=2000).start()
    node = c.nodes[0]
    stop = threading.Event()
    writer = _busy_writer(node, stop)
    try:
        time.sleep(1.5)  # writes and snapshots under way
        store, frontend = _kill_supervisor(node)
        _expect_gone(node, (store, frontend), timeout=15)
    finally:
        stop.set()
        writer.join(10)


def test_a_stopped_store_goes_once_continued_after_its_supervisor_died(make_cluster) -> None:
    c = make_cluster(1).start()
    node = c.nodes[0]
    store, frontend = node.child_pid("store"), node.child_pid("frontend")
    os.kill(store, signal.SIGSTOP)
    try:
        _kill_supervisor(node)
        wait_until(lambda: _gone(frontend), timeout=15, what="the frontend to exit")
        time.sleep(1.0)
        assert not _gone(store)  # stopped: it cannot act yet
        os.kill(store, signal.SIGCONT)
    except BaseException:
        _kill_leftovers((store, frontend))
        raise
    _expect_gone(node, (store, frontend), timeout=15)


def test_a_store_started_just_before_its_supervisor_died_does_no_work(make_cluster) -> None:
    """The supervisor is killed after it started the store but before the store could ask to
    die with it (stopped at once, the store is still importing): once continued, the store
    must see that its parent is gone and exit before it recovers anything (an orphan would
    hold the data directory's lock and recover it all, for nothing)."""
    c = make_cluster(1)
    node = c.nodes[0]
    node.start(wait=False)
    assert node.proc is not None
    deadline = time.monotonic() + 20
    children: list[int] = []
    while not children:
        assert time.monotonic() < deadline, "the supervisor started no child"
        assert node.proc.poll() is None, node.log()
        children = node.children()
    store = children[0]
    os.kill(store, signal.SIGSTOP)
    try:
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(10)
    finally:
        os.kill(store, signal.SIGCONT)
    try:
        wait_until(lambda: _gone(store), timeout=10, what="the orphaned store to exit")
    finally:
        if not _gone(store):
            os.kill(store, signal.SIGKILL)
    assert "recovered" not in node.log(), node.log()
