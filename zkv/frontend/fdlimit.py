"""The frontend's open-file limit: room for ``max_clients`` connections, as Redis does it.

Each client connection is one file descriptor.  Under a soft limit of 1,024 (the common
default) a node would run out at about a thousand clients, and the event loop would then leave
further clients hanging in the accept queue.  At start the frontend raises its soft limit (and
the hard one, where it may) to ``max_clients + RESERVE``; when the system does not allow that,
it lowers its effective ``max_clients`` to what the limit obtained leaves, logs both, and
refuses clients past it with a reply.  ``plan`` is pure; ``apply`` calls setrlimit.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

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
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = Limits(soft, hard, effective_clients(max_clients, soft))
    need = max_clients + RESERVE
    if soft >= need or soft == resource.RLIM_INFINITY:
        return before, before
    attempts = []
    if hard != resource.RLIM_INFINITY and hard < need:
        attempts.append((need, need))  # a privileged process may raise the hard limit too
    attempts.append((min(need, hard) if hard != resource.RLIM_INFINITY else need, hard))
    for new_soft, new_hard in attempts:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, new_hard))
        except (ValueError, OSError):
            continue
        break
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return before, Limits(soft, hard, effective_clients(max_clients, soft))
