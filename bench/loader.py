"""Bulk loading over one raw RESP connection: pipelined SETs in batches, every reply checked."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.resp import RespConnection, RespError


@dataclass
class LoadResult:
    keys: int
    seconds: float
    errors: int
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.keys / self.seconds if self.seconds > 0 else 0.0


def value_for(i: int, size: int) -> bytes:
    """A deterministic value of exactly ``size`` bytes for key number ``i``."""
    return (b"%0*d" % (size, i))[-size:]


def load_keys(host: str, port: int, count: int, key_format: str = "key:%d", value_size: int = 16,
              batch: int = 1000, deadline_s: float = 600.0) -> LoadResult:
    """SET ``key_format % i`` for i in [0, count) with ``value_size``-byte values.

    Sends ``batch`` commands per write and reads exactly that many replies before the next
    batch, so the client never runs ahead of the server by more than one batch.
    """
    kfmt = key_format.encode()
    errors = 0
    first_error = ""
    start = time.monotonic()
    with RespConnection(host, port, timeout=60.0) as conn:
        for lo in range(0, count, batch):
            if time.monotonic() - start > deadline_s:
                raise TimeoutError(f"loading {count} keys into {host}:{port} took over {deadline_s:.0f}s")
            hi = min(count, lo + batch)
            parts = []
            for i in range(lo, hi):
                k = kfmt % i
                v = value_for(i, value_size)
                parts.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
            for reply in conn.pipeline(parts):
                if reply != b"OK":
                    errors += 1
                    if not first_error:
                        first_error = reply.message if isinstance(reply, RespError) else repr(reply)
    return LoadResult(count, time.monotonic() - start, errors, first_error)


def check_keys(host: str, port: int, count: int, key_format: str = "key:%d", value_size: int = 16,
               samples: int = 50) -> tuple[int, int]:
    """GET up to ``samples`` spread-out keys; returns (how many have the expected value, how many read)."""
    if count <= 0:
        return 0, 0
    idx = sorted({(count - 1) * j // max(1, samples - 1) for j in range(samples)})
    good = 0
    with RespConnection(host, port) as conn:
        for reply, i in zip(conn.pipeline(
                [b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k)
                 for k in (key_format.encode() % i for i in idx)]), idx):
            good += reply == value_for(i, value_size)
    return good, len(idx)


def read_keys(host: str, port: int, count: int, key_format: str = "key:%d", batch: int = 1000,
              deadline_s: float = 600.0) -> float:
    """GET every ``key_format % i`` once, pipelined in batches (warms read caches); returns seconds."""
    kfmt = key_format.encode()
    start = time.monotonic()
    with RespConnection(host, port, timeout=60.0) as conn:
        for lo in range(0, count, batch):
            if time.monotonic() - start > deadline_s:
                raise TimeoutError(f"reading {count} keys from {host}:{port} took over {deadline_s:.0f}s")
            conn.pipeline([b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k)
                           for k in (kfmt % i for i in range(lo, min(count, lo + batch)))])
    return time.monotonic() - start
