"""Issue 10: the replication bus and catch-up channel on a real network.

With keys (``secret_key``, peers' ``public_key``) every bus and catch-up connection is CurveZMQ:
the cluster replicates, transfers whole states and answers the tools as before, while a
stranger can neither read the bus, nor ask the catch-up socket for data, nor pose as a peer.
Without keys the catch-up channel still bounds what one requester costs: snapshots only for
configured peers, a request rate, a request size.
"""

from __future__ import annotations

import subprocess
import sys
import time

import msgpack
import pytest
import zmq

from tests.cluster.faults import capture_heartbeat
from tests.cluster.harness import REPO, Cluster, Node, wait_until
from zkv.bus import Access, ask, config_access
from zkv.config import load_config
from zkv.curve import KeyPair
from zkv.events import TOPIC_EVENTS, TOPIC_HEARTBEAT, Batch, encode_batch
from zkv.replication import catchup as wire
from zkv.store.keyspace import bucket_of
from zkv.verify import collect

FAST = {"heartbeat_ms": 100, "anti_entropy_ms": 200}


def cmd(node: Node, line: str) -> bytes:
    with node.client() as c:
        return c.cmd(line)


def catchup_endpoint(c: Cluster, node: Node) -> str:
    cfg = load_config(node.config_path)
    v = collect([(cfg.bus, config_access(cfg))], timeout=10)
    assert node.id in v.heartbeats, f"no heartbeat from {node.id}"
    return v.heartbeats[node.id].catchup


def random_keys() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


