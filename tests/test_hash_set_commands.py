"""Hash and set commands against Redis 7.2's replies, and the failure modes a review found
(each of these failed before its fix): a SET right after an HSET in one store turn left the hash
hidden under the string; GETDEL left a hidden hash behind; a malformed MATCH pattern stopped the
store (KEYS, SCAN) or left clients without replies (HSCAN, SSCAN); SRANDMEMBER with a huge
negative count stalled the frontend; integers were read as Python reads them ('1_0', '010');
RESP3 set replies; and a guard: the read cache never serves a stale GET/EXISTS/MGET of a key
that became, or stopped being, a hash or a set, locally or by replication.  No sockets: the
store's ``Replica`` and the frontend's command table and ``ReadCache`` are driven directly, as
tests/test_replica.py does.
"""

from __future__ import annotations

import random
import re
import tempfile
import time
from pathlib import Path

import msgpack
import pytest

from tests.test_replica import T0, Clock, heartbeat, replica
from zkv.clock import make
from zkv.commands import FRONTEND_ID, INVALIDATE, Deferred, dispatch
from zkv.config import Config, Peer
from zkv.events import TOPIC_EVENTS
from zkv.frontend.readcache import MISS, ReadCache
from zkv.replication.backlog import Backlog
from zkv.store import parts
from zkv.store.durability import Recovered
from zkv.store.keyspace import Keyspace
from zkv.store.outputs import CLIENT, PUBLISH
from zkv.store.replica import Replica


def _store(tmp: Path, ks: Keyspace | None = None) -> Replica:
    r, _clock = replica(tmp, ks)
    r.take()
    return r


def _turn(r: Replica, *requests: list[bytes], now: float = 0.2) -> list[list]:
    """One store turn holding every request (as a pipeline, or several clients, gives it);
    returns each request's results."""
    ds = [dispatch(list(a), True) for a in requests]
    assert all(d.__class__ is Deferred for d in ds), ds
    r.client([[b"c%d" % i, msgpack.packb([list(o) for o in d.ops], use_bin_type=True)]
              for i, d in enumerate(ds)], now)
    out = [o for o in r.take() if o[0] == CLIENT and o[1][0] != FRONTEND_ID]
    return [msgpack.unpackb(o[1][1], raw=False) for o in out]


def _reply(args: list[bytes], results: list, resp3: bool = False) -> bytes:
    d = dispatch(args, True, resp3)
    return d if d.__class__ is bytes else d.encode(results)


# --- bugs -------------------------------------------------------------------------------------
def test_a_set_right_after_an_hset_in_the_same_store_turn_replaces_the_hash(tmp_path: Path) -> None:
    """redis-py pipeline(transaction=False) of HSET k f v; SET k x; GETDEL k; TYPE k answers
    [1, True, b'x', b'none'] on Redis; zkv answered b'hash': the "s" fast path in Replica.client
    read ``hashes``/``sets`` before the turn's pending writes were applied."""
    r = _store(tmp_path)
    _turn(r, [b"HSET", b"k", b"f", b"v"], [b"SET", b"k", b"x"])
    _turn(r, [b"GETDEL", b"k"], now=0.3)
    assert _turn(r, [b"TYPE", b"k"], now=0.4) == [["none"]]


def test_getdel_deletes_a_hash_that_its_string_hid(tmp_path: Path) -> None:
    """A string and a hash of one key (concurrent SET and HSET on two nodes): DEL removes both,
    GETDEL must too (it removed only the string, and the key turned into the hash)."""
    ks = Keyspace()
    ks.apply_many("n1@a", [(make(T0 - 20), parts.part_key(parts.HASH, b"k", b"f"), b"v")])
    ks.apply_many("n2@a", [(make(T0 - 10), b"k", b"x")])
    r = _store(tmp_path, ks)
    assert _turn(r, [b"TYPE", b"k"]) == [["string"]]
    assert _turn(r, [b"GETDEL", b"k"], now=0.3) == [[b"x"]]
    assert _turn(r, [b"TYPE", b"k"], now=0.4) == [["none"]]  # (DEL k gives none)


def test_hscan_match_with_a_bad_character_class_answers_and_does_not_hang() -> None:
    """HSCAN h 0 MATCH [] (or a[b-a]): Redis answers *2 0 *0; zkv's encoder raised re.error in
    the frontend's StoreLink._drain, and the client never got an answer (nor to what followed)."""
    for pattern in (b"[]", b"a[b-a]"):
        assert _reply([b"HSCAN", b"h", b"0", b"MATCH", pattern], [[b"f", b"v"]]) == b"*2\r\n$1\r\n0\r\n*0\r\n"
        assert _reply([b"SSCAN", b"s", b"0", b"MATCH", pattern], [[b"m"]]) == b"*2\r\n$1\r\n0\r\n*0\r\n"


