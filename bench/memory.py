"""Memory per key: load N keys (``key:<i>``, 16-byte values) into a fresh cluster and compare.

* Redis: ``INFO memory`` ``used_memory`` of the master, after minus before (empty), per key.
* zkv: VmRSS of node0's *store* process (the descendant of ``zkv node`` whose cmdline contains
  "store"), after minus before (empty), per key.  RSS includes allocator slack and the
  interpreter's free lists, so it is the harsher of the two measures; both are reported with
  the RSS-based figure for Redis (``used_memory_rss``) alongside for context.

The load is pipelined SETs over one raw RESP connection (batches of 1,000), then the harness
waits until node1 serves the last key (so replication is done) and until the RSS stops growing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bench import loader
from bench.clusters import Cluster, memory_probe, tree_rss, wait_until
from bench.resp import RespConnection, info_fields

KEY_FORMAT = "key:%d"
VALUE_SIZE = 16


@dataclass
class MemoryResult:
    target: str
    keys: int
    method: str
    before_bytes: int
    after_bytes: int
    bytes_per_key: float | None
    load_seconds: float
    load_errors: int
    replicated_seconds: float | None
    keys_checked: int
    keys_checked_ok: int
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def settle(read: Any, deadline_s: float = 15.0, interval: float = 0.5, tolerance: float = 0.002) -> int:
    """Read a memory figure until two consecutive readings agree within ``tolerance`` (bounded)."""
    end = time.monotonic() + deadline_s
    last = read()
    while time.monotonic() < end:
        time.sleep(interval)
        cur = read()
        if abs(cur - last) <= tolerance * max(1, last):
            return cur
        last = cur
    return last


def redis_rss(cluster: Cluster) -> int | None:
    if cluster.memory_mode != "used_memory":
        return None
    with RespConnection(cluster.writer.host, cluster.writer.port) as c:
        return int(info_fields(c.call("INFO", "memory") or b"").get("used_memory_rss", 0))


def measure(cluster: Cluster, keys: int, replicate_deadline_s: float = 300.0) -> MemoryResult:
    """Load ``keys`` keys into an empty ``cluster`` and report memory growth per key."""
    probe = memory_probe(cluster)
    reader_probe = memory_probe(cluster, cluster.reader)
    time.sleep(1.0)  # let a just-started node finish allocating its steady-state structures
    before = settle(probe.read, deadline_s=5.0)
    reader_before = reader_probe.read()
    rss_before = redis_rss(cluster)
    tree_before = tree_rss(cluster.writer)
    load = loader.load_keys(cluster.writer.host, cluster.writer.port, keys, KEY_FORMAT, VALUE_SIZE)
    last_key = (KEY_FORMAT % (keys - 1)).encode()
    expected = loader.value_for(keys - 1, VALUE_SIZE)
    replicated: float | None = None
    error = ""
    try:
        with RespConnection(cluster.reader.host, cluster.reader.port) as r:
            replicated = wait_until(f"{cluster.label} {cluster.reader.name} to serve {last_key!r}",
                                    lambda: r.call("GET", last_key) == expected,
                                    replicate_deadline_s, cluster.check_alive, 0.05)
    except Exception as e:  # noqa: BLE001 - reported, the memory figure is still useful
        error = f"replication not complete: {e}"
    after = settle(probe.read)
    ok, checked = loader.check_keys(cluster.writer.host, cluster.writer.port, keys, KEY_FORMAT, VALUE_SIZE)
    extra: dict[str, Any] = {"probe_pids": probe.pids,
                             "reader": f"{cluster.reader.name}: {reader_probe.description}",
                             "reader_bytes_per_key": (settle(reader_probe.read, deadline_s=5.0)
                                                      - reader_before) / keys,
                             "node_tree_rss_before": tree_before,
                             "node_tree_rss_after": tree_rss(cluster.writer)}
    rss_after = redis_rss(cluster)
    if rss_before is not None and rss_after is not None:
        extra["used_memory_rss_per_key"] = (rss_after - rss_before) / keys
    if load.errors:
        error = (error + "; " if error else "") + f"{load.errors} SET errors, first: {load.first_error}"
    return MemoryResult(cluster.label, keys, probe.description, before, after,
                        (after - before) / keys if keys else None, load.seconds, load.errors,
                        replicated, checked, ok, extra, error)
