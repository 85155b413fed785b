"""What a peer's claims are believed up to (zkv.replication.claims): pure."""

from __future__ import annotations

from zkv.replication.claims import (
    HB_BURST_BYTES, NEW_ORIGINS, SILENT_S, Claims, HeartbeatBudget, heartbeat_bytes,
)


def claims() -> Claims:
    c = Claims("n0@me", frozenset({"n0", "n1", "n2"}), started=-10.0)  # started long ago
    c.heard("n1", "n1@a", 10, now=0.0)
    return c


def test_our_own_incarnation_is_bounded_by_what_we_issued() -> None:
    c = claims()
    assert c.bound("n0@me", have=7, our_seq=7, now=0.0) == 7
    assert c.events("n0@me", 1, 5, have=7, our_seq=7, now=0.0) == 0  # never taken from anyone


def test_a_live_nodes_current_incarnation_is_bounded_by_what_it_announced() -> None:
    c = claims()
    assert c.bound("n1@a", have=3, our_seq=0, now=1.0) == 10
    c.vouch("n1@a", 12)  # events on its own bus
    assert c.bound("n1@a", have=3, our_seq=0, now=1.0) == 12
    assert c.bound("n1@a", have=15, our_seq=0, now=1.0) == 15  # what we hold came from it
    assert c.events("n1@a", 11, 20, have=10, our_seq=0, now=1.0) == 2  # 11 and 12 only


def test_silent_nodes_and_earlier_incarnations_are_believed_as_relayed() -> None:
    c = claims()
    assert c.bound("n1@old", have=0, our_seq=0, now=1.0) is None
    assert c.bound("n2@x", have=0, our_seq=0, now=1.0) is None  # never heard
    assert c.bound("n1@a", have=0, our_seq=0, now=SILENT_S + 0.1) is None  # silent
    assert c.events("n1@old", 1, 50, have=0, our_seq=0, now=1.0) == 50


def test_a_vector_is_cut_to_the_bounds_except_for_the_senders_own_origins() -> None:
    c = claims()
    mine = {"n0@me": 4, "n1@a": 10}
    vv = {"n0@me": 2**62, "n1@a": 1000, "n2@b": 77, "n2@old": 5}
    got = c.vector("n2", vv, mine, our_seq=4, now=1.0)
    assert got == {"n0@me": 4, "n1@a": 10, "n2@b": 77, "n2@old": 5}
    assert c.not_believed == 2
    same = {"n0@me": 4, "n1@a": 9}
    assert c.vector("n2", same, mine, our_seq=4, now=1.0) is same  # nothing copied


def test_a_vector_names_few_unknown_origins() -> None:
    """Of any node: a node removed from the configuration still has writes to spread."""
    c = claims()
    vv = {"removed@1": 3} | {f"n2@{i}": 1 for i in range(NEW_ORIGINS + 500)}
    got = c.vector("n2", vv, {}, our_seq=0, now=1.0)
    assert got["removed@1"] == 3
    assert len(got) == NEW_ORIGINS
    known = {f"n2@{i}": 1 for i in range(NEW_ORIGINS + 500)}  # once known, all of them count
    assert len(c.vector("n2", vv, known, our_seq=0, now=1.0)) == NEW_ORIGINS + 501


def test_a_peers_heartbeat_bytes_are_bounded_by_the_origins_we_know() -> None:
    assert heartbeat_bytes(0, 0) < heartbeat_bytes(3000, 100) < 1_000_000
    b = HeartbeatBudget(period=0.1)
    per = heartbeat_bytes(0, 0)
    assert b.allow("n1", HB_BURST_BYTES, 0.0, 0, 0)  # a large one, once: a wiped store's join
    assert not b.allow("n1", per, 0.0, 0, 0)  # then no more than the rate
    assert b.allow("n2", per, 0.0, 0, 0)  # each peer has its own
    assert b.allow("n1", per, 0.1, 0, 0) and not b.allow("n1", per // 2, 0.1, 0, 0)


def test_a_restarted_store_believes_nothing_about_a_configured_node_before_hearing_it() -> None:
    """For silent_s after the start: that node may be up, its first heartbeat on its way."""
    c = Claims("n0@me", frozenset({"n0", "n1", "n2"}), started=0.0)
    assert c.bound("n2@a", have=3, our_seq=0, now=1.0) == 3
    assert c.vector("n1", {"n2@a": 1000}, {"n2@a": 3}, our_seq=0, now=1.0) == {"n2@a": 3}
    assert c.bound("n2@a", have=3, our_seq=0, now=SILENT_S + 0.1) is None  # down, then
    assert c.bound("gone@a", have=0, our_seq=0, now=1.0) is None  # not configured
