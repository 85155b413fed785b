"""Unit and property tests for zkv.protocol.requests (splitting input into plain/RESP requests).

Covered: partial reads (every split point of a pipelined byte string yields the same requests),
``\\r\\n`` and ``\\n`` line endings, the ``SET <key> <value>`` rule (value = rest of the line after
the key and one space), blank lines, the ``max_line`` limit, RESP and plain text mixed on one
buffer, and RESP protocol errors.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.protocol.requests import Parsed, Request, parse_requests, plain_args

MAX = 1024


def resp_cmd(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def feed(chunks: list[bytes], max_line: int = MAX) -> tuple[list[Request], bytes | None, bytes]:
    """Drive parse_requests like a connection does: append, parse, drop ``consumed`` bytes."""
    buf = bytearray()
    out: list[Request] = []
    for c in chunks:
        buf += c
        p = parse_requests(buf, max_line)
        out += p.requests
        if p.fatal is not None:
            return out, p.fatal, bytes(buf[p.consumed:])
        del buf[: p.consumed]
    return out, None, bytes(buf)


def args_of(p: Parsed) -> list[tuple[list[bytes], bool]]:
    return list(p.requests)


# ------------------------------------------------------------------ plain_args


@pytest.mark.parametrize("line, want", [
    (b"GET k", [b"GET", b"k"]),
    (b"  GET   k  ", [b"GET", b"k"]),
    (b"get\tk", [b"get", b"k"]),
    (b"SET k v", [b"SET", b"k", b"v"]),
    (b"SET k hello world", [b"SET", b"k", b"hello world"]),
    (b"SET k  two leading", [b"SET", b"k", b" two leading"]),
    (b"SET k trailing ", [b"SET", b"k", b"trailing "]),
    (b"SET k ", [b"SET", b"k", b""]),
    (b"SET k", [b"SET", b"k"]),
    (b"SET", [b"SET"]),
    (b"SET ", [b"SET"]),
    (b"set k v w", [b"set", b"k", b"v w"]),
    (b"SeT  k v", [b"SeT", b"k", b"v"]),
    (b"  SET k v", [b"SET", b"k", b"v"]),
    (b"SET k \tx", [b"SET", b"k", b"\tx"]),
    (b"SETX k v w", [b"SETX", b"k", b"v", b"w"]),
    (b"DELETE k", [b"DELETE", b"k"]),
    (b"", []),
    (b"   ", []),
])
def test_plain_args(line: bytes, want: list[bytes]) -> None:
    assert plain_args(line) == want


@given(st.binary(min_size=1, max_size=10).filter(lambda k: k.split() == [k]),
       st.binary(max_size=20).filter(lambda v: b"\n" not in v and b"\r" not in v))
@settings(max_examples=100)
def test_set_value_is_rest_of_line(key: bytes, value: bytes) -> None:
    line = b"SET " + key + b" " + value
    assert plain_args(line) == [b"SET", key, value]
    p = parse_requests(line + b"\r\n", MAX)
    assert args_of(p) == [([b"SET", key, value], None)]


# ------------------------------------------------------------------ parse_requests: plain


def test_single_plain_request_lf_and_crlf() -> None:
    """A line ending in CR LF is marked None: an inline command, as Redis tools send them."""
    for end, kind in ((b"\n", False), (b"\r\n", None)):
        p = parse_requests(b"GET k" + end, MAX)
        assert args_of(p) == [([b"GET", b"k"], kind)]
        assert p.consumed == 5 + len(end)
        assert p.fatal is None


def test_crlf_not_part_of_set_value() -> None:
    p = parse_requests(b"SET k a b\r\n", MAX)
    assert args_of(p) == [([b"SET", b"k", b"a b"], None)]


def test_set_empty_value() -> None:
    p = parse_requests(b"SET k \n", MAX)
    assert args_of(p) == [([b"SET", b"k", b""], False)]
    p = parse_requests(b"SET k \r\n", MAX)
    assert args_of(p) == [([b"SET", b"k", b""], None)]


def test_incomplete_line_is_not_consumed() -> None:
    p = parse_requests(b"GET k\nGET par", MAX)
    assert args_of(p) == [([b"GET", b"k"], False)]
    assert p.consumed == 6
    assert p.fatal is None
    assert parse_requests(b"", MAX) == Parsed([], 0)


def test_pipelined_requests() -> None:
    data = b"SET a 1\nGET a\r\nDELETE a\nPING\r\n"
    p = parse_requests(data, MAX)
    assert args_of(p) == [
        ([b"SET", b"a", b"1"], False), ([b"GET", b"a"], None),
        ([b"DELETE", b"a"], False), ([b"PING"], None),
    ]
    assert p.consumed == len(data)


def test_blank_lines_ignored() -> None:
    data = b"\n\r\n   \n\t\r\nPING\n\n"
    p = parse_requests(data, MAX)
    assert args_of(p) == [([b"PING"], False)]
    assert p.consumed == len(data)


def test_bytearray_input() -> None:
    p = parse_requests(bytearray(b"GET k\n"), MAX)
    assert args_of(p) == [([b"GET", b"k"], False)]
    assert type(p.requests[0][0][1]) is bytes


# ------------------------------------------------------------------ max_line


def test_line_longer_than_max_line_with_newline() -> None:
    p = parse_requests(b"PING\n" + b"x" * 17 + b"\n", 16)
    assert p.fatal == b"ERROR line too long\n"
    assert args_of(p) == [([b"PING"], False)]  # what came before is still served
    assert p.consumed == 5


def test_line_longer_than_max_line_crlf() -> None:
    p = parse_requests(b"x" * 17 + b"\r\n", 16)
    assert p.fatal == b"ERROR line too long\n"


def test_line_longer_than_max_line_without_newline() -> None:
    p = parse_requests(b"x" * 17, 16)
    assert p.fatal == b"ERROR line too long\n"
    assert p.consumed == 0
    p = parse_requests(b"GET k\n" + b"x" * 1000, 16)
    assert p.fatal == b"ERROR line too long\n"
    assert args_of(p) == [([b"GET", b"k"], False)]


def test_line_of_exactly_max_line_is_accepted() -> None:
    line = b"GET " + b"k" * 12  # 16 bytes
    for end, kind in ((b"\n", False), (b"\r\n", None)):
        p = parse_requests(line + end, 16)
        assert p.fatal is None
        assert args_of(p) == [([b"GET", b"k" * 12], kind)]
    p = parse_requests(line, 16)  # complete line, newline still to come: wait
    assert p.fatal is None and p.requests == [] and p.consumed == 0


def test_line_of_exactly_max_line_split_between_cr_and_lf() -> None:
    line = b"GET " + b"k" * 12  # 16 bytes: allowed
    p = parse_requests(line + b"\r", 16)
    assert p.fatal is None


# ------------------------------------------------------------------ RESP and mixing


def test_resp_request() -> None:
    data = resp_cmd(b"SET", b"k", b"a b\r\nc")
    p = parse_requests(data, MAX)
    assert args_of(p) == [([b"SET", b"k", b"a b\r\nc"], True)]
    assert p.consumed == len(data)


def test_resp_and_plain_mixed_on_one_buffer() -> None:
    data = b"PING\n" + resp_cmd(b"GET", b"k") + b"SET k v v\r\n" + resp_cmd(b"PING") + b"GET z\n"
    p = parse_requests(data, MAX)
    assert args_of(p) == [
        ([b"PING"], False), ([b"GET", b"k"], True), ([b"SET", b"k", b"v v"], None),
        ([b"PING"], True), ([b"GET", b"z"], False),
    ]
    assert p.consumed == len(data)


def test_resp_empty_array_ignored() -> None:
    data = b"*0\r\n*-1\r\n" + resp_cmd(b"PING")
    p = parse_requests(data, MAX)
    assert args_of(p) == [([b"PING"], True)]
    assert p.consumed == len(data)


def test_incomplete_resp_waits() -> None:
    data = resp_cmd(b"GET", b"key")
    p = parse_requests(b"PING\n" + data[:-3], MAX)
    assert args_of(p) == [([b"PING"], False)]
    assert p.consumed == 5
    assert p.fatal is None


@pytest.mark.parametrize("bad", [
    b"*x\r\n",
    b"*1\r\nGET\r\n",
    b"*1\r\n$3\r\nGETxx",
    b"*1\r\n$-5\r\n",
])
def test_resp_protocol_error_is_fatal(bad: bytes) -> None:
    p = parse_requests(b"PING\n" + bad, MAX)
    assert p.fatal is not None
    assert p.fatal.startswith(b"-ERR Protocol error")
    assert p.fatal.endswith(b"\r\n")
    assert args_of(p) == [([b"PING"], False)]
    assert p.consumed == 5


def test_resp_error_message_names_the_problem() -> None:
    p = parse_requests(b"*1\r\nGET\r\n", MAX)
    assert p.fatal == b"-ERR Protocol error: expected '$', got 'G'\r\n"


def test_max_bulk_is_enforced() -> None:
    p = parse_requests(resp_cmd(b"SET", b"k", b"x" * 100), MAX, max_bulk=10)
    assert p.fatal is not None and p.fatal.startswith(b"-ERR Protocol error")
    p = parse_requests(resp_cmd(b"SET", b"k", b"x" * 10), MAX, max_bulk=10)
    assert p.fatal is None and len(p.requests) == 1


# ------------------------------------------------------------------ partial reads


PIPELINE = (
    b"SET a hello world\r\n"
    b"\n"
    + resp_cmd(b"SET", b"b", b"x\r\ny")
    + b"GET a\n"
    b"SET e \n"
    + resp_cmd(b"MGET", b"a", b"b")
    + b"  PING  \r\n"
    b"DELETE a\n"
)
PIPELINE_WANT = [
    ([b"SET", b"a", b"hello world"], None),
    ([b"SET", b"b", b"x\r\ny"], True),
    ([b"GET", b"a"], False),
    ([b"SET", b"e", b""], False),
    ([b"MGET", b"a", b"b"], True),
    ([b"PING"], None),
    ([b"DELETE", b"a"], False),
]


def test_every_split_point_gives_the_same_requests() -> None:
    for i in range(len(PIPELINE) + 1):
        reqs, fatal, rest = feed([PIPELINE[:i], PIPELINE[i:]])
        assert fatal is None, i
        assert list(reqs) == PIPELINE_WANT, i
        assert rest == b""


def test_byte_at_a_time() -> None:
    reqs, fatal, rest = feed([PIPELINE[i:i + 1] for i in range(len(PIPELINE))])
    assert fatal is None and rest == b""
    assert list(reqs) == PIPELINE_WANT


@given(st.lists(st.integers(0, len(PIPELINE)), max_size=8))
@settings(max_examples=100)
def test_any_chunking_gives_the_same_requests(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(PIPELINE)]
    chunks = [PIPELINE[a:b] for a, b in zip(points, points[1:])]
    reqs, fatal, rest = feed(chunks)
    assert fatal is None and rest == b""
    assert list(reqs) == PIPELINE_WANT


def test_too_long_line_detected_at_every_split_point() -> None:
    data = b"GET a\n" + b"y" * 40 + b"\n"
    for i in range(len(data) + 1):
        reqs, fatal, _rest = feed([data[:i], data[i:]], max_line=16)
        assert fatal == b"ERROR line too long\n", i
        assert list(reqs) == [([b"GET", b"a"], False)]


def test_many_argument_command_in_many_reads_is_parsed_once() -> None:
    """A command split over many reads resumes where it stopped (no quadratic re-parsing),
    and gives the same arguments as when it arrives whole."""
    import time

    n = 100_000
    cmd = b"*%d\r\n$4\r\nMSET\r\n" % (2 * n + 1) + b"".join(b"$6\r\nk%05d\r\n$1\r\nv\r\n" % i for i in range(n))
    cmd += b"*1\r\n$4\r\nPING\r\n"
    buf = bytearray()
    resume: list = []
    got: list = []
    t0 = time.perf_counter()
    for i in range(0, len(cmd), 4096):
        buf += cmd[i:i + 4096]
        p = parse_requests(buf, MAX, resume=resume)
        del buf[:p.consumed]
        got += p.requests
    elapsed = time.perf_counter() - t0
    assert [r[0][0] for r in got] == [b"MSET", b"PING"]
    assert got[0][0] == parse_requests(cmd, MAX).requests[0][0]
    assert not buf and not resume
    assert elapsed < 5.0, f"{elapsed:.1f}s: re-parsing from the start on every read?"


def test_fast_path_rejects_leading_zero_counts_like_the_exact_parser() -> None:
    for data in (b"*01\r\n$4\r\nPING\r\n", b"PING\r\n*01\r\n$4\r\nPING\r\n"):
        p = parse_requests(data, MAX)
        assert p.fatal is not None and b"invalid multibulk length" in p.fatal


# ------------------------------------------------------------------ the RESP fast path

def _cmd(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


_arg = st.one_of(st.binary(max_size=8), st.sampled_from([b"\r\n", b"a\r\nb", b"x" * 1023, b"y" * 1024]))
_junk = st.sampled_from([b"*0\r\n", b"*01\r\n$1\r\na\r\n", b"$3\r\nabc\r\n", b"*1\r\n$01\r\na\r\n",
                         b"*1\r\n$2\r\na\r\n", b"*256\r\n", b"PING\r\n", b"*2\r\n$1\r\na\r\n"])


@given(st.lists(st.one_of(st.lists(_arg, min_size=1, max_size=4).map(_cmd), _junk), max_size=6),
       st.integers(0, 40), st.sampled_from([4, 1024, 512 * 1024 * 1024]))
@settings(max_examples=300)
def test_fast_path_takes_exactly_what_the_exact_parser_would(pieces: list[bytes], cut: int,
                                                             max_bulk: int) -> None:
    from zkv.protocol.requests import _fast_resp
    from zkv.protocol.resp import parse_command

    buf = b"".join(pieces)
    buf = buf[:max(0, len(buf) - cut)]
    out: list[Request] = []
    pos = _fast_resp(buf, out, max_bulk)
    p, exact = 0, []
    while p < pos:
        got = parse_command(buf, p, max_bulk=max_bulk)
        assert got is not None, (buf, pos)
        args, p = got
        exact.append(args)
    assert p == pos
    assert [args for args, _resp in out] == exact
    assert all(is_resp for _args, is_resp in out)


@given(st.lists(st.lists(st.binary(max_size=20).filter(lambda a: b"\r\n" not in a), min_size=1, max_size=5),
                min_size=1, max_size=10))
def test_fast_path_takes_every_plain_pipelined_command(commands: list[list[bytes]]) -> None:
    from zkv.protocol.requests import _fast_resp

    buf = b"".join(_cmd(c) for c in commands)
    out: list[Request] = []
    assert _fast_resp(buf, out, 512 * 1024 * 1024) == len(buf)
    assert [args for args, _resp in out] == commands
