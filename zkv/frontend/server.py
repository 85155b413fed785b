"""Client connections: bytes in, requests to the store, replies out in request order.

One ``ClientConnection`` per TCP connection.  Each chunk of input is parsed into requests
(``zkv.protocol.requests``), each request into a reply or store work (``zkv.commands``); the
store work of a chunk travels as one submission on the shared ``StoreLink``.  Replies leave in
request order even when some are immediate and some wait for the store.  A client that sends
faster than it reads is paused (transport flow control) rather than buffered without limit.

On a node with a ``password`` a connection starts unauthenticated: its requests go through
``before_auth`` (AUTH, HELLO, PING, QUIT, else NOAUTH) until AUTH succeeds; past a few wrong
passwords each further one holds the connection for a growing delay (zkv.auth).

On a TLS port a connection counts as a client from its accept, not from the end of its
handshake (zkv.frontend.tls): one that never sends a ClientHello holds a slot of ``max_clients``
(and a descriptor) until ``HANDSHAKE_TIMEOUT`` or ``idle_timeout`` closes it, as any silent
client does.  Past ``max_clients`` a TLS client gets its handshake, then the refusal; past the
reserve too, the oldest handshake in progress is dropped to make room for it (silent
connections cannot keep a client from hearing that it is refused), or, with none, it is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from zkv import fdlimit
from zkv.auth import Password, failure_delay
from zkv.commands import (
    NOT_ENOUGH_ACKS, WRITE_OPS, Auth, Deferred, Hello, Quit, Refused, Wait, before_auth,
    dispatch, error_reply, internal_error,
)
from zkv.proc import rss_bytes
from zkv.protocol import resp
from zkv.config import Config
from zkv.frontend.fdlimit import RESERVE
from zkv.frontend.metrics import RequestMetrics
from zkv.frontend.readcache import MISS, ReadCache
from zkv.frontend.storelink import StoreLink
from zkv.frontend.tls import Handshakes, TLSAccept, server_context
from zkv.frontend.waits import AckWaiters
from zkv.protocol.requests import parse_requests
from zkv.transaction import (
    DISCARD_ALONE, EXEC_ALONE, NESTED, WATCH_IN_MULTI, WATCH_UNSUPPORTED, Transaction, TxControl,
)

log = logging.getLogger("zkv.frontend")

MAX_QUEUED_GROUPS = 256  # reply groups waiting per connection before we stop reading from it
# Replies buffered for a client that does not read them; past this (plus the reply being written)
# the connection is closed
# (as Redis's client-output-buffer-limit does), so one client cannot exhaust the node's memory.
MAX_OUTPUT_BUFFER = 256 * 1024 * 1024
# A client past max_clients is told so in its own protocol, known from its first bytes; one that
# sends nothing gets the plain-text line after this long (or at once, past the reserve).
REFUSE_WAIT = 1.0
# Before AUTH (on a node with a password): the longest plain line and RESP bulk accepted
UNAUTHENTICATED_MAX_LINE = 16 * 1024
UNAUTHENTICATED_MAX_BULK = 16 * 1024
UNAUTHENTICATED_MAX_ARGS = 10
HELD_INPUT_MAX = 4 * 1024 * 1024  # input read while a WAIT holds the connection, before pausing  # (as Redis: HELLO 3 AUTH default pw SETNAME name is 7)
MAX_CLIENTS_ERROR = "max number of clients reached"


class _Group:
    """The replies owed for one chunk of input, in order; ``out`` is set when all are known.
    ``waits``: it holds a WAIT, or (``min_acks``) its writes wait for peers' acknowledgements."""

    __slots__ = ("parts", "out", "waits")

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.out: bytes | None = None
        self.waits = 0  # 0, or WAITS_FOR_WAIT | WAITS_FOR_MIN_ACKS


WAITS_FOR_WAIT = 1
WAITS_FOR_MIN_ACKS = 2


