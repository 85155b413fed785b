"""TLS on the client port: the server-side ``ssl.SSLContext`` built from the config's files.

With ``tls_cert_file`` and ``tls_key_file`` the client port speaks only TLS (both protocols, plain
text and RESP, inside it): ``redis-cli --tls``, redis-py ``ssl=True``, ``openssl s_client``.
With ``tls_ca_file`` too, a client must present a certificate signed by that CA (Redis's
``tls-auth-clients yes``).  TLS 1.2 is the oldest version accepted.

A TLS connection is a client from its accept on (zkv.frontend.server counts it toward
``max_clients``): ``TLSAccept`` takes it before any byte is read and ``Handshakes`` runs its
handshake, with a timeout of ``HANDSHAKE_TIMEOUT`` seconds, on a socket the server can close.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

from zkv.config import Config


class TLSError(Exception):
    """The certificate, key or CA cannot be used; the message is one line."""


def server_context(cfg: Config) -> ssl.SSLContext | None:
    """The context for the client port, or None when TLS is not configured."""
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"tls_cert_file {cfg.tls_cert_file} / tls_key_file {cfg.tls_key_file}: "
                       f"{exc}") from None
    if cfg.tls_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(cfg.tls_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"tls_ca_file {cfg.tls_ca_file}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# A connection must finish its TLS handshake within this many seconds, or it is closed (asyncio's
# default, 60 s, let silent connections hold client slots and descriptors that long).
HANDSHAKE_TIMEOUT = 5.0


class TLSAccept(asyncio.Protocol):
    """A TCP connection to the TLS port, before any byte of it is read: its socket is duplicated
    and handed to ``accept``, and this transport dropped, so that the TLS layer reads the
    ClientHello itself.  (``loop.start_tls`` on this transport would lose it: uvloop starts
    reading a connection as soon as ``connection_made`` returns.)"""

    def __init__(self, accept: Callable[[socket.socket], None]) -> None:
        self.accept = accept

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            own: socket.socket | None = socket.socket(
                fileno=os.dup(transport.get_extra_info("socket").fileno()))
        except OSError:  # no descriptor to spare: closed, as past the reserve of max_clients
            own = None
        transport.abort()  # nothing was read: the kernel keeps the ClientHello for ``own``
        if own is not None:
            self.accept(own)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # (of the dropped transport; the connection lives on in ``own``)


class Handshakes:
    """The TLS handshakes in progress, oldest first, each on its own socket, at most
    ``HANDSHAKE_TIMEOUT`` seconds.  A handshake that succeeds calls its protocol's
    ``connection_made``; one that fails (timed out, not TLS, a certificate refused, dropped)
    calls ``failed`` with it."""

    def __init__(self, ctx: ssl.SSLContext, failed: Callable[[Any], None]) -> None:
        self.ctx = ctx
        self.failed = failed
        self._socks: dict[Any, socket.socket] = {}  # protocol -> its socket, oldest first
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0  # handshakes that did not end in a TLS session

    def __len__(self) -> int:
        return len(self._socks)

    def __contains__(self, protocol: object) -> bool:
        return protocol in self._socks

    def start(self, protocol: asyncio.Protocol, sock: socket.socket) -> None:
        self._socks[protocol] = sock
        task = asyncio.get_running_loop().create_task(self._run(protocol, sock))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, protocol: asyncio.Protocol, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: protocol, sock, ssl=self.ctx,
                                               ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except Exception:  # noqa: BLE001 - whatever ended it, the loop closed the connection
            self.failures += 1
            self._socks.pop(protocol, None)
            self.failed(protocol)
        else:
            self._socks.pop(protocol, None)

    def oldest(self) -> Any:
        return next(iter(self._socks), None)

    def drop(self, protocol: object) -> None:
        """End ``protocol``'s handshake now; it fails (``failed``) once the loop sees it."""
        sock = self._socks.pop(protocol, None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # (the loop detaches the socket when it closes)
            except OSError:
                pass

    async def close(self) -> None:
        for protocol in list(self._socks):
            self.drop(protocol)
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=2)
            for t in pending:
                t.cancel()
