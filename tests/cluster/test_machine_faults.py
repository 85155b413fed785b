"""Failures real machines produce (issue 9, "What fails on today's main"), one real-cluster test each.

Owns the cluster tests that reproduce each item of that section and assert what must hold
after it is fixed:

1. a log tail lost with the machine (``fsync = "everysec"``) must not delete acknowledged
   writes, neither those a peer had received before the crash nor those acknowledged after
   the restart;
2. a damaged snapshot on one node must not delete any data anywhere;
3. clocks: (a) a node whose wall clock runs an hour ahead refuses writes (``ERROR clock skew:``)
   and its stamp reaches no other node; (b) hostile heartbeats and batches published on a down
   peer's bus address (a timestamp of 2**64-1, a version vector of strings) stop no store;
4. one client's ``MSET`` of three 400 MB values is acknowledged and stops no store.

Every test runs real ``zkv node`` processes on loopback and waits with deadlines; the faults
(truncation, bit flips, faketime, a forged publisher) come from ``tests/cluster/faults.py``.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

import msgpack
import pytest

from tests.cluster.faults import (
    AckModel, HostilePublisher, capture_heartbeat, describe_loss, faketime_prefix, flip_bytes,
    forged_heartbeat, frozen, newest_segment, run_ops, store_pid, truncate_tail,
)
from tests.cluster.harness import Cluster, LineClient, Node, wait_until

FAST = {"heartbeat_ms": 100, "anti_entropy_ms": 200}
Op = tuple[str, bytes | None]


# --- helpers -------------------------------------------------------------------------------
def mixed_ops(rnd: random.Random, n: int, prefix: str, hot: int = 40) -> list[Op]:
    """``n`` ops: mostly SETs of fresh keys, every 4th an overwrite of one of ``hot`` keys,
    every 10th a DELETE of a key written before (so tombstones and overwrites are in play)."""
    ops: list[Op] = []
    written: list[str] = []
    for i in range(n):
        if i % 10 == 9 and written:
            ops.append((rnd.choice(written), None))
            continue
        key = f"{prefix}hot{rnd.randrange(hot)}" if i % 4 == 0 else f"{prefix}{i}"
        ops.append((key, f"{prefix}v{i}".encode()))
        written.append(key)
    return ops


def same_state(a: Node, b: Node) -> bool:
    """Both nodes announce the same version vector and the same digest."""
    ia, ib = a.info(), b.info()
    return ia["vv"] == ib["vv"] and ia["digest"] == ib["digest"]


def assert_no_loss(cluster: Cluster, model: AckModel, verify_timeout: float = 20.0,
                   explain: Callable[[], str] = str) -> None:
    """``zkv verify`` exits 0 and every node holds exactly the model's last acknowledged ops
    (``explain()`` adds a line to the failure message)."""
    r = cluster.verify(timeout=verify_timeout)
    bad = any(model.mismatches(n) for n in cluster.nodes)
    assert r.returncode == 0 and not bad, (
        f"zkv verify exited {r.returncode}: {r.stdout.strip()}\n{describe_loss(model, cluster.nodes)}"
        f"\n{explain()}\n{cluster.logs()}")


def load(node: Node, ops: list[Op], model: AckModel, pipeline: int = 500) -> None:
    run_ops(node, ops, model, pipeline=pipeline)


def resp_command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


# --- 1. a lost log tail ---------------------------------------------------------------------
def test_lost_log_tail_loses_no_acknowledged_write(make_cluster) -> None:
    """node0's newest segment loses its second half (a machine crash with everysec); node1,
    which had received everything, is frozen while node0 restarts and acknowledges new writes
    on overlapping keys.  Nothing acknowledged may be lost: node0 must not reuse the event
    identities node1 holds, and anti-entropy must not read absence as deletion."""
    c = make_cluster(3, fsync="everysec", snapshot_records=100_000, **FAST).start()
    n0, n1, n2 = c.nodes
    model = AckModel()
    before = mixed_ops(random.Random(9), 700, "k")
    run_ops(n0, before[:230], model)  # one request at a time: one log record per write
    n2.kill()  # node2 lags from here on
    run_ops(n0, before[230:], model)
    wait_until(lambda: same_state(n0, n1), timeout=15, what="node1 to hold all of node0's writes")
    n0.kill()
    old, new = truncate_tail(newest_segment(n0.data_dir), 0.5)
    assert new < old
    with frozen(n1):
        for n in (n2, n0):
            n.start(wait=False)
        n2.wait_ready()
        n0.wait_ready()
        rnd = random.Random(10)
        old_keys = sorted({k for k, _v in before})
        after: list[Op] = [(k, f"after{i}".encode()) for i, k in enumerate(rnd.sample(old_keys, 50))]
        after += [(f"new{i}", f"after-new{i}".encode()) for i in range(50)]
        after.append((rnd.choice(old_keys), None))
        run_ops(n0, after, model)
    assert_no_loss(c, model, explain=lambda: lost_by_phase(n0, model, {k for k, _v in after}))


def lost_by_phase(node: Node, model: AckModel, after_keys: set[str]) -> str:
    """Split ``node``'s wrong keys into those last acknowledged before the crash (node1 held
    them) and those acknowledged after the restart."""
    wrong = [k for k, _want, _got in model.mismatches(node)]
    late = sum(1 for k in wrong if k in after_keys)
    return (f"on {node.id}: {len(wrong) - late} keys last acknowledged before the crash "
            f"(node1 held them) and {late} acknowledged after the restart are wrong")


# --- 2. a damaged snapshot -----------------------------------------------------------------
# Ops loaded before the snapshot.  The issue needed 61,000 keys to lose data reliably because
# its snapshot was a periodic one and the race against healing depended on the log after it;
# here the snapshot is taken by a clean stop and the log after it holds 40 writes of each
# origin, so every origin's vector jumps and 3,000 ops fail every time on the unfixed store.
KEYS_DAMAGED_SNAPSHOT = 3_000


def test_damaged_snapshot_loses_no_data(make_cluster) -> None:
    """node2's snapshot (all the data) is damaged while it is down; its log holds only the few
    writes made after it, by both writing nodes.  It must recover honestly (lacking the
    snapshot's events, it fetches them), and no node may lose an acknowledged key."""
    c = make_cluster(3, snapshot_records=1_000_000, **FAST).start()
    n0, n1, n2 = c.nodes
    model = AckModel()
    load(n0, mixed_ops(random.Random(1), KEYS_DAMAGED_SNAPSHOT // 2, "a"), model)
    load(n1, mixed_ops(random.Random(2), KEYS_DAMAGED_SNAPSHOT // 2, "b"), model)
    wait_until(lambda: same_state(n0, n2) and same_state(n1, n2), timeout=20,
               what="node2 to hold every write")
    assert n2.stop() == 0  # a clean stop writes a snapshot of everything; the log restarts empty
    n2.start()
    run_ops(n0, mixed_ops(random.Random(3), 40, "late0-"), model)  # after node2's snapshot
    run_ops(n1, mixed_ops(random.Random(4), 40, "late1-"), model)
    wait_until(lambda: same_state(n0, n2) and same_state(n1, n2), timeout=15,
               what="node2 to hold the late writes")
    n2.kill()
    flip_bytes(n2.data_dir / "snapshot.zkv", 64)
    log_from = n2.log_path.stat().st_size
    n2.start()
    assert_no_loss(c, model)
    restart_log = n2.log_path.read_bytes()[log_from:].decode(errors="replace")
    assert "snapshot unusable" in restart_log or list(n2.data_dir.glob("snapshot.zkv.corrupt-*")), (
        f"the flipped bytes went unnoticed: the fault was not injected\n{restart_log}")


# --- 3a. a node whose clock runs an hour ahead ---------------------------------------------
SKEW_MS = 3_600_000


def hlc_physical_ms(hlc: int) -> int:
    return hlc >> 16  # zkv.clock: physical_ms << 16 | logical


def peer_clock_offsets(node: Node) -> dict[str, int]:
    """``clock_offset_ms`` of each ``peerN:id=...`` line of INFO (absent today)."""
    out: dict[str, int] = {}
    for k, v in node.info().items():
        if k.startswith("peer") and v.startswith("id="):
            fields = dict(p.split("=", 1) for p in v.split(",") if "=" in p)
            if "clock_offset_ms" in fields:
                out[fields["id"]] = int(fields["clock_offset_ms"])
    return out


def resp_set(node: Node, key: bytes, value: bytes) -> bytes:
    """One RESP ``SET``; returns the reply line (``+OK`` or ``-ERR ...``)."""
    with LineClient(node.port, host=node.host) as c:
        c.send(resp_command(b"SET", key, value))
        return c.read_line().rstrip(b"\r")


def test_node_an_hour_ahead_refuses_writes_and_stamps_nothing(make_cluster) -> None:
    """node2 runs under ``faketime -f +1h``.  Once it has heard its peers it must refuse client
    writes (plain and RESP) with a clock-skew error while still serving reads; no other node may
    adopt its clock or hold anything it stamped, and INFO must show the offset."""
    prefix = faketime_prefix("+1h")
    c = make_cluster(3, **FAST)
    n0, n1, n2 = c.nodes
    n2.prefix = prefix
    c.start()
    # node0 writes once it has heard both peers: with one of them heard (two clocks an hour
    # apart) it cannot tell which is wrong, and rightly refuses (docs/guarantees.md)
    wait_until(lambda: (lambda i: i.get("connected_peers") == "2" and not i.get("clock_refusing"))(n0.info()),
               timeout=15, what="node0 to hear both peers and accept writes")
    model = AckModel()
    run_ops(n0, [(f"c{i}", f"real{i}".encode()) for i in range(20)], model, pipeline=20)
    wait_until(lambda: n2.info().get("connected_peers") == "2" and same_state(n0, n2), timeout=15,
               what="node2 to hear both peers and hold node0's writes")
    problems: list[str] = []
    with n2.client() as cl:
        replies = cl.pipeline([f"SET c{i} skewed{i}".encode() for i in range(10)]
                              + [b"SET only-skewed x", b"DELETE c10"])
    if not all(r.startswith(b"ERROR clock skew:") for r in replies):
        problems.append(f"node2 (+1h) answered writes with {sorted(set(replies))}")
    r = resp_set(n2, b"c11", b"skewed-resp")
    if not r.startswith(b"-ERR clock skew:"):
        problems.append(f"node2 (+1h) answered a RESP SET with {r!r}")
    for key in ("only-skewed", "c10", "c11"):
        model.last.setdefault(key, None)
    if n2.get("c12") != b"VALUE real12":
        problems.append(f"node2 read c12 as {n2.get('c12')!r}")
    run_ops(n1, [("after", b"real-after")], model)  # a write that every node must still take
    if c.verify(timeout=15).returncode != 0:
        problems.append("zkv verify did not exit 0")
    problems += [f"{line}" for line in describe_loss(model, c.nodes).splitlines() if " 0 of " not in line]
    wall = int(time.time() * 1000)
    for n in (n0, n1):
        ahead = hlc_physical_ms(int(capture_heartbeat(n)["hlc"])) - wall
        if ahead > 10_000:
            problems.append(f"{n.id} adopted node2's clock: its heartbeat is stamped {ahead} ms ahead")
    offset = peer_clock_offsets(n0).get("node2")
    if offset is None or abs(offset - SKEW_MS) > 60_000:
        problems.append(f"node0's INFO shows clock_offset_ms={offset} for node2 (expected ~{SKEW_MS})")
    assert not problems, "\n".join(problems) + "\n" + c.logs()


# --- 3b. a hostile publisher on a down peer's bus address ----------------------------------
def junk_messages() -> list[tuple[bytes, bytes]]:
    """Malformed messages a store must drop (today it does, correctly)."""
    pk = lambda o: msgpack.packb(o, use_bin_type=True)  # noqa: E731
    return [
        (b"hb", b"\xc1garbage"), (b"hb", pk([1, 2, 3])), (b"hb", pk({"id": "node2"})),
        (b"ev", b"\x93junk"), (b"ev", pk(["node2", 0, []])), (b"ev", pk(["node2", 1, [[-1, b"k", b"v"]]])),
        (b"ev", pk(["node2", 1, [[1, "str-key", b"v"]]])), (b"ev", pk([7, 1, []])), (b"ev", b""),
    ]


def killer_messages(kind: str, real_hb: dict) -> list[tuple[bytes, bytes]]:
    """The message of ``kind`` that stopped stores on today's main, forged from a real heartbeat."""
    if kind == "heartbeat_hlc_max":
        return [(b"hb", forged_heartbeat(real_hb, hlc=2**64 - 1))]
    if kind == "heartbeat_vv_strings":
        vv = {**{o: "x" for o in real_hb.get("vv", {})}, "node0": "x", "node1": "x"}
        return [(b"hb", forged_heartbeat(real_hb, vv=vv))]
    if kind == "event_hlc_max":
        batch = msgpack.packb(["node2", 1, [[2**64 - 1, b"victim", b"from-the-future"]]], use_bin_type=True)
        return [(b"ev", batch)]
    raise ValueError(kind)


def last_error(node: Node) -> str:
    """The last line of the node's log that names an exception (why its store exited)."""
    errors = [ln for ln in node.log().splitlines() if "Error" in ln and "ignoring" not in ln]
    return errors[-1].strip() if errors else "(no exception in its log)"


def handled(node: Node) -> bool:
    """The store has counted a dropped or held-back message, or has died (today's main)."""
    if node.proc is not None and node.proc.poll() is not None:
        return True
    info = node.info()
    return int(info.get("bad_messages", 0)) + int(info.get("clock_held_events", 0)) > 0


@pytest.mark.parametrize("kind", ["heartbeat_hlc_max", "heartbeat_vv_strings", "event_hlc_max"])
def test_hostile_publisher_stops_no_store(make_cluster, kind: str) -> None:
    """While node2 is down, a process binds its bus address and publishes junk plus one forged
    message of ``kind`` (a real node2 heartbeat with one field changed, or a batch stamped
    2**64-1).  node0 and node1 must keep their stores, keep serving, not apply the forged
    event, and replicate normally once node2 is back."""
    c = make_cluster(3, **FAST).start()
    n0, n1, n2 = c.nodes
    model = AckModel()
    run_ops(n0, mixed_ops(random.Random(4), 200, "h"), model, pipeline=50)
    wait_until(lambda: same_state(n0, n2), timeout=15, what="node2 to hold node0's writes")
    real_hb = capture_heartbeat(n2)
    stores = {n.id: store_pid(n) for n in (n0, n1)}
    n2.kill()
    pub = HostilePublisher(n2.bus)
    try:
        pub.wait_subscribers(2)
        pub.publish(junk_messages() + killer_messages(kind, real_hb))
        for n in (n0, n1):
            wait_until(lambda: handled(n), timeout=10, what=f"{n.id} to count the forged message")
    finally:
        pub.close()
    dead = [f"{n.id} exited: {last_error(n)}" for n in (n0, n1) if n.proc is None or n.proc.poll() is not None]
    assert not dead, "\n".join(dead) + "\n" + c.logs()
    for n in (n0, n1):
        assert store_pid(n) == stores[n.id], f"{n.id}'s store was replaced"
        with n.client() as cl:
            assert cl.cmd("PING") == b"PONG"
        run_ops(n, [(f"alive-{n.id}", b"yes")], model)
        assert n.get(f"alive-{n.id}") == b"VALUE yes"
    model.record("victim", None)  # the forged future event must not be applied anywhere
    n2.start()
    run_ops(n0, [("after-hostile", b"replicated")], model)
    wait_until(lambda: n2.get("after-hostile") == b"VALUE replicated", timeout=15,
               what="a normal write to reach node2")
    assert_no_loss(c, model)


# --- 4. one client's MSET of three 400 MB values --------------------------------------------
BIG = 400 * 1024 * 1024
BIG_KEYS = [(b"big0", b"a"), (b"big1", b"b"), (b"big2", b"c")]


def send_big_mset(sock: socket.socket, size: int) -> None:
    """``MSET big0 <size x 'a'> big1 <'b'...> big2 <'c'...>`` without building it in memory."""
    block = 16 * 1024 * 1024
    sock.sendall(b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * len(BIG_KEYS)))
    for key, fill in BIG_KEYS:
        sock.sendall(b"$%d\r\n%s\r\n$%d\r\n" % (len(key), key, size))
        chunk = fill * block
        left = size
        while left:
            n = min(left, block)
            sock.sendall(chunk[:n] if n < block else chunk)
            left -= n
        sock.sendall(b"\r\n")


def read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n" not in buf:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("connection closed")
        buf += data
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def get_big(sock: socket.socket, key: bytes, fill: bytes) -> int:
    """GET ``key`` over RESP; drain the bulk, checking every byte is ``fill``; return its length."""
    sock.sendall(resp_command(b"GET", key))
    buf = bytearray()
    head = read_line(sock, buf)
    assert head.startswith(b"$"), f"GET {key!r} -> {head[:200]!r}"
    size = int(head[1:])
    got, fills = len(buf), buf.count(fill)
    while got < size + 2:
        data = sock.recv(min(1 << 22, size + 2 - got))
        if not data:
            raise ConnectionError("connection closed during a big GET")
        got += len(data)
        fills += data.count(fill)
    assert fills == size, f"GET {key!r}: {size - fills} bytes other than {fill!r}"
    return size


@pytest.mark.soak
def test_mset_of_three_400mb_values_is_acknowledged(make_cluster) -> None:
    """One client's RESP ``MSET`` of three 400 MB values (each under the 512 MB bulk limit)
    must get ``+OK``, the store must keep running, and each value must read back whole.

    One node, and the soak marker, because of what it costs on this project's 2-core VM:
    1.2 GB crosses client -> frontend -> store -> log, copied about ten times, and fresh
    memory is slow here.  Unfixed store (9afef0d): ``ValueError: WAL payload must be
    1..1073741824 bytes, got 1258291273`` after ~35 s, the store exits (test: ~65 s).
    With log batches split (0c952c8): ``+OK`` after 55-95 s; peak RSS 6.4 GB store +
    4.8 GB frontend.  Each peer store would add ~5x the value bytes (1.5 GB per 300 MB
    measured), about 17 GB for three nodes, too much for a machine that runs other tests."""
    c = make_cluster(1).start()
    (n0,) = c.nodes
    store = store_pid(n0)
    with socket.create_connection(("127.0.0.1", n0.port), timeout=120) as s:
        send_big_mset(s, BIG)
        try:
            reply = read_line(s, bytearray())
        except ConnectionError:
            reply = b"(connection closed)"
        assert reply == b"+OK", f"MSET -> {reply[:200]!r}; node0: {last_error(n0)}\n{n0.log()}"
    assert n0.proc is not None and n0.proc.poll() is None, f"node0 exited:\n{n0.log()}"
    assert store_pid(n0) == store
    with socket.create_connection(("127.0.0.1", n0.port), timeout=120) as s:
        for key, fill in BIG_KEYS:
            assert get_big(s, key, fill) == BIG
