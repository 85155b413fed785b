"""StoreLink against a real ZeroMQ ROUTER standing in for the store (same process, real sockets).

Requests submitted in one event-loop turn leave as one message; each reply is matched to its
batch first-in first-out; a reply that does not decode, or has the wrong number of results,
fails only its own batch (every callback gets None) and the batches after it still match.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgpack
import zmq

from zkv.frontend.storelink import StoreLink


def test_batches_per_turn_and_a_bad_reply_fails_only_its_batch() -> None:
    endpoint = f"ipc://@zkv-test-storelink-{os.getpid()}"
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.bind(endpoint)
    got: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        link = StoreLink(loop, endpoint)
        try:
            done = asyncio.Event()

            def record(name: str):
                def cb(results: list[Any] | None) -> None:
                    got[name] = results
                    if len(got) == 5:
                        done.set()
                return cb

            # turn 1: two submissions, one message
            link.submit([["g", b"a"]], record("a"))
            link.submit([["g", b"b"], ["g", b"c"]], record("bc"))
            await asyncio.sleep(0)
            # turns 2, 3 and 4: one message each
            link.submit([["g", b"d"]], record("d"))
            await asyncio.sleep(0)
            link.submit([["g", b"e"]], record("e"))
            await asyncio.sleep(0)
            link.submit([["g", b"f"]], record("f"))

            poller = zmq.Poller()
            poller.register(router, zmq.POLLIN)
            msgs = []
            deadline = loop.time() + 10
            while len(msgs) < 4 and loop.time() < deadline:
                if dict(poller.poll(0)):
                    msgs.append(router.recv_multipart())
                else:
                    await asyncio.sleep(0.005)
            assert [msgpack.unpackb(m[-1]) for m in msgs] == [
                [["g", b"a"], ["g", b"b"], ["g", b"c"]], [["g", b"d"]], [["g", b"e"]], [["g", b"f"]]]
            ident = msgs[0][0]
            router.send_multipart([ident, msgpack.packb([b"1", None, b"3"])])
            router.send_multipart([ident, b"\xc1 not msgpack"])  # undecodable
            router.send_multipart([ident, msgpack.packb([b"x", b"y"])])  # wrong count
            router.send_multipart([ident, msgpack.packb([b"6"])])
            await asyncio.wait_for(done.wait(), 10)
        finally:
            link.close()

    try:
        asyncio.run(main())
    finally:
        router.close(0)
    assert got == {"a": [b"1"], "bc": [None, b"3"], "d": None, "e": None, "f": [b"6"]}
