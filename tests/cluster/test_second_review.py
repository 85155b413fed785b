"""Found by a second break-it review of the first review's fixes (one SUB per peer, acks tied
to the peer's incarnation, WAIT blocking its connection, limits before AUTH, the catch-up
server): a WAIT that ended its read did not block what came next; a restarted peer's prompt
acks were ignored until its second heartbeat; an array of many small bulks passed the limits
before AUTH; a client that closed during WAIT n 0 was never let go; a burst of pulls lost
replies at the catch-up socket's send limit.  Each test failed on the code it was written for
(d345542); the new node's join order went to the README (add it to the others' configs first).
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


def test_before_auth_an_array_of_many_small_bulks_cannot_be_buffered(make_cluster) -> None:
    """Before AUTH a bulk over 16 KB ends the connection (``_unauthenticated``), but the number
    of bulks in one RESP array is still up to 1,048,576 (``parse_command``'s max_args), and the
    parser keeps the bulks of an unfinished array (``resume``).  So ``*1000000`` followed by
    16,000-byte bulks lets a client that knows no password make the frontend hold up to 16 GB
    for one request: here three connections of 32 MB each grow it by about 190 MB.  Redis
    (since CVE-2021-32675) also refuses an unauthenticated multibulk length over 10."""
    from tests.cluster.respclient import rss_mb

    c = make_cluster(1, password="s3cret")
    n0 = c.nodes[0]
    n0.start()
    fe = n0.child_pid("frontend")
    with Resp(n0.port) as probe:
        assert probe.cmd("GET", "x").startswith(b"-NOAUTH")
    before = rss_mb(fe)
    bulk = b"$16000\r\n" + b"a" * 16000 + b"\r\n"
    socks = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", n0.port), timeout=10)
            socks.append(s)
            try:
                s.sendall(b"*1000000\r\n")
                sent = 0
                while sent < 32 * 1024 * 1024:
                    s.sendall(bulk * 64)
                    sent += len(bulk) * 64
            except OSError:
                pass  # closed by the node: what should happen
        grown = 0.0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            grown = max(grown, rss_mb(fe) - before)
            time.sleep(0.05)
        assert grown < 16, (f"three connections that never authenticated grew the frontend by "
                            f"{grown:.0f} MB with arrays of 16,000-byte bulks")
    finally:
        for s in socks:
            s.close()


def test_clients_that_close_during_a_wait_do_not_stay_connected(make_cluster) -> None:
    """A client that gives up on a ``WAIT n 0`` (a client-side socket timeout, then reconnect:
    what redis-py does) and closes its connection is never let go: ``eof_received`` keeps the
    transport open for the reply still owed, which never comes, and when more requests followed
    the WAIT the connection is not even read any more (``_hold`` pauses reading), so the close
    is not seen at all.  The connection stays in ``clients`` with its waiter, its descriptor and
    its place under ``max_clients`` until the WAIT is met; with a peer down, every retry costs
    one more, and once ``max_clients`` of them pile up the node refuses every client.  Redis
    frees a blocked client when it closes."""
    c = make_cluster(1, max_clients=8)  # no peer: like a WAIT for a peer that is down
    n0 = c.nodes[0]
    n0.start()
    for i in range(12):
        s = socket.create_connection(("127.0.0.1", n0.port), timeout=5)
        tail = resp_cmd("PING") if i % 2 else b""  # both: the WAIT alone, and held requests
        s.sendall(resp_cmd("WAIT", "1", "0") + tail)
        time.sleep(0.02)
        s.close()  # the client gave up

    deadline = time.monotonic() + 5
    ok = False
    last = b""
    while time.monotonic() < deadline and not ok:
        with LineClient(n0.port, timeout=3) as cl:
            last = cl.cmd("PING")
            ok = last == b"PONG"
        time.sleep(0.1)
    assert ok, (f"12 clients that closed while in WAIT 1 0 still hold their connections: a new "
                f"client gets {last!r}")



def test_a_burst_of_pulls_from_one_peer_is_answered_in_full(make_cluster) -> None:
    """The catch-up ROUTER's send high-water mark is now 16 messages (CATCHUP_SNDHWM).  A store
    that hears a heartbeat announcing events of many origins it lacks sends one PULL per origin
    at once to that peer (server.py ``_on_heartbeat``), and the peer answers them in one turn of
    its loop; past the 16th reply ``send_multipart(NOBLOCK)`` raises Again and the reply is
    dropped without a trace (catchup_server.py ``serve``), although the requester reads
    eagerly: ZeroMQ gives the pipe's credit back only in batches.  The requester asks again
    only after FETCH_TIMEOUT (3 s), and again at most ~16 get through.  Origins pile up (one per
    start of every node), so a node back from a while away can wait several FETCH_TIMEOUTs.
    (A cluster run of this: a node lacking 26 origins still lacked 10 of them 3.7 s after it
    came back.)  Here a requester sends 40 pulls, of 40 origins, in one burst, and reads."""
    import zmq

    from zkv.replication import catchup as wire
    from tests.cluster.harness import free_port

    port = free_port()
    c = make_cluster(1, catchup_port=port)
    n0 = c.nodes[0]
    n0.start()
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.connect(f"tcp://127.0.0.1:{port}")
    try:
        s.send_multipart([wire.INFO])  # connected and served once
        assert s.poll(5000), "no INFO reply from the catch-up socket"
        s.recv_multipart()
        for i in range(40):
            s.send_multipart(wire.pull(f"node9@{i:016x}", 0))
        got = 0
        deadline = time.monotonic() + 2.0
        while got < 40 and time.monotonic() < deadline:
            if s.poll(100):
                s.recv_multipart()
                got += 1
        assert got == 40, f"only {got} of 40 pull replies arrived; the rest were dropped at the send limit"
    finally:
        s.close(0)
