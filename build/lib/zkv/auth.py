"""Client authentication (Redis's ``requirepass``): the password check and the failure delay.

The node has at most one user, ``default``, whose password is the config's ``password``.  The
check compares SHA-256 digests with ``hmac.compare_digest``, so neither the length nor any
prefix of the password shows in how long a wrong one takes.  A connection that keeps failing
is slowed down: after ``FREE_FAILURES`` wrong passwords, each further one holds the connection
(no reading, no replies) for a delay that doubles up to ``MAX_DELAY``.  Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac

from zkv.commands import NO_PASSWORD, WRONGPASS_PLAIN, WRONGPASS_RESP, Auth
from zkv.protocol import resp

FREE_FAILURES = 3
FIRST_DELAY = 0.1  # seconds, after the first failure past the free ones
MAX_DELAY = 5.0
USER = b"default"


def _digest(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


class Password:
    """The node's password (None: no password, every connection starts authenticated)."""

    def __init__(self, password: str | None) -> None:
        self.required = password is not None
        self._digest = _digest(password.encode()) if password is not None else b""

    def check(self, a: Auth) -> tuple[bytes, bool]:
        """The reply to ``a`` and whether the connection is now authenticated."""
        wrong = WRONGPASS_RESP if a.is_resp else WRONGPASS_PLAIN
        if not self.required:
            if a.username is None:  # as Redis: AUTH <password> with no password configured
                return (resp.error(f"ERR {NO_PASSWORD}") if a.is_resp
                        else f"ERROR {NO_PASSWORD}\n".encode()), True
            return (a.ok, True) if a.username == USER else (wrong, True)
        same = hmac.compare_digest(_digest(a.password), self._digest)
        if same and a.username in (None, USER):
            return a.ok, True
        return wrong, False


def failure_delay(failures: int) -> float:
    """Seconds a connection waits after its ``failures``-th wrong password."""
    if failures <= FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2 ** (failures - FREE_FAILURES - 1))
