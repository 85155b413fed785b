"""Durability and catch-up: real clusters that crash, lose log tails, drop events, and recover.

Every test runs real ``zkv node`` subprocesses on loopback and waits with deadlines
(``wait_until``); no socket, process or file is mocked.  Where a check must prove that a node
recovered *from its own disk* (not by re-pulling from peers), the peers are frozen with SIGSTOP
while it starts, so nobody can hand it the data.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import struct
import threading
import time
from pathlib import Path

import pytest

from tests.cluster.faults import frozen
from tests.cluster.harness import Cluster, Node, free_port, wait_until

# Fast replication timers keep every test short.
FAST = {"heartbeat_ms": 50, "anti_entropy_ms": 200}
WAL_HEADER = 8  # b"ZKVWAL1\n"
FRAME = struct.Struct("<II")  # payload length, crc32


# --- helpers -------------------------------------------------------------------------------
def put(node: Node, items: dict[str, str], chunk: int = 1000) -> None:
    """SET every item through ``node``, pipelined; every write must be acknowledged."""
    keys = list(items)
    with node.client() as c:
        for i in range(0, len(keys), chunk):
            part = keys[i:i + chunk]
            replies = c.pipeline([f"SET {k} {items[k]}".encode() for k in part])
            bad = [(k, r) for k, r in zip(part, replies) if r != b"OK"]
            assert not bad, f"{node.id}: writes not acknowledged: {bad[:5]}"


def delete(node: Node, keys: list[str]) -> None:
    with node.client() as c:
        replies = c.pipeline([f"DEL {k}".encode() for k in keys])
    assert all(r == b"OK" for r in replies), replies[:5]


def get_many(node: Node, keys: list[str], chunk: int = 1000) -> list[bytes]:
    out: list[bytes] = []
    with node.client() as c:
        for i in range(0, len(keys), chunk):
            out += c.pipeline([f"GET {k}".encode() for k in keys[i:i + chunk]])
    return out


def missing(node: Node, items: dict[str, str]) -> list[str]:
    """Keys whose GET on ``node`` does not return the expected value."""
    keys = list(items)
    got = get_many(node, keys)
    return [k for k, g in zip(keys, got) if g != b"VALUE " + items[k].encode()]


def wait_has(node: Node, items: dict[str, str], timeout: float = 30.0) -> None:
    last: list[list[str]] = [[]]

    def ok() -> bool:
        last[0] = missing(node, items)
        return not last[0]

    try:
        wait_until(ok, timeout=timeout, interval=0.1, what=f"{node.id} to hold all {len(items)} keys")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {len(last[0])} missing, e.g. {last[0][:5]}\n{node.log()}") from None


def assert_not_found(node: Node, keys: list[str]) -> None:
    got = get_many(node, keys)
    back = [k for k, g in zip(keys, got) if g != b"NOT FOUND"]
    assert not back, f"deleted keys came back on {node.id}: {back[:5]}"


def assert_verify(cluster: Cluster, nodes: list[Node] | None = None, timeout: float = 30.0) -> None:
    r = cluster.verify(nodes, timeout=timeout)
    assert r.returncode == 0, f"zkv verify exited {r.returncode}:\n{r.stdout}{r.stderr}\n{cluster.logs()}"


def stat(node: Node, field: str) -> int:
    return int(node.info()[field])


def origin_of(node: Node) -> str:
    """The node's current incarnation: the origin its new writes carry."""
    return node.info()["origin"]


def vv(node: Node) -> dict[str, int]:
    text = node.info()["vv"]
    return {o: int(s) for o, s in (p.split("=") for p in text.split(",") if p)}


def full_log(node: Node, since: int = 0) -> str:
    """The node's whole log file (from byte ``since``), not just the tail ``Node.log`` shows."""
    with open(node.log_path, "rb") as f:
        f.seek(since)
        return f.read().decode(errors="replace")


def log_size(node: Node) -> int:
    return node.log_path.stat().st_size if node.log_path.exists() else 0



def kill_all(nodes: list[Node]) -> None:
    """SIGKILL every node at the same instant (as close as two syscalls get), then reap them."""
    for n in nodes:
        n.signal(signal.SIGKILL)
    for n in nodes:
        assert n.proc is not None
        n.proc.wait(10)


