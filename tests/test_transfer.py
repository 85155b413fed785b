"""zkv.replication.transfer: which keys a finished full transfer may drop, and when its end is
not to be believed."""

from __future__ import annotations

from zkv.replication.transfer import implausible, stale_keys
from zkv.store.keyspace import Keyspace


def keyspace() -> Keyspace:
    ks = Keyspace()
    ks.apply(b"deleted-there", 10, "a@1", b"old")   # a@1 seen by the sender: deleted there
    ks.apply(b"carried", 11, "a@1", b"v")           # in the snapshot
    ks.apply(b"mine-new", 12, "me@2", b"fresh")     # our incarnation: the sender lags on it
    ks.apply(b"after-horizon", 500, "a@1", b"v")    # stamped after the sender's horizon
    return ks


def test_only_what_the_sender_provably_saw_and_deleted_goes() -> None:
    """Below the sender's horizon and missing from its snapshot: deleted and collected there,
    our own incarnation's writes included (our clock stamps above every horizon reached without
    them; one kept would stay on this node alone).  Anything stamped after the horizon stays."""
    ks = keyspace()
    assert sorted(stale_keys(ks, carried={b"carried"}, horizon=100, our_origin="me@2")) == [
        b"deleted-there", b"mine-new"]


def test_an_old_write_pulled_again_goes_even_if_we_pulled_further_than_the_snapshot() -> None:
    """A node that lost its state pulled an old SET again (its own horizon was 0), further along
    its origin than the sender's snapshot reaches; the sender's horizon still proves the key was
    deleted (a chaos run found such keys kept, and then spread)."""
    ks = Keyspace()
    ks.apply(b"k", 10, "a@1", b"old")
    assert stale_keys(ks, carried=set(), horizon=100, our_origin="me@2") == [b"k"]


def test_a_plausible_end_is_believed() -> None:
    assert implausible(100, {"a@1": 5, "me@2": 3}, sender_max_stable=150, our_horizon=0,
                       clock_limit=10**9, our_origin="me@2", our_seq=3) is None


def test_a_horizon_past_what_the_sender_announced_is_not() -> None:
    assert implausible(2**62, {}, sender_max_stable=150, our_horizon=0, clock_limit=2**63,
                       our_origin="me@2", our_seq=0) is not None


def test_a_horizon_past_our_clock_bound_is_not() -> None:
    assert implausible(1000, {}, sender_max_stable=2000, our_horizon=0, clock_limit=999,
                       our_origin="me@2", our_seq=0) is not None


def test_events_of_ours_we_never_issued_are_not() -> None:
    assert implausible(0, {"me@2": 10}, sender_max_stable=0, our_horizon=0, clock_limit=10**9,
                       our_origin="me@2", our_seq=3) is not None
