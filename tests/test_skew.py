"""zkv.replication.skew: peer clock offsets from heartbeats, and when writes are refused."""

from __future__ import annotations

from zkv.replication.skew import Offsets, refusal


def test_offset_is_the_highest_recent_sample() -> None:
    """A heartbeat that waited (a paused process, a queue) only makes a sample lower."""
    o = Offsets()
    o.sample("b", peer_wall=1000, our_wall=1000)
    o.sample("b", peer_wall=1200, our_wall=2200)  # arrived a second late
    assert o.current["b"] == 0
    for i in range(8):  # older samples age out
        o.sample("b", peer_wall=5000 + i, our_wall=5000 + i - 300)
    assert o.current["b"] == 300


def test_no_peer_heard_means_only_our_own_wall_clock_counts() -> None:
    assert refusal(10_000, 10_000, [], 500) is None
    assert refusal(10_000, 10_400, [], 500) is None
    # a clock that ran 30 s ahead, restarted on the true time with no peer to ask: its stamps
    # would continue 30 s ahead of every later write
    why = refusal(10_000, 40_000, [], 500)
    assert why is not None and "ahead" in why


def test_ahead_of_the_median_is_refused() -> None:
    why = refusal(10_000, 10_000, [-3_600_000, -3_600_000], 500)
    assert why is not None and why.startswith("clock skew:") and "ahead" in why


def test_one_peer_far_ahead_does_not_make_the_others_refuse() -> None:
    assert refusal(10_000, 10_000, [3_600_000, 0], 500) is None


def test_behind_the_median_is_refused() -> None:
    why = refusal(10_000, 10_000, [3_600_000, 3_600_000], 500)
    assert why is not None and "behind" in why


def test_a_clock_stepped_back_still_counts_from_its_last_stamp() -> None:
    """After a restart with the wall clock an hour back, the store keeps stamping after its
    last stamp (an hour ahead of everyone): that is ahead, whatever the wall clock says."""
    assert refusal(10_000, 10_000 + 3_600_000, [0, 0], 500) is not None
    assert refusal(10_000, 10_400, [0, 0], 500) is None  # within the bound


def test_within_the_bound_is_accepted() -> None:
    assert refusal(10_000, 10_000, [-400, -450], 500) is None


def test_with_two_clocks_known_a_node_that_may_be_the_wrong_one_refuses() -> None:
    """Restarted 3 s behind with one of two peers down: its stamps continue from its last one
    (about 2 s past its wall clock) and creep on by logical ticks; the one peer heard is 3 s
    ahead of its wall.  Between its own wall and that peer it cannot tell which is right, so it
    refuses (the chaos run that found this lost a write it acknowledged)."""
    assert refusal(10_000, 12_000, [3_000], 500) is not None
    assert refusal(10_000, 10_000, [100], 500) is None  # two clocks that agree: fine


def test_behind_peers_refuses_only_behind_the_median_of_logical_clocks() -> None:
    from zkv.replication.skew import behind_peers
    assert behind_peers(1000, [], 500) is None  # nobody heard: nothing to compare
    assert behind_peers(1000, [1100, 1200], 500) is None
    why = behind_peers(1000, [16000, 16100], 500)
    assert why is not None and "behind" in why and why.startswith("clock skew")
    assert behind_peers(1000, [16000, 1100], 500) is None  # one peer far ahead: the median is not
    assert behind_peers(1000, [16000], 500) is not None  # two clocks: the farther one decides
