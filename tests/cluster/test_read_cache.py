"""The frontend's read cache stays coherent with its store, on real clusters.

A node answers repeated GETs of a key from its frontend's cache.  When the key then changes by
a write on ANOTHER node (replication), a delete, or an anti-entropy repair, the store must tell
the frontend (an invalidation), or the node would keep serving the old value forever: each test
below first makes the node cache the old value (or the key's absence), then changes it
elsewhere and waits, with a deadline, for the new value.
"""

from __future__ import annotations

from tests.cluster.harness import Cluster, LineClient, wait_until
from tests.cluster.test_anti_entropy import _plant_divergence


def test_cached_values_follow_writes_made_on_other_nodes(make_cluster) -> None:
    c: Cluster = make_cluster(3).start()
    a, b = c.nodes[0], c.nodes[1]
    keys = [f"rc{i}" for i in range(200)]
    with LineClient(b.port) as cb, LineClient(a.port) as ca:
        # b caches every key as absent, then a writes them all
        assert cb.pipeline([f"GET {k}".encode() for k in keys]) == [b"NOT FOUND"] * len(keys)
        assert ca.pipeline([f"SET {k} one".encode() for k in keys]) == [b"OK"] * len(keys)
        wait_until(lambda: cb.pipeline([f"GET {k}".encode() for k in keys]) == [b"VALUE one"] * len(keys),
                   timeout=15, what="b to serve a's writes of keys it had cached as absent")
        # b now caches "one" (read above, many times); a overwrites half and deletes the rest
        assert ca.pipeline([f"SET {k} two".encode() for k in keys[:100]]
                           + [f"DEL {k}".encode() for k in keys[100:]]) == [b"OK"] * len(keys)
        want = [b"VALUE two"] * 100 + [b"NOT FOUND"] * 100
        wait_until(lambda: cb.pipeline([f"GET {k}".encode() for k in keys]) == want,
                   timeout=15, what="b to serve a's overwrites and deletes of keys it had cached")
        # and a node's own writes are read back at once, from the cache or not
        for i in range(20):
            assert cb.cmd(f"SET rc0 b{i}".encode()) == b"OK"
            assert cb.cmd(b"GET rc0") == f"VALUE b{i}".encode()
    assert c.verify(timeout=20).returncode == 0
    info = b.info("frontend")  # the reads above were answered here, and INFO says so
    assert int(info["read_cache_hits"]) > 0 and int(info["read_cache_misses"]) > 0
    assert 0 < int(info["read_cache_keys"]) <= len(keys)
    assert int(info["read_cache_bytes"]) <= int(info["read_cache_budget"]) == 64 * 1024 * 1024


def test_a_disabled_cache_behaves_the_same(make_cluster) -> None:
    c: Cluster = make_cluster(2, read_cache_mb=0).start()
    a, b = c.nodes
    assert b.get("k") == b"NOT FOUND"
    with a.client() as ca:
        assert ca.cmd(b"SET k v") == b"OK"
    wait_until(lambda: b.get("k") == b"VALUE v", timeout=15, what="b to serve a's write")
    assert "read_cache_hits" not in b.info()


def test_anti_entropy_repair_reaches_a_cached_reader(make_cluster) -> None:
    """A repair changes keys in bulk: the frontend must forget what it cached."""
    c: Cluster = make_cluster(3, heartbeat_ms=50, anti_entropy_ms=3000).start()
    a, b, n2 = c.nodes
    with a.client() as ca:
        assert ca.cmd(b"SET before 1") == b"OK"
    wait_until(lambda: n2.get("before") == b"VALUE 1", timeout=15, what="first write on node2")
    n2.kill()
    _plant_divergence(n2.data_dir, b"planted-key", b"only-here")
    n2.start()
    # Read at once on a and b: before the repair (anti-entropy runs every 3 s) this caches the
    # key's absence, which the repair must then invalidate.  (Should a repair win the race,
    # the rest still checks that it arrives.)
    for node in (a, b):
        with node.client() as cl:
            first = cl.cmd(b"GET planted-key")
            assert first in (b"NOT FOUND", b"VALUE only-here")
            wait_until(lambda: cl.cmd(b"GET planted-key") == b"VALUE only-here", timeout=30,
                       what=f"the repaired key on {node.id}")


def test_tracking_past_its_bound_drops_some_keys_not_the_whole_cache(make_cluster) -> None:
    """The store tracks at most track_max keys for its frontend (10,485 with read_cache_mb = 1).
    Past that it stops tracking some and invalidates exactly those, as Redis's tracking table
    does: the rest of the cache stays (telling the frontend to forget everything would empty
    it), and a key no longer tracked must not stay cached, or a later write made on another
    node would never reach this reader."""
    c: Cluster = make_cluster(2, read_cache_mb=1).start()
    a, b = c.nodes
    keys = [f"tk{i}" for i in range(11_000)]
    chunks = [keys[i:i + 500] for i in range(0, len(keys), 500)]
    with LineClient(a.port) as ca, LineClient(b.port) as cb:
        for chunk in chunks:
            assert ca.pipeline([f"SET {k} one".encode() for k in chunk]) == [b"OK"] * len(chunk)
        wait_until(lambda: cb.cmd(f"GET {keys[-1]}".encode()) == b"VALUE one", timeout=30,
                   what="b to have a's writes")
        for chunk in chunks:  # every key read once on b: all tracked, more than the bound
            assert cb.pipeline([f"GET {k}".encode() for k in chunk]) == [b"VALUE one"] * len(chunk)
        info = b.info("frontend")
        assert int(info["read_cache_tracked"]) <= int(info["read_cache_tracked_max"]) == 10_485
        # about 5,400 entries fit in 1 MB; the untracked ones (about 1,000 of them) are gone
        assert int(info["read_cache_keys"]) > 2_500, info
        for chunk in chunks:
            assert ca.pipeline([f"SET {k} two".encode() for k in chunk]) == [b"OK"] * len(chunk)
        # Read back, one request at a time (the cache answers a request when none before it
        # on the connection waits for the store), only the last keys read: fewer than the
        # cache holds, so no entry is pushed out by these reads, and a stale one would be
        # served for ever.
        recent = [f"GET {k}".encode() for k in keys[-4_000:]]
        wait_until(lambda: all(cb.cmd(r) == b"VALUE two" for r in recent),
                   timeout=30, what="b to serve a's new values for every key it had cached")
        # and those reads went through the cache: read again, they are all answered there
        hits = int(b.info("frontend")["read_cache_hits"])
        assert all(cb.cmd(r) == b"VALUE two" for r in recent[:100])
        assert int(b.info("frontend")["read_cache_hits"]) == hits + 100
