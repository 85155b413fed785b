"""RESP2 wire format for zkv: request parsing and reply encoding.

This module owns the byte-level Redis protocol (RESP2) and nothing else. It is pure: no
sockets, no I/O, no buffering state. The connection handler owns its buffer and calls
``parse_command(buf, pos)`` repeatedly; the command layer builds replies with the encoders
below (``simple``, ``error``, ``integer``, ``bulk``, ``array``) and the ready-made constants.

Inline (plain-text) commands are not handled here; the caller dispatches on ``buf[pos]``.
ProtocolError messages mirror Redis's own where it has one (``invalid multibulk length``,
``invalid bulk length``, ``expected '$', got 'x'``, ``too big mbulk count string``, plus our
``expected CRLF after bulk data``); the caller replies ``ERR Protocol error: <message>``.
"""

from __future__ import annotations

__all__ = [
    "ProtocolError", "parse_command", "simple", "error", "integer", "bulk", "array",
    "OK", "PONG", "NULL_BULK", "NULL_ARRAY", "EMPTY_ARRAY", "MAX_HEADER",
]

#: Longest header line ('*N' or '$N', CRLF included) we wait for; Redis's PROTO_INLINE_MAX_SIZE.
MAX_HEADER = 64 * 1024
#: Bulk strings at least this long are copied out of a bytearray through a memoryview (one copy).
_BIG_COPY = 64 * 1024
#: More digits than this cannot be a valid length (2**63 has 19); refuse before calling int().
_MAX_DIGITS = 19

OK: bytes = b"+OK\r\n"
PONG: bytes = b"+PONG\r\n"
NULL_BULK: bytes = b"$-1\r\n"
NULL_ARRAY: bytes = b"*-1\r\n"
EMPTY_ARRAY: bytes = b"*0\r\n"


class ProtocolError(Exception):
    """Malformed RESP; message is the text after 'ERR Protocol error: ',
    e.g. "expected '$', got 'x'"."""


def _unexpected(want: str, byte: int) -> ProtocolError:
    return ProtocolError(f"expected '{want}', got '{chr(byte)}'")


def _multibulk_len(raw: bytes | bytearray) -> int | None:
    """Parse the count of a '*' header strictly (like Redis's string2ll); None if invalid."""
    digits = raw[1:] if raw[:1] == b"-" else raw
    if (not digits.isdigit() or len(digits) > _MAX_DIGITS
            or (digits[0] == 48 and len(raw) > 1)):  # no leading zeros, no "-0"
        return None
    return int(raw)


def _bulk_len(raw: bytes | bytearray) -> int:
    """Parse the length of a '$' header strictly (digits only, no leading zeros)."""
    if not raw.isdigit() or len(raw) > _MAX_DIGITS or (raw[0] == 48 and len(raw) > 1):
        raise ProtocolError("invalid bulk length")
    return int(raw)


def parse_command(
    buf: bytes | bytearray,
    pos: int,
    max_bulk: int = 512 * 1024 * 1024,
    max_args: int = 1024 * 1024,
    need: list[int] | None = None,
    resume: list | None = None,
) -> tuple[list[bytes], int] | None:
    """Parse one RESP2 array of bulk strings starting at ``buf[pos]`` (which should be b'*').

    Returns ``(args, new_pos)`` when the whole command is in ``buf``, or None when more bytes
    are needed (nothing is consumed: call again from the same ``pos`` once more data arrives).
    ``*0`` and negative counts such as ``*-1`` yield ``[]``, an empty command to ignore.
    Raises ProtocolError for malformed input, as early as the bytes seen allow: a bad count
    or one above ``max_args``, a missing '$', a bad bulk length or one above ``max_bulk``,
    bulk data not followed by CRLF, or a header line longer than MAX_HEADER with no CRLF.

    ``need`` (a list) receives, when known, the buffer length the command needs to finish.
    ``resume`` (a list the caller keeps per connection, initially empty) remembers the arguments
    of an incomplete command, so that a command of many arguments arriving in many reads is not
    re-parsed from its start each time (quadratic); it is only valid for a command that starts
    at the same ``pos`` of a buffer that only grew, and is emptied when the command completes.
    """
    n = len(buf)
    if pos >= n:
        return None
    if resume:
        count, args, offset = resume
        resume.clear()
        return _parse_args(buf, pos, count, args, pos + offset, max_bulk, need, resume)
    if buf[pos] != 42:  # '*'
        raise _unexpected("*", buf[pos])
    end = buf.find(b"\r\n", pos, pos + MAX_HEADER)
    if end < 0:
        if n - pos >= MAX_HEADER:
            raise ProtocolError("too big mbulk count string")
        return None
    count = buf[pos + 1] - 48 if end == pos + 2 else -1  # fast path: one digit
    if not 0 <= count <= 9:
        count = _multibulk_len(buf[pos + 1:end])
    if count is None or count > max_args:
        raise ProtocolError("invalid multibulk length")
    p = end + 2
    if count <= 0:
        return [], p
    return _parse_args(buf, pos, count, [], p, max_bulk, need, resume)