def segments(node: Node) -> list[Path]:
    return sorted(node.data_dir.glob("wal-*.log"))


def wal_frames(path: Path) -> list[tuple[int, int]]:
    """(offset, payload length) of every intact frame of a WAL segment."""
    data = path.read_bytes()
    assert data[:WAL_HEADER] == b"ZKVWAL1\n", f"{path.name}: bad header {data[:WAL_HEADER]!r}"
    out, pos = [], WAL_HEADER
    while pos + FRAME.size <= len(data):
        length, _crc = FRAME.unpack_from(data, pos)
        if length == 0 or pos + FRAME.size + length > len(data):
            break
        out.append((pos, length))
        pos += FRAME.size + length
    return out


def dataset(prefix: str, n: int, size: int = 0) -> dict[str, str]:
    pad = "p" * size
    return {f"{prefix}{i:05d}": f"v{i}{pad}" for i in range(n)}


# --- 1. a killed node catches up on 10,000 writes ------------------------------------------
def test_killed_node_catches_up_on_10000_writes(make_cluster) -> None:
    c = make_cluster(**FAST).start()
    a, b, n = c.nodes
    n.kill()
    items = dataset("k", 10_000)
    keys = list(items)
    put(a, {k: items[k] for k in keys[:5000]})
    put(b, {k: items[k] for k in keys[5000:]})
    n.start()
    wait_has(n, items, timeout=40)
    assert_verify(c)


# --- 2. every acknowledged write survives SIGKILL of the whole cluster, fsync "always" or "no"
@pytest.mark.parametrize("fsync", ["always", "no"])
def test_acknowledged_writes_survive_sigkill_of_every_node(make_cluster, fsync: str) -> None:
    """A SIGKILLed store loses nothing it acknowledged: the log record was written before the
    OK, and the page cache outlives the process.  So this holds in every fsync mode and says
    nothing about fsync itself - it passes with ``fsync = "no"`` just the same, and runs with
    "no" to show that a cluster without a single fdatasync replicates and restarts.  That
    "always" syncs the log before the OK is proved where it can be seen, in
    tests/test_store_sync.py (with a control in which the sync is missing); a log tail lost
    with the machine's page cache is tests/cluster/test_machine_faults.py's."""
    c = make_cluster(fsync=fsync, **FAST).start()
    a, b, n = c.nodes
    acked: dict[str, str] = {}
    for i, node in enumerate(c.nodes):
        burst = dataset(f"ack{i}-", 700)
        put(node, burst, chunk=100)  # raises unless every single write got its OK
        acked.update(burst)
    with frozen(a, b):  # these writes reach no other store: n's disk is their only copy
        only_n = dataset("only-n-", 500)
        put(n, only_n, chunk=50)
        acked.update(only_n)
        kill_all(c.nodes)  # right after the last OK (SIGKILL works on stopped processes too)
    c.start()
    for node in c.nodes:
        wait_has(node, acked, timeout=40)
    assert_verify(c)


