"""Fixtures: a started 3-node cluster on free loopback ports, always stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = Cluster(tmp_path).start()
    try:
        yield c
    finally:
        c.kill()  # (nothing is checked after the test: no clean shutdown to wait for)


@pytest.fixture
def make_cluster(tmp_path) -> Iterator:
    """Build a cluster with custom settings: ``make_cluster(n=3, fsync="always")``; not started."""
    made: list[Cluster] = []

    def make(n: int = 3, **settings) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", n, **settings)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.kill()
