"""Real Redis clients against a real zkv cluster: redis-py (RESP2 and its default handshake) and
redis-cli, plus raw-socket checks of the RESP framing that clients rely on.

Most tests share one 3-node cluster (module scope, distinct key prefixes) to keep the file fast;
the DBSIZE/keyspace test needs an empty keyspace and uses a fresh cluster of its own.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.cluster.harness import Cluster, Node, wait_until

REDIS_CLI = "/usr/bin/redis-cli"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("redis_clients")).start()
    try:
        yield c
    finally:
        c.stop()


def rclient(node: Node, **kw: object) -> redis.Redis:
    """redis-py speaking RESP2 on the wire (explicit: redis-py >= 8 defaults to RESP3)."""
    kw.setdefault("protocol", 2)
    # no retries and a short timeout: a broken reply stream fails the test instead of stalling it
    return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5,  # type: ignore[arg-type]
                       retry=Retry(NoBackoff(), 0), **kw)


def resp_cmd(*args: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(out)


def recv_exactly(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        assert chunk, f"connection closed after {got!r}"
        got += chunk
    return got


def recv_until_closed(s: socket.socket) -> bytes:
    got = b""
    while True:
        chunk = s.recv(65536)  # socket timeout makes a connection that stays open fail the test
        if not chunk:
            return got
        got += chunk


def cli(node: Node, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(node.port), *args],
                          input=stdin, capture_output=True, timeout=20)


# --- replication through redis-py ---------------------------------------------------------------
def test_set_on_one_node_get_on_every_other(shared: Cluster) -> None:
    a, b, c = shared.nodes
    ra, rb, rc = rclient(a), rclient(b), rclient(c)
    assert ra.set("rp:k", "v1") is True
    assert ra.get("rp:k") == b"v1"
    for r in (rb, rc):
        wait_until(lambda: r.get("rp:k") == b"v1", what="rp:k replicated")
    assert rb.set("rp:k", "v2") is True  # overwrite from another node flows back
    wait_until(lambda: ra.get("rp:k") == b"v2", what="overwrite replicated")
    assert rc.get("rp:never-set") is None


def test_pipeline_of_1000_mixed_commands(shared: Cluster) -> None:
    a, b = shared.nodes[0], shared.nodes[1]
    rnd = random.Random(1234)
    keys = [f"pl:{i}" for i in range(40)]
    model: dict[str, bytes] = {}
    expected: list[object] = []
    pipe = rclient(a).pipeline(transaction=False)
    for n in range(1000):
        op = rnd.choice(["set", "set", "get", "get", "del", "exists", "mget", "mset", "echo", "ping"])
        k, k2 = rnd.choice(keys), rnd.choice(keys)
        v = f"v{n}-{'x' * rnd.randrange(0, 50)}".encode()
        if op == "set":
            pipe.set(k, v)
            model[k] = v
            expected.append(True)
        elif op == "get":
            pipe.get(k)
            expected.append(model.get(k))
        elif op == "del":
            pipe.delete(k)
            expected.append(1 if model.pop(k, None) is not None else 0)
        elif op == "exists":
            pipe.exists(k, k2)
            expected.append(int(k in model) + int(k2 in model))
        elif op == "mget":
            pipe.mget(k, k2, "pl:missing")
            expected.append([model.get(k), model.get(k2), None])
        elif op == "mset":
            pipe.mset({k: v, k2: v + b"!"})
            model[k] = v
            model[k2] = v + b"!"
            expected.append(True)
        elif op == "echo":
            pipe.echo(v)
            expected.append(v)
        else:
            pipe.ping()
            expected.append(True)
    results = pipe.execute()
    assert len(results) == 1000
    for i, (got, want) in enumerate(zip(results, expected)):
        assert got == want, f"command {i}: {got!r} != {want!r}"
    want_final = [model.get(k) for k in keys]
    rb = rclient(b)
    wait_until(lambda: rb.mget(keys) == want_final, what="pipeline writes replicated")


def test_binary_values_round_trip_across_nodes(shared: Cluster) -> None:
    a, b = shared.nodes[0], shared.nodes[1]
    values = {
        b"bin:all256": bytes(range(256)),
        b"bin:crlf": b"line1\r\nline2\r\n\r\n",
        b"bin:resp-lookalike": b"*2\r\n$3\r\nSET\r\n$-1\r\n+OK\r\n-ERR x\r\n",
        b"bin:nul": b"\x00\x00\x00",
        b"bin:empty": b"",
        b"bin:key-\x00\r\n\xff": b"binary key",
    }
    ra, rb = rclient(a), rclient(b)
    for k, v in values.items():
        assert ra.set(k, v) is True
        assert ra.get(k) == v
    keys = list(values)
    want = [values[k] for k in keys]
    wait_until(lambda: rb.mget(keys) == want, what="binary values replicated byte for byte")


def test_a_value_with_a_newline_keeps_the_plain_protocol_in_step(shared: Cluster) -> None:
    """Written over RESP, read over the plain protocol on another node: one error line, and the
    next request's reply is its own."""
    a, b = shared.nodes[0], shared.nodes[1]
    assert rclient(a).set("nl:key", b"line1\nline2") is True
    wait_until(lambda: rclient(b).get("nl:key") == b"line1\nline2", what="the value replicated")
    with b.client() as c:
        c.send(b"GET nl:key\nSET nl:after ok\nGET nl:after\n")
        replies = [c.read_line() for _ in range(3)]
    assert replies[0].startswith(b"ERROR ") and b"RESP" in replies[0], replies
    assert replies[1:] == [b"OK", b"VALUE ok"], replies


