"""Unit and property tests for zkv.events (replication events, batches and heartbeats on the wire).

Batches and heartbeats must survive an encode/decode round trip unchanged; ``slice_from`` and
``events()`` must keep sequence numbers aligned with items; and undecodable input of any kind
must raise ``DecodeError`` and nothing else.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkv.events import (
    TOPIC_EVENTS, TOPIC_HEARTBEAT, Batch, DecodeError, Event, Heartbeat, decode_batch,
    decode_heartbeat, encode_batch, encode_heartbeat, new_origin, node_of, split_items,
)

items_st = st.lists(
    # (keys that begin with the bytes reserved for hash fields and set members name one, checked
    # apart: tests/test_hash_set_rules.py)
    st.tuples(st.integers(0, 2**63 - 1), st.binary(max_size=12).filter(lambda k: k[:2] != b"\xff\x00"),
              st.one_of(st.none(), st.binary(max_size=12))),
    min_size=1, max_size=8, unique_by=lambda it: it[0],
).map(lambda items: sorted(items, key=lambda it: it[0]))  # an origin stamps in increasing order
batches = st.builds(Batch, st.text(min_size=1, max_size=8), st.integers(1, 2**40), items_st)
heartbeats = st.builds(
    Heartbeat,
    id=st.text(min_size=1, max_size=8),
    seq=st.integers(0, 2**40),
    hlc=st.integers(0, 2**63 - 1),
    vv=st.dictionaries(st.text(min_size=1, max_size=6), st.integers(0, 2**40), max_size=4),
    stable=st.integers(0, 2**63 - 1),
    digest=st.binary(max_size=16),
    keys=st.integers(0, 2**32),
    catchup=st.text(max_size=20),
    peers=st.lists(st.text(min_size=1, max_size=6), max_size=4),
    origin=st.text(min_size=1, max_size=12),
    wall=st.integers(0, 2**50),
    seen=st.dictionaries(st.text(min_size=1, max_size=6), st.integers(0, 2**63 - 1), max_size=3),
    held=st.dictionaries(st.text(min_size=1, max_size=6),
                         st.lists(st.integers(1, 2**40), min_size=2, max_size=2), max_size=3),
)


def test_topics() -> None:
    assert TOPIC_EVENTS == b"ev"
    assert TOPIC_HEARTBEAT == b"hb"


# ------------------------------------------------------------------ Batch / Event


def make_batch() -> Batch:
    return Batch("n1", 5, [(100, b"a", b"1"), (101, b"b", None), (102, b"c", b"")])


def test_last_seq() -> None:
    assert make_batch().last_seq == 7
    assert Batch("n1", 5, [(1, b"k", b"v")]).last_seq == 5


def test_events_carry_consecutive_seqs() -> None:
    evs = make_batch().events()
    assert evs == [
        Event("n1", 5, 100, b"a", b"1"),
        Event("n1", 6, 101, b"b", None),
        Event("n1", 7, 102, b"c", b""),
    ]
    assert [e.op for e in evs] == ["SET", "DEL", "SET"]  # empty value is a SET


def test_slice_from() -> None:
    b = make_batch()
    assert b.slice_from(5) is b
    assert b.slice_from(1) is b
    s = b.slice_from(6)
    assert s == Batch("n1", 6, [(101, b"b", None), (102, b"c", b"")])
    assert s.last_seq == 7
    assert [e.seq for e in s.events()] == [6, 7]
    s7 = b.slice_from(7)
    assert s7.first_seq == 7 and s7.items == [(102, b"c", b"")]
    assert b.items == [(100, b"a", b"1"), (101, b"b", None), (102, b"c", b"")]  # not mutated


@given(batches.filter(lambda b: len(b.items) > 0), st.data())
@settings(max_examples=50)
def test_slice_from_property(b: Batch, data: st.DataObject) -> None:
    seq = data.draw(st.integers(b.first_seq, b.last_seq))
    s = b.slice_from(seq)
    assert s.first_seq == seq and s.last_seq == b.last_seq
    assert s.events() == [e for e in b.events() if e.seq >= seq]


# ------------------------------------------------------------------ batch encoding


def test_batch_round_trip() -> None:
    b = make_batch()
    payload = encode_batch(b)
    assert isinstance(payload, bytes)
    assert decode_batch(payload) == b


def test_batch_wire_format() -> None:
    raw = msgpack.unpackb(encode_batch(make_batch()), raw=False)
    assert raw == ["n1", 5, [[100, b"a", b"1"], [101, b"b", None], [102, b"c", b""]]]


@given(batches)
@settings(max_examples=100)
def test_batch_round_trip_property(b: Batch) -> None:
    got = decode_batch(encode_batch(b))
    assert got == b
    assert all(isinstance(i, tuple) for i in got.items)
    assert got.events() == b.events()


@pytest.mark.parametrize("obj", [
    ["n1", 0, []],                          # first_seq must be >= 1
    ["n1", -3, []],
    [b"n1", 1, []],                         # origin must be text
    ["n1", "1", []],
    ["n1", 1, [[1, b"k"]]],                 # item too short
    ["n1", 1, [[1, b"k", b"v", b"x"]]],     # item too long
    ["n1", 1, [["1", b"k", b"v"]]],         # hlc not int
    ["n1", 1, [[1, "k", b"v"]]],            # key not bytes
    ["n1", 1, [[1, b"k", "v"]]],            # value not bytes/None/an increment
    ["n1", 1, [[1, b"k", 1 << 63]]],        # an increment beyond 64 bits
    ["n1", 1, [[1, b"k", 1.5]]],
    ["n1", 1, 7],                           # items not a list
    ["n1", 1],                              # header too short
    {"origin": "n1"},
    42,
])
def test_malformed_batches_raise_decode_error(obj: object) -> None:
    payload = msgpack.packb(obj, use_bin_type=True)
    with pytest.raises(DecodeError):
        decode_batch(payload)


@pytest.mark.parametrize("payload", [b"", b"\xc1", b"garbage", b"\x93", encode_batch(make_batch()) + b"x"])
def test_garbage_batch_raises_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_batch(payload)


def test_decode_error_is_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_random_bytes_never_raise_anything_but_decode_error(payload: bytes) -> None:
    for decode in (decode_batch, decode_heartbeat):
        try:
            decode(payload)
        except DecodeError:
            pass


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=4) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=12,
))
@settings(max_examples=200)
def test_random_msgpack_never_raises_anything_but_decode_error(obj: object) -> None:
    payload = msgpack.packb(obj, use_bin_type=True)
    for decode in (decode_batch, decode_heartbeat):
        try:
            decode(payload)
        except DecodeError:
            pass


# ------------------------------------------------------------------ heartbeat


def make_hb() -> Heartbeat:
    return Heartbeat(
        id="n1", seq=10, hlc=123456789, vv={"n1": 10, "n2": 4}, stable=99,
        digest=b"\x00\x01" * 8, keys=3, catchup="tcp://127.0.0.1:7101", peers=["n2", "n3"],
        origin="n1@5f00aa01", wall=1_700_000_000_000,
    )


def test_heartbeat_round_trip() -> None:
    hb = make_hb()
    assert decode_heartbeat(encode_heartbeat(hb)) == hb


def test_heartbeat_seen_and_held_are_checked() -> None:
    hb = make_hb()
    d = msgpack.unpackb(encode_heartbeat(hb), raw=False)
    for bad in ({"seen": {"n2": -1}}, {"seen": {"n2": 2**63}}, {"seen": []}, {"held": {"o": [1]}},
                {"held": {"o": [1, "x"]}}, {"held": {"o": 5}}):
        with pytest.raises(DecodeError):
            decode_heartbeat(msgpack.packb({**d, **bad}, use_bin_type=True))
    ok = decode_heartbeat(msgpack.packb({**d, "seen": {"n2": 5}, "held": {"o": [3, 9]}}, use_bin_type=True))
    assert ok.seen == {"n2": 5} and ok.held == {"o": [3, 9]}


def test_heartbeat_default_peers() -> None:
    hb = Heartbeat("n1", 0, 0, {}, 0, b"", 0, "", origin="n1")
    assert hb.peers == []
    assert decode_heartbeat(encode_heartbeat(hb)) == hb


def test_heartbeat_without_peers_field_decodes() -> None:
    """Older senders do not include ``peers``."""
    d = {"id": "n1", "seq": 1, "hlc": 2, "vv": {}, "stable": 0, "digest": b"d", "keys": 0, "catchup": "c"}
    hb = decode_heartbeat(msgpack.packb(d, use_bin_type=True))
    assert hb.peers == [] and hb.id == "n1" and hb.digest == b"d"


@given(heartbeats)
@settings(max_examples=100)
def test_heartbeat_round_trip_property(hb: Heartbeat) -> None:
    assert decode_heartbeat(encode_heartbeat(hb)) == hb


@pytest.mark.parametrize("obj", [
    {"id": "n1"},                       # missing fields
    ["n1", 1, 2],                       # not a map
    {"id": "n1", "seq": "x", "hlc": 2, "vv": {}, "stable": 0, "digest": b"", "keys": 0, "catchup": ""},
    None,
    # hostile values: each must be refused before it reaches a store
    {"id": "n1", "seq": 1, "hlc": 2**64 - 1, "vv": {}, "stable": 0, "digest": b"", "keys": 0, "catchup": ""},
    {"id": "n1", "seq": 1, "hlc": 2, "vv": {"n0": "x"}, "stable": 0, "digest": b"", "keys": 0, "catchup": ""},
    {"id": "n1", "seq": 1, "hlc": 2, "vv": {"n0": -1}, "stable": 0, "digest": b"", "keys": 0, "catchup": ""},
    {"id": "n1", "seq": 1, "hlc": 2, "vv": {7: 1}, "stable": 0, "digest": b"", "keys": 0, "catchup": ""},
    {"id": "n1", "seq": 1, "hlc": 2, "vv": [], "stable": 0, "digest": b"", "keys": 0, "catchup": ""},
    {"id": 5, "seq": 1, "hlc": 2, "vv": {}, "stable": 0, "digest": b"", "keys": 0, "catchup": ""},
    {"id": "n1", "seq": True, "hlc": 2, "vv": {}, "stable": 0, "digest": b"", "keys": 0, "catchup": ""},
    {"id": "n1", "seq": 1, "hlc": 2, "vv": {}, "stable": 0, "digest": "s", "keys": 0, "catchup": ""},
    {"id": "n1", "seq": 1, "hlc": 2, "vv": {}, "stable": 0, "digest": b"", "keys": 0, "catchup": 3},
    {"id": "n1", "seq": 1, "hlc": 2, "vv": {}, "stable": 0, "digest": b"", "keys": 0, "catchup": "",
     "peers": [1]},
])
def test_malformed_heartbeat_raises_decode_error(obj: object) -> None:
    with pytest.raises(DecodeError):
        decode_heartbeat(msgpack.packb(obj, use_bin_type=True))


def test_heartbeat_is_not_a_batch() -> None:
    with pytest.raises(DecodeError):
        decode_batch(encode_heartbeat(make_hb()))
    with pytest.raises(DecodeError):
        decode_heartbeat(encode_batch(make_batch()))


@pytest.mark.parametrize("obj", [
    ["n1", 1, [[2**64 - 1, b"k", b"v"]]],          # a timestamp beyond 63 bits
    ["n1", 1, [[5, b"k", b"v"], [5, b"j", None]]],  # timestamps not increasing
    ["n1", 1, [[5, b"k", b"v"], [4, b"j", None]]],
    ["n1", 1, []],                                   # an empty batch
    ["n1", 2**63 - 1, [[5, b"k", b"v"], [6, b"j", None]]],  # seqs past 63 bits
    ["", 1, [[5, b"k", b"v"]]],                      # no origin
    ["n1", 1, [[5, "k", b"v"]]],                     # a str key
])
def test_hostile_batch_raises_decode_error(obj: object) -> None:
    with pytest.raises(DecodeError):
        decode_batch(msgpack.packb(obj, use_bin_type=True))


def test_split_items_bounds_bytes_and_keeps_order() -> None:
    items = [(i, b"k%d" % i, b"x" * 100) for i in range(10)]
    runs = split_items(items, max_bytes=350)
    assert [it for run in runs for it in run] == items
    assert all(sum(len(k) + len(v) + 16 for _h, k, v in run) <= 350 for run in runs)
    big = [(1, b"a", b"x" * 1000), (2, b"b", None)]
    assert split_items(big, max_bytes=100) == [[big[0]], [big[1]]]  # one too-big item alone


def test_origins_are_fresh_incarnations_of_their_node() -> None:
    a, b = new_origin("node0"), new_origin("node0")
    assert a != b and node_of(a) == node_of(b) == "node0"
    assert node_of("node0") == "node0"
