"""Clock skew between nodes: each peer's measured offset, and when a node must refuse writes.

Every heartbeat carries its sender's wall clock.  A sample ``sender's wall - our wall at
receipt`` can only be too low (by the time the heartbeat spent on the way or queued behind a
paused process), never too high, so a peer's offset is the highest of its last few samples.

A node refuses client writes while the stamps it would give them are more than
``max_clock_offset_ms`` off the median of the cluster's wall clocks (its own included).  Ahead,
its writes would beat later writes everywhere until the other clocks caught up; behind, they
would lose to earlier ones (and the bounded clock will not adopt its peers' stamps to catch up).
The stamp it would issue is ``max(wall, last stamp)``: a clock that stepped back across a restart
still continues from its last stamp, so it counts as ahead.  With an even number of clocks
known (itself and one of two peers, say, right after a restart) the median is two clocks that
may disagree; the one farther from the node's stamps is taken, so a node that cannot tell
whether its clock is the wrong one refuses writes rather than guesses (a 10-minute chaos run
lost a write to a node 3 s behind that had heard only one peer).  Pure.
"""

from __future__ import annotations

from collections import deque

SAMPLES = 8  # heartbeats per peer the offset estimate looks back over


class Offsets:
    """Per peer: its wall clock minus ours, in ms, from its recent heartbeats."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[int]] = {}
        self.current: dict[str, int] = {}

    def sample(self, peer: str, peer_wall: int, our_wall: int) -> None:
        samples = self._samples.get(peer)
        if samples is None:
            samples = self._samples[peer] = deque(maxlen=SAMPLES)
        samples.append(peer_wall - our_wall)
        self.current[peer] = max(samples)


def _median(own: int, clocks: list[int]) -> int:
    """The cluster's reference clock: the median of ``clocks``.  An even count (a node that has
    heard one of two peers since it started) has two middle clocks and no way to tell which is
    right: the one farther from ``own`` decides, so a node whose clock is off refuses rather
    than guesses."""
    clocks = sorted(clocks)
    mid = len(clocks) // 2
    if len(clocks) % 2:
        return clocks[mid]
    return max(clocks[mid - 1], clocks[mid], key=lambda c: abs(own - c))


def behind_peers(ours_ms: int, peers_ms: list[int], bound_ms: int) -> str | None:
    """Why client writes must be refused because our timestamps lag the ones our peers issue
    (``peers_ms``: each peer's last announced timestamp, in ms, carried forward by the time
    since), or None.  Wall clocks can all agree and still lie below what the cluster already
    stamped and announced - every clock stepped back together, or a node that lost its data
    directory - and a write stamped there could fall below a tombstone horizon.  The median of
    all the clocks decides (with an even count, the one farther from ours), as in ``refusal``."""
    if not peers_ms:
        return None
    behind = _median(ours_ms, [ours_ms, *peers_ms]) - ours_ms
    if behind > bound_ms:
        return (f"clock skew: this node's timestamps are {behind:.0f} ms behind its peers' "
                f"(max_clock_offset_ms = {bound_ms}); writes refused")
    return None


def refusal(wall: int, last_stamp_ms: int, offsets: list[int], bound_ms: int) -> str | None:
    """Why client writes must be refused now (``clock skew: ...``), or None.  ``offsets``: the
    peers' offsets.  With none (no peer heard yet), our own wall clock is the only reference:
    a stamp more than the bound past it - a clock that ran ahead, restarted on the true time,
    continues from the last stamp in its snapshot - is refused all the same."""
    own = max(wall, last_stamp_ms) - wall  # how far our next stamp lies past our wall clock
    ahead = own - _median(own, [0, *offsets])
    if ahead > bound_ms:
        return (f"clock skew: this node's clock is {ahead:.0f} ms ahead of the cluster's "
                f"(max_clock_offset_ms = {bound_ms}); writes refused")
    if -ahead > bound_ms:
        return (f"clock skew: this node's clock is {-ahead:.0f} ms behind the cluster's "
                f"(max_clock_offset_ms = {bound_ms}); writes refused")
    return None
