"""Splits a connection's input buffer into requests, in either protocol, as they arrive.

A request that starts with ``*`` is a RESP2 array (``zkv.protocol.resp``); anything else is one
plain-text line ending in ``\\n`` or ``\\r\\n``.  Both may be mixed on one connection.  A plain line
splits into whitespace-separated words, except ``SET <key> <value>``, whose value is the rest of
the line after the key and one space (so it may contain spaces).  Blank lines are ignored.
Input that cannot be parsed ends the connection: the caller sends ``fatal`` and closes.
"""

from __future__ import annotations

from typing import NamedTuple

from zkv.protocol import resp

_SET = b"SET"


class Request(NamedTuple):  # a NamedTuple: built once per request, so it must be cheap
    args: list[bytes]
    resp: bool


class Parsed(NamedTuple):
    requests: list[Request]
    consumed: int
    fatal: bytes | None = None  # reply to send before closing, if the input is unusable


def plain_args(line: bytes) -> list[bytes]:
    """Words of a plain-text request line (without its line ending)."""
    stripped = line.lstrip()
    head, _, rest = stripped.partition(b" ")
    if head.upper() == _SET:
        key, sep, value = rest.lstrip(b" ").partition(b" ")
        if not key:
            return [head]
        return [head, key, value] if sep else [head, key]
    return line.split()


def parse_requests(buf: bytes | bytearray, max_line: int, max_bulk: int = 512 * 1024 * 1024) -> Parsed:
    """Parse every complete request in ``buf``; ``consumed`` bytes of it are done with."""
    out: list[Request] = []
    pos = 0
    end = len(buf)
    while pos < end:
        if buf[pos] == 42:  # "*": RESP
            try:
                got = resp.parse_command(buf, pos, max_bulk=max_bulk)
            except resp.ProtocolError as exc:
                return Parsed(out, pos, resp.error(f"ERR Protocol error: {exc}"))
            if got is None:
                break
            args, pos = got
            if args:
                out.append(Request(args, True))
            continue
        nl = buf.find(b"\n", pos, pos + max_line + 2)
        if nl < 0:
            # A full-length line may have its "\r" here and its "\n" still in flight.
            if end - pos > max_line + 1 or (end - pos == max_line + 1 and buf[end - 1] != 13):
                return Parsed(out, pos, b"ERROR line too long\n")
            break
        line_end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
        if line_end - pos > max_line:
            return Parsed(out, pos, b"ERROR line too long\n")
        line = bytes(buf[pos:line_end])
        pos = nl + 1
        args = plain_args(line)
        if args:
            out.append(Request(args, False))
    return Parsed(out, pos)
