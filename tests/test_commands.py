"""Unit tests for zkv.commands (the command table), checking exact reply bytes for both protocols.

``dispatch`` returns bytes (an immediate reply), a ``Deferred`` (store ops + an encoder of their
results) or a ``Quit``.  Deferred replies are checked by running the encoder on the results a
store would return for the ops.
"""

from __future__ import annotations

from typing import Any

import pytest

from zkv import __version__
from zkv.commands import Deferred, Hello, Quit, dispatch, format_info, unknown, wrong_arity


def plain(*args: bytes) -> Any:
    return dispatch(list(args), False)


def resp(*args: bytes) -> Any:
    return dispatch(list(args), True)


def deferred(reply: Any) -> Deferred:
    assert isinstance(reply, Deferred), reply
    return reply


# ================================================================== plain-text protocol


def test_plain_set() -> None:
    d = deferred(plain(b"SET", b"k", b"v w"))
    assert d.ops == [("s", b"k", b"v w")]
    assert d.encode([None]) == b"OK\n"


def test_plain_set_empty_value() -> None:
    d = deferred(plain(b"SET", b"k", b""))
    assert d.ops == [("s", b"k", b"")]
    assert d.encode([None]) == b"OK\n"


def test_plain_get_found_and_not_found() -> None:
    d = deferred(plain(b"GET", b"k"))
    assert d.ops == [("g", b"k")]
    assert d.encode([b"hello world"]) == b"VALUE hello world\n"
    assert d.encode([b""]) == b"VALUE \n"
    assert d.encode([None]) == b"NOT FOUND\n"


def test_plain_get_of_a_value_with_a_newline_is_one_error_line() -> None:
    """Written over RESP, such a value has no plain-text form: as VALUE it would be two lines,
    and a plain client would read the second as the reply to its next request."""
    d = deferred(plain(b"GET", b"k"))
    for v in (b"line1\nline2", b"\n", b"a\r\nb"):
        reply = d.encode([v])
        assert reply.startswith(b"ERROR ") and reply.count(b"\n") == 1 and reply.endswith(b"\n")
    assert d.encode([b"carriage\rreturn"]) == b"VALUE carriage\rreturn\n"  # one line still


def test_info_names_the_redis_version_it_follows() -> None:
    text = format_info({"id": "node0", "keys": 0})
    assert "redis_version:7." in text and f"zkv_version:{__version__}" in text


@pytest.mark.parametrize("name", [b"DELETE", b"DEL", b"delete", b"del"])
def test_plain_delete(name: bytes) -> None:
    d = deferred(plain(name, b"k"))
    assert d.ops == [("d", b"k")]
    assert d.encode([1]) == b"OK\n"
    assert d.encode([0]) == b"OK\n"  # deleting a missing key is still OK


def test_plain_ping() -> None:
    assert plain(b"PING") == b"PONG\n"


def test_inline_commands_ending_in_crlf_get_redis_replies_except_the_text_protocols_own() -> None:
    from zkv.commands import dispatch
    assert dispatch([b"PING"], None) == b"+PONG\r\n"  # redis-benchmark's PING_INLINE
    assert dispatch([b"ECHO", b"hi"], None) == b"$2\r\nhi\r\n"
    d = dispatch([b"SET", b"k", b"v"], None)
    assert d.encode([None]) == b"OK\n"  # the text protocol's own: its replies, whatever the ending
    assert dispatch([b"GET", b"k"], None).encode([None]) == b"NOT FOUND\n"
    assert dispatch([b"NOSUCH"], None) == b"ERROR unknown command 'NOSUCH'\n"
    assert dispatch([b"MGET", b"a"], False) == b"ERROR unknown command 'MGET'\n"  # (nc: LF)
    assert dispatch([b"MGET", b"a"], None).encode([b"1"]) == b"*1\r\n$1\r\n1\r\n"


def test_plain_quit() -> None:
    q = plain(b"QUIT")
    assert isinstance(q, Quit)
    assert q.reply == b"OK\n"