# --- 3. a torn or garbage WAL tail is cut off; the node keeps the rest and catches up --------
@pytest.mark.parametrize("damage", ["torn", "garbage"])
def test_damaged_wal_tail_is_dropped_and_node_catches_up(make_cluster, damage: str) -> None:
    c = make_cluster(**FAST).start()
    a, b, n = c.nodes
    before = dataset("keep", 300)
    put(a, before)
    wait_has(n, before)
    with a.client() as ca:  # one write alone: n logs it as its newest record
        assert ca.cmd("SET lastkey lastvalue") == b"OK"
    wait_has(n, {"lastkey": "lastvalue"})
    n.kill()

    seg = segments(n)[-1]
    frames = [f for s in segments(n) for f in wal_frames(s)]
    off, length = wal_frames(seg)[-1]
    data = seg.read_bytes()
    assert len(data) == off + FRAME.size + length, "the segment should end with a whole record"
    assert b"lastkey" in data[off + FRAME.size:], "the newest record should be the last write"
    if damage == "torn":
        cut = off + FRAME.size + length // 2  # in the middle of the last record's payload
        with open(seg, "r+b") as f:
            f.truncate(cut)
        dropped, kept = cut - off, len(frames) - 1
    else:
        garbage = b"garbage!" * 5 + b"\x00\x01\x02"
        with open(seg, "ab") as f:
            f.write(garbage)
        dropped, kept = len(garbage), len(frames)

    with frozen(a, b):  # nobody can hand n anything: what it serves now came from its own disk
        mark = log_size(n)
        n.start()
        restart_log = full_log(n, mark)
        assert "dropped" in restart_log and seg.name in restart_log, restart_log
        info = n.info()
        assert int(info["dropped_bytes"]) == dropped, info
        assert int(info["log_records"]) == kept, info
        assert not missing(n, before), "records before the damage must be kept"
        want_last = b"NOT FOUND" if damage == "torn" else b"VALUE lastvalue"
        assert n.get("lastkey") == want_last

    wait_has(n, {"lastkey": "lastvalue", **before})  # the lost write comes back from the peers
    assert_verify(c)

    # The log was cut at the damage, so what is appended now is readable after another crash.
    with n.client() as cn:
        assert cn.cmd("SET after-repair yes") == b"OK"
    n.kill()
    with frozen(a, b):
        mark = log_size(n)
        n.start()
        assert stat(n, "dropped_bytes") == 0, full_log(n, mark)
        assert "dropped" not in full_log(n, mark)
        assert n.get("after-repair") == b"VALUE yes"
        assert n.get("lastkey") == b"VALUE lastvalue"
    assert_verify(c)


# --- 4. events dropped by a full PUB/SUB queue are detected as a gap and pulled --------------
GAP_ROUNDS = 3


def _tick_until_gap_or_caught_up(a: Node, n: Node, prefix: str, max_ticks: int = 3000) -> bool:
    """Write small keys on ``a`` back to back until ``n`` reports a gap (True) or has caught up
    with ``a`` without one (False)."""
    deadline = time.monotonic() + 15
    with a.client() as ca:
        for i in range(max_ticks):
            assert ca.cmd(f"SET {prefix}{i} t") == b"OK"
            if i % 10 == 9:
                if stat(n, "gaps") > 0:
                    return True
                if vv(n) == vv(a):
                    return False
            assert time.monotonic() < deadline, "neither a gap nor catching up"
    raise AssertionError(f"{max_ticks} writes and neither a gap nor catching up")


def test_dropped_events_gap_is_detected_and_repaired(make_cluster) -> None:
    """Two nodes, so nothing but node0's own stream tells node1 what it lacks.  node1 is frozen
    while node0 writes far more than its publisher's queue (``hwm`` = 10) and the socket buffers
    hold: the rest is dropped.  After node1 resumes, node0 writes on, and the first batch node1
    hears beyond the dropped ones is a *gap* (INFO ``gaps``), repaired by a pull.  node0's
    heartbeats, which would also make node1 pull, come once a second here, so they beat the
    next batch to node1 only rarely (a few writes' time in a second); then node1 catches up
    without a gap, and the round is repeated (at most GAP_ROUNDS)."""
    c = make_cluster(2, hwm=10, **FAST)
    a, n = c.nodes
    c.write_config(a, heartbeat_ms=1000)
    c.start()
    items: dict[str, str] = {}
    for rnd in range(GAP_ROUNDS):
        burst = dataset(f"gap{rnd}-", 3000, size=8000)  # ~24 MB: far more than the queues hold
        with frozen(n):
            put(a, burst, chunk=100)
        items.update(burst)
        if _tick_until_gap_or_caught_up(a, n, f"tick{rnd}-"):
            print(f"gap detected in round {rnd + 1}")
            break
    else:
        raise AssertionError(f"no gap detected in {GAP_ROUNDS} rounds of dropped events:\n{c.logs()}")
    wait_until(lambda: vv(n) == vv(a), timeout=30, what=f"{n.id} to repair the gap")
    sample = {k: items[k] for k in list(items)[::97] + [list(items)[-1]]}
    assert not missing(n, sample)
    assert "gap in" in full_log(n), "the gap was not logged"
    assert stat(n, "pulled_events") > 0, "a gap was detected but nothing was pulled"
    assert_verify(c)


