"""``metrics_listen``: the node's ``/metrics`` endpoint, a tiny HTTP server on the frontend's loop.

Why on the event loop and not ``prometheus_client``'s own HTTP server in a thread: a scrape
needs the store's figures, which come over the frontend's store link, and that link (like every
other frontend object) belongs to the loop's thread; a server thread would have to hand each
scrape to the loop and wait anyway, while also contending for the GIL with the request path.
Here a scrape is one more connection of the loop: it reads a request, asks the store (at most
``STORE_TIMEOUT``), renders with ``prometheus_client.generate_latest`` and writes the reply.

It speaks just enough HTTP/1.1 for Prometheus, curl and a browser: ``GET`` or ``HEAD``
``/metrics`` (any query string), one request per connection, closed after the reply.  Any other
path is 404, any other method 405, a request line or header it cannot read 400.  A request must
arrive whole within ``REQUEST_TIMEOUT`` and within ``MAX_REQUEST_BYTES``; at most
``MAX_CONNECTIONS`` are served at once (others are closed at once).  Nothing a client sends can
stop the frontend: every failure ends that connection only.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import exposition

from zkv.frontend.metrics import MetricsListenError

log = logging.getLogger("zkv.frontend")

REQUEST_TIMEOUT = 5.0  # seconds for the whole request head to arrive
MAX_REQUEST_BYTES = 8 * 1024  # request line and headers
MAX_HEADERS = 100
MAX_CONNECTIONS = 16
STORE_TIMEOUT = 2.0  # seconds a scrape waits for the store's figures
# The classic text format, which every Prometheus reads (generate_latest writes it; zkv's names
# need none of format 1.0.0's escaping); prometheus_client before 0.22 names only this one.
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)


class BadRequest(Exception):
    pass


def parse_request_line(line: bytes) -> tuple[str, str]:
    """``b"GET /metrics HTTP/1.1"`` -> (method, path without its query); BadRequest if not HTTP."""
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/") or not parts[0].isalpha():
        raise BadRequest("not an HTTP request line")
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("not ASCII") from None
    return method, target.partition("?")[0]


def response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
             head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("ascii")
    return head if head_only else head + body


class MetricsEndpoint:
    """Serves ``render()``'s bytes at ``/metrics`` on ``host:port`` (port 0: any free one)."""

    def __init__(self, host: str, port: int, render: Callable[[], Awaitable[bytes]]) -> None:
        self.host, self.port = host, port
        self.render = render
        self.server: asyncio.AbstractServer | None = None
        self.active = 0
        self.scrapes = 0

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._serve, self.host, self.port,
                                                     limit=MAX_REQUEST_BYTES, reuse_address=True)
        except OSError as exc:
            reason = ("address already in use" if exc.errno == errno.EADDRINUSE
                      else exc.strerror or str(exc))
            raise MetricsListenError(f"metrics_listen {self.address}: {reason}") from None
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("serving metrics on http://%s/metrics", self.address)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= MAX_CONNECTIONS:
            writer.close()
            return
        self.active += 1
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    method, path = await _read_head(reader)
            except BadRequest:
                writer.write(response("400 Bad Request", b"bad request\n"))
            else:
                writer.write(await self._answer(method, path))
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went, or was too slow: nothing to answer
        except Exception:  # noqa: BLE001 - one scrape's trouble must not stop the frontend
            log.exception("metrics: a request failed")
        finally:
            self.active -= 1
            writer.close()

    async def _answer(self, method: str, path: str) -> bytes:
        if path != "/metrics":
            return response("404 Not Found", b"not found; try /metrics\n", head_only=method == "HEAD")
        if method not in ("GET", "HEAD"):
            return response("405 Method Not Allowed", b"GET or HEAD only\n")
        self.scrapes += 1
        t0 = time.perf_counter()
        body = await self.render()
        log.debug("metrics: scrape rendered in %.1f ms", (time.perf_counter() - t0) * 1000)
        return response("200 OK", body, CONTENT_TYPE, head_only=method == "HEAD")


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The request line and headers (headers are read and ignored); BadRequest past the limits."""
    total = 0
    try:
        line = await reader.readuntil(b"\n")
        total += len(line)
        method, path = parse_request_line(line)
        for _ in range(MAX_HEADERS):
            header = await reader.readuntil(b"\n")
            total += len(header)
            if total > MAX_REQUEST_BYTES:
                raise BadRequest("request head too large")
            if header in (b"\r\n", b"\n"):
                return method, path
    except asyncio.LimitOverrunError:
        raise BadRequest("request line or header too long") from None
    raise BadRequest("too many headers")
