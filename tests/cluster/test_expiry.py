"""Expiry through real processes: an expiry is data carried in the write's event, so every
node hides the key from the same moment (GET, EXISTS, MGET, DBSIZE, SCAN, KEYS, TTL agree);
EXPIRE and a concurrent SET keep the SET's value; INCR keeps a counter's expiry; log replay,
a SIGKILL and a full transfer keep expiry times (and a counter's total), and a node that was
down while a key expired does not serve it; expired keys are reclaimed without a replication
event; RENAME and FLUSHALL replicate."""

from __future__ import annotations

import shutil
import time

from tests.cluster.harness import Cluster, wait_until
from tests.cluster.test_redis_clients import rclient


def _everywhere(c: Cluster, fn) -> list:  # noqa: ANN001 - fn: a redis client -> anything
    return [fn(rclient(n)) for n in c.nodes]


def test_an_expiring_key_is_seen_on_every_node_then_gone_from_every_read(make_cluster) -> None:
    c: Cluster = make_cluster(n=3).start()
    r0 = rclient(c.nodes[0])
    assert r0.set("short", "v", px=1500) is True
    r0.set("long", "w", ex=300)
    r0.set("plain", "p")
    wait_until(lambda: _everywhere(c, lambda r: r.get("short")) == [b"v"] * 3, 10,
               what="the expiring key on every node")
    assert all(0 < t <= 1500 for t in _everywhere(c, lambda r: r.pttl("short")))
    assert all(290 <= t <= 300 for t in _everywhere(c, lambda r: r.ttl("long")))
    assert len(set(_everywhere(c, lambda r: r.pexpiretime("long")))) == 1, "one expiry time, carried in the event"
    assert _everywhere(c, lambda r: r.ttl("plain")) == [-1] * 3
    # GET it over and over until it expires (the read cache must not keep it past its time)
    deadline = time.monotonic() + 10
    while r0.get("short") is not None:
        assert time.monotonic() < deadline, "still served 10 s after a 1.5 s expiry"
    wait_until(lambda: _everywhere(c, lambda r: r.get("short")) == [None] * 3, 5, what="gone everywhere")
    for r in (rclient(n) for n in c.nodes):
        assert r.exists("short") == 0 and r.mget("short", "long") == [None, b"w"]
        assert r.ttl("short") == -2 and r.dbsize() == 2
        assert sorted(r.keys("*")) == [b"long", b"plain"]
        assert sorted(r.scan_iter()) == [b"long", b"plain"]
        assert r.type("short") == b"none" and r.strlen("short") == 0
    # reclaimed below the horizon, by every node on its own: no event is written for it
    seqs = [int(n.info()["seq"]) for n in c.nodes]
    wait_until(lambda: all(int(n.info()["expiring_keys"]) == 1 for n in c.nodes), 15,
               what="the expired key reclaimed on every node")
    assert [int(n.info()["seq"]) for n in c.nodes] == seqs
    assert [n.info()["db0"] for n in c.nodes] == ["keys=2,expires=1,avg_ttl=0"] * 3
    res = c.verify(timeout=20)
    assert res.returncode == 0, res.stdout + res.stderr


def test_expire_against_a_concurrent_set_keeps_the_sets_value_on_every_node(make_cluster) -> None:
    c: Cluster = make_cluster(n=3, allow_flushall=True).start()
    r0, r1 = rclient(c.nodes[0]), rclient(c.nodes[1])
    for i in range(20):
        key = f"k{i}"
        r0.set(key, "old")
        wait_until(lambda: rclient(c.nodes[1]).get(key) == b"old", 10, what="the first value")
        # at the same moment on two nodes: a SET on one, an EXPIRE on the other
        r1.set(key, "new")
        assert r0.expire(key, 300) is True
    for i in range(20):
        key = f"k{i}"
        wait_until(lambda: len(set(_everywhere(c, lambda r: (r.get(key), r.pexpiretime(key))))) == 1,
                   10, what=f"{key}: one value and one expiry on every node")
        # the EXPIRE never brings the older value back; the expiry is the later write's
        assert rclient(c.nodes[2]).get(key) == b"new"
    # a counter keeps its expiry through INCRs on every node; a SET without EX clears it
    r0.set("hits", "0", ex=300)
    for r in (r0, r1, rclient(c.nodes[2])):
        r.incr("hits")
    wait_until(lambda: _everywhere(c, lambda r: r.get("hits")) == [b"3"] * 3, 10, what="3 everywhere")
    assert all(290 <= t <= 300 for t in _everywhere(c, lambda r: r.ttl("hits")))
    assert r1.persist("hits") is True
    wait_until(lambda: _everywhere(c, lambda r: r.ttl("hits")) == [-1] * 3, 10, what="persisted")
    # an INCR of an expired key starts it anew, with no expiry
    r0.set("window", "41", px=300)
    wait_until(lambda: r0.get("window") is None, 5, what="the window to expire")
    assert r0.incr("window") == 1 and r0.ttl("window") == -1
    # RENAME: the value and its expiry move, on every node
    r1.set("from", "v", ex=300)
    assert r1.rename("from", "to") is True
    wait_until(lambda: _everywhere(c, lambda r: (r.get("from"), r.get("to"))) == [(None, b"v")] * 3, 10,
               what="the rename on every node")
    assert all(290 <= t <= 300 for t in _everywhere(c, lambda r: r.ttl("to")))
    res = c.verify(timeout=20)
    assert res.returncode == 0, res.stdout + res.stderr
    # FLUSHALL (allowed here): every node ends empty
    assert r1.flushall() is True
    wait_until(lambda: _everywhere(c, lambda r: r.dbsize()) == [0, 0, 0], 10, what="empty everywhere")


def test_expiry_survives_a_kill_and_a_full_transfer_and_a_key_that_expired_meanwhile_is_not_served(
        make_cluster) -> None:
    c: Cluster = make_cluster(n=3, backlog=100, fsync="always").start()
    a, b, n = c.nodes
    ra = rclient(a)
    ra.set("soon", "s", px=2500)
    ra.set("later", "l", ex=300)
    ra.setex("mid", 300, "m")
    ra.expire("mid", 200)
    wait_until(lambda: rclient(n).get("soon") == b"s" and rclient(n).ttl("mid") <= 200, 10,
               what="node2 to hold them")
    want = ra.pexpiretime("later"), ra.pexpiretime("mid")
    n.kill()  # SIGKILL: it comes back from its log
    wait_until(lambda: ra.get("soon") is None, 10, what="'soon' to expire while node2 is down")
    n.start()
    rn = rclient(n)
    assert rn.get("soon") is None, "a key that expired while its node was down is served"
    assert (rn.pexpiretime("later"), rn.pexpiretime("mid")) == want
    # now it loses its disk, and the others write more than their backlogs hold: it gets
    # everything in a full transfer, expiry times and counters included
    n.kill()
    shutil.rmtree(n.data_dir)
    rb = rclient(b)
    for i in range(300):
        ra.set(f"fill{i}", "x")
        (ra if i % 2 else rb).incr("hits")
    n.start()
    wait_until(lambda: rclient(n).exists("fill299") == 1, 30, what="the transfer")
    assert int(n.info()["full_syncs"]) >= 1, "it caught up without a full transfer"
    rn = rclient(n)
    assert (rn.pexpiretime("later"), rn.pexpiretime("mid")) == want
    assert rn.get("soon") is None and rn.get("later") == b"l"
    wait_until(lambda: rclient(n).get("hits") == b"300", 10, what="the counter, whole, on the new node")
    assert rn.incr("hits") == 301
    res = c.verify(timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