def test_large_values_set_on_one_node_read_on_another(shared: Cluster) -> None:
    a, b, c = shared.nodes
    big = os.urandom(1024 * 1024)
    big2 = bytes(range(256)) * 4096 + b"\r\n"  # 1 MiB + 2 with CRLFs inside
    ra = rclient(a)
    assert ra.set("big:1", big) is True
    assert ra.mset({"big:2": big2}) is True
    assert ra.get("big:1") == big
    for node in (b, c):
        r = rclient(node)
        wait_until(lambda: r.get("big:1") == big, timeout=20, what=f"1 MiB value on {node.id}")
        assert r.mget("big:1", "big:2") == [big, big2]


def test_mset_and_mget(shared: Cluster) -> None:
    a, b = shared.nodes[0], shared.nodes[2]
    ra, rb = rclient(a), rclient(b)
    data = {f"mm:{i}": f"value {i}".encode() for i in range(20)}
    assert ra.mset(data) is True
    keys = ["mm:missing-first", *data, "mm:missing-last"]
    want = [None, *data.values(), None]
    assert ra.mget(keys) == want
    wait_until(lambda: rb.mget(keys) == want, what="MSET replicated")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        ra.execute_command("MSET", "mm:a", "1", "mm:b")
    assert ra.get("mm:a") is None  # a rejected MSET writes nothing


def test_del_with_several_keys_returns_count(shared: Cluster) -> None:
    a, b = shared.nodes[0], shared.nodes[1]
    ra, rb = rclient(a), rclient(b)
    ra.mset({"dl:1": "a", "dl:2": "b", "dl:3": "c", "dl:4": "d"})
    assert ra.delete("dl:1", "dl:2", "dl:3", "dl:missing") == 3
    assert ra.delete("dl:1", "dl:2") == 0
    assert ra.execute_command("DEL", "dl:4") == 1
    ra.mset({"dl:x": "1", "dl:y": "2"})
    wait_until(lambda: rb.exists("dl:x", "dl:y") == 2, what="dl keys on node1")
    assert rb.delete("dl:x", "dl:y", "dl:x") == 2  # deleted on another node; duplicate counts once
    wait_until(lambda: ra.exists("dl:x", "dl:y") == 0, what="multi-key delete replicated")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        ra.execute_command("DEL")


def test_reads_in_one_packet_see_the_writes_before_them(shared: Cluster) -> None:
    """The store applies a batch's writes in runs; every read must still see each earlier write."""
    node = shared.nodes[0]
    cmds = [("SET", "ord:k", "1"), ("GET", "ord:k"), ("DEL", "ord:k"), ("DEL", "ord:k"),
            ("GET", "ord:k"), ("SET", "ord:k", "2"), ("SET", "ord:k", "3"), ("EXISTS", "ord:k"),
            ("MSET", "ord:a", "x", "ord:a", "y"), ("MGET", "ord:a", "ord:k"), ("DEL", "ord:a", "ord:a"),
            ("DBSIZE",)]
    want_prefix = (b"+OK\r\n$1\r\n1\r\n:1\r\n:0\r\n$-1\r\n+OK\r\n+OK\r\n:1\r\n+OK\r\n"
                   b"*2\r\n$1\r\ny\r\n$1\r\n3\r\n:1\r\n:")
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(b"".join(resp_cmd(*c) for c in cmds))
        got = b""
        while not (got.startswith(want_prefix) and got.endswith(b"\r\n") and len(got) > len(want_prefix)):
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
            assert want_prefix.startswith(got[:len(want_prefix)]), got
    assert rclient(node).get("ord:k") == b"3"


