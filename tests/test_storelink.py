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


def test_the_read_cache_learns_from_replies_and_invalidations_in_arrival_order() -> None:
    """Whatever became of the connection that asked (here: a callback that ignores the answer),
    an acknowledged write reaches the cache; invalidations act exactly where they arrive."""
    from zkv.commands import FRONTEND_ID, INVALIDATE
    from zkv.frontend.readcache import MISS, ReadCache

    endpoint = f"ipc://@zkv-test-storelink-cache-{os.getpid()}"
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.bind(endpoint)
    cache = ReadCache(1 << 20)
    cache.put(b"k", b"v1")  # cached, so the SET below updates it
    seen: list[Any] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        link = StoreLink(loop, endpoint, cache)
        try:
            link.submit([["s", b"k", b"v2"], ["g", b"other"]], lambda results: None)  # client gone
            poller = zmq.Poller()
            poller.register(router, zmq.POLLIN)
            deadline = loop.time() + 10
            while not dict(poller.poll(0)):
                assert loop.time() < deadline, "no batch reached the router"
                await asyncio.sleep(0.005)
            ident, _payload = router.recv_multipart()
            assert ident == FRONTEND_ID
            # reply, then an invalidation of "other", then one of everything
            router.send_multipart([ident, msgpack.packb([None, b"o"])])
            router.send_multipart([ident, INVALIDATE, msgpack.packb([b"other"])])
            link.submit([["g", b"x"]], lambda results: seen.append((results, cache.lookup(b"k"),
                                                                    cache.lookup(b"other"))))
            while not dict(poller.poll(0)):
                assert loop.time() < deadline, "no second batch"
                await asyncio.sleep(0.005)
            router.recv_multipart()
            router.send_multipart([ident, msgpack.packb([b"xv"])])
            router.send_multipart([ident, INVALIDATE, msgpack.packb(None)])
            while len(cache) and loop.time() < deadline:
                await asyncio.sleep(0.005)
        finally:
            link.close()

    try:
        asyncio.run(main())
    finally:
        router.close(0)
    # when the second reply was handled: the write was cached, "other" had been invalidated
    assert seen == [([b"xv"], b"v2", MISS)]
    assert len(cache) == 0  # then "forget everything"
