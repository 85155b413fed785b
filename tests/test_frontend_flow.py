"""Unit tests of a client connection's reply ordering and flow control, without sockets.

``ClientConnection`` is driven directly: a recording transport stands in for the TCP socket and
a recording link for the store, so a test decides when (and in which order) the store answers.
The real sockets are covered by tests/cluster/; this pins the bookkeeping that is hard to reach
through them: replies leave in request order whatever order the store answers in, reading
pauses when too many replies are owed or the client stops reading, and resumes after.
"""

from __future__ import annotations

from typing import Any

from zkv.auth import Password
from zkv.frontend.waits import AckWaiters
from zkv.frontend.readcache import ReadCache
from zkv.frontend.metrics import RequestMetrics
from zkv.frontend.server import MAX_QUEUED_GROUPS, ClientConnection


class RecordingTransport:
    def __init__(self) -> None:
        self.out = b""
        self.reading = True
        self.pauses = 0
        self.resumes = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        assert not self.reading, "resumed while reading"
        self.reading = True
        self.resumes += 1


class RecordingLink:
    def __init__(self) -> None:
        self.pending: list[tuple[list[Any], Any]] = []

    def submit(self, ops: list[Any], callback: Any) -> None:
        self.pending.append((ops, callback))


class Cfg:
    max_line = 1 << 20
    max_clients = 100


class FakeServer:
    def __init__(self, cache: ReadCache | None = None, password: str | None = None) -> None:
        self.password = Password(password)
        self.cfg = Cfg()
        self.max_clients = Cfg.max_clients
        self.tls = None
        self.min_acks = 0
        self.acks = AckWaiters()
        self.link = RecordingLink()
        self.clients: set[ClientConnection] = set()
        self.cache = cache
        self.metrics: RequestMetrics | None = None  # metrics_listen (zkv.frontend.metrics)

    def admit(self, conn: ClientConnection) -> bool:  # (max_clients: tests/cluster/)
        self.clients.add(conn)
        return True


def connect(cache: ReadCache | None = None,
            password: str | None = None) -> tuple[ClientConnection, RecordingTransport, RecordingLink]:
    server = FakeServer(cache, password)
    conn = ClientConnection(server)  # type: ignore[arg-type]
    t = RecordingTransport()
    conn.connection_made(t)  # type: ignore[arg-type]
    return conn, t, server.link


def test_replies_leave_in_request_order_whatever_order_the_store_answers() -> None:
    conn, t, link = connect()
    conn.data_received(b"GET a\n")
    conn.data_received(b"PING\n")  # immediate, but owed after GET a
    conn.data_received(b"GET b\n")
    assert t.out == b""
    (_ops_a, done_a), (_ops_b, done_b) = link.pending
    done_b([b"2"])
    assert t.out == b""  # GET a is still owed
    done_a([b"1"])
    assert t.out == b"VALUE 1\nPONG\nVALUE 2\n"


def test_with_metrics_replies_keep_their_order_and_requests_are_counted_and_timed() -> None:
    server = FakeServer()
    server.metrics = m = RequestMetrics()
    conn = ClientConnection(server)  # type: ignore[arg-type]
    t = RecordingTransport()
    conn.connection_made(t)  # type: ignore[arg-type]
    conn.data_received(b"GET a\n")
    conn.data_received(b"PING\n")
    conn.data_received(b"SET b 1\nGET b\n")
    (_ops_a, done_a), (_ops_b, done_b) = server.link.pending
    done_b([None, b"1"])
    done_a([b"1"])
    assert t.out == b"VALUE 1\nPONG\nOK\nVALUE 1\n"
    assert m.requests_by_command() == {"GET": 2, "PING": 1, "SET": 1}
    assert m.latency["read"].count == 1 and m.latency["write"].count == 2  # PING: no store


def test_reading_pauses_when_too_many_replies_are_owed_and_resumes() -> None:
    conn, t, link = connect()
    for i in range(MAX_QUEUED_GROUPS):
        conn.data_received(b"GET k%d\n" % i)
    assert t.reading and t.pauses == 0  # exactly at the limit: still reading
    conn.data_received(b"GET one-too-many\n")
    assert not t.reading and t.pauses == 1
    link.pending[0][1]([None])  # the oldest answer arrives: back at the limit
    assert t.reading and t.resumes == 1
    assert t.out == b"NOT FOUND\n"
    for _ops, done in link.pending[1:]:
        done([b"v"])
    assert t.out.count(b"VALUE v\n") == MAX_QUEUED_GROUPS
    assert t.reading and t.pauses == 1


def test_a_client_that_stops_reading_stops_being_read() -> None:
    conn, t, link = connect()
    conn.pause_writing()
    assert not t.reading
    conn.data_received(b"GET a\n")  # already in flight when the pause came
    link.pending[0][1]([b"x"])
    assert not t.reading  # answering does not resume a client that is not reading its replies
    conn.resume_writing()
    assert t.reading and t.out == b"VALUE x\n"


def test_store_failure_answers_each_request_in_its_protocol() -> None:
    conn, t, link = connect()
    conn.data_received(b"GET a\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n")
    link.pending[0][1](None)  # the store could not answer this batch
    assert t.out == b"ERROR internal error\n-ERR internal error\r\n"


def test_before_auth_only_auth_hello_ping_quit_and_a_pipelined_auth_opens_the_rest() -> None:
    conn, t, link = connect(password="s3cret")
    conn.data_received(b"GET a\r\n*1\r\n$6\r\nDBSIZE\r\nPING\r\n")
    assert t.out == (b"ERROR NOAUTH Authentication required\n-NOAUTH Authentication required.\r\n"
                     b"+PONG\r\n")  # (an inline PING, CR LF: Redis's reply)
    assert link.pending == []
    t.out = b""
    conn.data_received(b"AUTH nope\nAUTH s3cret\nSET a 1\n")
    (ops, done), = link.pending
    assert ops == [("s", b"a", b"1")]
    done([None])
    assert t.out == b"ERROR WRONGPASS invalid username-password pair or user is disabled.\nOK\nOK\n"


def test_hello_with_auth_switches_protocol_only_when_accepted() -> None:
    conn, t, _link = connect(password="pw")
    conn.data_received(b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$2\r\nno\r\n")
    assert t.out.startswith(b"-WRONGPASS") and not conn.resp3 and not conn.authed
    t.out = b""
    conn.data_received(b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$2\r\npw\r\n")
    assert t.out.startswith(b"%") and conn.resp3 and conn.authed
