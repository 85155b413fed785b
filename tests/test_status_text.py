"""What zkv status prints (zkv.status): why a port did not answer, and the table: pure."""

from __future__ import annotations

import socket
import ssl

from zkv.status import explain


def test_each_failure_says_what_to_do() -> None:
    assert explain(ConnectionError("NOAUTH Authentication required."), False) == (
        "needs --password (the node requires AUTH)")
    assert explain(ConnectionError("WRONGPASS invalid username-password pair"), False) == (
        "wrong --password")
    assert "nothing listens" in explain(ConnectionRefusedError(111, "refused"), False)
    assert "no answer in time" in explain(socket.timeout("timed out"), False)
    assert "use --tls" in explain(ConnectionError("connection closed"), False)
    assert "without --tls" in explain(ssl.SSLError(1, "wrong version number"), True)
    assert explain(ValueError("odd"), False) == "ValueError: odd"


def test_the_status_table_fits_80_columns() -> None:
    """Headers whole, no cell wrapped: a cluster with some lag, a node refusing writes, one down."""
    from rich.console import Console

    from zkv.status import Report, render

    def info(i: int) -> dict:
        return {"id": f"node{i}", "origin": f"node{i}@6b0f94a95c2b8a4f", "keys": 250_000,
                "vv": {f"node{i}@6b0f94a95c2b8a4f": 100},
                "peers": {"a": {"connected": True, "lag": {"events": 1200, "ms": 3400},
                                "clock_offset_ms": -40}, "b": {"connected": False, "lag": {}}},
                "clock": {"refusing": "clock skew" if i == 1 else ""},
                "disk": {"log_bytes": 123_456_789}, "memory": {"store_rss": 900_000_000},
                "uptime_s": 123_456, "clients": 120}

    reports = [Report("node0", info(0)), Report("node1", info(1)),
               Report("node2", None, "nothing listens there (node down, or a wrong port)")]
    console = Console(width=80, record=True)
    console.print(render(reports))
    lines = console.export_text().splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines)
    assert not any("…" in line for line in lines), "\n".join(lines)
    rows = [line.split()[0] for line in lines[2:5]]
    assert rows == ["node0", "node1", "node2"], "\n".join(lines)  # one line each: no wrapping


def test_tls_failures_say_which_side_is_wrong() -> None:
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert "--cacert" in explain(untrusted, True)
    assert "drop --password" in explain(ConnectionError(
        "AUTH <password> called without any password configured for the default user."), False)