@pytest.mark.parametrize("args", [
    [b"set", b"k", b"v"], [b"Set", b"k", b"v"], [b"get", b"k"], [b"gEt", b"k"],
    [b"ping"], [b"quit"],
])
def test_plain_case_insensitive(args: list[bytes]) -> None:
    upper = dispatch([args[0].upper(), *args[1:]], False)
    got = dispatch(args, False)
    if isinstance(upper, Deferred):
        assert isinstance(got, Deferred)
        assert got.ops == upper.ops
        assert got.encode([None]) == upper.encode([None])
    else:
        assert got == upper


def test_plain_unknown_command() -> None:
    assert plain(b"FROB", b"x") == b"ERROR unknown command 'FROB'\n"
    assert plain(b"frob") == b"ERROR unknown command 'frob'\n"


@pytest.mark.parametrize("name", [b"REPL_SET", b"REPL_DELETE", b"MGET", b"EXISTS", b"INFO"])
def test_plain_internal_and_resp_only_commands_are_unknown(name: bytes) -> None:
    assert plain(name, b"k", b"v") == b"ERROR unknown command '%s'\n" % name


def test_plain_unknown_long_name_is_shortened() -> None:
    got = plain(b"X" * 100)
    assert got == b"ERROR unknown command '" + b"X" * 64 + b"...'\n"


@pytest.mark.parametrize("args, name", [
    ([b"GET"], b"GET"),
    ([b"GET", b"a", b"b"], b"GET"),
    ([b"get"], b"GET"),
    ([b"SET", b"k"], b"SET"),
    ([b"SET"], b"SET"),
    ([b"DELETE"], b"DELETE"),
    ([b"DEL", b"a", b"b"], b"DEL"),
    ([b"PING", b"x"], b"PING"),
    ([b"QUIT", b"now"], b"QUIT"),
])
def test_plain_wrong_arity(args: list[bytes], name: bytes) -> None:
    assert plain(*args) == b"ERROR wrong number of arguments for '%s'\n" % name


def test_plain_wrong_arity_exact_text() -> None:
    assert plain(b"GET") == b"ERROR wrong number of arguments for 'GET'\n"


# ================================================================== RESP


def test_resp_set() -> None:
    d = deferred(resp(b"SET", b"k", b"v"))
    assert d.ops == [("s", b"k", b"v")]
    assert d.encode([None]) == b"+OK\r\n"


def test_resp_set_expiry_options_and_bad_options() -> None:
    assert deferred(resp(b"SET", b"k", b"v", b"EX", b"10")).ops == [("se", b"k", b"v", 0, False, 1, 10_000)]
    assert deferred(resp(b"SET", b"k", b"v", b"NX", b"PXAT", b"1700000000000", b"GET")).ops == [
        ("se", b"k", b"v", 1, True, 2, 1_700_000_000_000)]
    assert deferred(resp(b"SET", b"k", b"v", b"keepttl")).ops == [("se", b"k", b"v", 0, False, 3, 0)]
    assert resp(b"SET", b"k", b"v", b"EX", b"0") == b"-ERR invalid expire time in 'set' command\r\n"
    assert resp(b"SET", b"k", b"v", b"PX", b"-5") == b"-ERR invalid expire time in 'set' command\r\n"
    assert resp(b"SET", b"k", b"v", b"EX", b"ten") == b"-ERR value is not an integer or out of range\r\n"
    assert resp(b"SET", b"k", b"v", b"EX") == b"-ERR syntax error\r\n"
    assert resp(b"SET", b"k", b"v", b"EX", b"1", b"PX", b"1") == b"-ERR syntax error\r\n"
    assert resp(b"SET", b"k", b"v", b"EX", b"1", b"KEEPTTL") == b"-ERR syntax error\r\n"
    assert resp(b"SET", b"k", b"v", b"NX", b"XX") == b"-ERR syntax error\r\n"
    assert resp(b"SET", b"k", b"v", b"GET", b"GET") == b"-ERR syntax error\r\n"
    assert resp(b"SET", b"k", b"v", b"BOGUS") == b"-ERR syntax error\r\n"