# --- 5. a node with an empty data dir gets everything by full state transfer ----------------
@pytest.mark.parametrize("joiner", ["new", "wiped"])
def test_empty_node_joins_by_full_state_transfer(make_cluster, joiner: str) -> None:
    c = make_cluster(backlog=100, **FAST)
    a, b, n = c.nodes
    items: dict[str, str] = {}
    if joiner == "new":  # n was never started
        a.start(wait=False)
        b.start(wait=False)
        a.wait_ready()
        b.wait_ready()
    else:  # n wrote, then lost its disk: same id, empty data dir
        c.start()
        own = dataset("own", 500)
        put(n, own, chunk=50)
        items.update(own)
        wait_has(a, own)
        wait_has(b, own)
        n.kill()
        shutil.rmtree(n.data_dir)
    more = dataset("full", 3000)
    keys = list(more)
    put(a, {k: more[k] for k in keys[:1500]}, chunk=100)
    put(b, {k: more[k] for k in keys[1500:]}, chunk=100)
    items.update(more)
    for k in ("tail1", "tail2", "tail3"):  # a few small batches at the end of each backlog
        put(a, {k + "a": "x"})
        put(b, {k + "b": "x"})
        items.update({k + "a": "x", k + "b": "x"})
    wait_has(b, items)
    assert not n.data_dir.exists() or not any(n.data_dir.iterdir())
    n.start()
    if joiner == "wiped":  # it writes at once, before it has learnt its own old history
        fresh = dataset("fresh", 20)
        with n.client() as cn:
            for k, v in fresh.items():
                assert cn.cmd(f"SET {k} {v}") == b"OK"
        items.update(fresh)
    for node in c.nodes:
        wait_has(node, items, timeout=40)
    assert stat(n, "full_syncs") >= 1, n.info()
    assert_verify(c)


# --- 6. the origin dies for good right after one peer got its writes -----------------------
def test_writes_of_a_dead_origin_are_pulled_from_a_peer(make_cluster) -> None:
    c = make_cluster(hwm=10, **FAST).start()
    origin, relay, late = c.nodes
    items = dataset("orph", 2000, size=8000)  # more than the queues hold: most never reach `late`
    with frozen(late):
        put(origin, items, chunk=100)
        seq = stat(origin, "seq")
        incarnation = origin_of(origin)
        wait_until(lambda: vv(relay).get(incarnation) == seq, timeout=30, what="relay to have every write")
        wait_has(relay, items)
        origin.kill()  # for good
    wait_until(lambda: vv(late).get(incarnation) == seq, timeout=30,
               what=f"{late.id} to pull {origin.id}'s writes from {relay.id}")
    wait_has(late, items)
    assert stat(late, "pulled_events") > 0
    assert_verify(c, [relay, late])


# --- 7. deletes stay deleted after tombstone GC and restarts --------------------------------
def test_deletes_stay_deleted_after_tombstone_gc_and_restarts(make_cluster) -> None:
    c = make_cluster(**FAST).start()
    a, b, n = c.nodes
    early = dataset("del", 200)
    put(a, early)
    for node in c.nodes:
        wait_has(node, early)

    # Partition n: it runs for a while on another bus port, where no peer listens, and writes.
    # Those SETs exist only in n's log; the peers get them (older than the deletes below) after
    # the deletes, when n is back.  A tombstone collected too early would let them resurrect.
    n.kill()
    bus_port = n.bus_port
    n.bus_port = free_port()
    c.write_config(n)
    n.start()
    late = dataset("old", 300)
    put(n, late)
    n.kill()
    n.bus_port = bus_port
    c.write_config(n)
    assert missing(a, late) == list(late), "the partitioned writes reached a peer"

    keys = list(early) + list(late)
    delete(a, keys)  # a tombstone for every key, newer than every SET above
    n.start()

    def collected(node: Node) -> bool:
        info = node.info()
        return int(info["tombstones_collected"]) > 0 and int(info["tombstones"]) == 0

    for node in c.nodes:
        wait_until(lambda: collected(node), timeout=30, what=f"{node.id} to collect its tombstones")
    assert_verify(c)
    for node in c.nodes:
        assert_not_found(node, keys)

    n.kill()
    n.start()  # replays SETs and DELs from its log
    assert b.stop() == 0
    b.start()  # from the snapshot written at shutdown (no tombstones, no keys)
    a.kill()
    a.start()
    for node in c.nodes:
        assert_not_found(node, keys)
    assert_verify(c)
    for node in c.nodes:  # and still not after everyone has talked again
        assert_not_found(node, keys)


