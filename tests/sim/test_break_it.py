"""Adversarial scenarios against the repair / recovery paths (branch break-it): each test is a
concrete fault schedule through the real replica core (zkv.sim.world) that ends in a violation
the checker (or an explicit assertion) reports.  These tests fail on purpose: they document bugs.
"""

from __future__ import annotations

from pathlib import Path

from zkv.clock import make
from zkv.events import TOPIC_HEARTBEAT, Heartbeat, encode_heartbeat
from tests.sim.helpers import final_check, settle
from zkv.sim.world import EPOCH_MS, World


def _heartbeat_from(w: World, sender: str, to: str, **override) -> None:
    """Deliver to ``to`` a heartbeat of ``sender`` as its core would send it now, with fields
    replaced by ``override`` (a buggy or lying peer; on a keyed bus, whoever holds its key)."""
    r = w.nodes[sender].replica
    fields = dict(id=sender, seq=r.inbox.vv.get(r.origin, 0), hlc=r.clock_saved, vv=dict(r.inbox.vv),
                  stable=0, digest=r.ks.digest(), keys=len(r.ks), catchup=r.catchup_endpoint,
                  peers=sorted(r.peer_ids), origin=r.origin, wall=r.clock.wall(),
                  seen=dict(r.seen_hlc))
    fields.update(override)
    payload = encode_heartbeat(Heartbeat(**fields))
    w._turn(w.nodes[to], lambda core: core.bus(sender, TOPIC_HEARTBEAT, payload, w.t))


def test_one_peer_echoing_a_clock_an_hour_ahead_makes_a_node_acknowledge_an_unreplicable_write(
        tmp_path: Path) -> None:
    """Heartbeat.seen is trusted without the clock bound: Replica._learn_own_clock calls
    clock.issued(echoed) for any value.  One heartbeat of n1 (buggy, or a stale/garbled seen map)
    saying it heard n0 announce a timestamp an hour ahead moves n0's clock an hour ahead at once;
    the skew check runs only at n0's next heartbeat, so a write in between is acknowledged with
    a stamp an hour ahead, which every peer holds back (beyond their bound) - divergence - and
    which will beat every later write of that key for an hour.  The jump is then persisted
    (clock file), so n0 refuses all writes for an hour, across restarts.  The echo must be
    bounded like observe() is (or checked before writes are accepted)."""
    w = World(11, tmp_path)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    hour_ahead = make(EPOCH_MS + int(w.t * 1000) + 3_600_000)
    _heartbeat_from(w, "n1", "n0", seen={"n0": hour_ahead})
    op = w.client_op("n0", "set", b"k", b"v")
    assert op.result in ("ok", "refused")  # refusing until the echo is explained is fine ...
    if op.result == "ok":  # ... stamping an hour ahead is not
        assert op.version is not None and op.version[0] < hour_ahead - make(3_000_000), op
    settle(w, 1.0)
    w.crash("n0")
    w.start("n0")
    settle(w, 5.0)
    later = w.client_op("n0", "set", b"k2", b"v2")
    settle(w, 0.5)
    violations = final_check(w)
    assert not violations, violations  # the acknowledged write stamped an hour ahead diverges
    assert later.result == "ok", f"n0 refuses writes after one bad echo: {later.result}"


def test_a_hole_given_up_as_lost_while_a_live_peer_holds_the_events_behind_its_own_gap(
        tmp_path: Path) -> None:
    """Replica._resolve_holes gives a hole up when every peer's *announced* vector has no more of
    the origin - but a peer may hold the missing events behind a gap of its own (Inbox pending,
    never in its vv).  n0 is down; n1 misses n2's writes 1..29 (cut), then receives 30..140 live
    but cannot pull 1..29 (its requests to n2 are cut), so it holds 30..140 pending.  n2 loses
    its snapshot (covering ~1..115); restarted, it holds 116..140 after a hole, hears n0 and n1
    announce nothing of its old origin, records 1..115 as lost and claims the rest; n1 then
    takes a full transfer from n2 whose vector covers 140 and drops its pending 30..140.
    Writes 30..115 - acknowledged, and present on a live node the whole time - are lost.
    Only 1..29 existed solely on the damaged snapshot, and are excused."""
    w = World(2, tmp_path, snapshot_records=100)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    w.crash("n0")
    w.cut.add(("n2", "n1"))
    ops = []
    for i in range(140):
        if i == 29:  # from here n1 gets n2's live stream, but its pulls never reach n2
            w.cut.discard(("n2", "n1"))
            w.cut.add(("n1", "n2"))
        ops.append(w.client_op("n2", "set", b"k%03d" % i, b"v%d" % i))
        settle(w, 0.01)
    origin = w.nodes["n2"].replica.origin
    assert w.nodes["n1"].replica.inbox.gaps() == {origin: 30}  # n1 holds 30..140 behind a gap
    w.crash("n2")
    assert w.nodes["n2"].disk.corrupt_snapshot(w.rng)
    w.cut.discard(("n1", "n2"))
    w.start("n0")
    settle(w, 1.0)
    w.start("n2")
    settle(w, 5.0)
    for op in ops[:29]:
        op.excused = "only in n2's damaged snapshot"
    assert all(op.result == "ok" for op in ops)
    violations = final_check(w)
    assert not violations, violations


