"""On a keyed cluster, one admitted peer cannot speak for another (found by a break-it review).

CURVE proves which peer's PUB a store's SUB is connected to; the store used to have one SUB for
all peers and to take the sender's id from inside each message, so whoever held node1's key was
believed about every peer: node0's ``WAIT 2`` counted node2, which was down.  Now each peer has
its own SUB, and a message on node1's bus that speaks for anyone else is dropped.
"""

from __future__ import annotations

import time

import msgpack
import zmq

from tests.cluster.respclient import Resp
from zkv.config import load_config
from zkv.events import TOPIC_ACK, TOPIC_EVENTS, TOPIC_HEARTBEAT, Batch, encode_ack, encode_batch

FAST = {"heartbeat_ms": 100, "anti_entropy_ms": 200}


def _heartbeat(node: str, origin: str, vv: dict[str, int]) -> bytes:
    now = int(time.time() * 1000)
    return msgpack.packb({"id": node, "seq": 0, "hlc": now << 16, "vv": vv, "stable": 0,
                          "digest": b"", "keys": 0, "catchup": "tcp://127.0.0.1:9",
                          "peers": ["node0"], "origin": origin, "wall": now}, use_bin_type=True)


def test_an_admitted_peer_cannot_speak_for_another_peer(make_cluster) -> None:
    c = make_cluster(3, curve=True, **FAST)
    n0, n1, n2 = c.nodes
    n0.seed_clock().start()  # node1 and node2 are down; node1's key is in the wrong hands
    origin = n0.info()["origin"]
    keys1 = load_config(n1.config_path).keys
    assert keys1 is not None
    ctx = zmq.Context()  # its own context: no ZAP handler, so it admits node0's SUB
    rogue = ctx.socket(zmq.PUB)
    rogue.linger = 0
    rogue.curve_server = True
    rogue.curve_secretkey, rogue.curve_publickey = keys1.secret, keys1.public
    rogue.bind(n1.bus)  # node0's SUB dials node1's bus and proves node1's key: it is node1
    try:
        with Resp(n0.port) as cl:
            assert cl.cmd("SET", "k", "v") == b"+OK"
            deadline = time.monotonic() + 10
            heard = b""
            while time.monotonic() < deadline:
                for who in ("node1", "node2"):
                    rogue.send_multipart([TOPIC_HEARTBEAT, _heartbeat(who, f"{who}@x", {origin: 1})])
                    rogue.send_multipart([TOPIC_ACK, encode_ack(who, f"{who}@x", origin, 1)])
                    forged = Batch(f"{who}@x", 1, [(int(time.time() * 1000) << 16, b"k", b"forged")])
                    if who == "node2":
                        rogue.send_multipart([TOPIC_EVENTS, encode_batch(forged)])
                heard = cl.cmd("WAIT", "1", "200")
                if heard != b":0":
                    break
            assert heard == b":1", "node0 never heard the node1 key holder (test set-up)"
            got = cl.cmd("WAIT", "2", "300")
            assert got == b":1", (f"WAIT 2 returned {got!r} with node2 down: node1's key holder "
                                  "acknowledged in node2's name")
            assert cl.cmd("GET", "k") == b"$1", "node1's key holder wrote in node2's name"
    finally:
        rogue.close(0)
        ctx.term()