# --- 7b. a node that is down holds tombstone collection back --------------------------------
def _collected_all(node: Node, before: int) -> bool:
    return stat(node, "tombstones") == 0 and stat(node, "tombstones_collected") > before


def test_a_down_node_holds_tombstone_collection_back(make_cluster) -> None:
    """README: "A node that is down holds the horizon back".  Control first: with every node
    up, tombstones are collected within a few rounds (T).  Then, with node2 down, the live
    nodes collect none of the newer tombstones for max(2 s, 4 T) - ten collection rounds or
    more - and once node2 is back, collection resumes on every node."""
    c = make_cluster(**FAST).start()
    a, b, n = c.nodes
    ctrl = dataset("ctrl", 50)
    put(a, ctrl)
    for node in c.nodes:
        wait_has(node, ctrl)
    delete(a, list(ctrl))
    t0 = time.monotonic()
    for node in c.nodes:
        wait_until(lambda: _collected_all(node, 0), timeout=20, what=f"{node.id} to collect (control)")
    control_s = time.monotonic() - t0

    held = dataset("held", 50)
    put(a, held)
    for node in c.nodes:
        wait_has(node, held)
    n.kill()
    delete(a, list(held))
    wait_until(lambda: stat(b, "tombstones") == len(held), timeout=10, what="node1 to get the deletes")
    before = {node.id: stat(node, "tombstones_collected") for node in (a, b)}
    hold_s = max(2.0, 4 * control_s)
    until = time.monotonic() + hold_s
    while time.monotonic() < until:  # the length of the outage is the thing under test
        for node in (a, b):
            counts = (stat(node, "tombstones"), stat(node, "tombstones_collected"))
            assert counts == (len(held), before[node.id]), (
                f"{node.id} collected tombstones while node2 was down (tombstones, collected: "
                f"{counts}; before: {len(held)}, {before[node.id]}; control took {control_s:.2f}s)")
        time.sleep(0.1)

    n.start()
    for node in c.nodes:
        wait_until(lambda: _collected_all(node, before.get(node.id, 0)), timeout=20,
                   what=f"{node.id} to collect once node2 is back")
    for node in c.nodes:
        assert_not_found(node, list(held) + list(ctrl))
    assert_verify(c)


# --- 8. a fourth node joins a running cluster -----------------------------------------------
def test_fourth_node_joins_running_cluster(make_cluster) -> None:
    """README (membership): the others list the new node first (a rolling restart, writes
    flowing), then it starts and fetches the whole dataset - more than the peers' backlog holds,
    so by a full transfer, which they serve only to a peer their configs list."""
    c = make_cluster(backlog=50, **FAST).start()
    old = list(c.nodes)
    items = dataset("four", 1500)
    keys = list(items)
    for i, node in enumerate(old):
        put(node, {k: items[k] for k in keys[i::3]})

    d = c.add_node()
    conf = d.config_path.read_text()
    assert all(f'id = "{o.id}"' in conf for o in old)
    more = dataset("rolling", 300)
    for i, node in enumerate(old):  # restart the three one at a time, now listing the fourth
        c.write_config(node)
        assert f'id = "{d.id}"' in node.config_path.read_text()
        assert node.stop() == 0
        node.start()
        part = {k: v for j, (k, v) in enumerate(more.items()) if j % 3 == i}
        put(old[(i + 1) % 3], part)  # writes keep flowing during the rolling restart
    items.update(more)
    d.start()
    wait_has(d, items)
    assert int(d.info()["full_syncs"]) >= 1, "the new node caught up without a full transfer?"
    with d.client() as cd:
        assert cd.cmd("SET from-the-fourth hello") == b"OK"
    items["from-the-fourth"] = "hello"
    for node in c.nodes:
        wait_has(node, items)
        wait_until(lambda: node.info()["connected_peers"] == "3", what=f"{node.id} to see 3 peers")
    assert_verify(c)


