"""When a store snapshots: after about ``snapshot_records`` logged writes, jittered per node so
that a cluster, whose nodes all log every write, does not snapshot everywhere at once."""

from __future__ import annotations

from zkv.store.server import snapshot_threshold


def test_threshold_is_within_a_quarter_and_varies() -> None:
    draws = [snapshot_threshold(1_000_000) for _ in range(200)]
    assert all(750_000 <= d <= 1_250_000 for d in draws)
    assert len(set(draws)) > 100  # nodes drawing the same threshold would snapshot together
