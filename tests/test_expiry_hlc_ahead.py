"""Replies judge expiry as the stored events do (a review found them apart): the replies of
INCR / EXPIRE judged the key alive by the node's wall clock, but the event is stamped by the
HLC, and the rule (zkv.store.counter ``view``) judges "expired before this event" by the
stamp's wall-clock part.  The HLC runs ahead of the wall clock whenever a peer whose clock is ahead (by up to
max_clock_offset_ms, 500 ms by default: accepted, not held back) has been heard.  In that
window (wall < expiry <= physical(stamp)) the node answers as if the key were alive, while
every node stored the write as made after the expiry:

  * INCR answered old + 1; every node then held 1 (the INCR counted from nothing);
  * EXPIRE answered 1; every node dropped it (an EXPIRE after the expiry finds no key), and
    the key vanished at its old expiry although the client was told it was extended.

The store now judges expiry by the time its writes are stamped with; these tests require the
reply to agree with what is stored.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_expiry_faults import _client
from tests.test_replica import T0, heartbeat, replica
from zkv.clock import make, physical

K = b"k"


def _ahead(tmp: Path, ahead_ms: int = 300):  # noqa: ANN202
    rep, clock = replica(tmp)
    rep.now = 0.0
    assert _client(rep, [b"SET", K, b"5", b"PX", b"100"]) == [b"+OK\r\n"]
    # a peer whose clock is 300 ms ahead (within max_clock_offset_ms) is heard: the HLC adopts it
    heartbeat(rep, "n1", 0.0, hlc=make(T0 + ahead_ms))
    assert physical(rep.clock.last) >= T0 + 100 > clock.ms  # wall: not expired; HLC: past the expiry
    return rep, clock


def test_an_incr_answers_what_is_stored_when_the_hlc_is_ahead(tmp_path: Path) -> None:
    rep, _clock = _ahead(tmp_path)
    reply, get = _client(rep, [b"INCR", K], [b"GET", K])
    # stamped past the expiry: it counts from nothing, and says so
    assert (reply, get) == (b":1\r\n", b"$1\r\n1\r\n"), (reply, get)


def test_an_expire_answers_what_is_stored_when_the_hlc_is_ahead(tmp_path: Path) -> None:
    rep, clock = _ahead(tmp_path)
    # stamped past the expiry: no key to extend, and it says so (0), and GET agrees
    assert _client(rep, [b"PEXPIRE", K, b"60000"], [b"GET", K]) == [b":0\r\n", b"$-1\r\n"]
    clock.ms = T0 + 1000
    rep.now = 1.0
    assert _client(rep, [b"GET", K]) == [b"$-1\r\n"]