def test_resp_get() -> None:
    d = deferred(resp(b"GET", b"k"))
    assert d.ops == [("g", b"k")]
    assert d.encode([b"val"]) == b"$3\r\nval\r\n"
    assert d.encode([b""]) == b"$0\r\n\r\n"
    assert d.encode([None]) == b"$-1\r\n"


@pytest.mark.parametrize("name", [b"DEL", b"DELETE", b"del"])
def test_resp_del_counts(name: bytes) -> None:
    d = deferred(resp(name, b"a", b"b", b"c"))
    assert d.ops == [("d", b"a"), ("d", b"b"), ("d", b"c")]
    assert d.encode([1, 0, 1]) == b":2\r\n"
    assert d.encode([0, 0, 0]) == b":0\r\n"


def test_resp_exists() -> None:
    d = deferred(resp(b"EXISTS", b"a", b"b", b"a"))
    assert d.ops == [("g", b"a"), ("g", b"b"), ("g", b"a")]
    assert d.encode([b"1", None, b"1"]) == b":2\r\n"
    assert d.encode([b"", None, None]) == b":1\r\n"  # an empty value exists


def test_resp_mget() -> None:
    d = deferred(resp(b"MGET", b"a", b"b"))
    assert d.ops == [("g", b"a"), ("g", b"b")]
    assert d.encode([b"x", None]) == b"*2\r\n$1\r\nx\r\n$-1\r\n"


def test_resp_mset() -> None:
    d = deferred(resp(b"MSET", b"a", b"1", b"b", b"2"))
    assert d.ops == [("s", b"a", b"1"), ("s", b"b", b"2")]
    assert d.encode([None, None]) == b"+OK\r\n"


@pytest.mark.parametrize("args", [[b"MSET", b"a"], [b"MSET", b"a", b"1", b"b"]])
def test_resp_mset_odd_arity(args: list[bytes]) -> None:
    assert resp(*args) == b"-ERR wrong number of arguments for 'mset' command\r\n"


def test_resp_ping() -> None:
    assert resp(b"PING") == b"+PONG\r\n"
    assert resp(b"PING", b"hello") == b"$5\r\nhello\r\n"
    assert resp(b"PING", b"a", b"b") == b"-ERR wrong number of arguments for 'ping' command\r\n"


def test_resp_echo() -> None:
    assert resp(b"ECHO", b"hi there") == b"$8\r\nhi there\r\n"
    assert resp(b"ECHO") == b"-ERR wrong number of arguments for 'echo' command\r\n"


def test_resp_dbsize() -> None:
    d = deferred(resp(b"DBSIZE"))
    assert d.ops == [("n",)]
    assert d.encode([42]) == b":42\r\n"


def test_resp_quit() -> None:
    q = resp(b"QUIT")
    assert isinstance(q, Quit) and q.reply == b"+OK\r\n"


def test_resp_command_and_docs() -> None:
    assert resp(b"COMMAND") == b"*0\r\n"
    assert resp(b"COMMAND", b"DOCS") == b"*0\r\n"
    assert resp(b"command", b"docs", b"get") == b"*0\r\n"
    count = resp(b"COMMAND", b"COUNT")
    assert count.startswith(b":") and int(count[1:-2]) >= 15


def test_resp_config_get() -> None:
    assert resp(b"CONFIG", b"GET", b"maxmemory") == b"*0\r\n"
    assert resp(b"CONFIG", b"get", b"save") == b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    assert resp(b"CONFIG", b"GET", b"appendonly") == b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
    assert resp(b"CONFIG", b"GET") == b"*0\r\n"
    assert resp(b"CONFIG", b"SET", b"x", b"y").startswith(b"-ERR")
    assert resp(b"CONFIG") == b"-ERR wrong number of arguments for 'config' command\r\n"


def test_resp_client() -> None:
    assert resp(b"CLIENT", b"SETNAME", b"me") == b"+OK\r\n"
    assert resp(b"client", b"setinfo", b"lib-name", b"redis-py") == b"+OK\r\n"
    assert resp(b"CLIENT", b"GETNAME") == b"$-1\r\n"
    assert resp(b"CLIENT", b"ID") == b":0\r\n"
    assert resp(b"CLIENT", b"KILL") == b"-ERR unknown subcommand 'KILL'\r\n"