def _parse_args(buf: bytes | bytearray, pos: int, count: int, args: list[bytes], p: int,
                max_bulk: int, need: list[int] | None, resume: list | None) -> tuple[list[bytes], int] | None:
    """The bulk strings of a command from ``p`` on, after ``args`` already parsed."""
    n = len(buf)
    copy = type(buf) is not bytes  # slices of a bytearray are bytearrays: copy to bytes
    append = args.append
    for _ in range(count - len(args)):
        if p >= n:
            if resume is not None:
                resume[:] = [count, args, p - pos]
            return None
        if buf[p] != 36:  # '$'
            raise _unexpected("$", buf[p])
        end = buf.find(b"\r\n", p, p + MAX_HEADER)
        if end < 0:
            if n - p >= MAX_HEADER:
                raise ProtocolError("too big bulk count string")
            if resume is not None:
                resume[:] = [count, args, p - pos]
            return None
        size = buf[p + 1] - 48 if end == p + 2 else -1  # fast path: one digit
        if not 0 <= size <= 9:
            size = _bulk_len(buf[p + 1:end])
        if size > max_bulk:
            raise ProtocolError("invalid bulk length")
        start = end + 2
        stop = start + size
        if stop + 2 > n:
            if stop < n and buf[stop] != 13:  # fail fast on a wrong terminator
                raise ProtocolError("expected CRLF after bulk data")
            if need is not None:  # the buffer must reach at least this offset to finish
                need.append(stop + 2)
            if resume is not None:
                resume[:] = [count, args, p - pos]
            return None
        if not buf.startswith(b"\r\n", stop):
            raise ProtocolError("expected CRLF after bulk data")
        if not copy:
            append(buf[start:stop])
        elif size < _BIG_COPY:
            append(bytes(buf[start:stop]))
        else:
            with memoryview(buf) as view:
                append(view[start:stop].tobytes())
        p = stop + 2
    return args, p


# ----------------------------------------------------------------------------- replies


def _text(s: str | bytes) -> bytes:
    """UTF-8 encode and make safe for a one-line reply: trim CR/LF at the ends, blank the rest."""
    b = s.encode() if isinstance(s, str) else bytes(s)
    if b"\r" in b or b"\n" in b:
        b = b.strip(b"\r\n").replace(b"\r", b" ").replace(b"\n", b" ")
    return b


def simple(s: str | bytes) -> bytes:
    """Simple string: ``+OK\\r\\n``."""
    return b"+%b\r\n" % _text(s)


def error(msg: str | bytes) -> bytes:
    """Error reply from its full text (e.g. "ERR unknown command 'foo'"): ``-ERR ...\\r\\n``.

    A leading '-' in ``msg`` is not doubled; CR/LF inside ``msg`` cannot break the framing.
    """
    b = _text(msg)
    return b"%b\r\n" % b if b[:1] == b"-" else b"-%b\r\n" % b


def integer(n: int) -> bytes:
    """Integer reply: ``:1\\r\\n``."""
    return b":%d\r\n" % n


def bulk(b: bytes | None) -> bytes:
    """Bulk string ``$3\\r\\nfoo\\r\\n``; None gives the null bulk ``$-1\\r\\n``."""
    if b is None:
        return NULL_BULK
    return b"$%d\r\n%b\r\n" % (len(b), b)


def _encode_into(parts: list[bytes], items: list | tuple, null: bytes = NULL_BULK) -> None:
    parts.append(b"*%d\r\n" % len(items))
    for x in items:
        t = type(x)
        if t is bytes or t is bytearray or t is memoryview:
            parts.append(b"$%d\r\n%b\r\n" % (len(x), x))
        elif x is None:
            parts.append(null)
        elif t is str:
            e = x.encode()
            parts.append(b"$%d\r\n%b\r\n" % (len(e), e))
        elif isinstance(x, int):
            parts.append(b":%d\r\n" % x)
        elif isinstance(x, (list, tuple)):
            _encode_into(parts, x, null)
        else:
            raise TypeError(f"cannot encode {t.__name__} in a RESP array")


def array(items: list | tuple | None, null: bytes = NULL_BULK) -> bytes:
    """Array reply. Items: bytes -> bulk, None -> ``null`` (RESP2's null bulk by default; pass
    ``NULL3`` on a RESP3 connection), int -> integer, str -> bulk of its UTF-8, list/tuple ->
    nested array. ``array(None)`` is ``*-1\\r\\n``."""
    if items is None:
        return NULL_ARRAY
    parts: list[bytes] = []
    _encode_into(parts, items, null)
    return b"".join(parts)


# RESP3 (after HELLO 3): the same replies, except that null has a type of its own, and maps.
NULL3: bytes = b"_\r\n"


def bulk3(b: bytes | None) -> bytes:
    return NULL3 if b is None else b"$%d\r\n%b\r\n" % (len(b), b)


def set3(items: list) -> bytes:
    """A RESP3 set of bulk strings."""
    return b"~%d\r\n" % len(items) + b"".join(b"$%d\r\n%b\r\n" % (len(b), b) for b in items)


def map3(pairs: list) -> bytes:
    """RESP3 map from a flat [key, value, key, value, ...] list."""
    parts: list[bytes] = []
    _encode_into(parts, pairs, NULL3)
    parts[0] = b"%%%d\r\n" % (len(pairs) // 2)
    return b"".join(parts)
