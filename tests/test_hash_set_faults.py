"""Hash and set convergence under faults, at the keyspace level: what a review that tried to
break it found, each failing before its fix - a member outgrowing the dot bound, a member lost
above the horizon that anti-entropy could not bring back (its version differed between
replicas), a full transfer that kept or did not log a member the sender had removed, an SREM
naming a dot from its future, SCAN handing out a field's own key, and a peer's states adding up
to an event this node could not read back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zkv.events import Batch, DecodeError, decode_batch, encode_batch
from zkv.replication.antientropy import merge
from zkv.replication.transfer import stale_keys
from zkv.store import hash_set_ops, parts
from zkv.store.keyspace import Keyspace, bucket_of
from zkv.store.orset import TAG_ADD, TAG_REMOVE, Member, event
from zkv.store.scans import Scans
from zkv.store.snapshot import check_entries, write_snapshot

PK = parts.part_key(parts.SET, b"s", b"m")


def _apply(ks: Keyspace, evs: list[tuple[int, str, list]]) -> None:
    for h, o, v in evs:
        ks.apply_many(o, [(h, PK, v)])


# --- (8) an honest member outgrows MAX_DOTS ---------------------------------------------------

def test_a_member_re_added_while_the_horizon_stands_can_still_be_exported(tmp_path: Path) -> None:
    """An add that replaces the dots it saw puts one entry in ``gone`` until the horizon passes
    it.  With a peer down the horizon stands; 2050 such adds of one member made a state past
    the bound (then 2048 pairs): the node's own snapshot failed, and every transfer or repair
    that carried it was refused.  (The store no longer re-adds a present member; the bound is
    now far above what a stalled horizon gathers in practice.)"""
    ks = Keyspace()
    for i in range(2050):
        ks.apply_many("n0@1", [(1000 + i, PK, event(TAG_ADD, ks.dots(b"s", b"m")))])
    assert list(ks.members(b"s")) == [b"m"]
    entries = list(ks.entries(0))
    check_entries(entries)  # TypeError: bad set member state: bad dots
    Keyspace().apply_entries(entries)  # ValueError (a transfer's receiver, a recovery)
    write_snapshot(tmp_path / "snap", ks.entries(0), {"id": "n0"})


# --- (3) anti-entropy repair of a member whose version differs between replicas ---------------

def test_a_member_lost_silently_above_the_horizon_is_repaired_by_anti_entropy() -> None:
    """docs/guarantees.md: a key a replica loses silently is repaired by anti-entropy while it is
    stamped above that replica's horizon.  A member's entry version is the latest event that
    changed it *there*, so two replicas with the same dots can hold it under different versions:
    d0 = SADD@10 (a); a re-adds @35 (names d0); b SREMs @30 and c SREMs @40 (both name d0).
    x applied c's SREM after the re-add (no change: it kept version 35), y before it (version
    40); y lost the entry above its horizon, x's copy was below it, and the repair's floor
    skipped it.  Now a member's version is its state's latest dot or removal, the same on both,
    so an entry lost above the horizon is above it on the others too."""
    e1, re_add = (10, "a", event(TAG_ADD, [])), (35, "a", event(TAG_ADD, [(10, "a")]))
    rb, rc = (30, "b", event(TAG_REMOVE, [(10, "a")])), (40, "c", event(TAG_REMOVE, [(10, "a")]))
    x, y = Keyspace(), Keyspace()
    _apply(x, [e1, re_add, rc, rb])
    _apply(y, [e1, rc, re_add, rb])
    assert x.dots(b"s", b"m") == y.dots(b"s", b"m") == [(35, "a")] and x.digest() == y.digest()
    assert x.entry(PK)[:2] == y.entry(PK)[:2]  # type: ignore[index]
    horizon = 33  # every event below it (10, 30) is everywhere
    for ks in (x, y):
        ks.compact_counters(horizon)
    y.drop([PK], 2**63 - 1)  # what World.rot does: y's entry is stamped 40 > 37
    merge(y, x.bucket_entries([bucket_of(PK)], horizon), horizon)  # Replica._repair's merge
    assert list(y.members(b"s")) == [b"m"], "anti-entropy did not repair the member"


# --- (1) full transfer to a receiver that lost a removal below the sender's horizon -----------

# d0 = SADD@10 by a, d7 = SADD@12 by b (concurrent); c removes d7 @20, then d0 @21; b, which
# never saw d0 (partitioned) nor c's removal, removes d7 @60.  The member is gone everywhere.
D0, D7 = (10, "a", event(TAG_ADD, [])), (12, "b", event(TAG_ADD, []))
R_D7, R_D0 = (20, "c", event(TAG_REMOVE, [(12, "b")])), (21, "c", event(TAG_REMOVE, [(10, "a")]))
R_D7_LATE = (60, "b", event(TAG_REMOVE, [(12, "b")]))
H = 30  # the sender's horizon: every event below it was applied everywhere before the loss


def _sender() -> Keyspace:
    p = Keyspace()
    _apply(p, [D0, D7, R_D7, R_D0, R_D7_LATE])  # (b's late SREM changes nothing: version 21)
    p.compact_counters(H)
    p.collect_tombstones(H)
    assert p.entry(PK) is None
    return p


def _receiver() -> Keyspace:
    """a applied b's late SREM before c's events, then lost c's SREM of d0 (a dropped log
    segment / a lost unsynced tail: why it needs a full transfer at all).  Its entry's version
    is 60, above the sender's horizon, though the dot it holds (d0@10) is below it."""
    r = Keyspace()
    _apply(r, [D0, D7, R_D7_LATE, R_D7])
    # (its version is the state's latest dot or earliest removal of each: below the horizon)
    assert r.dots(b"s", b"m") == [(10, "a")] and r.entry(PK)[:2] == (20, "c")  # type: ignore[index]
    return r


