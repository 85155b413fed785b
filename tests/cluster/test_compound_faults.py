"""Two faults at once that lose acknowledged writes for good: each test reproduces one.

1. A node restarted with its clock behind, before it hears a peer, acknowledges a write that
   the rest of the cluster drops.  node0 has collected a tombstone, and its gc_horizon (the
   floor below which a write of a key it has no entry for is skipped as "deleted since") lies
   seconds ahead of the wall clock of node2, which restarts 8 s behind while node0 and node1
   are frozen.  Hearing no peer, node2 serves after five heartbeats and acknowledges
   ``SET newkey v``, stamped below that horizon; node0 and node1 skip the event (and every
   anti-entropy repair of it) and answer NOT FOUND at equal version vectors.  Every node must
   end up holding ``newkey`` (refusing the write would be an acceptable answer too).

2. Acknowledged writes after a log hole stay on one node for good.  node2 alone (its peers
   stopped cleanly) acknowledges writes; a snapshot is taken partway through; then it is killed
   and the snapshot damaged.  Its log still holds, intact, every write acknowledged after the
   snapshot, but behind a hole that no peer can fill (the events before it existed only in the
   lost snapshot), so node2 never claims them: they travel only by anti-entropy, which merges
   them under the receiver's gc_horizon floor.  node0 has deleted a key of its own, and once
   node2 is back that tombstone is collected, the horizon passing every stamp in node2's log:
   node0 and node1 skip those writes for good.  The writes in the lost snapshot are fairly
   lost; those in the intact log must reach every node.

3. A node whose data directory was wiped restarts with its clock behind while its peers are
   frozen: it has no record of how far its clock had gone (no clock file), so it must refuse
   writes until a peer has told it (``ERROR clock unknown``); then it knows its clock is
   behind (``ERROR clock skew``), and on the true clock it accepts them.

All run real ``zkv node`` processes on 127.0.0.1 and wait on observable conditions with
deadlines; the faults (SIGKILL, SIGSTOP, faketime, flipped bytes) come from
``tests/cluster/faults.py``.  Each failed on the code before the clock bound and hole rules.
"""

from __future__ import annotations

import json
import random
import shutil
import time
import zlib
from pathlib import Path

from tests.cluster.faults import AckModel, capture_heartbeat, faketime_prefix, flip_bytes, frozen
from tests.cluster.harness import Cluster, Node, connect, wait_until

FAST = {"heartbeat_ms": 100, "anti_entropy_ms": 200}
DEADLINE = 30.0  # seconds for the cluster to converge at the end of each test


# --- helpers -------------------------------------------------------------------------------
def info_json(node: Node) -> dict:
    """``INFO json``: the store's whole info dict (gc_horizon, stats, snapshots ...)."""
    req = b"*2\r\n$4\r\nINFO\r\n$4\r\njson\r\n"
    with connect(node.host, node.port, 10, node.netns) as s:
        s.sendall(req)
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        head, _, body = buf.partition(b"\r\n")
        assert head.startswith(b"$"), f"INFO json replied {head!r}"
        size = int(head[1:])
        while len(body) < size:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            body += chunk
    return json.loads(body[:size])


def all_connected(c: Cluster) -> bool:
    return all(n.info().get("connected_peers") == str(len(c.nodes) - 1) for n in c.nodes)


def cmd(node: Node, line: str) -> bytes:
    with node.client() as cl:
        return cl.cmd(line)


def physical_ms(hlc: int) -> int:
    return hlc >> 16  # zkv.clock: physical ms << 16 | logical


def wal_segments(data_dir: Path) -> set[str]:
    return {p.name for p in data_dir.glob("wal-*.log")}


def converge(nodes: list[Node], model: AckModel, timeout: float) -> list[str]:
    """Wait until every node answers every key of ``model`` as acknowledged; return what is
    still wrong at the deadline (empty: all good)."""
    deadline = time.monotonic() + timeout
    while True:
        wrong = [f"{n.id}: {k} -> {got!r} (acknowledged: {want!r})"
                 for n in nodes for k, want, got in model.mismatches(n)]
        if not wrong or time.monotonic() >= deadline:
            return wrong
        time.sleep(0.2)


