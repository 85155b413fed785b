"""Break-it against the trust model (zkv.replication.claims), at the core.

Each test is a concrete scenario through the real replica core that a break-it review found
ending in a state the docs (docs/security.md "What an admitted peer is trusted with",
docs/replication.md) say cannot happen; each failed before its fix.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgpack

from tests.test_replica import T0, fetches, heartbeat, pack, replica
from zkv.clock import make
from zkv.config import Config, Peer
from zkv.events import (
    TOPIC_EVENTS, TOPIC_HEARTBEAT, Batch, Heartbeat, encode_batch, encode_heartbeat,
)
from zkv.replication import catchup as wire
from zkv.replication.backlog import Backlog
from zkv.replication.claims import HeartbeatBudget, heartbeat_bytes
from zkv.store.durability import Recovered
from zkv.store.keyspace import Keyspace
from zkv.store.outputs import CLIENT, CLOCK, FETCH
from zkv.store.replica import Replica


def _n2_writes(r: Replica, first: int, n: int, now: float, key: bytes = b"n2-key") -> None:
    items = [(make(T0 + 10 * (first + i)), b"%s-%d" % (key, first + i), b"real") for i in range(n)]
    r.bus("n2", TOPIC_EVENTS, encode_batch(Batch("n2@a", first, items)), now)


def _forged_reply(r: Replica, first: int, last: int, now: float) -> None:
    """n1 (or whoever holds its key) answers the pull of n2@a with made-up events."""
    items = [(make(T0 + 300) + i, b"n2-key-%d" % (first + i), b"FORGED") for i in range(last - first + 1)]
    r.fetch_reply("n1", [wire.EVENTS, b"n2@a", b"0", encode_batch(Batch("n2@a", first, items))], now)


def test_a_peer_naming_a_live_nodes_incarnation_as_its_own_origin_lifts_that_nodes_bound(
        tmp_path: Path) -> None:
    """(B) Heartbeat.origin is never checked to belong to the sender: _on_heartbeat calls
    ``claims.heard(hb.id, hb.origin, hb.seq)``, and Claims.vouched is keyed by origin alone.  n1
    sends one heartbeat with ``origin = "n2@a"`` (n2's live, heard, current incarnation) and
    ``seq = 1000``: n0 now counts n2@a as vouched up to 1000, believes n1's vector claim of
    1000, pulls n2@a from n1 and takes 997 forged events "of n2".  Its vector for n2@a is 1000,
    so n2's own next ~997 writes are dropped at n0 as duplicates: permanent divergence, and
    forged writes attributed to a live node - exactly what docs/security.md says is closed
    ("events of another node's current incarnation, while that node is heard: what that node
    itself announced")."""
    r, _ = replica(tmp_path)
    _n2_writes(r, 1, 3, 0.10)
    heartbeat(r, "n2", 0.11, vv={"n2@a": 3})  # n2 is live, its incarnation n2@a has issued 3
    heartbeat(r, "n1", 0.12, vv={"n2@a": 3})
    r.take()
    assert r.inbox.vv["n2@a"] == 3
    lie = Heartbeat(id="n1", seq=1000, hlc=make(T0 + 130), vv={"n2@a": 1000, "n1@a": 0},
                    stable=0, digest=r.ks.digest(), keys=0, catchup="sim://n1/1",
                    peers=["n0", "n1", "n2"], origin="n2@a", wall=T0 + 130)
    r.bus("n1", TOPIC_HEARTBEAT, encode_heartbeat(lie), 0.13)
    pulled = [p for p, f in fetches(r.take()) if f[0] == wire.PULL and f[1] == b"n2@a"]
    if pulled == ["n1"]:  # it asked the liar: the liar answers
        _forged_reply(r, 4, 1000, 0.14)
    heartbeat(r, "n2", 0.20, vv={"n2@a": 4})  # n2, still live, issues its 4th write
    _n2_writes(r, 4, 1, 0.21)
    assert r.ks.get(b"n2-key-5") != b"FORGED", "events of a live, heard node forged by a relay"
    assert r.inbox.vv["n2@a"] <= 4, f"n0 claims {r.inbox.vv['n2@a']} events of n2@a, which issued 4"
    assert r.ks.get(b"n2-key-4") == b"real", "n2's own 4th write is dropped as a duplicate"


def test_a_restarted_node_believes_a_relay_about_a_live_node_it_has_not_heard_yet(
        tmp_path: Path) -> None:
    """(B) The bound holds only once this store has heard the node (Claims.bound: no entry in
    ``current`` -> no bound).  n0 restarts (it recovered 3 events of n2@a, n2's live
    incarnation); n1's heartbeat arrives before n2's (it may send at once: a burst of 5 is
    allowed) and claims n2@a up to 1000.  n0 pulls from n1 and takes 997 forged events of the
    live node n2; when n2 is heard a few ms later, its real 4th, 5th ... writes are dropped as
    duplicates, for good (the forged vector is logged).  Every restart of any node opens this
    window against every other node.  (docs/security.md: "a live node's current incarnation:
    no claim beyond what that node itself announced"; the "while that node is heard" qualifier
    makes not-yet-heard count as silent, but the effect is not the bounded, documented
    "forge events of a silent node": it silences a live node at this store permanently.)"""
    r, _ = replica(tmp_path, vv={"n2@a": 3}, ks=Keyspace())
    r.tick(0.0)
    r.take()
    heartbeat(r, "n1", 0.01, vv={"n2@a": 1000})  # before n2's first heartbeat reaches us
    pulled = [p for p, f in fetches(r.take()) if f[0] == wire.PULL and f[1] == b"n2@a"]
    if pulled == ["n1"]:
        _forged_reply(r, 4, 1000, 0.02)
    heartbeat(r, "n2", 0.05, vv={"n2@a": 3})
    heartbeat(r, "n2", 0.15, vv={"n2@a": 4})
    _n2_writes(r, 4, 1, 0.16)
    assert r.ks.get(b"n2-key-500") != b"FORGED", "events of a live node forged by a relay"
    assert r.ks.get(b"n2-key-4") == b"real", "n2's own 4th write is dropped as a duplicate"


def test_a_wiped_node_joins_a_cluster_that_has_many_origins(tmp_path: Path) -> None:
    """(A, honest) The byte cap on heartbeats (claims.heartbeat_bytes) is computed from the
    origins the RECEIVER knows, while an honest heartbeat's size grows with the origins the
    SENDER knows.  A wiped (or newly added) node knows none: it takes heartbeats of at most
    64 KiB + 280 B x 1024 = 344 KiB.  A cluster whose nodes have realistic ids and some 8,000
    incarnations in all (the keyspace allows 32,767) sends heartbeats larger than that: every
    one is dropped unread as "bad", the node never hears a peer - clock unknown, writes
    refused, nothing pulled (a gap on a peer's live stream has nobody to pull from), no
    transfer - forever.  docs/security.md says the next heartbeats bring the remaining origins
    "once the first are known"; none is ever known."""
    ids = ("store-01.eu-west-1.example", "store-02.eu-west-1.example")
    cfg = Config(id="n0", listen_host="127.0.0.1", listen_port=1, bus="tcp://127.0.0.1:1000",
                 data_dir=tmp_path, peers=tuple(Peer(p, f"tcp://127.0.0.1:{1001 + i}")
                                                for i, p in enumerate(ids)),
                 heartbeat_ms=100, anti_entropy_ms=200, read_cache_mb=0)
    rec = Recovered(Keyspace(), {}, 0, 0, 0.0, 0, 0, 0, [])
    r = Replica(cfg, rec, "n0@me", Backlog(1000), 0.0, wall=lambda: T0, clock_floor=None)
    r.tick(0.0)
    r.take()
    # What the peer's core would announce: one vector entry per start of each node (origin
    # names as zkv.events.new_origin makes them), a few events each.
    sender = ids[0]
    vv = {f"{node}@{0x69300000 + i:x}{os.urandom(4).hex()}": 40
          for i in range(4000) for node in (*ids, "n0")}
    cur = next(o for o in reversed(vv) if o.startswith(sender))
    hb = Heartbeat(id=sender, seq=vv[cur], hlc=make(T0), vv=vv, stable=make(T0 - 1000),
                   digest=b"\0" * 20, keys=10, catchup="sim://s/1", peers=sorted(("n0", *ids))[:2],
                   origin=cur, wall=T0, seen={"n0": make(T0 - 5000)})
    payload = encode_heartbeat(hb)
    assert len(payload) > 3 * heartbeat_bytes(0, 0)  # more than a wiped node's budget a period
    for i in range(20):  # two seconds of honest heartbeats
        r.bus(sender, TOPIC_HEARTBEAT, payload, 0.1 * (i + 1))
        r.tick(0.1 * (i + 1))
    out = r.take()
    assert sender in r.peers, (f"every heartbeat of {sender} ({len(payload)} bytes) dropped unread; "
                               f"bad_messages={r.stats['bad_messages']}")
    assert r.clock_known
    assert [o for o in out if o[0] == FETCH], "nothing pulled, no transfer asked"


def test_after_a_wiped_start_that_could_not_adopt_the_echo_a_restart_ignores_the_true_echo(
        tmp_path: Path) -> None:
    """(A, honest) _learn_own_clock drops an echo beyond clock_saved whenever a clock file
    exists ("no peer heard more from us").  But a node's clock file can be younger than what
    its peers heard it announce: its data_dir was wiped (or the machine replaced), the new
    start heard the echo E but could not adopt it (E beyond wall + max_clock_offset_ms: it
    refused writes, as designed) and saved its clock file at its own wall clock, F < E; then it
    restarted (a crash, an operator restart).  Now peers' true echo E > F is taken for a lie,
    and the node accepts a write stamped below E - docs/guarantees.md: "A node never stamps a
    write below a timestamp it announced before a restart"; before 9080d76 it refused."""
    e = make(T0 + 3_000)  # what an earlier life announced (its clock was 3 s ahead)
    # start 1 (wiped): no clock file; it learns E and refuses, and saves F = its wall clock
    r1, _ = replica(tmp_path / "a", floor=None)
    r1.tick(0.0)
    heartbeat(r1, "n1", 0.05, seen={"n0": e})
    heartbeat(r1, "n2", 0.05, seen={"n0": e})
    r1.client([[b"c0", pack([["s", b"k", b"v"]])]], 0.06)
    out = r1.take()
    first = [o for o in out if o[0] == CLIENT][-1][1]
    assert "refused" in msgpack.unpackb(first[1], raw=False)  # as designed
    for t in (0.1, 0.2, 0.3, 0.4):  # heartbeats: what the shell would save as the clock file
        heartbeat(r1, "n1", t, seen={"n0": e})
        r1.tick(t)
        out += r1.take()
    saves = [o[1] for o in out if o[0] == CLOCK]
    saved = max(saves) if saves else None  # F < E, if it saved one
    assert saved is None or saved < e
    # start 2: the same data_dir; peers echo E, as they always will
    r2, _ = replica(tmp_path / "b", floor=saved)
    r2.tick(0.0)
    heartbeat(r2, "n1", 0.05, seen={"n0": e})
    heartbeat(r2, "n2", 0.05, seen={"n0": e})
    r2.take()
    r2.client([[b"c1", pack([["s", b"k", b"v2"]])]], 0.06)
    reply = msgpack.unpackb([o for o in r2.take() if o[0] == CLIENT][-1][1][1], raw=False)
    assert isinstance(reply, dict) and "refused" in reply or r2.ks.entry(b"k")[0] >= e, (
        f"a write stamped {(e - r2.ks.entry(b'k')[0]) >> 16} ms below what this node announced "
        f"before; the true echo was counted as a lie (bad_messages={r2.stats['bad_messages']})")


def test_with_a_slow_heartbeat_a_live_node_counts_as_silent_between_its_heartbeats(
        tmp_path: Path) -> None:
    """(B) claims.SILENT_S is a fixed 2 s, while heartbeat_ms has no upper bound (config: any
    integer >= 10).  With heartbeat_ms = 5000 a live, healthy node is heard every 5 s and counts
    as "silent" for 3 s of every 5: in that window a relay's claim about its current
    incarnation is believed without bound, and one forged pull reply makes this store drop the
    live node's next writes as duplicates for good (as in the tests above)."""
    cfg = Config(id="n0", listen_host="127.0.0.1", listen_port=1, bus="tcp://127.0.0.1:1000",
                 data_dir=tmp_path, peers=(Peer("n1", "tcp://127.0.0.1:1001"),
                                           Peer("n2", "tcp://127.0.0.1:1002")),
                 heartbeat_ms=5000, anti_entropy_ms=10000, read_cache_mb=0)
    rec = Recovered(Keyspace(), {}, 0, 0, 0.0, 0, 0, 0, [])
    r = Replica(cfg, rec, "n0@me", Backlog(1000), 0.0, wall=lambda: T0, clock_floor=0)
    r.catchup_endpoint = "sim://n0/1"
    r.tick(0.0)
    _n2_writes(r, 1, 3, 0.10)
    heartbeat(r, "n2", 0.11, vv={"n2@a": 3})  # n2 is live: heard now, and again at 5.11
    heartbeat(r, "n1", 0.12, vv={"n2@a": 3})
    r.take()
    heartbeat(r, "n1", 2.5, vv={"n2@a": 1000})  # 2.4 s after n2's heartbeat
    pulled = [p for p, f in fetches(r.take()) if f[0] == wire.PULL and f[1] == b"n2@a"]
    if pulled == ["n1"]:
        _forged_reply(r, 4, 1000, 2.51)
    heartbeat(r, "n2", 5.11, vv={"n2@a": 4})
    _n2_writes(r, 4, 1, 5.12)
    assert r.ks.get(b"n2-key-500") != b"FORGED", "events of a live node forged by a relay"
    assert r.ks.get(b"n2-key-4") == b"real", "n2's own 4th write is dropped as a duplicate"


def test_heartbeats_as_large_as_the_budget_allows_do_not_eat_the_store_loop(tmp_path: Path) -> None:
    """(B) One peer sends heartbeats naming ~11,500 made-up origins of a configured node (about
    a third of a megabyte each, each decoded in full costs tens of ms) at twice the heartbeat
    rate for four seconds: what the store spends on them stays a small share of its loop (the
    byte budget lets about a heartbeat's worth of the origins it knows through per period)."""
    r, _ = replica(tmp_path)
    r.tick(0.0)
    vv = {f"n2@{os.urandom(8).hex()}": 2**40 for _ in range(11_500)}
    hb = Heartbeat(id="n1", seq=0, hlc=make(T0), vv=vv, stable=0, digest=b"\0" * 20, keys=0,
                   catchup="sim://n1/1", peers=["n0", "n1", "n2"], origin="n1@a", wall=T0)
    payload = encode_heartbeat(hb)
    spent = 0.0
    for k in range(80):  # four seconds at twice the heartbeat rate
        now = 1.0 + k * 0.05
        t = time.process_time()
        r.bus("n1", TOPIC_HEARTBEAT, payload, now)
        spent += time.process_time() - t
        r.take()
    print(f"{100 * spent / 4.0:.1f}% of the loop")
    assert spent / 4.0 < 0.1, (f"one peer's heartbeats took {100 * spent / 4.0:.0f}% of the store "
                               f"loop ({len(payload)} bytes each)")
    assert isinstance(r.hb_budget, HeartbeatBudget) and r.hb_budget.dropped >= 60