def _transfer(r: Keyspace, p: Keyspace) -> tuple[list, list]:
    """Replica._transfer_chunk and _transfer_end, as far as the keyspace goes."""
    entries = list(p.entries(H))
    keys = {e[0] for e in entries}
    r.apply_entries(entries)
    dropped = r.drop(stale_keys(r, keys, H, "a"), H)
    states, forgotten = r.forget_counters_below(keys, H)
    return states, dropped + forgotten


def test_a_transfer_removes_a_plain_member_the_sender_removed_and_collected() -> None:
    """The receiver compacted (its own horizon 21) so the member is a plain entry [d0]: with its
    version then 60, stale_keys kept it (60 >= 30) and forget_counters_below never saw a plain
    entry - d0 stayed on the receiver alone."""
    p, r = _sender(), _receiver()
    r.compact_counters(21)
    _transfer(r, p)
    assert list(r.members(b"s")) == list(p.members(b"s")) == []


def test_a_transfer_logs_what_it_forgot_of_a_member() -> None:
    """Without that compaction the member is a state and forget_counters_below clears it in
    memory; the log must say so (it said nothing when drop refused the key), or a restart
    replays the receiver's old events and the transfer's records, and d0 is back."""
    p, r = _sender(), _receiver()
    states, dropped = _transfer(r, p)
    assert list(r.members(b"s")) == []
    replayed = _receiver()  # the receiver's log before the transfer ...
    replayed.apply_entries(list(p.entries(H)))  # ... its transfer chunks (R records) ...
    replayed.apply_entries(states)  # ... and the transfer's end record
    replayed.drop(dropped, H)
    assert list(replayed.members(b"s")) == list(r.members(b"s")), (states, dropped)


# --- (8) an event naming a dot stamped after it -----------------------------------------------

def test_an_srem_cannot_name_a_dot_from_its_future() -> None:
    """An SREM names the dots its node saw, so each is stamped before the SREM.  An SREM @10
    naming (2**40, "n0@1") - a peer's bug or a liar - put that dot in ``gone``, and the SADD n0
    made at that stamp later (a client acknowledged it) never showed, on any node.  Such an
    event is refused, and the keyspace ignores such a dot if one comes another way."""
    future = (2**40, "n0@1")
    with pytest.raises(DecodeError):
        decode_batch(encode_batch(Batch("liar@1", 1, [(10, PK, event(TAG_REMOVE, [future]))])))
    ks = Keyspace()
    ks.apply_many("liar@1", [(10, PK, event(TAG_REMOVE, [future]))])
    ks.apply_many("n0@1", [(future[0], PK, event(TAG_ADD, []))])
    assert list(ks.members(b"s")) == [b"m"]


# --- (7) SCAN returns a reserved part key -----------------------------------------------------

def test_scan_never_returns_a_field_or_member_entry() -> None:
    """With no live part, key_list() is list(_data), dead parts included.  A field written again
    while the scan walked made its part entry readable, and SCAN handed the client a reserved
    key; ``exists`` is false for every reserved key."""
    ks = Keyspace()
    fk = parts.part_key(parts.HASH, b"h", b"f")
    ks.apply_many("a", [(10, b"k", b"v"), (11, fk, b"1"), (12, fk, None)])
    scans = Scans()
    cursor, keys = scans.step(ks, 0, 1, None, 0.0)
    ks.apply_many("a", [(13, fk, b"2")])  # HSET h f again
    out = list(keys)
    while cursor:
        cursor, keys = scans.step(ks, cursor, 10, None, 0.0)
        out += keys
    assert not [k for k in out if k[:2] == parts.RESERVED], out


# --- (8) a peer's states, each within MAX_DOTS, add up past it --------------------------------

def test_member_states_a_peer_sends_cannot_make_this_nodes_own_events_unreadable() -> None:
    """check_entries bounds each state, not what merges accumulate: two repair entries from a
    lying peer, 4096 live dots each, left the member with 8192 live dots, and the next SREM a
    client made here named all of them - an event decode_batch refused, on every peer and in
    this node's own log replay.  An event's dots are bounded by its batch's size alone."""
    ks = Keyspace()
    for i, origin in enumerate(["liar@1", "liar@2"]):
        dots = [(1000 + j, origin) for j in range(4096)]
        state = Member((0, ""), dots).encode()
        entry = (PK, 10_000 + i, origin, state)
        check_entries([entry])  # accepted: within the bound
        merge(ks, [entry])
    result, writes = hash_set_ops.run(ks, ("sr", b"s", [b"m"]))
    assert result == 1
    batch = encode_batch(Batch("n0@1", 1, [(20_000 + i, k, v) for i, (k, v) in enumerate(writes)]))
    decode_batch(batch)  # DecodeError: bad batch item