def test_a_later_write_beats_every_write_of_an_earlier_batch(shared: Cluster) -> None:
    """The store stamps a turn's writes from one clock reading (stamp, stamp + 1, ...); the
    clock must then pass the last of them, or a write in the next turn, in the same
    millisecond, would take a stamp already issued and lose to it under last-writer-wins."""
    node = shared.nodes[0]

    def call(s: socket.socket, payload: bytes, replies: int) -> bytes:
        s.sendall(payload)
        got = b""
        while got.count(b"\r\n") < replies:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        return got

    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        for round_ in range(50):
            batch = b"".join(resp_cmd("SET", "lw:k", f"{round_}-{i}") for i in range(50))
            assert call(s, batch, 50) == b"+OK\r\n" * 50
            # the next store turn, within the same millisecond as often as not
            assert call(s, resp_cmd("SET", "lw:k", f"{round_}-after"), 1) == b"+OK\r\n"
            want = f"{round_}-after".encode()
            # MGET of two keys is answered by the store, not the frontend's read cache (which
            # takes an acknowledged write of this node as the current value)
            assert call(s, resp_cmd("MGET", "lw:k", "lw:none"), 4) == b"*2\r\n$%d\r\n%b\r\n$-1\r\n" % (len(want), want)


def test_exists_counts_keys(shared: Cluster) -> None:
    r = rclient(shared.nodes[1])
    r.set("ex:a", "1")
    r.set("ex:b", "")
    assert r.exists("ex:a") == 1
    assert r.exists("ex:b") == 1  # empty value still exists
    assert r.exists("ex:nope") == 0
    assert r.exists("ex:a", "ex:b", "ex:nope", "ex:a") == 3  # like Redis: repeats count again
    r.delete("ex:a")
    assert r.exists("ex:a") == 0


def test_dbsize_and_keyspace_info_on_every_node(cluster: Cluster) -> None:
    a = cluster.nodes[0]
    for node in cluster.nodes:
        assert rclient(node).dbsize() == 0
    ra = rclient(a)
    ra.mset({f"db:{i}": str(i) for i in range(5)})
    ra.delete("db:0")
    assert ra.dbsize() == 4
    for node in cluster.nodes:
        r = rclient(node)
        wait_until(lambda: r.dbsize() == 4, what=f"DBSIZE 4 on {node.id}")
        ks = r.info("keyspace")
        assert ks["db0"]["keys"] == 4
        assert ks["db0"]["expires"] == 0
        assert isinstance(r.dbsize(), int)


def test_ping_and_echo(shared: Cluster) -> None:
    node = shared.nodes[2]
    r = rclient(node)
    assert r.ping() is True
    assert r.echo(b"multi\r\nline\x00\xff") == b"multi\r\nline\x00\xff"
    assert r.echo("") == b""
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("ECHO")
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(resp_cmd("PING") + resp_cmd("ECHO", "hi") + resp_cmd("ping", "hello there"))
        want = b"+PONG\r\n$2\r\nhi\r\n$11\r\nhello there\r\n"
        assert recv_exactly(s, len(want)) == want


