"""What a client that has not authenticated can cost a node with a password (found by a
break-it review).

Before AUTH the parser used to take any request up to its full limits (a RESP bulk of 512 MB, a
plain line of max_line), so a stranger who knows no password could make the frontend buffer
hundreds of megabytes per connection.  Now, as Redis does since CVE-2021-32675, a bulk or line
over 16 KB from a client that has not authenticated ends its connection.
"""

from __future__ import annotations

import socket
import time

from tests.cluster.respclient import Resp, rss_mb

BIG = 32 * 1024 * 1024


def test_unauthenticated_clients_cannot_make_the_frontend_buffer_large_requests(make_cluster) -> None:
    c = make_cluster(1, password="s3cret")
    n0 = c.nodes[0]
    n0.start()
    fe = n0.child_pid("frontend")
    with Resp(n0.port) as probe:
        assert probe.cmd("GET", "x").startswith(b"-NOAUTH")
    before = rss_mb(fe)
    socks = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", n0.port), timeout=10)
            s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n" % BIG)
            sent = 0
            chunk = b"a" * (1024 * 1024)
            try:
                while sent < BIG - len(chunk):  # all but the last bytes: the request stays open
                    s.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # closed by the node: what should happen
            socks.append(s)
        time.sleep(0.5)
        grown = rss_mb(fe) - before
        assert grown < 16, (f"three connections that never authenticated grew the frontend by "
                            f"{grown:.0f} MB (each may hold a 512 MB request)")
    finally:
        for s in socks:
            s.close()
