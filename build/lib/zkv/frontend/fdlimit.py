"""The frontend's open-file limit: room for ``max_clients`` connections, as Redis does it.

Each client connection is one file descriptor.  Under a soft limit of 1,024 (the common
default) a node would run out at about a thousand clients, and the event loop would then leave
further clients hanging in the accept queue.  At start the frontend raises its limit
(zkv.fdlimit) to ``max_clients + RESERVE``; when the system does not allow that, it lowers its
effective ``max_clients`` to what the limit obtained leaves, logs both, and refuses clients
past it with a reply.  ``effective_clients`` is pure; ``apply`` calls setrlimit.
"""

from __future__ import annotations

from dataclasses import dataclass

from zkv.fdlimit import raise_to

RESERVE = 64  # descriptors kept for the loop, the store link, logs, and refusing clients


@dataclass(frozen=True, slots=True)
class Limits:
    soft: int
    hard: int
    max_clients: int  # what the descriptors obtained allow


def effective_clients(wanted: int, soft: int) -> int:
    return max(1, min(wanted, soft - RESERVE))


def apply(max_clients: int) -> tuple[Limits, Limits]:
    """Raise RLIMIT_NOFILE toward ``max_clients + RESERVE``; returns (before, after)."""
    before, after = raise_to(max_clients + RESERVE)
    return (Limits(before.soft, before.hard, effective_clients(max_clients, before.soft)),
            Limits(after.soft, after.hard, effective_clients(max_clients, after.soft)))