def test_resp_hello() -> None:
    for args in ([b"HELLO"], [b"HELLO", b"2"]):
        got = resp(*args)
        if isinstance(got, Hello):
            assert got.proto == 2
            got = got.reply
        assert got.startswith(b"*14\r\n")
        assert b"$6\r\nserver\r\n$3\r\nzkv\r\n" in got
        assert b"$5\r\nproto\r\n:2\r\n" in got
        assert b"$7\r\nversion\r\n$5\r\n7.2.0\r\n" in got  # as INFO's redis_version
    h3 = resp(b"HELLO", b"3")
    assert isinstance(h3, Hello) and h3.proto == 3
    assert h3.reply.startswith(b"%7\r\n") and b"$5\r\nproto\r\n:3\r\n" in h3.reply
    assert resp(b"HELLO", b"4") == b"-NOPROTO unsupported protocol version\r\n"


def test_resp3_nulls() -> None:
    """After HELLO 3 a missing key is RESP3's null, which redis-py's RESP3 parser needs."""
    get = dispatch([b"GET", b"k"], True, resp3=True)
    assert isinstance(get, Deferred) and get.encode([None]) == b"_\r\n"
    assert get.encode([b"v"]) == b"$1\r\nv\r\n"
    mget = dispatch([b"MGET", b"a", b"b"], True, resp3=True)
    assert isinstance(mget, Deferred) and mget.encode([b"x", None]) == b"*2\r\n$1\r\nx\r\n_\r\n"
    assert dispatch([b"CLIENT", b"GETNAME"], True, resp3=True) == b"_\r\n"
    assert dispatch([b"GET", b"k"], True).encode([None]) == b"$-1\r\n"  # type: ignore[union-attr]


def test_resp_select() -> None:
    assert resp(b"SELECT", b"0") == b"+OK\r\n"
    assert resp(b"SELECT", b"1") == b"-ERR DB index is out of range\r\n"


def test_resp_unknown_command() -> None:
    assert resp(b"foo") == b"-ERR unknown command 'foo'\r\n"
    assert resp(b"FOO", b"a", b"b") == b"-ERR unknown command 'FOO'\r\n"


@pytest.mark.parametrize("name", [b"REPL_SET", b"REPL_DELETE"])
def test_resp_internal_commands_unknown(name: bytes) -> None:
    assert resp(name, b"k", b"v") == b"-ERR unknown command '%s'\r\n" % name


def test_resp_unknown_name_cannot_break_framing() -> None:
    got = resp(b"a\r\nb")
    assert got.count(b"\r\n") == 1 and got.endswith(b"\r\n")
    assert got.startswith(b"-ERR unknown command")


@pytest.mark.parametrize("args, name", [
    ([b"GET"], b"get"),
    ([b"GET", b"a", b"b"], b"get"),
    ([b"get"], b"get"),
    ([b"SET", b"k"], b"set"),
    ([b"DEL"], b"del"),
    ([b"EXISTS"], b"exists"),
    ([b"MGET"], b"mget"),
    ([b"DBSIZE", b"x"], b"dbsize"),
    ([b"SELECT"], b"select"),
    ([b"CLIENT"], b"client"),
])
def test_resp_wrong_arity_like_redis(args: list[bytes], name: bytes) -> None:
    assert resp(*args) == b"-ERR wrong number of arguments for '%s' command\r\n" % name


@pytest.mark.parametrize("args", [
    [b"get", b"k"], [b"Set", b"k", b"v"], [b"mget", b"a"], [b"ping"], [b"dbsize"], [b"echo", b"x"],
])
def test_resp_case_insensitive(args: list[bytes]) -> None:
    upper = resp(args[0].upper(), *args[1:])
    got = resp(*args)
    if isinstance(upper, Deferred):
        assert isinstance(got, Deferred) and got.ops == upper.ops
    else:
        assert got == upper


