"""StoreLink against a real ZeroMQ ROUTER standing in for the store (same process, real sockets).

Requests submitted in one event-loop turn leave as one message; each reply is matched to its
batch first-in first-out; a reply that does not decode, or has the wrong number of results,
fails only its own batch (every callback gets None) and the batches after it still match.  The
read cache learns from replies and invalidations in the order they arrive.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import zmq

from zkv.commands import FRONTEND_ID, INVALIDATE
from zkv.frontend.readcache import MISS, ReadCache
from zkv.frontend.storelink import StoreLink


@contextmanager
def fake_store(tag: str) -> Iterator[tuple[str, zmq.Socket]]:
    endpoint = f"ipc://@zkv-test-storelink-{tag}-{os.getpid()}"
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    router.bind(endpoint)
    try:
        yield endpoint, router
    finally:
        router.close(0)


async def next_batch(router: zmq.Socket, timeout: float = 10.0) -> list[bytes]:
    """The next message the link sent, [identity, payload], waited for without blocking the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            assert loop.time() < deadline, "no batch reached the store"
            await asyncio.sleep(0.005)


def run_with_link(endpoint: str, body: Callable[[StoreLink], Any], cache: ReadCache | None = None) -> None:
    async def main() -> None:
        link = StoreLink(asyncio.get_running_loop(), endpoint, cache)
        try:
            await body(link)
        finally:
            link.close()
    asyncio.run(main())


def test_batches_per_turn_and_a_bad_reply_fails_only_its_batch() -> None:
    got: dict[str, Any] = {}

    async def body(link: StoreLink) -> None:
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
        msgs = [await next_batch(router) for _ in range(4)]
        assert [msgpack.unpackb(m[-1]) for m in msgs] == [
            [["g", b"a"], ["g", b"b"], ["g", b"c"]], [["g", b"d"]], [["g", b"e"]], [["g", b"f"]]]
        ident = msgs[0][0]
        router.send_multipart([ident, msgpack.packb([b"1", None, b"3"])])
        router.send_multipart([ident, b"\xc1 not msgpack"])  # undecodable
        router.send_multipart([ident, msgpack.packb([b"x", b"y"])])  # wrong count
        router.send_multipart([ident, msgpack.packb([b"6"])])
        await asyncio.wait_for(done.wait(), 10)

    with fake_store("batches") as (endpoint, router):
        run_with_link(endpoint, body)
    assert got == {"a": [b"1"], "bc": [None, b"3"], "d": None, "e": None, "f": [b"6"]}


def test_the_read_cache_learns_from_replies_and_invalidations_in_arrival_order() -> None:
    """Whatever became of the connection that asked (here: a callback that ignores the answer),
    an acknowledged write reaches the cache; invalidations act exactly where they arrive."""
    cache = ReadCache(1 << 20)
    cache.put(b"k", b"v1")  # cached, so the SET below updates it
    seen: list[Any] = []

    async def body(link: StoreLink) -> None:
        link.submit([["s", b"k", b"v2"], ["g", b"other"]], lambda results: None)  # client gone
        ident, _payload = await next_batch(router)
        assert ident == FRONTEND_ID
        # reply, then an invalidation of "other", then (after the next reply) one of everything
        router.send_multipart([ident, msgpack.packb([None, b"o"])])
        router.send_multipart([ident, INVALIDATE, msgpack.packb([b"other"])])
        link.submit([["g", b"x"]], lambda results: seen.append((results, cache.lookup(b"k"),
                                                                cache.lookup(b"other"))))
        await next_batch(router)
        router.send_multipart([ident, msgpack.packb([b"xv"])])
        router.send_multipart([ident, INVALIDATE, msgpack.packb(None)])
        deadline = asyncio.get_running_loop().time() + 10
        while len(cache) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)

    with fake_store("cache") as (endpoint, router):
        run_with_link(endpoint, body, cache)
    # when the second reply was handled: the write was cached, "other" had been invalidated
    assert seen == [([b"xv"], b"v2", MISS)]
    assert len(cache) == 0  # then "forget everything"
