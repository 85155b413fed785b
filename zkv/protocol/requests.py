"""Splits a connection's input buffer into requests, in either protocol, as they arrive.

A request that starts with ``*`` is a RESP2 array (``zkv.protocol.resp``); anything else is one
plain-text line ending in ``\\n`` or ``\\r\\n``.  A request's second item says which: ``True``
for RESP, ``False`` for a line ending in ``\\n`` alone (nc: zkv's text protocol), ``None`` for one
ending in ``\\r\\n`` (what redis-cli and redis-benchmark send as inline commands, and telnet; see
``zkv.commands.dispatch_plain``).  Both may be mixed on one connection.  A plain line
splits into whitespace-separated words, except ``SET <key> <value>``, whose value is the rest of
the line after the key and one space (so it may contain spaces).  Blank lines are ignored.
Input that cannot be parsed ends the connection: the caller sends ``fatal`` and closes.
"""

from __future__ import annotations

from typing import NamedTuple

from zkv.protocol import resp

_SET = b"SET"


# One request: (its words, True if it came as RESP, False as a plain line, None as a plain line
# ending in CR LF).  A plain tuple: one is built per request, and a NamedTuple's constructor
# costs a Python-level call.
Request = tuple[list[bytes], bool | None]


class Parsed(NamedTuple):
    requests: list[Request]
    consumed: int
    fatal: bytes | None = None  # reply to send before closing, if the input is unusable
    need: int = 0  # when known: the buffer length below which parsing again cannot finish
                   # the incomplete request (so a large value arriving in pieces is not
                   # re-parsed from its start on every read)


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


_FAST_LIMIT = 64 * 1024  # buffers up to this size try the split-based RESP fast path


# The headers the fast path accepts, precomputed: a dict or list lookup instead of parsing
# digits or formatting a number per header.  Anything else goes to the exact parser.
_ARRAY_COUNTS = {b"*%d" % n: n for n in range(1, 256)}
_BULK_HEADS = [b"$%d" % n for n in range(1024)]


def _fast_resp(buf: bytes | bytearray, out: list[Request], max_bulk: int) -> int:
    """Parse the leading run of simple RESP commands in ``buf`` by one ``split`` on CRLF.

    Pipelined clients send many small commands per packet, and a per-command ``find``/``int``
    dance dominated the frontend's profile.  A command is taken here only if its framing checks
    out token by token (``*N``, then N pairs of ``$len`` and exactly ``len`` bytes), so any bulk
    that itself contains CRLF, any malformed header or an incomplete tail simply stops the fast
    path; the exact parser then continues from the returned position.
    """
    parts = bytes(buf).split(b"\r\n")
    last = len(parts) - 1  # parts[last] is an unterminated remainder
    counts, heads = _ARRAY_COUNTS, _BULK_HEADS
    check_size = max_bulk < len(buf)  # else no bulk in this buffer can be over the limit
    i = 0
    while i < last:
        count = counts.get(parts[i])
        if count is None:
            break
        stop = i + 1 + 2 * count
        if stop > last:
            break
        args = parts[i + 2:stop:2]
        for lh, arg in zip(parts[i + 1:stop:2], args):
            n = len(arg)
            if lh != (heads[n] if n < 1024 else b"$%d" % n) or (check_size and n > max_bulk):
                break
        else:
            out.append((args, True))
            i = stop
            continue
        break
    return sum(map(len, parts[:i])) + 2 * i  # the bytes of the parts taken, with their CRLFs


def parse_requests(buf: bytes | bytearray, max_line: int, max_bulk: int = 512 * 1024 * 1024,
                   resume: list | None = None, max_args: int = 1024 * 1024) -> Parsed:
    """Parse every complete request in ``buf``; ``consumed`` bytes of it are done with.

    ``resume``: a list the caller keeps per connection (see ``resp.parse_command``); it holds
    the progress of a RESP request left incomplete at the start of the unconsumed buffer.
    """
    out: list[Request] = []
    pos = 0
    end = len(buf)
    if resume:
        pass  # an incomplete command continues at 0: the fast path would start it over
    elif end and buf[0] == 42 and end <= _FAST_LIMIT and max_args >= 255:
        pos = _fast_resp(buf, out, max_bulk)
    while pos < end:
        if buf[pos] == 42:  # "*": RESP
            need: list[int] = []
            try:
                got = resp.parse_command(buf, pos, max_bulk=max_bulk, max_args=max_args,
                                         need=need, resume=resume)
            except resp.ProtocolError as exc:
                return Parsed(out, pos, resp.error(f"ERR Protocol error: {exc}"))
            if got is None:
                return Parsed(out, pos, None, need[0] - pos if need else 0)
            args, pos = got
            if args:
                out.append((args, True))
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
            out.append((args, None if line_end < nl else False))
    return Parsed(out, pos)
