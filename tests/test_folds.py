"""Folding finished incarnations out of the wire vector (zkv.replication.folds): the map, its
digest, what it hides, its pages, and the rule that decides a fold."""

from __future__ import annotations

from zkv.replication.folds import FOLD_PAGE, Folds, fold_hash, foldable


def test_a_fold_hides_the_origin_from_the_wire_vector_only() -> None:
    vv = {"a@1": 5, "a@2": 3, "b@1": 7}
    f = Folds()
    assert f.add("a@1", 5, vv)
    assert f.wire(vv) == {"a@2": 3, "b@1": 7}
    assert vv == {"a@1": 5, "a@2": 3, "b@1": 7}  # the store's own vector keeps it


def test_the_digest_is_order_free_and_the_maximum_count_wins() -> None:
    vv = {"x": 9, "y": 4}
    one, two = Folds(), Folds()
    one.add("x", 9, vv)
    one.add("y", 4, vv)
    two.add("y", 4, vv)
    two.add("x", 7, vv)
    assert one.digest != two.digest
    assert not two.add("x", 6, vv)  # lower than the fold it has: no news
    assert two.add("x", 9, vv)
    assert one.digest == two.digest == (2, fold_hash("x", 9) ^ fold_hash("y", 4))


def test_events_beyond_a_fold_put_the_origin_back_on_the_wire() -> None:
    vv = {"x": 5}
    f = Folds()
    f.add("x", 5, vv)
    assert f.wire(vv) == {}
    vv["x"] = 6  # events of x surfaced that some node had and the fold did not count
    f.recheck("x", vv)
    assert f.wire(vv) == {"x": 6}
    f.add("x", 6, vv)  # folded again once every node holds them
    assert f.wire(vv) == {}


def test_a_fold_of_events_not_held_here_hides_nothing() -> None:
    vv = {"x": 2}
    f = Folds()
    f.add("x", 5, vv)  # (a store adopts a fold only once it holds the events; belt and braces)
    f.add("gone", 3, vv)
    assert f.wire(vv) == {"x": 2}


def test_pages_cover_every_fold_once_in_name_order() -> None:
    vv = {f"n@{i:06d}": 1 for i in range(FOLD_PAGE * 2 + 10)}
    f = Folds()
    for o in vv:
        f.add(o, 1, vv)
    seen, after, pages = [], "", 0
    while True:
        page, more = f.page(after)
        pages += 1
        seen += [o for o, _c in page]
        if not more:
            break
        after = page[-1][0]
    assert pages == 3 and seen == sorted(vv)
    assert f.page(seen[-1]) == ([], False)


def test_foldable_needs_a_finished_idle_origin_every_peer_names_at_our_count() -> None:
    wire = {"a@1": 5, "a@2": 3, "b@1": 7, "c@1": 2}
    current = {"a@2", "b@1"}
    peers = [({"a@1": 5, "a@2": 3, "b@1": 7, "c@1": 2}, {}),
             ({"a@1": 5, "a@2": 1, "b@1": 7, "c@1": 2}, {})]
    assert foldable(wire, current, set(), peers) == {"a@1": 5, "c@1": 2}
    assert foldable(wire, current, {"c@1"}, peers) == {"a@1": 5}  # being pulled, held, ...
    lagging = [peers[0], ({"a@1": 4, "c@1": 2}, {})]
    assert foldable(wire, current, set(), lagging) == {"c@1": 2}
    holding = [peers[0], ({"a@1": 5, "c@1": 2}, {"c@1": [4, 6]})]  # events beyond, behind a gap
    assert foldable(wire, current, set(), holding) == {"a@1": 5}
    folded_there = [peers[0], ({"a@2": 3, "b@1": 7, "c@1": 2}, {})]  # gossip adopts those
    assert foldable(wire, current, set(), folded_there) == {"c@1": 2}


def test_every_digest_the_map_had_is_remembered() -> None:
    """A peer whose digest is one our map had (it went down before our latest folds) hides
    nothing we lack: the map and the vector only grow."""
    vv = {"x": 3, "y": 4}
    f = Folds()
    assert f.had == {(0, 0)}
    f.add("x", 3, vv)
    first = f.digest
    f.add("y", 4, vv)
    assert f.had == {(0, 0), first, f.digest}
