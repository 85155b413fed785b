"""What zkv status says when a client port does not answer (zkv.status.explain): pure."""

from __future__ import annotations

import socket
import ssl

from zkv.status import explain


def test_each_failure_says_what_to_do() -> None:
    assert explain(ConnectionError("NOAUTH Authentication required."), False, False) == (
        "needs --password (the node requires AUTH)")
    assert explain(ConnectionError("WRONGPASS invalid username-password pair"), False, True) == (
        "wrong --password")
    assert "nothing listens" in explain(ConnectionRefusedError(111, "refused"), False, False)
    assert "no answer in time" in explain(socket.timeout("timed out"), False, False)
    assert "use --tls" in explain(ConnectionError("connection closed"), False, False)
    assert "without --tls" in explain(ssl.SSLError(1, "wrong version number"), True, False)
    assert explain(ValueError("odd"), False, False) == "ValueError: odd"
