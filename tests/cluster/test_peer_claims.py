"""An admitted peer's claims are bounded (the trust model in docs/security.md).

Whoever holds node2's key is let onto node0's and node1's buses.  It may say what it likes
about its own node's events; about node0's it is only a relay, and is believed no further than
node0 itself announced.  Each test runs a process that holds node2's key (node2 itself is down)
against real node0 and node1, and checks what a lie can no longer do: make node1 take made-up
events as node0's, make node0 adopt events of its own incarnation from someone else, make node1
adopt a vector that drops node0's later writes, have node0 count an acknowledgement of events it
never issued, or stall node0 with heartbeats naming tens of thousands of made-up origins.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import msgpack
import zmq

from tests.cluster.harness import Cluster, Node, free_port, wait_until
from tests.cluster.respclient import Resp
from zkv.config import load_config
from zkv.events import TOPIC_ACK, TOPIC_HEARTBEAT, Batch, encode_ack, encode_batch
from zkv.replication import catchup as wire

FAST = {"heartbeat_ms": 100, "anti_entropy_ms": 200}


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def vv_of(node: Node) -> dict[str, int]:
    text = node.info()["vv"]
    return {o: int(n) for o, _, n in (p.partition("=") for p in text.split(",") if p)}


class Impostor:
    """node2's bus and a catch-up ROUTER, both proven with node2's key (node2 is down)."""

    def __init__(self, c: Cluster) -> None:
        n2 = c.nodes[2]
        keys = load_config(n2.config_path).keys
        assert keys is not None
        self.ctx = zmq.Context()  # its own context: no ZAP handler, so it admits the stores
        self.pub = self._server(zmq.PUB, keys)
        self.pub.bind(n2.bus)
        self.router = self._server(zmq.ROUTER, keys)
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.router.bind(self.endpoint)
        self.origin = "node2@impostor"
        self.asked: list[list[bytes]] = []

    def _server(self, kind: int, keys: Any) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.linger = 0
        s.curve_server = True
        s.curve_secretkey, s.curve_publickey = keys.secret, keys.public
        return s

    def heartbeat(self, vv: dict[str, int], seen: dict[str, int] | None = None) -> None:
        now = int(time.time() * 1000)
        self.pub.send_multipart([TOPIC_HEARTBEAT, pack({
            "id": "node2", "seq": vv.get(self.origin, 0), "hlc": now << 16, "vv": vv, "stable": 0,
            "digest": b"", "keys": 0, "catchup": self.endpoint, "peers": ["node0", "node1"],
            "origin": self.origin, "wall": now, "seen": seen or {}})])

    def serve(self, seconds: float, vv: dict[str, int], answer) -> None:  # noqa: ANN001
        """Heartbeat ``vv`` and answer requests with ``answer(frames) -> reply frames | None``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.heartbeat(vv)
            end = time.monotonic() + 0.1
            while self.router.poll(max(1, int((end - time.monotonic()) * 1000))):
                ident, *frames = self.router.recv_multipart()
                self.asked.append(frames)
                reply = answer(frames)
                if reply is not None:
                    self.router.send_multipart([ident, *reply])

    def close(self) -> None:
        self.pub.close(0)
        self.router.close(0)
        self.ctx.term()


def made_up(origin: str, first: int, n: int) -> bytes:
    base = int(time.time() * 1000) << 16
    return encode_batch(Batch(origin, first, [(base + i, b"forged%d" % i, b"x") for i in range(n)]))


def two_nodes_with_writes(make_cluster) -> tuple[Cluster, Node, Node, str]:  # noqa: ANN001
    c = make_cluster(3, curve=True, **FAST)
    n0, n1 = c.nodes[0], c.nodes[1]
    n0.seed_clock().start()
    n1.seed_clock().start()
    with Resp(n0.port) as cl:
        for cmd in (("SET", "k0", "a"), ("SET", "k1", "b"), ("DEL", "k0")):
            cl.cmd(*cmd)
    origin = n0.info()["origin"]
    wait_until(lambda: vv_of(n1).get(origin) == 3, timeout=10, what="node1 to hold node0's writes")
    return c, n0, n1, origin


def test_relayed_events_beyond_what_their_node_announced_are_not_believed(make_cluster) -> None:
    """node2's key holder announces node0's incarnation 1,000 events further than node0 did,
    and answers every pull of it with those 1,000 made-up events."""
    c, n0, n1, origin = two_nodes_with_writes(make_cluster)
    imp = Impostor(c)

    def answer(frames: list[bytes]) -> list[bytes] | None:
        if frames[0] == wire.PULL and frames[1] == origin.encode():
            have = int(frames[2])
            return wire.events(frames[1], False, [made_up(origin, have + 1, 1003 - have)])
        return None

    try:
        imp.serve(3.0, {origin: 1003, imp.origin: 0}, answer)
    finally:
        imp.close()
    assert vv_of(n1).get(origin) == 3, "node1 took made-up events as node0's"
    assert n1.get("forged5") == b"NOT FOUND"
    assert n0.info()["seq"] == "3", "node0 adopted events of its own incarnation from a peer"
    assert n0.get("forged5") == b"NOT FOUND"
    with Resp(n0.port) as cl:  # node0's next writes still reach node1
        assert cl.cmd("SET", "k2", "c") == b"+OK"
    wait_until(lambda: n1.get("k2") == b"VALUE c", timeout=10, what="node1 to take node0's next write")


