"""Progress lines of long operations: at most one per interval, with total, share and rate."""

from __future__ import annotations

import logging

from zkv.progress import Progress


def test_progress_logs_at_most_once_per_interval(caplog) -> None:
    now = [0.0]
    p = Progress(logging.getLogger("t"), "loading", total=1000, every=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t"):
        for _ in range(10):  # 10 chunks of 100 over 2.5 s: lines at 1.0 s and 2.0 s only
            now[0] += 0.25
            p.add(100)
    assert p.lines == 2
    assert caplog.messages == ["loading: 400 of 1,000 (40%), 400/s", "loading: 800 of 1,000 (80%), 400/s"]
    q = Progress(logging.getLogger("t"), "transfer", clock=lambda: now[0])
    now[0] += 2
    q.add(5000)
    assert q.line(now[0] + 0).startswith("transfer: 5,000 so far")