def test_error_helpers() -> None:
    assert unknown(b"x", False) == b"ERROR unknown command 'x'\n"
    assert unknown(b"x", True) == b"-ERR unknown command 'x'\r\n"
    assert wrong_arity(b"Get", False) == b"ERROR wrong number of arguments for 'GET'\n"
    assert wrong_arity(b"Get", True) == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert unknown(b"\xff", False) == "ERROR unknown command '\ufffd'\n".encode()


# ------------------------------------------------------------------ INFO


INFO: dict[str, Any] = {
    "id": "n1",
    "keys": 7,
    "tombstones": 2,
    "seq": 12,
    "vv": {"n2": 5, "n1": 12},
    "digest": "abcd",
    "fsync": "everysec",
    "peers": {
        "n2": {"connected": True, "vv": {"n1": 11, "n2": 5}},
        "n3": {"connected": False, "vv": {}},
    },
    "syncing": False,
    "stats": {"events_applied": 3},
    "recovery": {"loaded_keys": 4},
    "snapshots": {"count": 1},
}


def info_reply(*args: bytes) -> str:
    d = deferred(resp(b"INFO", *args))
    assert d.ops == [("i",)]
    raw = d.encode([INFO])
    assert raw.startswith(b"$")
    header, _, body = raw.partition(b"\r\n")
    assert int(header[1:]) == len(body) - 2 and body.endswith(b"\r\n")
    return body[:-2].decode()


def test_info_sections() -> None:
    text = info_reply()
    for section in ("# Server", "# Replication", "# Persistence", "# Keyspace"):
        assert section + "\r\n" in text
    assert "\r\nrole:master\r\n" in text
    assert "\r\nnode_id:n1\r\n" in text
    assert "\r\nseq:12\r\n" in text
    assert "\r\nvv:n1=12,n2=5\r\n" in text
    assert "\r\nconnected_peers:1\r\n" in text
    assert "\r\npeers:2\r\n" in text
    assert "\r\npeer0:id=n2,connected=1,lag_events=0,lag_ms=0,acked=0,n1=11,n2=5\r\n" in text
    assert "\r\npeer1:id=n3,connected=0" in text
    assert "\r\nsyncing:0\r\n" in text
    assert "\r\nevents_applied:3\r\n" in text
    assert "\r\nloaded_keys:4\r\n" in text
    assert "\r\nsnapshot_count:1\r\n" in text
    assert "db0:keys=7,expires=0,avg_ttl=0\r\n" in text
    assert "tombstones:2\r\n" in text
    assert f"zkv_version:{__version__}\r\n" in text


def test_info_one_section() -> None:
    text = info_reply(b"keyspace")
    assert text.startswith("# Keyspace\r\n")
    assert "# Replication" not in text and "# Server" not in text
    text = info_reply(b"Replication")
    assert text.startswith("# Replication\r\n") and "# Keyspace" not in text
    assert info_reply(b"nosuchsection") == ""
    assert "# Keyspace" in info_reply(b"all") and "# Server" in info_reply(b"all")


def test_format_info_minimal_dict() -> None:
    text = format_info({"id": "x", "keys": 0})
    assert "# Replication\r\n" in text
    assert "# Keyspace\r\ndb0:keys=0,expires=0,avg_ttl=0\r\ntombstones:0\r\n" in text
    assert "connected_peers:0\r\n" in text


def test_set_and_get_shortcut_gives_what_the_command_table_gives() -> None:
    """dispatch answers upper-case SET and GET without the table; a lower-case name takes the
    table's path, and both must give the same reply, in RESP2 and RESP3."""
    for args in ([b"SET", b"k", b"v"], [b"GET", b"k"], [b"SET", b"k", b"v", b"EX"], [b"GET"]):
        for resp3 in (False, True):
            fast = dispatch(args, True, resp3)
            table = dispatch([args[0].lower(), *args[1:]], True, resp3)
            if fast.__class__ is Deferred:
                assert fast == table
            else:  # errors name the command as the client spelled it
                assert fast.lower() == table.lower()