# --- 9. a clean stop writes a snapshot; the next start loads it, not the log ----------------
def test_clean_restart_recovers_from_snapshot(make_cluster) -> None:
    c = make_cluster(**FAST).start()
    a, b, n = c.nodes
    items = dataset("clean", 500)
    put(a, items)
    wait_has(n, items)
    with frozen(a, b):  # n's data after the restart can only come from its own disk
        mark = log_size(n)
        assert n.stop() == 0
        n.start()
        restart_log = full_log(n, mark)
        assert "clean shutdown: snapshot of 500 keys" in restart_log, restart_log
        found = re.findall(r"recovered (\d+) keys \((\d+) snapshot entries, (\d+) log records\)", restart_log)
        assert found == [("500", "500", "0")], restart_log
        assert not missing(n, items)
    assert_verify(c)


# --- 10. every node snapshots after about snapshot_records logged writes, local or replicated
def test_every_node_snapshots_after_about_snapshot_records_writes(make_cluster) -> None:
    """With snapshot_records = 1000 each node draws a threshold of 750-1250 logged writes, so
    after 3,000 writes on one node every node, writer or replica, has taken at least two
    snapshots: each counts the writes it logs, not only the ones its clients made."""
    c = make_cluster(snapshot_records=1000, **FAST).start()
    a = c.nodes[0]
    items = dataset("snap", 3000)
    put(a, items, chunk=100)
    for node in c.nodes:
        wait_has(node, items)
        wait_until(lambda node=node: int(node.info()["snapshot_taken"]) >= 2, timeout=60,
                   what=f"{node.id} to take its snapshots")
    assert_verify(c)