def test_a_transfer_vector_beyond_what_a_node_announced_drops_none_of_its_writes(make_cluster) -> None:
    """The key holder announces an origin of its own, answers node1's pull with 'tooold' and the
    transfer with an end that claims node0's incarnation at 2**62.  node1 used to adopt that
    vector and drop every later write of node0 as a duplicate, while acknowledging them."""
    c, n0, n1, origin = two_nodes_with_writes(make_cluster)
    imp = Impostor(c)

    def answer(frames: list[bytes]) -> list[bytes] | None:
        if frames[0] == wire.PULL:
            return [wire.TOOOLD, frames[1]]
        if frames[0] == wire.SNAP:
            meta = {"vv": {origin: 2**62, imp.origin: 5}, "gc_horizon": 0, "hlc": 0, "id": "node2"}
            return [wire.SNAPEND, frames[1], pack(meta)]
        return None

    try:
        imp.serve(3.0, {imp.origin: 5}, answer)
        assert any(f[0] == wire.SNAP for f in imp.asked), "no store asked for a transfer (set-up)"
    finally:
        imp.close()
    assert vv_of(n1).get(origin) == 3, f"node1 adopted {vv_of(n1).get(origin)} of node0's events"
    with Resp(n0.port) as cl:
        for i in range(5):
            assert cl.cmd("SET", f"after{i}", "v") == b"+OK"
        assert cl.cmd("WAIT", "1", "2000") == b":1"
    for i in range(5):
        assert n1.get(f"after{i}") == b"VALUE v", "node1 dropped node0's later writes"


def test_an_acknowledgement_of_events_never_issued_is_not_counted(make_cluster) -> None:
    """The key holder acknowledges node0's events far beyond what node0 issued, in its
    heartbeats' vector and in acks: WAIT must not count it (node1 is paused, so only a lie
    could make WAIT 1 succeed)."""
    c, n0, n1, origin = two_nodes_with_writes(make_cluster)
    imp = Impostor(c)
    try:
        n1.signal(signal.SIGSTOP)  # the whole node: it acknowledges nothing
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            imp.heartbeat({origin: 2**62, imp.origin: 0})
            imp.pub.send_multipart([TOPIC_ACK, encode_ack("node2", imp.origin, origin, 2**62)])
            time.sleep(0.05)
        with Resp(n0.port) as cl:
            assert cl.cmd("SET", "k9", "v") == b"+OK"
            for _ in range(3):
                imp.heartbeat({origin: 2**62, imp.origin: 0})
                imp.pub.send_multipart([TOPIC_ACK, encode_ack("node2", imp.origin, origin, 2**62)])
            got = cl.cmd("WAIT", "1", "500")
        assert got == b":0", f"WAIT 1 returned {got!r}: a claim of 2**62 events counted as an ack"
    finally:
        n1.signal(signal.SIGCONT)
        imp.close()


def test_heartbeats_naming_65536_made_up_origins_do_not_stall_a_store(make_cluster) -> None:
    """Heartbeats whose vectors name 65,536 made-up origins, sent as fast as the key holder
    can for 4 s: node0's writes keep being answered quickly, during the flood and after."""
    c, n0, n1, origin = two_nodes_with_writes(make_cluster)
    imp = Impostor(c)
    now = int(time.time() * 1000)
    vv = {f"node2@{i:016x}": i + 1 for i in range(65_536)}
    payload = pack({"id": "node2", "seq": 0, "hlc": now << 16, "vv": vv, "stable": 0,
                    "digest": b"", "keys": 0, "catchup": imp.endpoint, "peers": ["node0", "node1"],
                    "origin": imp.origin, "wall": now})
    sent = 0
    stop = threading.Event()

    def flood() -> None:  # its own thread: the flood does not wait for the SETs
        nonlocal sent
        end = time.monotonic() + 4.0
        while time.monotonic() < end and not stop.is_set() and sent < 2000:
            imp.pub.send_multipart([TOPIC_HEARTBEAT, payload])
            sent += 1
            time.sleep(0.005)

    worst = 0.0
    flooder = threading.Thread(target=flood)
    try:
        with Resp(n0.port) as cl:
            flooder.start()
            i = 0
            end = time.monotonic() + 5.0  # the flood, and 1 s after it
            while time.monotonic() < end and i < 100_000:
                t = time.monotonic()
                assert cl.cmd("SET", f"f{i % 20}", str(i)) == b"+OK"
                worst = max(worst, time.monotonic() - t)
                i += 1
    finally:
        stop.set()
        flooder.join()
        imp.close()
    print(f"flood: {sent} heartbeats, worst SET {worst:.3f} s")
    assert sent > 200, f"only {sent} heartbeats went out (set-up)"
    assert worst < 0.5, f"the worst SET took {worst:.2f} s under a heartbeat flood"
    with Resp(n0.port) as cl:
        assert cl.cmd("SET", "after", "x") == b"+OK"
    wait_until(lambda: n1.get("after") == b"VALUE x", timeout=10, what="node1 to keep replicating")