def test_info_has_replication_and_keyspace(shared: Cluster) -> None:
    a = shared.nodes[0]
    r = rclient(a)
    r.set("info:k", "v")
    info = wait_until(lambda: (i := r.info()) and i.get("connected_peers") == 2 and i, what="2 connected peers")
    assert info["node_id"] == "node0"
    assert info["role"] == "master"
    assert info["peers"] == 2
    peer_lines = [info[f"peer{i}"] for i in range(2)]
    assert sorted(p["id"] for p in peer_lines) == ["node1", "node2"]
    assert all(p["connected"] == 1 for p in peer_lines)
    assert isinstance(info["db0"], dict) and info["db0"]["keys"] >= 1
    assert info["redis_mode"] == "standalone"

    repl = r.info("replication")
    assert repl["node_id"] == "node0" and repl["peers"] == 2
    assert "db0" not in repl  # a section request returns only that section
    ks = r.info("keyspace")
    assert "db0" in ks and "node_id" not in ks

    # the raw text, as redis-cli prints it: Redis's "# Section" headers and field:value lines
    out = cli(a, "info").stdout.decode()
    assert "# Replication" in out and "# Keyspace" in out
    assert "node_id:node0" in out and "db0:keys=" in out
    assert any(line.startswith("peer0:id=node") for line in out.splitlines())


# --- errors -------------------------------------------------------------------------------------
def test_error_replies_raise_response_error_and_connection_survives(shared: Cluster) -> None:
    r = rclient(shared.nodes[0])
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("FROBNICATE", "x")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET", "a", "b")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SET", "err:k", "v", "EX")  # an option without its argument: not a silent SET
    assert r.ping() is True  # errors do not break the connection
    pipe = r.pipeline(transaction=False)
    pipe.set("err:p", "1").execute_command("NOPE").get("err:p").execute_command("GET")
    res = pipe.execute(raise_on_error=False)
    assert res[0] is True and res[2] == b"1"
    assert isinstance(res[1], redis.ResponseError) and "unknown command" in str(res[1])
    assert isinstance(res[3], redis.ResponseError) and "wrong number of arguments" in str(res[3])


@pytest.mark.parametrize("bad", [
    b"*1\r\n$x\r\n",                      # bulk length not a number
    b"*2\r\n$3\r\nGET\r\n:1\r\n",         # element is not a bulk string
    b"*1\r\n$3\r\nGETXX\r\n",             # bulk data longer than announced
    b"*zz\r\n",                           # bad multibulk count
])
def test_malformed_resp_gets_protocol_error_and_close(shared: Cluster, bad: bytes) -> None:
    node = shared.nodes[1]
    with socket.create_connection(("127.0.0.1", node.port), timeout=3) as s:
        s.sendall(resp_cmd("PING") + bad + resp_cmd("PING"))
        got = recv_until_closed(s)
    assert got.startswith(b"+PONG\r\n-ERR Protocol error"), got  # the good request before is answered
    assert got.endswith(b"\r\n") and got.count(b"\r\n") == 2, got  # nothing after the error
    # the node keeps serving everyone else
    assert rclient(node).ping() is True
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(b"PING\n")
        assert recv_exactly(s, 5) == b"PONG\n"


def test_plain_text_and_resp_mixed_on_one_connection(shared: Cluster) -> None:
    node = shared.nodes[0]
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(b"SET mix:a plain value\r\n" + resp_cmd("GET", "mix:a") + b"GET mix:a\n"
                  + resp_cmd("SET", "mix:b", "resp\r\nvalue") + resp_cmd("GET", "mix:b")
                  + b"PING\n" + resp_cmd("PING") + b"GET mix:none\n" + resp_cmd("GET", "mix:none"))
        want = (b"OK\n" + b"$11\r\nplain value\r\n" + b"VALUE plain value\n"
                + b"+OK\r\n" + b"$11\r\nresp\r\nvalue\r\n"
                + b"PONG\n" + b"+PONG\r\n" + b"NOT FOUND\n" + b"$-1\r\n")
        assert recv_exactly(s, len(want)) == want
    wait_until(lambda: rclient(shared.nodes[2]).get("mix:a") == b"plain value")


# --- redis-cli ----------------------------------------------------------------------------------
def test_redis_cli_set_on_one_node_get_on_another(shared: Cluster) -> None:
    a, b = shared.nodes[0], shared.nodes[1]
    r = cli(a, "set", "cli:a", "b")
    assert r.returncode == 0 and r.stdout == b"OK\n", r
    wait_until(lambda: rclient(b).get("cli:a") == b"b", what="cli:a on node1")
    r = cli(b, "get", "cli:a")
    assert r.returncode == 0 and r.stdout == b"b\n", r
    assert cli(b, "get", "cli:missing").stdout == b"\n"  # redis-cli prints nil as an empty line