def test_scan_or_keys_with_a_bad_character_class_does_not_kill_the_store(tmp_path: Path) -> None:
    """(Older than this change, but the store must never die from client input.)  SCAN 0 MATCH []
    and KEYS [] raised re.error out of Replica.client: the store exited and the node stopped."""
    r = _store(tmp_path)
    for args in ([b"SCAN", b"0", b"MATCH", b"[]"], [b"KEYS", b"[]"], [b"KEYS", b"a[b-a]"]):
        try:
            _turn(r, args)
        except re.error as exc:
            pytest.fail(f"{args} raised {exc!r} out of the store")


def test_srandmember_with_a_count_redis_refuses_is_refused() -> None:
    """Redis: -ERR value is out of range, value must between -9223372036854775807 and
    9223372036854775807.  zkv accepted it, and its encoder built a list of 2**63 members in the
    frontend: the whole node stopped answering.  A negative count is now bounded (Redis streams
    its reply; zkv builds it whole)."""
    reply = dispatch([b"SRANDMEMBER", b"s", b"-9223372036854775808"], True)
    assert reply == (b"-ERR value is out of range, value must between -9223372036854775807 and "
                     b"9223372036854775807\r\n")


def test_hscan_novalues() -> None:
    """Redis 7.2 has no NOVALUES (7.4 added it, for HSCAN only): a syntax error anywhere, and
    MATCH novalues is a pattern (zkv's half support of it was inconsistent)."""
    last = dispatch([b"HSCAN", b"h", b"0", b"NOVALUES"], True)
    middle = dispatch([b"HSCAN", b"h", b"0", b"NOVALUES", b"COUNT", b"5"], True)
    assert (last.__class__ is bytes) == (middle.__class__ is bytes), (last, middle)
    assert dispatch([b"SSCAN", b"s", b"0", b"NOVALUES", b"COUNT", b"5"], True) == b"-ERR syntax error\r\n"
    assert (_reply([b"HSCAN", b"h", b"0", b"MATCH", b"novalues"], [[b"novalues", b"1"]])
            == b"*2\r\n$1\r\n0\r\n*2\r\n$8\r\nnovalues\r\n$1\r\n1\r\n")


# --- incompatibilities --------------------------------------------------------------------------
def test_resp3_set_replies() -> None:
    """After HELLO 3 Redis answers SMEMBERS and SPOP key count with a set (~), and SRANDMEMBER of
    a missing key with RESP3's null (_)."""
    assert _reply([b"SMEMBERS", b"s"], [[b"a"]], True) == b"~1\r\n$1\r\na\r\n"
    assert _reply([b"SMEMBERS", b"nokey"], [[]], True) == b"~0\r\n"
    assert _reply([b"SPOP", b"s", b"2"], [[b"a"]], True) == b"~1\r\n$1\r\na\r\n"
    assert _reply([b"SRANDMEMBER", b"nokey"], [[]], True) == b"_\r\n"


def test_spop_count_up_to_long_max() -> None:
    """SPOP s 9223372036854775807: Redis pops every member (zkv refused counts past 18 digits)."""
    assert dispatch([b"SPOP", b"s", b"9223372036854775807"], True).__class__ is Deferred


def test_integer_arguments_are_read_as_redis_reads_them() -> None:
    """HINCRBY h f 010 / 1_0 / -0 and SRANDMEMBER s 1_0: Redis refuses them (not an integer);
    ``int`` alone would read them (as zkv did, for INCRBY too, and for a stored "1_0")."""
    for n in (b"010", b"1_0", b"-0"):
        assert dispatch([b"HINCRBY", b"h", b"f", n], True) == b"-ERR value is not an integer or out of range\r\n", n
    assert dispatch([b"SRANDMEMBER", b"s", b"1_0"], True) == b"-ERR value is not an integer or out of range\r\n"


def test_keys_is_linear_in_the_keys() -> None:
    """Keyspace.keys_matching (KEYS, RANDOMKEY, FLUSHALL) once searched a list for every hash
    or set whose key also had an entry (a tombstone: any key deleted before): 20k strings and
    20k such hashes took ~6 s of the store's only thread."""
    ks, items, stamp = Keyspace(), [], make(T0)
    for i in range(20_000):
        items.append((stamp, b"s%d" % i, b"v"))
        items.append((stamp + 1, b"k%d" % i, None))
        items.append((stamp + 2, parts.part_key(parts.HASH, b"k%d" % i, b"f"), b"v"))
        stamp += 3
    ks.apply_many("me", items)
    t = time.perf_counter()
    assert len(ks.keys_matching(lambda _k: True)) == 40_000
    assert time.perf_counter() - t < 1.0


