"""zkv.replication.antientropy: bucket differences, byte-bounded entries replies, merge-only repair."""

from __future__ import annotations

import pytest

from zkv.events import DecodeError
from zkv.replication.antientropy import differing_buckets, entries_reply, merge
from zkv.store.keyspace import BUCKETS, Keyspace, bucket_of


def same_bucket_keys(n: int) -> list[bytes]:
    keys, i = [b"k0"], 1
    while len(keys) < n:
        k = b"k%d" % i
        if bucket_of(k) == bucket_of(b"k0"):
            keys.append(k)
        i += 1
    return keys


def test_a_reply_is_bounded_inside_one_bucket() -> None:
    """Two values that together pass the bound, in ONE bucket, must not make one reply past it
    (a reply past the bus's message limit makes ZeroMQ drop the connection: no repair, ever)."""
    ks = Keyspace()
    a, b = same_bucket_keys(2)
    ks.apply(a, 1, "n@1", b"x" * 600)
    ks.apply(b, 2, "n@1", b"y" * 600)
    sent, entries = entries_reply(ks, [bucket_of(a)], max_bytes=1000)
    assert sent == [bucket_of(a)] and len(entries) == 1
    sent, entries = entries_reply(ks, [bucket_of(a)], max_bytes=10_000)
    assert len(entries) == 2


def test_a_reply_always_carries_one_entry() -> None:
    ks = Keyspace()
    ks.apply(b"big", 1, "n@1", b"z" * 5000)
    assert len(entries_reply(ks, [bucket_of(b"big")], max_bytes=10)[1]) == 1


def test_merge_never_deletes() -> None:
    """A divergence at equal vectors: the peer lacks our key and has one we lack.  Both survive,
    and for a key both hold, the conflict rule picks the winner."""
    ks = Keyspace()
    ks.apply(b"ours", 5, "a@1", b"1")
    ks.apply(b"both", 5, "a@1", b"old")
    changed = merge(ks, [(b"theirs", 6, "b@1", b"2"), (b"both", 7, "b@1", b"new")])
    assert ks.get(b"ours") == b"1" and ks.get(b"theirs") == b"2" and ks.get(b"both") == b"new"
    assert {c[0] for c in changed} == {b"theirs", b"both"}
    assert merge(ks, [(b"both", 6, "c@1", b"older")]) == []  # loses under the rule: no change


def test_merge_checks_what_a_peer_sent() -> None:
    with pytest.raises(TypeError):
        merge(Keyspace(), [("str-key", 1, "a@1", b"v")])


def test_differing_buckets_checks_the_hashes() -> None:
    mine = [0] * BUCKETS
    theirs = list(mine)
    theirs[3] = theirs[900] = 1
    assert differing_buckets(mine, theirs) == [3, 900]
    with pytest.raises(DecodeError):
        differing_buckets(mine, theirs[:10])
    with pytest.raises(DecodeError):
        differing_buckets(mine, "x")


def test_merge_keeps_a_local_key_of_a_bucket_the_peer_sent() -> None:
    """The peer's reply covers a whole bucket and lacks our key in it: still not a delete."""
    from zkv.replication.antientropy import merge
    from zkv.store.keyspace import Keyspace, bucket_of
    mine = b"mine"
    theirs = next(b"t%d" % i for i in range(100_000) if bucket_of(b"t%d" % i) == bucket_of(mine))
    ks = Keyspace()
    ks.apply(mine, 10, "a", b"m")
    changed = merge(ks, [(theirs, 11, "b", b"t")])
    assert changed == [(theirs, 11, "b", b"t")]
    assert ks.get(mine) == b"m" and ks.get(theirs) == b"t"