def test_a_torn_clock_file_write_after_a_restart_loses_the_announced_bound(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """zkv.store.clockfile promises "a torn write of one slot leaves the other", so the bound
    never goes back.  But every ClockFile starts writing at slot 0, whichever slot holds the
    bound it loaded.  After saves v1 (slot 0), v2 (slot 1), v3 (slot 0) and a restart, the first
    save overwrites slot 0 - the one holding v3, which was durable and so announced.  Torn by a
    power cut, it leaves slot 1's v2 < v3: the next start stamps below what peers heard (the
    horizon bug clockfile exists to prevent).  The writer must start at the other slot."""
    from zkv.store import clockfile

    cf = clockfile.ClockFile(tmp_path, 0, background=False)
    for v in (100, 200, 300):
        cf.save(v)
    cf.close()
    floor = clockfile.load(tmp_path)
    assert floor == 300  # durable, so the core announced it
    cf = clockfile.ClockFile(tmp_path, floor, background=False)
    real_pwrite = clockfile.os.pwrite

    def torn(fd: int, data: bytes, offset: int) -> int:  # the power fails mid-write
        real_pwrite(fd, data[:5], offset)
        raise OSError(5, "power cut (simulated)")

    monkeypatch.setattr(clockfile.os, "pwrite", torn)
    try:
        cf.save(400)
    except OSError:
        pass
    monkeypatch.setattr(clockfile.os, "pwrite", real_pwrite)
    assert clockfile.load(tmp_path) >= 300, "the bound went back below a value already announced"


def test_a_wiped_node_takes_an_empty_echo_from_restarted_peers_as_its_clock(tmp_path: Path) -> None:
    """Replica._learn_own_clock sets clock_known on the first heartbeat of any peer, even when
    that peer's seen map has no entry for us (echoed = 0).  Seen maps live in memory only: peers
    restarted while we were down never heard us.  The whole cluster stops; n2's data directory
    is wiped; every wall clock steps back 15 s (an NTP correction of all machines).  n0 and n1
    restart from their clock files and rightly refuse writes (ahead of their walls); n2, with no
    clock file, hears them (seen = {} for n2, offsets 0, their hlc beyond its bound and not
    adopted) and accepts a write stamped 15 s back - below the tombstone horizon n0 and n1
    persisted - which they skip as "deleted and collected".  Acknowledged, it stays on n2 alone."""
    w = World(3, tmp_path, snapshot_records=10)
    for i in w.nodes:
        w.start(i)
    settle(w, 1.0)
    w.client_op("n0", "set", b"gone", b"1")
    settle(w, 0.3)
    w.client_op("n0", "del", b"gone")
    settle(w, 3.0)
    for i in range(30):  # snapshots after the collection persist the horizon
        w.client_op("n0", "set", b"x%d" % i, b"x")
        settle(w, 0.05)
    settle(w, 3.0)
    assert all(n.replica.ks.entry(b"gone") is None for n in w.nodes.values())
    for i in w.nodes:
        w.crash(i)
    w.nodes["n2"].disk.wipe()
    for i in w.nodes:
        w.set_clock(i, -15000)
    w.start("n0")
    w.start("n1")
    settle(w, 0.5)
    w.start("n2")
    settle(w, 1.0)
    op = w.client_op("n2", "set", b"gone", b"new")
    settle(w, 0.5)
    assert op.result in ("ok", "refused")
    violations = final_check(w)
    assert not violations, violations