# --- guard (passes) -------------------------------------------------------------------------------
def _node(tmp: Path, me: str, peer: str, cache_mb: int) -> tuple[Replica, Clock]:
    cfg = Config(id=me, listen_host="127.0.0.1", listen_port=1, bus="tcp://127.0.0.1:1000",
                 data_dir=tmp / me, peers=(Peer(peer, "tcp://127.0.0.1:1001"),),
                 heartbeat_ms=100, anti_entropy_ms=200, read_cache_mb=cache_mb)
    (tmp / me).mkdir()
    clock = Clock()
    r = Replica(cfg, Recovered(Keyspace(), {}, 0, 0, 0.0, 0, 0, 0, []), f"{me}@x", Backlog(1000),
                0.0, wall=clock, clock_floor=0)
    r.catchup_endpoint = f"sim://{me}/1"
    return r, clock


def _random_command(rng: random.Random) -> list[bytes]:
    k, f, v = rng.choice([b"a", b"b", b"c"]), rng.choice([b"f", b"g"]), rng.choice([b"1", b"x"])
    return rng.choice([
        [b"GET", k], [b"EXISTS", k], [b"MGET", k], [b"GET", k], [b"GET", k],
        [b"SET", k, v], [b"DEL", k], [b"GETDEL", k], [b"APPEND", k, v], [b"INCR", k],
        [b"SETNX", k, v], [b"SET", k, v, b"XX"], [b"GETSET", k, v], [b"RENAME", k, rng.choice([b"a", b"b"])],
        [b"HSET", k, f, v], [b"HDEL", k, f], [b"HINCRBY", k, f, b"1"], [b"SADD", k, f], [b"SREM", k, f],
        [b"SPOP", k], [b"SPOP", k, b"2"], [b"FLUSHALL"]])


@pytest.mark.parametrize("seed", range(20))
def test_the_read_cache_never_serves_a_stale_read_of_a_hash_or_set(seed: int) -> None:
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp())
    (r0, c0), (r1, c1) = _node(tmp, "n0", "n1", 1), _node(tmp, "n1", "n0", 0)
    now = 0.1
    for r, peer in ((r0, "n1"), (r1, "n0")):
        heartbeat(r, peer, now, seen={r.id: make(T0 - 50)})
        r.take()
    cache, events, hits = ReadCache(1 << 20), [], 0
    for step in range(300):
        now += 0.01
        c0.ms += 10
        c1.ms += 10
        act = rng.random()
        if act < 0.25:  # a write on n1; its events wait to reach n0
            d = dispatch(_random_command(rng), True)
            if d.__class__ is Deferred:
                r1.client([[b"c", msgpack.packb([list(o) for o in d.ops], use_bin_type=True)]], now)
                r1.take()
                if r1._unpublished:
                    r1._publish()
                    events += [o[1][1] for o in r1.take() if o[0] == PUBLISH and o[1][0] == TOPIC_EVENTS]
            continue
        if act < 0.4 and events:  # n1's next events reach n0; the turn ends (invalidations go)
            r0.bus("n1", TOPIC_EVENTS, events.pop(0), now)
            r0.tick(now)
        else:  # a command on n0, through the cache as the frontend does
            args = _random_command(rng)
            d = dispatch(args, True)
            if d.__class__ is not Deferred:
                continue
            if len(d.ops) == 1 and d.ops[0][0] == "g":
                hit = cache.lookup(d.ops[0][1])
                if hit is not MISS:
                    hits += 1
                    key = d.ops[0][1]
                    want = r0.ks.get(key) if r0.ks.kind(key) in (None, "string") else "WRONGTYPE"
                    assert hit == want, f"step {step}: {args} served {hit!r} from the cache, the store holds {want!r}"
                    continue
            r0.client([[b"r", msgpack.packb([list(o) for o in d.ops], use_bin_type=True)]], now)
        for o in r0.take():  # what the frontend hears, in order: invalidations and replies
            if o[0] != CLIENT:
                continue
            if o[1][0] == FRONTEND_ID:
                if o[1][1] == INVALIDATE:
                    keys = msgpack.unpackb(o[1][2])
                    cache.invalidate(keys) if keys.__class__ is list else cache.clear()
            else:
                results = msgpack.unpackb(o[1][1], raw=False)
                if results.__class__ is list:
                    cache.learn(d.ops, results)
    assert hits > 0