class ClientConnection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.link = server.link
        self.cache = server.cache
        self.metrics = server.metrics  # None without metrics_listen
        self.max_line = server.cfg.max_line
        self.buf = bytearray()
        self.queue: deque[_Group] = deque()
        self.transport: asyncio.Transport | None = None
        self.closing = False  # stop reading; close once every owed reply is written
        self.paused_writing = False
        self.paused_reading = False
        self.need = 0  # bytes the buffer must hold before parsing it again can make progress
        self.resume: list = []  # progress of a RESP request split over several reads
        self.resp3 = False  # the client said HELLO 3: nulls are written the RESP3 way
        self.authed = not server.password.required
        self.auth_failures = 0
        self.held: tuple[list, bytes | None] | None = None  # requests waiting out an AUTH delay
        self.refusing = False  # past max_clients: answered with an error, then closed
        self.waiters: list[Any] = []  # this connection's waits for peers (zkv.frontend.waits)
        self.blocked_by: _Group | None = None  # a WAIT's group: later requests wait for it
        self.hold_reads = False  # the hold pauses reading (an AUTH delay; a WAIT reads on)
        self.eof = False  # the client half-closed
        self.active = True  # read something since the last idle sweep
        self.idle_since = 0.0
        self.handshaking = False  # TLS: admitted, its handshake in progress (no transport yet)
        self.lost = False
        self.tx: Transaction | None = None  # between MULTI and EXEC (zkv.transaction)

    # --- asyncio callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.handshaking:  # TLS: the handshake is done (admitted at its accept)
            self.handshaking = False
            self.active = True  # (for idle_timeout: its silence starts now)
            if self.lost:  # dropped meanwhile
                transport.close()
            elif self.refusing:
                asyncio.get_running_loop().call_later(REFUSE_WAIT, self._refuse, False)
            return
        if not self.server.admit(self):  # descriptors run short: no waiting for a first request
            self._refuse(False)
        elif self.refusing:
            asyncio.get_running_loop().call_later(REFUSE_WAIT, self._refuse, False)

    def _refuse(self, is_resp: bool) -> None:
        """Past max_clients: ``-ERR max number of clients reached`` (RESP) or ``ERROR ...``."""
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(b"-ERR %s\r\n" % MAX_CLIENTS_ERROR.encode() if is_resp
                else b"ERROR %s\n" % MAX_CLIENTS_ERROR.encode())
        t.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.clients.discard(self)
        self.closing = True
        self.queue.clear()
        for w in self.waiters:
            self.server.acks.cancel(w)
        self.waiters.clear()

    def eof_received(self) -> bool:
        """The client half-closed (``nc -N``, ``printf ... | nc``): answer what it sent, then
        close.  A WAIT with no timeout is answered at once with its count (nobody could ever
        send the request that follows it)."""
        self.closing = self.eof = True
        if not self.queue and self.held is None and self.transport is not None:
            self.transport.close()
        for w in list(self.waiters):
            if w.timer is None:
                self.server.acks.expire(w)
        # keep the transport open for the replies still owed (TLS cannot: asyncio closes it)
        return not self.server.tls

    def pause_writing(self) -> None:
        self.paused_writing = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.paused_writing = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        self.active = True  # for idle_timeout: the sweep clears it
        if self.closing:
            if self.refusing:
                self._refuse(data[:1] == b"*")
            return
        buf = self.buf
        if self.held is not None:  # parsed once the hold ends (a WAIT answered, a delay over)
            buf += data
            if len(buf) > HELD_INPUT_MAX:
                self._update_reading()
            return
        if not self.authed:
            self._unauthenticated(data)
            return
        if buf:
            buf += data
            if len(buf) < self.need:
                return  # the request in progress cannot be complete yet
            parsed = parse_requests(buf, self.max_line, resume=self.resume)
            del buf[:parsed.consumed]
        else:
            parsed = parse_requests(data, self.max_line, resume=self.resume)
            if parsed.consumed < len(data):
                buf += data[parsed.consumed:]
        self.need = parsed.need
        if self.metrics is not None:
            self.metrics.count(parsed.requests)
        self._process(iter(parsed.requests), parsed.fatal)

    def _unauthenticated(self, data: bytes) -> None:
        """Input before AUTH is parsed with small limits (as Redis does), so a client that has
        not authenticated cannot make the frontend buffer a 512 MB request.  If an AUTH in it
        succeeds, what the limits stopped is parsed again as an authenticated client's."""
        buf = self.buf
        buf += data
        parsed = parse_requests(buf, UNAUTHENTICATED_MAX_LINE, UNAUTHENTICATED_MAX_BULK,
                                resume=self.resume, max_args=UNAUTHENTICATED_MAX_ARGS)
        del buf[:parsed.consumed]
        self.need = 0
        if self.metrics is not None:
            self.metrics.count(parsed.requests)
        if parsed.fatal is None:
            self.need = parsed.need
            self._process(iter(parsed.requests), None)
            return
        self._process(iter(parsed.requests), None)
        if self.authed and not self.closing:
            self.resume.clear()  # the refused request is parsed again from its start
            if self.held is None:
                self.data_received(b"")
            return
        if self.held is not None:  # (after a wrong password's delay)
            self.held = (self.held[0], parsed.fatal)
        elif not self.closing:
            self._process(iter(()), parsed.fatal)

    def _process(self, requests: Any, fatal: bytes | None) -> None:
        """Answer parsed requests; ``fatal`` is the protocol error that ended the input, if any."""
        parts: list[Any] = []
        ops: list[Any] = []
        resp3 = self.resp3
        cache = self.cache if not self.queue else None  # see below
        disp = dispatch if self.authed else before_auth
        waits = 0
        for args, is_resp in requests:
            r = disp(args, is_resp, resp3)
            if self.tx is not None or r.__class__ is TxControl:
                r = self._in_transaction(r, args[0])
                if r.__class__ is bytes:
                    parts.append(r)
                    continue
            if r.__class__ is Deferred:
                r_ops = r.ops  # type: ignore[union-attr]
                # A read of one key (GET, or EXISTS/MGET of one) is answered from the read cache
                # when nothing this client sent before it still waits for the store: an earlier
                # write of it must be applied first, and the cache learns of it only then.
                if cache is not None and not ops and len(r_ops) == 1 and r_ops[0][0] == "g":
                    hit = cache.lookup(r_ops[0][1])
                    if hit is not MISS:
                        cache.hits += 1
                        parts.append(r.encode((hit,)))  # type: ignore[union-attr]
                        continue
                    cache.misses += 1
                ops.extend(r_ops)
                parts.append(r)
            elif r.__class__ is bytes:
                parts.append(r)
            elif r.__class__ is Quit:
                parts.append(r.reply)  # type: ignore[union-attr]
                self.closing = True
                break
            elif r.__class__ is Hello:
                parts.append(r.reply)  # type: ignore[union-attr]
                self.resp3 = resp3 = r.proto == 3  # type: ignore[union-attr]
            elif r.__class__ is Wait:
                ops.extend(r.ops)  # type: ignore[union-attr]
                parts.append(r)
                waits = WAITS_FOR_WAIT
                # As in Redis, the connection blocks at WAIT: what follows is answered once WAIT
                # is (so one connection has at most one WAIT pending).  It is still read, up to
                # a bound, so a client that closes meanwhile is noticed.
                self._hold(None, list(requests), fatal, pause=False)
                fatal = None
                break
            elif r.__class__ is Auth:
                reply, ok = self.server.password.check(r)  # type: ignore[arg-type]
                parts.append(reply)
                if ok:
                    self.authed, disp = True, dispatch
                    if r.hello is not None:  # type: ignore[union-attr]
                        self.resp3 = resp3 = r.hello.proto == 3  # type: ignore[union-attr]
                else:
                    self.auth_failures += 1
                    delay = failure_delay(self.auth_failures)
                    if delay:
                        self._hold(delay, list(requests), fatal)
                        fatal = None
                        break
        if fatal is not None and not self.closing:
            parts.append(fatal)
            self.closing = True
        if not parts:
            return
        group = _Group(parts)
        if self.server.min_acks and ops and any(op[0] in WRITE_OPS for op in ops):
            ops.append(("w",))  # the target every write here waits for (min_acks)
            waits |= WAITS_FOR_MIN_ACKS
        group.waits = waits
        if waits & WAITS_FOR_WAIT:
            self.blocked_by = group
        if ops:
            queue = self.queue
            queue.append(group)
            m = self.metrics
            if m is None:
                self.link.submit(ops, lambda results: self._complete(group, results))
            else:  # timed: the chunk's requests, from here to their replies (zkv.frontend.metrics)
                t0, n, write = time.perf_counter(), len(parts), m.writes(ops)
                self.link.submit(ops, lambda results: m.done(self._complete, group, results,
                                                              t0, n, write))
            if len(queue) > MAX_QUEUED_GROUPS:
                self._update_reading()
        elif self.queue:
            group.out = b"".join(parts)
            self.queue.append(group)
        else:
            self._write(b"".join(parts))

    def _in_transaction(self, r: Any, name: bytes) -> Any:
        """A request while a transaction is open, or one that opens or ends it: its reply
        (bytes), or what to carry out as usual (EXEC's Deferred, QUIT)."""
        if r.__class__ is TxControl:
            return self._transaction(r.verb)
        if r.__class__ is Quit:
            return r
        assert self.tx is not None
        return self.tx.queue(r, name)

    def _transaction(self, verb: bytes) -> Any:
        """MULTI, EXEC, DISCARD, WATCH, UNWATCH (zkv.transaction): a reply, or EXEC's Deferred."""
        tx = self.tx
        if verb == b"MULTI":
            if tx is not None:
                return NESTED
            self.tx = Transaction()
            return resp.OK
        if verb == b"EXEC":
            if tx is None:
                return EXEC_ALONE
            self.tx = None
            return tx.exec()
        if verb == b"DISCARD":
            if tx is None:
                return DISCARD_ALONE
            self.tx = None
            return resp.OK
        if verb == b"WATCH":
            return WATCH_IN_MULTI if tx is not None else WATCH_UNSUPPORTED
        return resp.OK  # UNWATCH: nothing is watched

    def _hold(self, delay: float | None, rest: list, fatal: bytes | None, pause: bool = True) -> None:
        """Answer nothing more for ``delay`` seconds (None: until ``_release_held`` is called,
        when a WAIT is answered); then answer ``rest`` and what arrived meanwhile.  ``pause``:
        stop reading meanwhile, too."""
        self.held = (rest, fatal)
        self.hold_reads = pause
        self._update_reading()
        if delay is not None:
            asyncio.get_running_loop().call_later(delay, self._release_held)

    def _release_held(self) -> None:
        if self.held is None or self.transport is None or self.transport.is_closing():
            return
        rest, fatal = self.held
        self.held = None
        self._process(iter(rest), fatal)
        self._update_reading()
        if self.buf and self.held is None and (self.eof or not self.closing):
            closing, self.closing = self.closing, False  # (what a half-closed client sent
            self.data_received(b"")                      # before its EOF is answered too)
            self.closing = self.closing or closing
        if self.closing and not self.queue and self.held is None and not self.transport.is_closing():
            self.transport.close()

    # --- replies ------------------------------------------------------------------------------
    @staticmethod
    def _refused(parts: list[Any], results: Refused) -> bytes:
        """Replies when the store refused the writes: a request that wrote gets the reason,
        a read in the same pipeline its value."""
        out = []
        i = 0
        for p in parts:
            if p.__class__ is Deferred:
                n = len(p.ops)
                if any(op[0] in WRITE_OPS for op in p.ops):
                    out.append(error_reply(p, results.reason))
                else:
                    out.append(p.encode(results[i:i + n]))
                i += n
            else:
                out.append(p)
        return b"".join(out)

    def _complete(self, group: _Group, results: list[Any] | None) -> None:
        if not self.queue:  # connection gone
            return
        if group.waits:
            self._complete_waiting(group, results)
            return
        parts = group.parts
        if results.__class__ is Refused:  # its writes were refused: each says why
            group.out = self._refused(parts, results)
        elif len(parts) == 1 and results is not None:  # one request that waited for the store
            group.out = parts[0].encode(results)
        else:
            out = []
            i = 0
            for p in parts:
                if p.__class__ is Deferred:
                    n = len(p.ops)
                    out.append(p.encode(results[i:i + n]) if results is not None else internal_error(p))
                    i += n
                else:
                    out.append(p)
            group.out = b"".join(out)
        queue = self.queue
        if queue[0] is group and len(queue) == 1:
            queue.clear()
            self._write(group.out)
            if self.paused_reading:
                self._update_reading()
            return
        self._flush_queue()

    def _complete_waiting(self, group: _Group, results: list[Any] | None) -> None:
        """A group with a WAIT, or whose writes wait for ``min_acks`` peers: replies that need
        no peer are encoded now; the group is done when every wait has its count."""
        if results is None:  # the store could not answer: no acknowledgement to wait for
            group.out = b"".join(internal_error(p) if p.__class__ in (Deferred, Wait) else p
                                 for p in group.parts)
            self._waited(group)
            return
        refused = results.__class__ is Refused
        pieces: list[Any] = []
        slots: list[tuple[int, Wait, Any]] = []
        i = 0
        for p in group.parts:
            if p.__class__ is Deferred:
                n = len(p.ops)
                if refused and any(op[0] in WRITE_OPS for op in p.ops):
                    pieces.append(error_reply(p, results.reason))  # type: ignore[union-attr]
                else:
                    pieces.append(p.encode(results[i:i + n]))
                i += n
            elif p.__class__ is Wait:
                slots.append((len(pieces), p, results[i]))
                pieces.append(None)
                i += 1
            else:
                pieces.append(p)
        waiters, loop = self.server.acks, asyncio.get_running_loop()
        outstanding = [1]  # one per wait not yet answered, plus this function's own until its end
        failed_min_acks = [False]

        def finish() -> None:
            outstanding[0] -= 1
            if outstanding[0] or not self.queue:
                return
            if failed_min_acks[0]:  # each request that wrote is told; nothing is undone
                for j, p in enumerate(group.parts):
                    if p.__class__ is Deferred and any(op[0] in WRITE_OPS for op in p.ops):
                        pieces[j] = error_reply(p, NOT_ENOUGH_ACKS)
            group.out = b"".join(pieces)
            self._waited(group)

        def target_of(res: Any) -> int:
            if res.__class__ is not list or len(res) != 2:
                return 0
            waiters.learn(res[1])
            return res[0] if res[0].__class__ is int else 0

        if group.waits & WAITS_FOR_MIN_ACKS and not refused:
            outstanding[0] += 1
            need = self.server.min_acks

            def min_acks_done(count: int) -> None:
                failed_min_acks[0] = count < need
                finish()

            self._track(waiters.wait(target_of(results[i]), need,
                                     self.server.cfg.ack_timeout_ms / 1000, min_acks_done, loop))
        for idx, w, res in slots:
            outstanding[0] += 1

            def wait_done(count: int, idx: int = idx) -> None:
                pieces[idx] = resp.integer(count)
                finish()

            timeout = w.timeout_ms / 1000 if w.timeout_ms else (0.0 if self.eof else None)
            self._track(waiters.wait(target_of(res), w.numpeers, timeout, wait_done, loop))
        finish()  # a group whose waits were all met at once ends here

    def _waited(self, group: _Group) -> None:
        """A group that waited is answered: send what is due, and read on past its WAIT."""
        self._flush_queue()
        if self.blocked_by is group:
            self.blocked_by = None
            asyncio.get_running_loop().call_soon(self._release_held)

    def _track(self, w: Any) -> None:
        """Remember a pending waiter of this connection (to cancel it if the connection goes);
        the ones already answered are dropped from the list as it grows."""
        if w is not None:
            if len(self.waiters) > 16:
                self.waiters = [x for x in self.waiters if not x.finished]
            self.waiters.append(w)

    def _flush_queue(self) -> None:
        queue = self.queue
        ready = []
        while queue and queue[0].out is not None:
            ready.append(queue.popleft().out)
        if ready:
            self._write(b"".join(ready))  # type: ignore[arg-type]
        self._update_reading()

    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(data)
        # The limit applies to what was already waiting: one reply larger than it (a GET of a
        # 400 MB value) still goes out to a client that reads.
        if t.get_write_buffer_size() - len(data) > MAX_OUTPUT_BUFFER:
            log.warning("closing a client that has %d bytes of unread replies",
                        t.get_write_buffer_size())
            self.closing = True
            self.queue.clear()
            t.abort()
        elif self.closing and not self.queue and self.held is None:
            t.close()

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        want_pause = (self.paused_writing or len(self.queue) > MAX_QUEUED_GROUPS
                      or self.held is not None and (self.hold_reads or len(self.buf) > HELD_INPUT_MAX))
        if want_pause and not self.paused_reading:
            self.paused_reading = True
            t.pause_reading()
        elif not want_pause and self.paused_reading:
            self.paused_reading = False
            t.resume_reading()


