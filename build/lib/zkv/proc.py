"""Process plumbing shared by the node's two children: logging format, dying with the parent,
resident memory."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def setup_logging(node_id: str, role: str, level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s {node_id} {role} %(levelname)s %(message)s",
    )


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Ask Linux to send us ``sig`` when our parent dies (even by SIGKILL).

    ``parent``: the pid our parent had (the supervisor passes its own); if our parent is no
    longer that process, it died before we got here (we were started, then it was killed while
    we were still importing), and no death signal would ever come: we take ``sig`` now.
    Without it, only a death between the two ``getppid`` calls below is caught."""
    if parent is None:
        parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: the supervisor's own cleanup still stops us on a normal exit
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


def tune_gc() -> None:
    """Make the cyclic garbage collector rare and keep long-lived objects out of its scans.

    The keyspace is millions of small tuples that never form cycles; with Python's default
    thresholds every few hundred allocations trigger a collection, and full collections walk the
    whole heap (a pause that grows with the data).  ``gc.freeze()`` after start-up moves what
    exists then (the recovered data) out of reach of later collections.
    """
    gc.set_threshold(100_000, 50, 100)
    gc.freeze()


def rss_bytes() -> int:
    """This process's resident memory in bytes (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
