"""Write acknowledgements: the stores' bookkeeping (zkv.replication.acks), the frontend's
waiters (zkv.frontend.waits) and the ack messages' strict decoding."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from zkv.events import DecodeError, decode_ack, decode_ackreq, encode_ack, encode_ackreq
from zkv.frontend.waits import AckWaiters
from zkv.replication.acks import Acked, AckRequests


def test_acked_is_monotonic_per_incarnation_and_only_for_peers() -> None:
    a = Acked(frozenset({"n1", "n2"}))
    assert a.update("n1", 5) and not a.update("n1", 3) and not a.update("n1", 5)
    assert not a.update("stranger", 99)
    assert a.count(5) == 1 and a.count(0) == 2 and a.count(6) == 0
    assert a.reset("n1", 3) and a.count(5) == 0  # a new incarnation holds what it says
    assert not a.reset("stranger", 1)


def test_ack_requests_ack_progress_and_forget_when_met() -> None:
    r = AckRequests()
    r.want("n0@a", 10)
    assert r.due({"n0@a": 4}) == [("n0@a", 4)]
    assert r.due({"n0@a": 4}) == []  # nothing new
    assert r.due({"n0@a": 12}) == [("n0@a", 12)]
    assert r.wanted == {}  # met: forgotten
    r.want("n0@a", 3)
    assert r.due({"n0@a": 12}) == [("n0@a", 12)]  # asked again: answered at once
    small = AckRequests(max_origins=2)
    for o in ("a@1", "b@1", "c@1"):
        small.want(o, 1)
    assert set(small.wanted) == {"a@1", "b@1"}


def test_waiters_answer_when_enough_peers_or_at_timeout() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        w = AckWaiters()
        got: list[tuple[str, int]] = []
        w.learn({"n1": 3, "n2": 1})
        assert w.wait(3, 1, None, lambda n: got.append(("now", n)), loop) is None
        w.wait(5, 2, None, lambda n: got.append(("both", n)), loop)
        w.wait(5, 2, 0.05, lambda n: got.append(("timeout", n)), loop)
        gone = w.wait(5, 1, None, lambda n: got.append(("cancelled", n)), loop)
        assert gone is not None
        w.cancel(gone)  # its connection closed: never answered, not kept
        assert got == [("now", 1)]
        w.learn({"n1": 6, "n2": 2})
        assert ("cancelled", 1) not in got
        await asyncio.sleep(0.1)
        assert got[1] == ("timeout", 1)
        w.learn({"n1": 1, "n2": 2})  # n1 restarted without some writes: its figure goes down
        assert w.count(5) == 0
        w.learn({"n1": 6, "n2": 5})
        assert got[2] == ("both", 2) and w.waiting == []
        w.learn("garbage")  # ignored
        assert w.acked == {"n1": 6, "n2": 5}

    asyncio.run(scenario())


def test_ack_messages_decode_strictly() -> None:
    assert decode_ackreq(encode_ackreq("n0@x", 7)) == ("n0@x", 7)
    assert decode_ack(encode_ack("n1", "n1@y", "n0@x", 7)) == ("n1", "n1@y", "n0@x", 7)
    for bad in (b"\xc1", msgpack.packb(["n0", -1]), msgpack.packb({"a": 1}), msgpack.packb(["", 1])):
        with pytest.raises(DecodeError):
            decode_ackreq(bad)
    with pytest.raises(DecodeError):
        decode_ack(msgpack.packb(["n1", "n1@y", "n0@x", 2**63]))
