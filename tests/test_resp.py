"""Unit and property tests for zkv.protocol.resp (RESP2 parsing and reply encoding)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.protocol import resp
from zkv.protocol.resp import (
    MAX_HEADER, NULL_BULK, OK, PONG, ProtocolError, array, bulk, error, integer,
    parse_command, simple,
)


def enc(*args: bytes) -> bytes:
    """Reference RESP encoding of a command, independent of resp.array()."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


BUFTYPES = [bytes, bytearray]


# ------------------------------------------------------------------ parse: valid input


@pytest.mark.parametrize("kind", BUFTYPES)
def test_parse_simple_command(kind):
    data = kind(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n")
    assert parse_command(data, 0) == ([b"SET", b"key", b"value"], len(data))


@pytest.mark.parametrize("kind", BUFTYPES)
def test_parse_returns_bytes_not_bytearray(kind):
    args, _ = parse_command(kind(enc(b"GET", b"k")), 0)
    assert [type(a) for a in args] == [bytes, bytes]


def test_parse_big_bulk_from_bytearray_is_bytes():
    big = bytes(range(256)) * 1024  # 256 KiB, crosses the memoryview copy threshold
    data = bytearray(enc(b"SET", b"k", big))
    args, end = parse_command(data, 0)
    assert args == [b"SET", b"k", big] and type(args[2]) is bytes and end == len(data)
    data += b"more"  # the buffer must not stay locked by an exported memoryview
    assert data.endswith(b"more")


@pytest.mark.parametrize("kind", BUFTYPES)
def test_parse_at_offset_and_pipelined(kind):
    first, second = enc(b"PING"), enc(b"ECHO", b"hi")
    data = kind(b"junk" + first + second)
    args, p = parse_command(data, 4)
    assert (args, p) == ([b"PING"], 4 + len(first))
    args, p = parse_command(data, p)
    assert (args, p) == ([b"ECHO", b"hi"], len(data))
    assert parse_command(data, p) is None


def test_parse_empty_and_binary_bulks():
    value = b"a\r\nb\x00\xff\r\n$3\r\n*1\r\n"
    data = enc(b"SET", b"", value)
    assert parse_command(data, 0) == ([b"SET", b"", value], len(data))


@pytest.mark.parametrize("header", [b"*0\r\n", b"*-1\r\n", b"*-5\r\n"])
def test_parse_empty_command(header):
    assert parse_command(header + b"rest", 0) == ([], len(header))


def test_parse_zero_length_bulk_header():
    assert parse_command(b"*1\r\n$0\r\n\r\n", 0) == ([b""], 10)


def test_parse_limits_allow_exact_maximum():
    assert parse_command(enc(b"abcd"), 0, max_bulk=4) == ([b"abcd"], 14)
    assert parse_command(enc(b"a", b"b"), 0, max_args=2) == ([b"a", b"b"], 18)


@pytest.mark.parametrize("kind", BUFTYPES)
@pytest.mark.parametrize("cmd", [
    enc(b"PING"),
    enc(b"SET", b"key", b"value"),
    enc(b"SET", b"", b"\r\n\r\n"),
    enc(b"MSET", b"k1", b"v" * 300, b"k2", b"x"),
    b"*0\r\n",
    b"*-1\r\n",
])
def test_every_proper_prefix_needs_more(kind, cmd):
    for cut in range(len(cmd)):
        assert parse_command(kind(cmd[:cut]), 0) is None, cmd[:cut]
        assert parse_command(kind(b"xx" + cmd[:cut]), 2) is None, cmd[:cut]
    assert parse_command(kind(cmd), 0)[1] == len(cmd)


def test_pos_at_or_past_end_needs_more():
    assert parse_command(b"", 0) is None
    assert parse_command(b"*1\r\n", 4) is None


# ------------------------------------------------------------------ parse: malformed input


def perr(data: bytes, **kw) -> str:
    with pytest.raises(ProtocolError) as exc:
        parse_command(data, 0, **kw)
    return str(exc.value)


@pytest.mark.parametrize("header", [
    b"*x\r\n", b"*\r\n", b"*-\r\n", b"*:\r\n", b"*1x\r\n", b"*+1\r\n", b"* 1\r\n",
    b"*1 \r\n", b"*01\r\n",
    b"*-0\r\n", b"*1_0\r\n", b"*--1\r\n", b"*1\r\r\n", b"*" + b"9" * 25 + b"\r\n",
])
def test_bad_multibulk_length(header):
    assert perr(header + b"$1\r\na\r\n") == "invalid multibulk length"


def test_too_many_args():
    assert perr(b"*3\r\n", max_args=2) == "invalid multibulk length"
    assert perr(b"*1048577\r\n") == "invalid multibulk length"


@pytest.mark.parametrize("data,got", [
    (b"*1\r\nx", "x"),
    (b"*1\r\n:1\r\n", ":"),
    (b"*1\r\n+OK\r\n", "+"),
    (b"*2\r\n$1\r\na\r\n*1\r\n", "*"),
    (b"*1\r\n\r\n", "\r"),
])
def test_expected_dollar(data, got):
    assert perr(data) == f"expected '$', got '{got}'"


def test_expected_star_at_pos():
    assert perr(b"$1\r\na\r\n") == "expected '*', got '$'"


@pytest.mark.parametrize("header", [
    b"$x", b"$", b"$-", b"$:", b"$-1", b"$-0", b"$+1", b"$ 1", b"$1 ", b"$01", b"$1_0", b"$1.0",
    b"$" + b"9" * 25,
])
def test_bad_bulk_length(header):
    assert perr(b"*1\r\n" + header + b"\r\na\r\n") == "invalid bulk length"


def test_bulk_longer_than_max_bulk():
    assert perr(b"*1\r\n$5\r\n", max_bulk=4) == "invalid bulk length"
    assert perr(b"*1\r\n$536870913\r\n") == "invalid bulk length"


@pytest.mark.parametrize("data", [
    b"*1\r\n$3\r\nfooXY",
    b"*1\r\n$3\r\nfoo\rX",
    b"*1\r\n$3\r\nfoo\n\r",
    b"*1\r\n$3\r\nfoobar\r\n",
    b"*1\r\n$3\r\nfooX",  # fail fast: the first terminator byte is already wrong
    b"*2\r\n$1\r\na\r\n$1\r\nbc\r\n",
])
def test_missing_crlf_after_bulk(data):
    assert perr(data) == "expected CRLF after bulk data"


def test_unterminated_header_lines_are_bounded():
    assert parse_command(b"*" + b"1" * (MAX_HEADER - 2), 0) is None
    assert perr(b"*" + b"1" * (MAX_HEADER - 1)) == "too big mbulk count string"
    assert perr(b"*" + b"1" * 100_000) == "too big mbulk count string"
    prefix = b"*1\r\n$"
    assert parse_command(prefix + b"1" * (MAX_HEADER - 2), 0) is None
    assert perr(prefix + b"1" * (MAX_HEADER - 1)) == "too big bulk count string"


def test_header_line_of_exactly_max_header_is_read():
    line = b"*" + b"1" * (MAX_HEADER - 3) + b"\r\n"  # CRLF included: MAX_HEADER bytes
    assert len(line) == MAX_HEADER
    assert perr(line) == "invalid multibulk length"  # parsed (too many digits), not "too big"
    assert perr(b"*" + b"1" * (MAX_HEADER - 2) + b"\r\n") == "too big mbulk count string"


def test_protocol_error_is_exception():
    assert issubclass(ProtocolError, Exception)


# ------------------------------------------------------------------ reply encoders


def test_constants():
    assert OK == b"+OK\r\n" and PONG == b"+PONG\r\n" and NULL_BULK == b"$-1\r\n"
    assert simple("OK") == OK and simple("PONG") == PONG


def test_simple():
    assert simple("OK") == b"+OK\r\n"
    assert simple(b"QUEUED") == b"+QUEUED\r\n"
    assert simple("caf\u00e9") == b"+caf\xc3\xa9\r\n"
    assert simple("a\r\nb") == b"+a  b\r\n"


def test_error():
    assert error("ERR unknown command 'foo'") == b"-ERR unknown command 'foo'\r\n"
    assert error(b"WRONGTYPE Operation") == b"-WRONGTYPE Operation\r\n"
    assert error("ERR bad\r\n") == b"-ERR bad\r\n"
    assert error("ERR a\r\nb\nc\rd") == b"-ERR a  b c d\r\n"
    assert error("-ERR already prefixed") == b"-ERR already prefixed\r\n"
    assert error("ERR Protocol error: expected '$', got '\r'") == (
        b"-ERR Protocol error: expected '$', got ' '\r\n")


def test_integer():
    assert integer(1) == b":1\r\n"
    assert integer(0) == b":0\r\n"
    assert integer(-42) == b":-42\r\n"
    assert integer(2**63 - 1) == b":9223372036854775807\r\n"


def test_bulk():
    assert bulk(b"foo") == b"$3\r\nfoo\r\n"
    assert bulk(b"") == b"$0\r\n\r\n"
    assert bulk(None) == b"$-1\r\n"
    assert bulk(b"a\r\nb") == b"$4\r\na\r\nb\r\n"
    assert bulk(bytearray(b"xy")) == b"$2\r\nxy\r\n"


def test_array():
    assert array(None) == b"*-1\r\n"
    assert array([]) == b"*0\r\n"
    assert array([b"a", b"bc"]) == b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
    assert array([None, 7, "\u00e9"]) == b"*3\r\n$-1\r\n:7\r\n$2\r\n\xc3\xa9\r\n"
    assert array([b"x", [1, [b"y", None]], []]) == (
        b"*3\r\n$1\r\nx\r\n*2\r\n:1\r\n*2\r\n$1\r\ny\r\n$-1\r\n*0\r\n")
    assert array((b"t", (2,))) == b"*2\r\n$1\r\nt\r\n*1\r\n:2\r\n"
    assert array([bytearray(b"ba"), memoryview(b"mv")]) == b"*2\r\n$2\r\nba\r\n$2\r\nmv\r\n"


def test_array_rejects_unknown_types():
    with pytest.raises(TypeError):
        array([1.5])
    with pytest.raises(TypeError):
        array([{b"k": b"v"}])


def test_array_of_bytes_matches_reference_and_parses_back():
    items = [b"SET", b"k", b"v\r\n"]
    assert array(items) == enc(*items)
    assert parse_command(array(items), 0) == (items, len(array(items)))


def test_module_has_docstring():
    assert resp.__doc__ and "RESP" in resp.__doc__


# ------------------------------------------------------------------ properties

byte_lists = st.lists(st.binary(max_size=64), max_size=12)


def split_points(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=300)
@given(items=byte_lists, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_roundtrip_in_arbitrary_chunks(items, cuts):
    data = array(items)
    assert data == enc(*items)
    buf = bytearray()
    chunks = split_points(data, cuts)
    for i, chunk in enumerate(chunks):
        buf += chunk
        result = parse_command(buf, 0)
        if i < len(chunks) - 1:
            assert result is None
    assert result == (items, len(data))
    assert parse_command(bytes(buf), 0) == (items, len(data))


@settings(max_examples=200)
@given(cmds=st.lists(byte_lists, min_size=1, max_size=5),
       cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_pipelined_stream_in_arbitrary_chunks(cmds, cuts):
    """A connection-style loop: append chunks, parse every complete command, drop consumed bytes."""
    stream = b"".join(array(c) for c in cmds)
    buf, seen = bytearray(), []
    for chunk in split_points(stream, cuts):
        buf += chunk
        pos = 0
        while (result := parse_command(buf, pos)) is not None:
            args, pos = result
            seen.append(args)
        del buf[:pos]
    assert seen == cmds and not buf


@settings(max_examples=500)
@given(data=st.binary(max_size=200), pos=st.integers(min_value=0, max_value=10))
def test_garbage_never_crashes(data, pos):
    try:
        result = parse_command(b"*" + data, pos)
    except ProtocolError:
        return
    if result is not None:
        args, end = result
        assert all(type(a) is bytes for a in args) and pos < end <= len(data) + 1