class Server:
    def __init__(self, cfg: Config, store_endpoint: str, max_clients: int | None = None) -> None:
        self.cfg = cfg
        # what the open-file limit allows (zkv.frontend.fdlimit), at most cfg.max_clients
        self.max_clients = cfg.max_clients if max_clients is None else max_clients
        self.store_endpoint = store_endpoint
        self.clients: set[ClientConnection] = set()
        self.link: StoreLink  # set in serve()
        self.cache = ReadCache(cfg.read_cache_mb * 1024 * 1024) if cfg.read_cache_mb else None
        self.password = Password(cfg.password)
        self.tls: object | None = None  # the SSLContext of the client port, if TLS
        self.handshakes: Handshakes | None = None  # TLS: in progress (zkv.frontend.tls)
        self.rejected = 0  # connections refused past max_clients
        self.acks = AckWaiters()  # peers' acknowledgements of our writes (WAIT, min_acks)
        self.min_acks = cfg.min_acks
        # metrics_listen: requests counted by command and timed (zkv.frontend.metrics)
        self.metrics = RequestMetrics() if cfg.metrics_listen is not None else None

    async def serve(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.link = StoreLink(loop, self.store_endpoint, self.cache, self.acks.learn)
        self.tls = tls = server_context(self.cfg)
        factory: Callable[[], asyncio.Protocol] = lambda: ClientConnection(self)  # noqa: E731
        if tls is not None:
            self.handshakes = Handshakes(tls, lambda conn: conn.connection_lost(None))
            factory = lambda: TLSAccept(self._accept_tls)  # noqa: E731
        endpoint = None
        if self.cfg.metrics_listen is not None:  # first: a node that answers has its metrics up
            endpoint = self._metrics_endpoint()
            try:
                await endpoint.start()
            except BaseException:
                self.link.close()
                raise
        try:
            server = await loop.create_server(factory, self.cfg.listen_host, self.cfg.listen_port,
                                              reuse_address=True, backlog=4096)
        except BaseException:
            if endpoint is not None:
                await endpoint.close()
            raise
        log.info("serving clients on %s%s", self.cfg.listen,
                 "" if tls is None else " (TLS%s)" % (", client certificates required"
                                                       if self.cfg.tls_ca_file else ""))
        if on_ready is not None:
            on_ready()
        tasks = [loop.create_task(self._report())]
        if self.cfg.idle_timeout:
            tasks.append(loop.create_task(self._close_idle(self.cfg.idle_timeout)))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            server.close()
            for c in list(self.clients):
                if c.transport is not None:
                    c.transport.close()
            if self.handshakes is not None:
                await self.handshakes.close()
            await server.wait_closed()
            if endpoint is not None:
                await endpoint.close()
            self.link.close()

    # --- admission -------------------------------------------------------------------------
    def admit(self, conn: ClientConnection) -> bool:
        """Count ``conn`` among the clients.  Past ``max_clients`` it is marked to be refused
        (with a reply); False: past the reserve too, it must be closed at once."""
        self.clients.add(conn)
        over = len(self.clients) - self.max_clients
        if over > RESERVE // 2 and self.handshakes:
            self._drop_handshake(self.handshakes.oldest())
            over -= 1
        if over > 0:
            self.rejected += 1
            conn.closing = conn.refusing = True
        return over <= RESERVE // 2

    def _accept_tls(self, sock: socket.socket) -> None:
        """A TLS connection, accepted: a client from now on, once its handshake is done a
        served or a refused one."""
        assert self.handshakes is not None
        conn = ClientConnection(self)
        if not self.admit(conn):
            self.clients.discard(conn)
            sock.close()  # (no TLS session to say it in)
            return
        conn.handshaking = True
        self.handshakes.start(conn, sock)

    def _drop_handshake(self, conn: ClientConnection) -> None:
        """End a TLS handshake in progress; its client slot is free at once."""
        assert self.handshakes is not None
        self.handshakes.drop(conn)
        conn.connection_lost(None)

    def figures(self) -> dict[str, int]:
        """The client port's connection figures, for INFO (``listeners`` -> ``client``)."""
        hs = self.handshakes
        return {"connections": len(self.clients), "max_clients": self.max_clients,
                "rejected": self.rejected, "tls_handshaking": 0 if hs is None else len(hs),
                "tls_handshake_failures": 0 if hs is None else hs.failures}

    # --- metrics_listen ----------------------------------------------------------------------
    def _metrics_endpoint(self) -> Any:
        """The /metrics endpoint (zkv.frontend.metrics_http); prometheus_client is imported
        only by a node that serves it."""
        from zkv.frontend.exposition import Scraper
        from zkv.frontend.metrics_http import STORE_TIMEOUT, MetricsEndpoint

        host, port = self.cfg.metrics_listen  # type: ignore[misc]
        scraper = Scraper(self._store_figures, self._frontend_figures, STORE_TIMEOUT)
        return MetricsEndpoint(host, port, scraper.render)

    async def _store_figures(self) -> dict[str, Any] | None:
        """INFO's dict from the store (the op INFO sends), or None if it cannot give one."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def answered(results: list[Any] | None) -> None:
            if not fut.done():
                fut.set_result(results)

        self.link.submit([("i",)], answered)
        results = await fut
        if results is None or len(results) != 1 or results[0].__class__ is not dict:
            return None
        return results[0]

    def _frontend_figures(self) -> Any:
        from zkv.frontend.exposition import FrontendFigures

        m = self.metrics
        assert m is not None
        fig = self.figures()
        cache = self.cache
        return FrontendFigures(
            requests=m.requests_by_command(), latency=m.latency,
            connections=fig["connections"] - fig["tls_handshaking"], max_clients=self.max_clients,
            refused=self.rejected, tls_handshake_failures=fig["tls_handshake_failures"],
            rss=rss_bytes(), cache_hits=None if cache is None else cache.hits,
            cache_misses=None if cache is None else cache.misses)

    async def _report(self) -> None:
        """Once a second, tell the store this process's figures for INFO and zkv status."""
        while True:
            figures = self.figures()
            self.link.submit([("c", figures["connections"] - figures["tls_handshaking"],
                               rss_bytes(), {"listener": figures,
                                             "open_files": fdlimit.current().soft})], _ignore)
            await asyncio.sleep(1.0)

    async def _close_idle(self, timeout: int) -> None:
        """``idle_timeout``: close connections that sent nothing for ``timeout`` seconds and are
        owed no reply (as Redis's ``timeout``).  Reading marks a connection active; this sweep,
        once a second, notes when it stopped being so (no clock call per request)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, timeout / 2))
            now = loop.time()
            for c in list(self.clients):
                if c.active:
                    c.active = False
                    c.idle_since = now
                elif now - c.idle_since >= timeout and not c.queue and c.held is None:
                    if c.handshaking:  # a TLS connection still in its handshake
                        self._drop_handshake(c)
                    elif c.transport is not None and not c.transport.is_closing():
                        c.transport.close()


def _ignore(_results: Any) -> None:
    pass
