"""What zkv tail says after a few seconds of hearing nothing (zkv.tail.silence_warning): pure."""

from __future__ import annotations

from zkv.tail import silence_warning


def test_nothing_heard_names_the_likely_causes() -> None:
    w = silence_warning(["tcp://h:1"], {}, None, keyed=False)
    assert w is not None and "nothing heard from tcp://h:1" in w and "keyed bus" in w
    w = silence_warning(["tcp://h:1"], {}, None, keyed=True)
    assert w is not None and "keyed bus" not in w


def test_an_origin_filter_that_matches_no_node_is_named() -> None:
    heard = {"node0": {"node0@a", "node1@b", "node2"}}
    assert silence_warning(["e"], heard, None, keyed=False) is None
    for ok in ("node0", "node1", "node2", "node1@b"):
        assert silence_warning(["e"], heard, ok, keyed=False) is None, ok
    w = silence_warning(["e"], heard, "node9", keyed=False)
    assert w is not None and "'node9'" in w


def test_a_configured_node_not_heard_is_named() -> None:
    heard = {"node0": {"node0@a"}, "node1": {"node1@a"}}
    expected = {"tcp://h:7100": "node0", "tcp://h:7101": "node1", "tcp://h:7102": "node2"}
    w = silence_warning(list(expected), heard, None, keyed=False, expected=expected)
    assert w is not None and "node2 (tcp://h:7102)" in w and "node0" not in w
    assert silence_warning(list(expected), heard | {"node2": set()}, None, False, expected) is None
