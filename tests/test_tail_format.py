"""Unit tests for the pure formatting of ``zkv tail`` (zkv.tail.show / format_event / event_json).

Keys and values longer than ``MAX_SHOWN`` characters are shortened with their byte size; bytes
that are not UTF-8 are shown as backslash escapes instead of failing; JSON output is one valid
JSON object per event.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.events import Event
from zkv.tail import MAX_SHOWN, event_json, format_event, show

# 12:34:56.789 local time, whatever the machine's time zone
RECEIVED = time.mktime((2024, 3, 5, 12, 34, 56, 0, 0, -1)) + 0.789


# ------------------------------------------------------------------ show()


def test_show_none_is_dash() -> None:
    assert show(None) == "-"


def test_show_short_text_unchanged() -> None:
    assert show(b"hello world") == "hello world"
    assert show(b"") == ""


def test_show_exactly_limit_not_shortened() -> None:
    assert MAX_SHOWN == 60
    assert show(b"x" * 60) == "x" * 60


def test_show_long_value_shortened_with_size() -> None:
    assert show(b"x" * 61) == "x" * 60 + "...(61 bytes)"
    assert show(b"y" * 5000) == "y" * 60 + "...(5000 bytes)"


def test_show_custom_limit() -> None:
    assert show(b"abcdef", limit=3) == "abc...(6 bytes)"
    assert show(b"abc", limit=3) == "abc"


def test_show_non_utf8_bytes() -> None:
    assert show(b"\xff\xfeab") == "\\xff\\xfeab"
    assert show(b"caf\xc3\xa9") == "café"
    assert show(b"caf\xe9") == "caf\\xe9"  # latin-1, not UTF-8


def test_show_long_non_utf8_reports_byte_size() -> None:
    got = show(b"\xff" * 100)
    assert got.endswith("...(100 bytes)")
    assert got.startswith("\\xff\\xff")


@given(st.binary(max_size=200))
@settings(max_examples=100)
def test_show_never_fails_and_is_bounded(b: bytes) -> None:
    got = show(b)
    assert isinstance(got, str)
    suffix = f"...({len(b)} bytes)"
    assert len(got) <= MAX_SHOWN + len(suffix)
    if got.endswith(suffix) and len(b.decode("utf-8", "backslashreplace")) > MAX_SHOWN:
        assert got[:MAX_SHOWN] == b.decode("utf-8", "backslashreplace")[:MAX_SHOWN]
    else:
        assert got == b.decode("utf-8", "backslashreplace")


# ------------------------------------------------------------------ format_event()


def test_format_set_event() -> None:
    e = Event("n1", 42, 123, b"user:1", b"alice smith")
    assert format_event(e, RECEIVED) == "12:34:56.789 n1 #42 SET user:1 alice smith"


def test_format_delete_event() -> None:
    e = Event("n2", 7, 123, b"user:1", None)
    assert format_event(e, RECEIVED) == "12:34:56.789 n2 #7 DEL user:1"


def test_format_empty_value_is_a_set() -> None:
    e = Event("n1", 1, 1, b"k", b"")
    assert format_event(e, RECEIVED) == "12:34:56.789 n1 #1 SET k "


def test_format_shortens_long_key_and_value() -> None:
    e = Event("n1", 3, 1, b"k" * 100, b"v" * 1000)
    assert format_event(e, RECEIVED) == (
        "12:34:56.789 n1 #3 SET " + "k" * 60 + "...(100 bytes) " + "v" * 60 + "...(1000 bytes)"
    )


def test_format_non_utf8() -> None:
    e = Event("n1", 3, 1, b"\x00\xff", b"\x80")
    assert format_event(e, RECEIVED) == "12:34:56.789 n1 #3 SET \x00\\xff \\x80"


def test_format_millisecond_stamp() -> None:
    whole = time.mktime((2024, 3, 5, 1, 2, 3, 0, 0, -1))
    assert format_event(Event("a", 1, 1, b"k", None), whole).startswith("01:02:03.000 ")
    assert format_event(Event("a", 1, 1, b"k", None), whole + 0.5).startswith("01:02:03.500 ")


# ------------------------------------------------------------------ event_json()


def test_event_json_set() -> None:
    e = Event("n1", 42, 987654321, b"user:1", b"alice")
    got = json.loads(event_json(e, RECEIVED))
    assert got == {
        "time": RECEIVED, "origin": "n1", "seq": 42, "hlc": 987654321, "op": "SET",
        "key": "user:1", "value": "alice",
    }


def test_event_json_delete() -> None:
    got = json.loads(event_json(Event("n1", 1, 5, b"k", None), RECEIVED))
    assert got["op"] == "DEL"
    assert got["value"] is None


def test_event_json_is_one_line_and_full_length() -> None:
    e = Event("n1", 1, 5, b"k", b"line1\nline2" + b"z" * 500)
    text = event_json(e, RECEIVED)
    assert "\n" not in text
    assert json.loads(text)["value"] == "line1\nline2" + "z" * 500  # JSON is not shortened


def test_event_json_non_utf8() -> None:
    text = event_json(Event("n1", 1, 5, b"\xffk", b"v\xfe"), RECEIVED)
    got = json.loads(text)
    assert got["key"] == "\\xffk"
    assert got["value"] == "v\\xfe"


@given(st.binary(max_size=30), st.one_of(st.none(), st.binary(max_size=30)))
@settings(max_examples=100)
def test_event_json_always_valid(key: bytes, value: bytes | None) -> None:
    got = json.loads(event_json(Event("n1", 1, 2, key, value), RECEIVED))
    assert got["key"] == key.decode("utf-8", "backslashreplace")
    assert got["op"] == ("DEL" if value is None else "SET")


# ------------------------------------------------------------------ filters, stats, catch-up lines
def test_filter_by_key_glob_and_origin() -> None:
    from zkv.tail import Filter

    e = Event("node1@abc", 3, 1, b"user:7", b"x")
    assert Filter()(e)
    assert Filter(key="user:*")(e) and not Filter(key="order:*")(e)
    assert Filter(origin="node1")(e) and Filter(origin="node1@abc")(e)
    assert not Filter(origin="node2")(e) and not Filter(origin="node1@abd")(e)
    assert not Filter(key="user:*", origin="node2")(e)


def test_stats_line_rates_and_lags() -> None:
    from zkv.tail import Stats

    st = Stats(since=100.0)
    st.events.update({"n0@a": 50, "n1@b": 10})
    st.vvs = {"n0": {"n0@a": 100, "n1@b": 5}, "n1": {"n0@a": 90, "n1@b": 7}}
    line = st.line(102.0)
    assert "n0@a=25 n1@b=5" in line and "behind (events) n0=2 n1=10" in line
    assert not st.events and st.since == 102.0


def test_catchup_lines_are_marked() -> None:
    from zkv.tail import format_catchup

    pull = format_catchup({"kind": "pull", "from": "n0", "to": "n2", "origin": "n1@x",
                           "after": 40, "batches": 3, "bytes": 900}, RECEIVED)
    assert pull.endswith("catch-up n0 -> n2: 3 batches (900 bytes) of n1@x after #40")
    xfer = format_catchup({"kind": "transfer", "from": "n0", "to": "n2", "state": "sent"}, RECEIVED)
    assert "full transfer n0 -> n2: sent" in xfer


@pytest.mark.parametrize("key,value,line", [
    (b"c", 5, "INCRBY c 5"),
    (b"k", (b"v", 123), "SET k v PXAT 123"),
    (b"k", (0,), "PERSIST k"),
    (b"k", (99,), "PEXPIREAT k 99"),
    (b"\xff\x00h\x00\x00\x00\x01hf", b"x", "HSET h f x"),
    (b"\xff\x00h\x00\x00\x00\x01hf", None, "HDEL h f"),
    (b"\xff\x00h\x00\x00\x00\x01hf", 3, "HINCRBY h f 3"),
    (b"\xff\x00s\x00\x00\x00\x01sm", ("a", 1, "n1"), "SADD s m"),
    (b"\xff\x00s\x00\x00\x00\x01sm", ("r",), "SREM s m"),
])
def test_every_kind_of_write_is_named_as_its_command(key: bytes, value: object, line: str) -> None:
    e = Event("n1", 1, 1, key, value)  # type: ignore[arg-type]
    assert format_event(e, RECEIVED) == f"12:34:56.789 n1 #1 {line}"
    assert json.loads(event_json(e, RECEIVED))["op"] == line.split()[0]
