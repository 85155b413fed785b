"""The password check and the failure delay (zkv.auth); AUTH and HELLO parsing (zkv.commands)."""

from __future__ import annotations

from zkv.auth import FREE_FAILURES, MAX_DELAY, Password, failure_delay
from zkv.commands import Auth, Hello, before_auth, dispatch


def resp_args(*a: bytes) -> list[bytes]:
    return list(a)


def test_auth_forms_parse_in_both_protocols() -> None:
    a = dispatch([b"AUTH", b"pw"], True)
    assert isinstance(a, Auth) and (a.username, a.password, a.is_resp) == (None, b"pw", True)
    a = dispatch([b"auth", b"default", b"pw"], True)
    assert isinstance(a, Auth) and a.username == b"default"
    a = dispatch([b"AUTH", b"pw"], False)
    assert isinstance(a, Auth) and a.ok == b"OK\n" and not a.is_resp
    assert dispatch([b"AUTH", b"a", b"b", b"c"], True) == b"-ERR syntax error\r\n"
    assert dispatch([b"AUTH"], False).startswith(b"ERROR wrong number")
    h = dispatch([b"HELLO", b"3", b"AUTH", b"default", b"pw", b"SETNAME", b"me"], True)
    assert isinstance(h, Auth) and isinstance(h.hello, Hello) and h.hello.proto == 3
    assert isinstance(dispatch([b"HELLO", b"3", b"SETNAME", b"me"], True), Hello)
    assert dispatch([b"HELLO", b"3", b"AUTH", b"x"], True).startswith(b"-ERR Syntax error in HELLO")


def test_before_auth_lets_through_only_what_authenticating_needs() -> None:
    assert before_auth([b"GET", b"k"], True) == b"-NOAUTH Authentication required.\r\n"
    assert before_auth([b"SET", b"k", b"v"], False) == b"ERROR NOAUTH Authentication required\n"
    assert before_auth([b"ping"], False) == b"PONG\n"
    assert isinstance(before_auth([b"AUTH", b"x"], True), Auth)
    assert isinstance(before_auth([b"HELLO", b"2"], True), Hello)


def test_password_check() -> None:
    pw = Password("s3cret")
    ok, yes = pw.check(dispatch([b"AUTH", b"s3cret"], True))
    assert (ok, yes) == (b"+OK\r\n", True)
    assert pw.check(dispatch([b"AUTH", b"default", b"s3cret"], True)) == (b"+OK\r\n", True)
    wrong = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    assert pw.check(dispatch([b"AUTH", b"s3cre"], True)) == (wrong, False)
    assert pw.check(dispatch([b"AUTH", b"s3cret "], True)) == (wrong, False)
    assert pw.check(dispatch([b"AUTH", b"bob", b"s3cret"], True)) == (wrong, False)
    assert pw.check(dispatch([b"AUTH", b"x"], False))[0].startswith(b"ERROR WRONGPASS")


def test_no_password_configured_behaves_like_redis() -> None:
    none = Password(None)
    assert not none.required
    reply, _ = none.check(dispatch([b"AUTH", b"x"], True))
    assert reply.startswith(b"-ERR AUTH <password> called without any password configured")
    assert none.check(dispatch([b"AUTH", b"default", b"any"], True))[0] == b"+OK\r\n"


def test_failure_delay_grows_and_is_capped() -> None:
    assert [failure_delay(n) for n in range(1, FREE_FAILURES + 1)] == [0.0] * FREE_FAILURES
    delays = [failure_delay(n) for n in range(FREE_FAILURES + 1, FREE_FAILURES + 12)]
    assert delays[0] > 0 and delays == sorted(delays) and delays[-1] == MAX_DELAY