def test_format_info_persistence_shows_the_background_fsync() -> None:
    text = format_info({"id": "x", "keys": 0, "fsync": "everysec",
                        "background_fsync": {"syncs": 3, "delayed": 1, "max_ms": 12.5}})
    assert "fsync:everysec\r\n" in text  # the mode, in # Server
    persistence = text.split("# Persistence\r\n", 1)[1]
    assert "fsync_syncs:3\r\nfsync_delayed:1\r\nfsync_max_ms:12.5\r\n" in persistence


def test_format_info_listeners_section() -> None:
    text = format_info({"id": "x", "keys": 0, "listeners": {
        "bus": {"accepted": 3, "open": 1}, "store_open_files_limit": 1024}})
    assert "# Listeners\r\nbus:accepted=3,open=1\r\nstore_open_files_limit:1024\r\n" in text


def test_expire_family_and_its_options() -> None:
    assert deferred(resp(b"EXPIRE", b"k", b"10")).ops == [("ex", b"k", 1, 10_000, 0)]
    assert deferred(resp(b"PEXPIRE", b"k", b"-1", b"gt")).ops == [("ex", b"k", 1, -1, 3)]
    assert deferred(resp(b"EXPIREAT", b"k", b"1700000000", b"NX")).ops == [("ex", b"k", 2, 1_700_000_000_000, 1)]
    assert deferred(resp(b"PEXPIREAT", b"k", b"5", b"XX", b"XX")).ops == [("ex", b"k", 2, 5, 2)]
    assert resp(b"EXPIRE", b"k", b"1", b"NX", b"GT") == (
        b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n")
    assert resp(b"EXPIRE", b"k", b"1", b"GT", b"LT") == b"-ERR GT and LT options at the same time are not compatible\r\n"
    assert resp(b"EXPIRE", b"k", b"1", b"SOON") == b"-ERR Unsupported option SOON\r\n"
    assert resp(b"EXPIRE", b"k", b"x") == b"-ERR value is not an integer or out of range\r\n"
    assert resp(b"EXPIRE", b"k", b"%d" % (1 << 60)) == b"-ERR invalid expire time in 'expire' command\r\n"
    assert deferred(resp(b"EXPIRE", b"k", b"1")).encode([1]) == b":1\r\n"


def test_ttl_and_its_kin_from_the_stores_expiry_and_clock() -> None:
    for name, want in ((b"TTL", b":3\r\n"), (b"PTTL", b":2500\r\n"),
                       (b"EXPIRETIME", b":10\r\n"), (b"PEXPIRETIME", b":10000\r\n")):
        d = deferred(resp(name, b"k"))
        assert d.ops == [("tt", b"k")]
        assert d.encode([[10_000, 7_500]]) == want, name
        assert d.encode([-2]) == b":-2\r\n" and d.encode([-1]) == b":-1\r\n"


def test_setex_psetex_persist_getex() -> None:
    assert deferred(resp(b"SETEX", b"k", b"2", b"v")).ops == [("se", b"k", b"v", 0, False, 1, 2000)]
    assert deferred(resp(b"PSETEX", b"k", b"2", b"v")).ops == [("se", b"k", b"v", 0, False, 1, 2)]
    assert resp(b"SETEX", b"k", b"0", b"v") == b"-ERR invalid expire time in 'setex' command\r\n"
    assert deferred(resp(b"PERSIST", b"k")).ops == [("pe", b"k")]
    assert deferred(resp(b"GETEX", b"k")).ops == [("g", b"k")]
    assert deferred(resp(b"GETEX", b"k", b"PERSIST")).ops == [("gx", b"k", 4, 0)]
    assert deferred(resp(b"GETEX", b"k", b"EX", b"3")).ops == [("gx", b"k", 1, 3000)]
    assert resp(b"GETEX", b"k", b"EX") == b"-ERR syntax error\r\n"
    assert resp(b"GETEX", b"k", b"PX", b"0") == b"-ERR invalid expire time in 'getex' command\r\n"
