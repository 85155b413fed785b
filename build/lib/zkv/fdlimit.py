"""A process's open-file limit (RLIMIT_NOFILE), raised toward what it needs, as Redis does.

Every connection a process holds is one descriptor, and so is every file it opens.  Under a
soft limit of 1,024 (the common default) a node's process runs out long before its memory or
its CPU do.  So each of a node's two processes raises its own limit at start: the frontend to
``max_clients`` plus a reserve (zkv.frontend.fdlimit), the store to what its bus and catch-up
listeners may hold at once (zkv.store.server).  ``raise_to`` raises the soft limit to the
number asked, and the hard one too where the process may (root with CAP_SYS_RESOURCE); where it
may not, it goes as far as the hard limit.  What to do with less than asked is the caller's.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    soft: int
    hard: int


def current() -> Limits:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return Limits(soft, hard)


def raise_to(need: int) -> tuple[Limits, Limits]:
    """Raise RLIMIT_NOFILE toward ``need`` (never lower it); returns (before, after)."""
    before = current()
    soft, hard = before.soft, before.hard
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
    return before, current()
