"""zkv.replication.horizon: when a store may forget tombstones, per origin incarnation."""

from __future__ import annotations

from zkv.replication.horizon import Announced, Horizon


def horizon() -> Horizon:
    return Horizon("a@1", frozenset({"b", "c"}))


def test_no_collection_until_every_peer_is_heard() -> None:
    h = horizon()
    h.heard("b", Announced("b@1", 5, 1000, {"b@1": 5}, 900), {"b@1": 5})
    assert h.stable(2000, {"b@1": 5}) == 0
    assert h.collectable(2000, {"b@1": 5}) == 0


def test_frontier_follows_each_peer_current_incarnation() -> None:
    h = horizon()
    vv = {"b@1": 5, "c@1": 3}
    h.heard("b", Announced("b@1", 5, 1000, dict(vv), 800), vv)
    h.heard("c", Announced("c@1", 4, 1100, dict(vv), 700), vv)  # c says 4; we have 3
    assert h.stable(5000, vv) == 0  # c's frontier not reached yet
    vv["c@1"] = 4
    h.advance("c@1", vv)
    assert h.stable(5000, vv) == 1000
    assert h.collectable(5000, vv) == 700  # c's own stable time is the lowest


def test_a_new_incarnation_starts_from_nothing() -> None:
    """A restarted peer's new origin may stamp below its old frontier (clock behind): the store
    must not carry the old incarnation's frontier over to the new one."""
    h = horizon()
    vv = {"b@1": 5, "c@1": 3}
    h.heard("b", Announced("b@1", 5, 1000, dict(vv), 800), vv)
    h.heard("c", Announced("c@1", 3, 1100, dict(vv), 700), vv)
    assert h.stable(5000, vv) == 1000
    h.heard("b", Announced("b@2", 2, 1200, {**vv, "b@2": 2}, 0), vv)  # we have none of b@2
    assert h.stable(5000, vv) == 0


def test_a_finished_origin_someone_holds_more_of_blocks_collection() -> None:
    """A node that lost its log tail lacks some of its own old events; a peer still holds them.
    Nobody may collect on the strength of the loser's claims until it has them back."""
    h = horizon()
    mine = {"a@0": 300, "b@1": 5, "c@1": 3}
    h.heard("b", Announced("b@1", 5, 1000, {"a@0": 500, "b@1": 5, "c@1": 3}, 900), mine)
    h.heard("c", Announced("c@1", 3, 1100, {"a@0": 300, "b@1": 5, "c@1": 3}, 900), mine)
    assert h.stable(5000, mine) == 0
    mine["a@0"] = 500
    assert h.stable(5000, mine) == 1000


def test_a_down_peer_last_word_still_counts() -> None:
    """A peer's last heartbeat stays: a down node holds the horizon back at what it last said."""
    h = horizon()
    vv = {"b@1": 5, "c@1": 3}
    h.heard("b", Announced("b@1", 5, 1000, dict(vv), 10), vv)
    h.heard("c", Announced("c@1", 3, 1100, dict(vv), 900), vv)
    assert h.collectable(99_999, vv) == 10


def test_origins_of_unconfigured_nodes_count_as_finished() -> None:
    """An origin of a node no longer configured (removed) does not stop collection forever: it
    counts once this store holds as much of it as any peer announces."""
    h = horizon()
    vv = {"b@1": 5, "c@1": 3, "gone@1": 7}
    h.heard("b", Announced("b@1", 5, 1000, dict(vv), 900), vv)
    h.heard("c", Announced("c@1", 3, 1100, dict(vv), 900), vv)
    assert h.collectable(5000, vv) == 900
    vv["gone@1"] = 6  # behind what the peers announce
    assert h.collectable(5000, vv) == 0
