"""WAIT waiters in the frontend (zkv.frontend.waits), found by a break-it review.

Every WAIT used to register a Waiter in one frontend-wide list, and every store reply carrying
a WAIT target walked that whole list: a pipeline of WAITs that cannot be met was quadratic, in
the frontend's only thread, and a closed connection's waiters were never removed.  Now a
connection blocks at WAIT (as in Redis), the list is walked only when a peer's figure goes up,
and a connection's waiters go with it.
"""

from __future__ import annotations

import socket
import time

from tests.cluster.respclient import Resp, resp_cmd


def _ping_time(port: int, timeout: float = 30.0) -> float:
    with Resp(port, timeout=timeout) as b:
        t0 = time.monotonic()
        assert b.cmd("PING") == b"+PONG"
        return time.monotonic() - t0


def test_a_pipeline_of_waits_does_not_freeze_the_frontend(make_cluster) -> None:
    """One client sends 3,000 ``WAIT 1 0`` (93 KB; a one-node cluster has no peer, as a
    three-node one asked ``WAIT 3 0``).  Redis blocks that one client; zkv keeps parsing, and
    each WAIT's reply from the store walks every waiter registered before it: ~4.5 million
    waiter checks in the event loop, during which no other client is answered, not even PING."""
    c = make_cluster(1)
    n0 = c.nodes[0]
    n0.start()
    a = socket.create_connection(("127.0.0.1", n0.port))
    try:
        a.sendall(resp_cmd("WAIT", "1", "0") * 3000)
        time.sleep(0.3)  # the frontend has read the pipeline and is answering the store's reply
        took = _ping_time(n0.port)
        assert took < 1.0, f"another client's PING waited {took:.1f}s behind one client's WAITs"
    finally:
        a.close()


def test_waiters_of_a_closed_connection_are_dropped(make_cluster) -> None:
    """A client registers 1,500 ``WAIT 1 0`` and disconnects.  Its waiters stay in the
    frontend's list for ever (their connection is gone, nothing will ever meet them), and every
    later WAIT reply walks them: another client's 1,500 ``WAIT 0 0``, each answerable at once,
    then cost 2.25 million waiter checks."""
    c = make_cluster(1)
    n0 = c.nodes[0]
    n0.start()

    def immediate_waits() -> float:
        with Resp(n0.port, timeout=30) as b:
            t0 = time.monotonic()
            b.send(resp_cmd("WAIT", "0", "0") * 1500)
            replies = [b.line() for _ in range(1500)]
            took = time.monotonic() - t0
        assert replies == [b":0"] * 1500
        return took

    baseline = immediate_waits()  # the same on this machine now, with no waiter left behind
    a = socket.create_connection(("127.0.0.1", n0.port))
    a.sendall(resp_cmd("WAIT", "1", "0") * 1500)
    deadline = time.monotonic() + 20
    while _ping_time(n0.port) > 0.05 and time.monotonic() < deadline:
        time.sleep(0.1)  # until the frontend has registered all of them
    a.close()
    time.sleep(0.2)
    took = immediate_waits()
    # (walking 2.25 million waiters takes seconds; a loaded machine slows both runs alike)
    assert took < max(1.0, 5 * baseline), (
        f"1,500 immediate WAITs took {took:.1f}s against {baseline:.2f}s before: the closed "
        "connection's waiters are still walked on every WAIT")