# --- 1. a node restarted with its clock behind, before it hears a peer -----------------------
SKEW_S = 8  # node2 restarts this far behind
NODE1_DOWN_S = 10  # node1 is down this long after the delete: node0's horizon lands past it


def test_write_acknowledged_by_node_restarted_behind_reaches_every_node(make_cluster) -> None:
    """node0 collects the tombstone of ``gone`` once node1, down since before the delete, is
    back; its gc_horizon lands ~10 s after the delete.  node2 is killed, node0 and node1 are
    frozen, node2 restarts 8 s behind: hearing no peer it serves, and acknowledges ``SET newkey
    v`` stamped below node0's horizon.  Once everyone is back (node2 on the true clock), every
    node must answer ``VALUE v``: the write was acknowledged, and no delete of it ever existed."""
    skewed = faketime_prefix(f"-{SKEW_S}s")
    c = make_cluster(3, fsync="always", **FAST).start()
    n0, n1, n2 = c.nodes
    wait_until(lambda: all_connected(c), timeout=20, what="every node to hear both peers")
    assert cmd(n0, "SET gone x") == b"OK"
    wait_until(lambda: n1.get("gone") == b"VALUE x" and n2.get("gone") == b"VALUE x",
               timeout=15, what="node1 and node2 to hold gone")
    n1.kill()
    assert cmd(n0, "DELETE gone") == b"OK"
    t_del_ms = int(time.time() * 1000)
    wait_until(lambda: n2.get("gone") == b"NOT FOUND", timeout=15, what="node2 to apply the delete")
    # The scenario itself: node1 stays down NODE1_DOWN_S seconds of real time.  Meanwhile the
    # tombstone must stay (a configured peer that lacks the delete holds collection back).
    while time.time() * 1000 < t_del_ms + NODE1_DOWN_S * 1000:
        assert int(n0.info().get("tombstones", 0)) == 1, "node0 collected the tombstone with node1 down"
        time.sleep(0.5)
    n1.start()
    wait_until(lambda: info_json(n0)["stats"]["tombstones_collected"] >= 1, timeout=30,
               what="node0 to collect the tombstone of gone")
    horizon_ms = physical_ms(info_json(n0)["gc_horizon"])
    assert horizon_ms >= t_del_ms + (NODE1_DOWN_S - 1) * 1000, (
        f"node0's gc_horizon is only {horizon_ms - t_del_ms} ms after the delete")

    n2.kill()
    with frozen(n0, n1):
        n2.prefix = skewed
        n2.start()
        reply = cmd(n2, "SET newkey v")  # answered once five heartbeats passed with no peer
        node2_stamp_ms = physical_ms(int(capture_heartbeat(n2)["hlc"]))
    if reply.startswith(b"ERROR clock skew"):
        return  # refusing the write is an acceptable answer
    assert reply == b"OK", f"node2 (-{SKEW_S}s, alone) answered SET newkey v with {reply!r}"
    # SIGKILL, not a clean stop: a clean stop's snapshot empties node2's log, its peers then
    # fetch newkey by a full state transfer, whose entries are merged without the horizon's
    # floor; from the log's backlog it travels as an event, as it would from a node that had
    # heard a peer after the write.
    n2.kill()
    n2.prefix = []
    n2.start()
    model = AckModel()
    model.record("newkey", b"v")
    wrong = converge(c.nodes, model, DEADLINE)
    assert not wrong, (
        f"node2 acknowledged SET newkey v; {DEADLINE:.0f} s after every node is back: "
        + "; ".join(wrong)
        + f"\n(node0's gc_horizon is {horizon_ms - t_del_ms} ms after the delete; node2's clock "
        f"stood {node2_stamp_ms - t_del_ms} ms after it when it stamped the write)\n{c.logs()}")
    r = c.verify(timeout=20)
    assert r.returncode == 0, f"zkv verify exited {r.returncode}: {r.stdout.strip()}\n{c.logs()}"


