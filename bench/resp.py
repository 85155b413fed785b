"""A minimal blocking RESP2 client over a raw socket, enough for the benchmark.

It encodes commands as RESP arrays of bulk strings and parses the five RESP2 reply types.  It is
deliberately tiny and dependency-free so the same code talks to Redis and to zkv; it never talks
to anything but the host it is given (the harness only ever passes 127.0.0.1).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Iterable, Union

Reply = Union[bytes, int, None, list["Reply"], "RespError"]

PING_REQUEST = b"*1\r\n$4\r\nPING\r\n"
PONG_REPLY = b"+PONG\r\n"


@dataclass(frozen=True)
class RespError:
    """An error reply (``-ERR ...``); returned, not raised, so pipelines keep going."""

    message: str


class ProtocolError(Exception):
    """The peer sent something that is not RESP2, or closed the connection."""


def _as_bytes(arg: bytes | str | int) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    return str(arg).encode()


def encode(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _as_bytes(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


class RespConnection:
    """One TCP connection with a read buffer; ``call`` for one command, ``pipeline`` for many."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RespConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- reading

    def _fill(self) -> None:
        if self.pos and self.pos > len(self.buf) // 2:
            del self.buf[: self.pos]
            self.pos = 0
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ProtocolError(f"{self.host}:{self.port} closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end])
                self.pos = end + 2
                return line
            self._fill()

    def _exact(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n + 2:
            self._fill()
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n + 2
        return data

    def read_reply(self) -> Reply:
        line = self._line()
        if not line:
            raise ProtocolError("empty reply line")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise ProtocolError(f"not a RESP2 reply: {line[:80]!r}")

    # ----------------------------------------------------------------- commands

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, *args: bytes | str | int) -> Reply:
        self.sock.sendall(encode(*args))
        return self.read_reply()

    def pipeline(self, commands: Iterable[bytes]) -> list[Reply]:
        """Send pre-encoded commands in one write and read exactly as many replies."""
        cmds = list(commands)
        self.sock.sendall(b"".join(cmds))
        return [self.read_reply() for _ in cmds]


def ping_once(host: str, port: int, timeout: float = 1.0) -> bool:
    """Send a raw RESP PING and expect exactly ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(PING_REQUEST)
            got = b""
            deadline = time.monotonic() + timeout
            while len(got) < len(PONG_REPLY) and time.monotonic() < deadline:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            return got.startswith(PONG_REPLY)
    except OSError:
        return False


def info_fields(text: bytes | str) -> dict[str, str]:
    """Parse an INFO reply into ``{field: value}``."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out
