"""Client-side sockets on the replication bus, for the tools (``zkv tail``, ``verify``, ``status``).

The store's own sockets are set up in ``zkv.store.server``; these are the outside observers':
a SUB socket on some nodes' buses for one topic, and a one-shot request to a catch-up ROUTER.
On a cluster with keys, each connection is a CURVE client (``Access``): the tools use the key
pair of the config they were given (each node admits its own key) and the node's public key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import zmq

from zkv.config import Config
from zkv.curve import KeyPair, dial


@dataclass(frozen=True, slots=True)
class Access:
    """How to reach one node: open (no keys), or as a CURVE client of ``server_key``."""

    keys: KeyPair | None = None
    server_key: bytes | None = None


OPEN = Access()


def config_access(cfg: Config, node_id: str | None = None) -> Access:
    """Reach ``node_id`` (default: the config's own node) with the config's key pair."""
    if cfg.keys is None:
        return OPEN
    return Access(cfg.keys, cfg.server_keys().get(node_id or cfg.id))


def subscribe(targets: Iterable[tuple[str, Access]], topic: bytes | list[bytes]) -> zmq.Socket:
    """A SUB socket connected to every ``(endpoint, access)``, receiving ``topic`` messages
    (topics are prefixes: one that is a prefix of another gets both; callers check)."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    for t in [topic] if isinstance(topic, bytes) else topic:
        sub.setsockopt(zmq.SUBSCRIBE, t)
    for ep, access in targets:
        dial(sub, ep, access.keys, access.server_key)
    return sub


def ask(endpoint: str, frames: list[bytes], timeout: float = 3.0,
        access: Access = OPEN) -> list[bytes] | None:
    """Send one request to a store's catch-up socket and wait for its reply (None on timeout)."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    dial(s, endpoint, access.keys, access.server_key)
    try:
        s.send_multipart(frames)
        if not s.poll(int(timeout * 1000)):
            return None
        return s.recv_multipart()
    finally:
        s.close(0)