def test_redis_cli_reads_commands_from_stdin(shared: Cluster) -> None:
    node = shared.nodes[2]
    r = subprocess.run(f"echo PING | {REDIS_CLI} -p {node.port}", shell=True,
                       capture_output=True, timeout=20)
    assert r.returncode == 0 and r.stdout == b"PONG\n", r
    r = cli(node, stdin=b"SET clin:k hello\nGET clin:k\nDBSIZE\nNOSUCHCMD\n")
    lines = r.stdout.decode().splitlines()
    assert lines[:2] == ["OK", "hello"], r
    assert lines[2].isdigit() and int(lines[2]) >= 1, r
    assert "unknown command" in (r.stdout + r.stderr).decode(), r


# --- handshake ----------------------------------------------------------------------------------
def test_hello_3_is_refused_or_answered_in_resp3(shared: Cluster) -> None:
    node = shared.nodes[0]
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(resp_cmd("HELLO", "3"))
        first = s.recv(65536)
        if first.startswith(b"-"):  # RESP2-only server: an error reply, connection stays usable
            assert first.startswith(b"-NOPROTO") and first.endswith(b"\r\n"), first
            s.sendall(resp_cmd("PING"))
            assert recv_exactly(s, 7) == b"+PONG\r\n"
        else:  # or a real RESP3 switch: a map with proto 3
            assert first.startswith(b"%") and b"$5\r\nproto\r\n:3\r\n" in first, first
    r = rclient(node)
    hello = r.execute_command("HELLO", "2")
    fields = dict(zip(hello[::2], hello[1::2]))
    assert fields[b"proto"] == 2 and fields[b"server"]
    with pytest.raises(redis.ResponseError, match="NOPROTO"):
        r.execute_command("HELLO", "4")
    assert r.ping() is True


def test_client_setname_and_client_name_option(shared: Cluster) -> None:
    node = shared.nodes[1]
    r = rclient(node, client_name="worker-1")
    assert r.ping() is True
    assert r.client_setname("worker-2") is True
    assert r.execute_command("CLIENT", "SETNAME", "w3") in (True, b"OK")
    assert r.set("cn:k", "v") is True and r.get("cn:k") == b"v"


def test_redis_py_protocol_2_handshake_with_client_name(shared: Cluster) -> None:
    r = redis.Redis(host="127.0.0.1", port=shared.nodes[2].port, protocol=2, client_name="x",
                    socket_timeout=5)
    assert r.ping() is True


def test_redis_py_default_handshake(shared: Cluster) -> None:
    """redis.Redis(port=..., client_name=...) with redis-py's *default* protocol must work.

    redis-py >= 8.0 defaults to RESP3: every new connection sends ``HELLO 3`` and treats an error
    reply as fatal, so a RESP2-only server cannot be used with default settings.  Once it
    connects, null replies must also be RESP3 nulls: redis-py's RESP3 parser misreads ``$-1``.
    """
    node = shared.nodes[0]
    r = redis.Redis(host="127.0.0.1", port=node.port, client_name="x", socket_timeout=5)
    assert r.ping() is True
    assert r.set("dh:k", b"v\r\n") is True
    assert r.get("dh:missing") is None
    assert r.get("dh:k") == b"v\r\n"  # the stream is still in sync after the null
    assert r.mget("dh:k", "dh:missing", "dh:k") == [b"v\r\n", None, b"v\r\n"]
    assert r.exists("dh:k") == 1 and r.echo("e") == b"e"
    assert r.info("replication")["node_id"] == "node0"
    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.get("dh:missing").get("dh:k")
    assert pipe.execute() == [None, b"v\r\n"] * 50


def test_config_get_with_default_and_resp2_clients(shared: Cluster) -> None:
    """CONFIG GET (which redis-benchmark and tools send) in both protocols.

    In RESP3 Redis answers CONFIG GET with a map, and redis-py's RESP3 callback calls
    ``.items()`` on the reply: a flat array there raises AttributeError in ``config_get()``.
    """
    node = shared.nodes[1]
    assert rclient(node).config_get("save") == {"save": ""}
    r = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)  # redis-py's default protocol
    assert r.config_get("nosuchsetting") == {}
    assert r.config_get("appendonly") == {"appendonly": "no"}
    assert r.config_get("save") == {"save": ""}
    assert r.ping() is True