# --- 2. acknowledged writes after a log hole ---------------------------------------------------
KEYS = 40  # before the snapshot: SETs over k0..k39 (overwrites), every 10th op a DELETE
# Written once the snapshot's fork is seen: NEW_KEYS fresh keys plus OVERWRITES of k-keys, each
# in a bucket of its own, then DELETES of some of the fresh ones - more than the 64 buckets
# anti-entropy asks for per round (zkv.replication.antientropy.MAX_DIFF_BUCKETS), and fewer
# writes than the smallest next snapshot threshold (0.75 x snapshot_records = 75).
NEW_KEYS, OVERWRITES, DELETES = 64, 5, 2


def bucket(key: str) -> int:
    return zlib.crc32(key.encode()) & 1023  # zkv.store.keyspace.bucket_of


def after_snapshot_ops(rnd: random.Random, old_keys: list[str]) -> list[tuple[str, bytes | None]]:
    """The writes after the snapshot: every key in a bucket of its own; the DELETEs go to the
    fresh keys in the lowest buckets (anti-entropy sends buckets in index order)."""
    used: set[int] = set()
    fresh: list[str] = []
    j = 0
    while len(fresh) < NEW_KEYS:
        key = f"n{j}"
        j += 1
        if bucket(key) not in used:
            used.add(bucket(key))
            fresh.append(key)
    over = []
    for key in rnd.sample(old_keys, len(old_keys)):
        if len(over) < OVERWRITES and bucket(key) not in used:
            used.add(bucket(key))
            over.append(key)
    sets = [(k, f"after-{k}".encode()) for k in fresh + over]
    rnd.shuffle(sets)
    deletes = [(k, None) for k in sorted(fresh, key=bucket)[:DELETES]]
    return sets + deletes


