"""Steps the simulator tests share: let virtual time pass, and heal everything then check."""

from __future__ import annotations

from zkv.sim.checker import check
from zkv.sim.world import World


def settle(w: World, seconds: float) -> None:
    w.run_until(w.t + seconds)


def final_check(w: World, seconds: float = 20.0) -> list[str]:
    """Every node up and unpaused on the true clock, ``seconds`` to converge, the checker's verdict."""
    for n in w.nodes.values():
        n.offset_ms = 0.0
        n.paused_until = 0.0
        if not n.up:
            w.start(n.id)
    settle(w, seconds)
    return [str(v) for v in check(w.ops, *w.final_state())]
