"""Client-side sockets on the replication bus, for the tools (``zkv tail``, ``verify``, ``status``).

The store's own sockets are set up in ``zkv.store.server``; these are the outside observers':
a SUB socket on some nodes' buses for one topic, and a one-shot request to a catch-up ROUTER.
"""

from __future__ import annotations

from collections.abc import Iterable

import zmq


def subscribe(endpoints: Iterable[str], topic: bytes) -> zmq.Socket:
    """A SUB socket connected to every endpoint, receiving ``topic`` messages."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    for ep in endpoints:
        sub.connect(ep)
    return sub


def ask(endpoint: str, frames: list[bytes], timeout: float = 3.0) -> list[bytes] | None:
    """Send one request to a store's catch-up socket and wait for its reply (None on timeout)."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.connect(endpoint)
    try:
        s.send_multipart(frames)
        if not s.poll(int(timeout * 1000)):
            return None
        return s.recv_multipart()
    finally:
        s.close(0)