def test_writes_in_the_intact_log_after_a_lost_snapshot_reach_every_node(make_cluster) -> None:
    """node2 alone acknowledges writes over k0..k39 (overwrites, DELETEs) until a snapshot is
    taken (after 75-125 of them), then 71 more (69 keys, 2 of them DELETEd): 146-196 in all.
    node2 is killed, its snapshot damaged; node0 and node1 come back and node0 takes a few
    writes (one a DELETE); node2 restarts: its log holds the writes after the snapshot, after a
    hole nobody can fill.  Each key whose last acknowledged write is in that log (and each of
    node0's) must read the same on every node, and ``zkv verify`` must find them identical."""
    c = make_cluster(3, fsync="always", snapshot_records=100, **FAST).start()
    n0, n1, n2 = c.nodes
    wait_until(lambda: all_connected(c), timeout=20, what="every node to hear both peers")
    assert n0.stop() == 0 and n1.stop() == 0
    segments_before = wal_segments(n2.data_dir)
    rnd = random.Random(11)
    model = AckModel()
    last_write: dict[str, int] = {}  # key -> index of its last acknowledged op
    first_after: int | None = None  # ops from this index on were acknowledged after the fork
    written: list[str] = []
    after_ops: list[tuple[str, bytes | None]] = []
    i = 0
    with n2.client() as cl:
        while first_after is None or after_ops:
            assert i < 400, f"no snapshot after {i} writes (snapshot_records = 100)\n{n2.log()}"
            if first_after is None and wal_segments(n2.data_dir) - segments_before:
                # The snapshot's fork rotated the log: every write acknowledged from now on
                # has its record in the new segment, which the snapshot does not cover.
                first_after = i
                after_ops = after_snapshot_ops(rnd, [f"k{x}" for x in range(KEYS)])
            if after_ops:
                key, value = after_ops.pop(0)
            elif i % 10 == 9 and written:
                key, value = rnd.choice(written), None
            else:
                key, value = f"k{rnd.randrange(KEYS)}", f"v{i}".encode()
                written.append(key)
            reply = cl.cmd(f"DELETE {key}" if value is None else f"SET {key} {value.decode()}")
            assert reply == b"OK", f"node2 alone: op {i} on {key} -> {reply!r}"
            model.record(key, value)
            last_write[key] = i
            i += 1
    wait_until(lambda: n2.info().get("snapshot_taken") == "1", timeout=15,
               what="node2's snapshot to be written")
    assert first_after is not None
    assert len(wal_segments(n2.data_dir)) == 1, f"a second snapshot: {wal_segments(n2.data_dir)}"
    after = AckModel({k: model.last[k] for k, idx in last_write.items() if idx >= first_after})
    n2.kill()
    flip_bytes(n2.data_dir / "snapshot.zkv", 64)
    n0.start(wait=False)
    n1.start(wait=False)
    n0.wait_ready()
    n1.wait_ready()
    with n0.client() as cl:
        for j in range(5):
            assert cl.cmd(f"SET other{j} o{j}") == b"OK"
            after.record(f"other{j}", f"o{j}".encode())
        assert cl.cmd("DELETE other4") == b"OK"  # a tombstone: node0's gc_horizon will move
        after.record("other4", None)
    log_from = n2.log_path.stat().st_size
    n2.start()
    restart_log = n2.log_path.read_bytes()[log_from:].decode(errors="replace")
    assert "snapshot unusable" in restart_log and "after a hole" in restart_log, (
        f"the fault was not injected as intended:\n{restart_log}")
    wrong = converge(c.nodes, after, DEADLINE)
    assert not wrong, (
        f"{len(wrong)} answers wrong for acknowledged writes whose log records are intact, "
        f"{DEADLINE:.0f} s after node2 restarted ({i - first_after} of {i} ops acknowledged "
        f"after the snapshot; {len(after.last)} keys checked): "
        + "; ".join(wrong[:6]) + f"\n{c.logs()}")
    r = c.verify(timeout=20)
    assert r.returncode == 0, f"zkv verify exited {r.returncode}: {r.stdout.strip()}\n{c.logs()}"
    # the hole was given up and the events after it claimed (anti-entropy alone would copy the
    # data, but leave them unclaimed: tombstone collection held back for good)
    wait_until(lambda: int(n2.info().get("lost_events", 0)) > 0, timeout=15,
               what="node2 to record the hole as lost")
    wait_until(lambda: len({n.info()["vv"] for n in c.nodes}) == 1, timeout=15,
               what="equal version vectors")


def test_a_wiped_node_accepts_writes_only_once_a_peer_told_it_its_clock(make_cluster) -> None:
    c = make_cluster(3, fsync="always", **FAST).start()
    n0, n1, n2 = c.nodes
    wait_until(lambda: all_connected(c), timeout=15, what="all connected")
    assert cmd(n0, "SET a 1") == b"OK"
    n2.kill()
    shutil.rmtree(n2.data_dir)
    n2.prefix = faketime_prefix("-5s")
    with frozen(n0, n1):
        n2.start()
        reply = cmd(n2, "SET b 2")
        assert reply.startswith(b"ERROR clock unknown"), reply
        assert cmd(n2, "GET a") == b"NOT FOUND"  # reads are still served
    # it has heard its peers: its clock is known now, and 5 s behind theirs
    wait_until(lambda: cmd(n2, "SET b 3").startswith(b"ERROR clock skew"), timeout=15,
               what="node2 to learn its clock from a peer and find it behind")
    n2.stop()
    n2.prefix = []
    n2.start()
    wait_until(lambda: cmd(n2, "SET b 4") == b"OK", timeout=15, what="node2 to accept writes")
    wait_until(lambda: cmd(n2, "GET a") == b"VALUE 1", timeout=15, what="node2 to catch up")