# --- 11. SIGKILL while a snapshot is being written: the restart recovers everything ----------
def _gone(pid: int) -> bool:
    """The process has exited (no longer exists, or is a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Model:
    """What the writer had acknowledged: key -> value (None: deleted); keys whose last write was
    sent but not answered may hold either their last acknowledged value or that one."""

    def __init__(self) -> None:
        self.acked: dict[str, str | None] = {}
        self.unsure: dict[str, str | None] = {}
        self.writes = 0  # acknowledged writes, in all
        self.lock = threading.Lock()

    def allowed(self, key: str) -> set[bytes]:
        out = {b"NOT FOUND" if v is None else b"VALUE " + v.encode()
               for v in (self.acked.get(key),)}
        if key in self.unsure:
            v = self.unsure[key]
            out.add(b"NOT FOUND" if v is None else b"VALUE " + v.encode())
        return out


def _mixed_writer(node: Node, model: Model, stop: threading.Event, errors: list[BaseException]) -> None:
    """Batches of fresh SETs, overwrites of 100 hot keys and DELETEs, until ``stop`` or the
    connection dies (the node is killed); at most 4,000 batches.  (A bound the test's own
    deadlines never reach: on a loaded machine the store logs more writes per record, so its
    snapshots come later in the run, and 400 batches once ended before the second one.)"""
    rnd = random.Random(11)
    try:
        with node.client() as cl:
            for i in range(4000):
                if stop.is_set():
                    return
                ops: list[tuple[str, str | None]] = [(f"f{i}-{j}", f"v{i}-{j}" + "p" * 60) for j in range(150)]
                ops += [(f"hot{rnd.randrange(100)}", f"h{i}-{j}") for j in range(30)]
                ops += [(f"f{rnd.randrange(max(i, 1))}-{rnd.randrange(150)}", None) for _ in range(20)]
                rnd.shuffle(ops)
                cl.send(b"".join((f"SET {k} {v}\n" if v is not None else f"DEL {k}\n").encode()
                                 for k, v in ops))
                for n_done, (k, v) in enumerate(ops):
                    try:
                        reply = cl.read_line()
                    except (ConnectionError, OSError):
                        with model.lock:
                            for k2, v2 in ops[n_done:]:
                                model.unsure[k2] = v2
                        return
                    assert reply == b"OK", reply
                    with model.lock:
                        model.acked[k] = v
                        model.unsure.pop(k, None)
                        model.writes += 1
    except (ConnectionError, OSError):
        return
    except BaseException as exc:  # noqa: BLE001 - the test reads it
        errors.append(exc)


def test_sigkill_during_a_snapshot_recovers_every_acknowledged_write(make_cluster, tmp_path) -> None:
    """One node (nobody else could hand it anything back), snapshots every ~2,000 writes, a
    writer of SETs, overwrites and DELETEs; the node is SIGKILLed while its forked snapshot
    writer runs - the second one, so there is an older snapshot and log to get wrong.  The
    restart must serve the last acknowledged write of every key.

    A snapshot child of a few thousand keys lives for milliseconds, too short to catch by
    polling, so the node runs with the test hook ZKV_TEST_SNAPSHOT_HOLD (zkv.store.durability):
    each snapshot child, with part of its file written and before it is renamed into place,
    creates ``held.<n>`` here and waits until the test removes it.  The first is let go; the
    node is killed while the second is held, after the writer has had more writes acknowledged
    (they are in no snapshot, only in the log)."""
    hold = tmp_path / "snapshot-hold"
    hold.mkdir()
    c = make_cluster(1, snapshot_records=2000, **FAST)
    node = c.nodes[0]
    node.env["ZKV_TEST_SNAPSHOT_HOLD"] = str(hold)
    c.start()
    model, stop, errors = Model(), threading.Event(), []
    writer = threading.Thread(target=_mixed_writer, args=(node, model, stop, errors))
    writer.start()
    snap = node.data_dir / "snapshot.zkv"
    try:
        wait_until(lambda: (hold / "held.1").exists() or not writer.is_alive(), timeout=30,
                   what="the first snapshot child to be held")
        assert not errors, errors
        assert (hold / "held.1").exists(), "the writer ended before the first snapshot"
        (hold / "held.1").unlink()  # it finishes: the older snapshot
        wait_until(lambda: (hold / "held.2").exists() or not writer.is_alive(), timeout=30,
                   what="the second snapshot child to be held")
        assert not errors, errors
        assert (hold / "held.2").exists(), "the writer ended before the second snapshot"
        child = int((hold / "held.2").read_text())
        assert snap.exists(), "the first snapshot was not renamed into place"
        with model.lock:
            before = model.writes
        wait_until(lambda: model.writes >= before + 1000 or not writer.is_alive(), timeout=30,
                   what="1,000 more writes to be acknowledged while the snapshot is held")
        assert model.writes >= before + 1000, "the writer ended while the snapshot was held"
        older = snap.stat()
        node.kill()
    finally:
        stop.set()
        writer.join(20)
    assert not writer.is_alive(), "the writer did not stop"
    assert not errors, errors
    assert node.proc is not None and node.proc.returncode is not None, "the node was not killed"
    # the held child went with the node, leaving its half-written file: the kill landed mid-snapshot
    wait_until(lambda: _gone(child), timeout=10, what=f"the held snapshot child {child} to die")
    now = snap.stat()
    assert (now.st_ino, now.st_mtime_ns) == (older.st_ino, older.st_mtime_ns), \
        "the held snapshot was completed after the kill"
    assert snap.with_name(snap.name + ".tmp").exists(), "no half-written snapshot was left"
    assert len(model.acked) > 2000

    node.env.pop("ZKV_TEST_SNAPSHOT_HOLD")  # from here on snapshots run freely
    mark = log_size(node)
    node.start()
    assert "recovered" in full_log(node, mark)
    keys = sorted(set(model.acked) | set(model.unsure))
    got = dict(zip(keys, get_many(node, keys)))
    wrong = {k: got[k][:30] for k in keys if got[k] not in model.allowed(k)}
    assert not wrong, f"{len(wrong)} keys lost or wrong after the restart, e.g. {list(wrong.items())[:5]}"
    assert node.stop() == 0  # and the recovered state snapshots and restarts cleanly
    node.start()
    got = dict(zip(keys, get_many(node, keys)))
    assert all(got[k] in model.allowed(k) for k in keys)