def test_cluster_with_keys_replicates_transfers_and_serves_the_tools(make_cluster) -> None:
    """Deletes and overwrites on a small key space from every node, a node that missed more
    than the peers' backlog (so it needs a full transfer, served only to a proven peer), and
    zkv verify / tail / status run with the configs."""
    c = make_cluster(3, curve=True, backlog=10, **FAST)
    n0, n1, n2 = c.nodes
    c.start()
    n2.stop()
    for i in range(300):  # far more than backlog=10: node2 must get a full transfer
        node = (n0, n1)[i % 2]
        key = f"k{i % 7}"
        assert cmd(node, f"DELETE {key}" if i % 5 == 4 else f"SET {key} v{i}") == b"OK"
    n2.start()
    for i in range(7):
        want = cmd(n0, f"GET k{i}")
        wait_until(lambda: cmd(n2, f"GET k{i}") == want, what=f"k{i} on node2")
    assert int(n2.info()["full_syncs"]) >= 1, "node2 caught up without a full transfer?"
    assert c.verify(timeout=20).returncode == 0
    # a config's own key pair; and bare endpoints with --cert (node2's pair reaching node0)
    keys = c.root / "keys"
    tails = [[str(n1.config_path)],
             [n0.bus, "--cert", str(keys / "node2"), "--server-key", str(keys / "node0.public")]]
    procs = [subprocess.Popen([sys.executable, "-m", "zkv", "tail", *t, "-n", "1"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for t in tails]
    try:
        deadline = time.monotonic() + 20
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            cmd(n0, "SET tailed yes")  # a bus carries its own node's events only
            cmd(n1, "SET tailed yes")
            time.sleep(0.1)
        for p in procs:
            out, err = p.communicate(timeout=5)
            assert "SET tailed yes" in out, (out, err)
    finally:
        for p in procs:
            p.kill()
    st = subprocess.run([sys.executable, "-m", "zkv", "status", str(n0.config_path), "--json"],
                        cwd=REPO, capture_output=True, text=True, timeout=30)
    assert st.returncode == 0 and '"id": "node0"' in st.stdout, st.stdout + st.stderr


@pytest.mark.parametrize("curve", [True, False], ids=["keys", "open"])
def test_a_stranger_cannot_read_the_bus_or_pose_as_a_peer(make_cluster, curve: bool) -> None:
    """A process on the network subscribes to node0's bus and asks its catch-up socket for
    every bucket; another binds absent node1's bus address and publishes a forged write.
    With keys, none of it works.  The open bus is the control: there all three succeed, which
    is why the README says an open bus must stay on loopback."""
    c = make_cluster(2, curve=curve, **FAST)
    n0, n1 = c.nodes
    n0.seed_clock().start()
    assert cmd(n0, "SET secret s3cr3t") == b"OK"
    endpoint = catchup_endpoint(c, n0)
    ctx = zmq.Context.instance()
    stranger = random_keys()
    server_key = c.public_key(n0) if curve else None

    def as_stranger(sock: zmq.Socket, ep: str) -> None:
        if curve:  # even knowing node0's public key, an unlisted client key gets nowhere
            sock.curve_publickey, sock.curve_secretkey = stranger.public, stranger.secret
            sock.curve_serverkey = server_key
        sock.connect(ep)

    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    as_stranger(sub, n0.bus)
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    as_stranger(dealer, endpoint)
    fake = ctx.socket(zmq.PUB)  # node1's address, node1 being down
    fake.linger = 0
    if curve:
        fake.curve_server, fake.curve_secretkey = True, random_keys().secret
    fake.bind(n1.bus)
    try:
        dealer.send_multipart([wire.ENTRIES, msgpack.packb([bucket_of(b"secret")])])
        heard = dealt = False
        forged = Batch("node1@forged", 1, [((int(time.time() * 1000)) << 16, b"secret", b"forged")])
        hb = {"id": "node1", "seq": 1, "hlc": int(time.time() * 1000) << 16,
              "vv": {"node1@forged": 1}, "stable": 0, "digest": b"", "keys": 0,
              "catchup": "tcp://127.0.0.1:9", "peers": ["node0"], "origin": "node1@forged",
              "wall": int(time.time() * 1000)}
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            fake.send_multipart([TOPIC_EVENTS, encode_batch(forged)])
            fake.send_multipart([TOPIC_HEARTBEAT, msgpack.packb(hb, use_bin_type=True)])
            if sub.poll(50):
                heard = bool(sub.recv_multipart())
            if dealer.poll(0):
                dealt = b"s3cr3t" in b"".join(dealer.recv_multipart())
    finally:
        for s in (sub, dealer, fake):
            s.close(0)
    got = cmd(n0, "GET secret")
    if curve:
        assert not heard, "a stranger read node0's bus"
        assert not dealt, "a stranger got node0's data from its catch-up socket"
        assert got == b"VALUE s3cr3t", f"a forged peer overwrote a key: {got!r}"
        assert int(n0.info()["bad_messages"]) >= 2, "refused connections are not counted"
        assert "was refused (not a configured peer)" in n0.log()
    else:
        assert heard and dealt and got == b"VALUE forged", (heard, dealt, got)


def test_snapshot_transfer_only_for_configured_peers(make_cluster) -> None:
    """A snapshot transfer forks the store and streams the whole dataset: a request that names
    no requester, a stranger, or (with keys) the node's own key used by a tool, gets SNAPFAIL
    at once and forks nothing."""
    c = make_cluster(2, curve=True, **FAST)
    n0, n1 = c.nodes
    n0.start()
    cmd(n0, "SET a 1")
    endpoint = catchup_endpoint(c, n0)
    own = config_access(load_config(n0.config_path))  # User-Id node0: not a peer of itself
    taken = n0.info()["snapshot_taken"]
    for frames in ([wire.SNAP, b"t1"], [wire.SNAP, b"t2", b"stranger"], [wire.SNAP, b"t3", b"node1"]):
        reply = ask(endpoint, frames, timeout=5, access=own)
        assert reply is not None and reply[:2] == [wire.SNAPFAIL, frames[1]], (frames, reply)
    assert n0.info()["snapshot_taken"] == taken, "a refused transfer forked a snapshot"
    # node1's key is admitted and names node1: it gets the stream
    peer = Access(KeyPair(c.public_key(n1), _secret(c, n1)), c.public_key(n0))
    reply = ask(endpoint, [wire.SNAP, b"t4", b"whatever"], timeout=10, access=peer)
    assert reply is not None and reply[0] in (wire.SNAPCHUNK, wire.SNAPEND), reply


def _secret(c: Cluster, node: Node) -> bytes:
    return load_config(node.config_path).keys.secret  # type: ignore[union-attr]


def test_open_bus_bounds_requests_per_requester(make_cluster) -> None:
    """One connection floods the catch-up socket: it is answered at a bounded rate, the node
    keeps serving clients, and a request over the size limit loses the connection."""
    c = make_cluster(2, **FAST)
    n0 = c.nodes[0]
    n0.seed_clock().start()
    endpoint = capture_heartbeat(n0)["catchup"]
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.sndhwm = 0
    s.connect(endpoint)
    sent = 20000
    t0 = time.monotonic()
    try:
        for _ in range(sent):
            s.send_multipart([wire.PULL, b"node0@x", b"0"])
        replies = 0
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0 and time.monotonic() - t0 < 20:
            if s.poll(100):
                s.recv_multipart()
                replies += 1
                quiet_since = time.monotonic()
        elapsed = time.monotonic() - t0
        assert cmd(n0, "PING") == b"PONG"
        from zkv.replication.limits import REQUEST_BURST, REQUEST_RATE

        assert replies <= REQUEST_BURST + REQUEST_RATE * elapsed + 50, (replies, elapsed)
        assert replies < sent, "every request of a flood was answered"
        # over MAX_REQUEST_BYTES: ZeroMQ drops the connection; nothing is answered
        s.send_multipart([wire.ENTRIES, b"\x90" + b"x" * (2 * 1024 * 1024)])
        assert not s.poll(1500)
    finally:
        s.close(0)
    assert cmd(n0, "SET still ok") == b"OK"
