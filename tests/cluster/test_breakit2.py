"""Second break-it review of the fixes in a04ee9e..d345542 (one SUB per peer, acks tied to the
peer's incarnation, WAIT blocking its connection, limits before AUTH, the catch-up server).

Each test here failed against the code it was written for.
"""

from __future__ import annotations

import signal
import socket
import time

from tests.cluster.harness import LineClient, wait_until
from tests.cluster.respclient import Resp, resp_cmd


def _tcp_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_requests_read_after_a_pending_wait_are_not_executed_before_it_returns(make_cluster) -> None:
    """README: WAIT "blocks the connection ... As in Redis, requests pipelined after a WAIT are
    read and answered once it returns."  The connection is held only when more requests follow
    the WAIT *in the same read* (``_process`` holds ``rest`` only if it is non-empty).  A WAIT
    that ends its read leaves the connection reading: a request pipelined after it that arrives
    in the next TCP segment is executed at once, while the WAIT is still pending.  So a client
    doing ``SET a; WAIT 1 t; SET commit`` (commit only once ``a`` is replicated) gets ``commit``
    written even though ``a`` never reached a peer; and one connection can again have up to
    MAX_QUEUED_GROUPS (256) WAITs pending, not one."""
    c = make_cluster(1)  # no peer: ``WAIT 1 0`` can never be met, the connection stays blocked
    n0 = c.nodes[0]
    n0.start()
    a = socket.create_connection(("127.0.0.1", n0.port), timeout=10)
    a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        a.sendall(resp_cmd("WAIT", "1", "0"))  # a read of its own
        with Resp(n0.port) as probe:  # the frontend has read A's WAIT by the time it answers this
            assert probe.cmd("PING") == b"+PONG"
        time.sleep(0.2)
        a.sendall(resp_cmd("SET", "after-wait", "1"))  # pipelined behind the pending WAIT
        deadline = time.monotonic() + 1.5
        with LineClient(n0.port) as b:
            while time.monotonic() < deadline:
                got = b.cmd("GET after-wait")
                assert got == b"NOT FOUND", (
                    "a SET pipelined after a pending WAIT was executed before the WAIT returned "
                    f"(GET from another client: {got!r})")
                time.sleep(0.05)
    finally:
        a.close()


def test_a_restarted_peers_prompt_acks_count_before_its_next_heartbeat(make_cluster) -> None:
    """An ack is believed only if its incarnation is the one the peer's latest heartbeat named
    (server.py ``_receive_bus``: ``incarnation == self.peer_origins.get(peer)``).  A restarted
    peer's first heartbeat is sent the instant its store starts, before the other stores' SUB
    sockets have reconnected to its new PUB, so it is lost; until its *next* heartbeat
    (``heartbeat_ms`` later) every ack of the new incarnation is dropped.  Acks were meant to be
    prompt with heartbeats as the fallback; now, after a peer restart, a min_acks write fails
    with "not enough replicas" (and WAIT under-counts) for a whole heartbeat interval although
    the peer applied and acknowledged the write within milliseconds.  Same bus, same order: an
    ack of an incarnation not seen before is itself proof that the peer restarted.

    Here node1's heartbeat_ms is 20 s (its first heartbeat after the restart is lost for
    certain: node0 is stopped then), node0 has min_acks = 1, ack_timeout_ms = 1000."""
    c = make_cluster(2, heartbeat_ms=200, anti_entropy_ms=60000)
    n0, n1 = c.nodes
    c.write_config(n0, min_acks=1, ack_timeout_ms=1000)
    c.start()
    with LineClient(n0.port) as cl:
        wait_until(lambda: cl.cmd("SET warm 1") == b"OK", timeout=10,
                   what="node0 to hear node1 and accept a min_acks write")
    n1.kill()
    c.write_config(n1, heartbeat_ms=20000)
    n0.signal(signal.SIGSTOP)  # node0 misses node1's first heartbeat (sent as its store starts)
    try:
        n1.start(wait=False)
        wait_until(lambda: _tcp_open(n1.port), timeout=20, what="node1's client port to open")
    finally:
        n0.signal(signal.SIGCONT)
    ok: list[int] = []
    errors: set[bytes] = set()
    deadline = time.monotonic() + 6  # node1's next heartbeat is ~20 s away
    with LineClient(n0.port) as cl:
        i = 0
        while time.monotonic() < deadline and not ok:
            i += 1
            got = cl.cmd(f"SET k{i} v")
            if got == b"OK":
                ok.append(i)
            else:
                errors.add(got)
    assert ok, ("for 6 s after node1 restarted, every min_acks write on node0 failed: node1's "
                "acks (of its new incarnation) are ignored until node1's next heartbeat: "
                f"{sorted(errors)}")
