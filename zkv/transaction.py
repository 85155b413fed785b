"""MULTI / EXEC / DISCARD: a connection's queued commands, sent to the store as one unit.

Between MULTI and EXEC a connection's commands are checked (name, arity, syntax) and queued,
each answered ``+QUEUED``; one that fails that check makes EXEC answer ``EXECABORT`` and run
nothing, as Redis does.  EXEC sends every queued command's store operations as one message, so
the store applies them in one go, with no other client's operation in between, and its writes
become one run of consecutive events that peers apply in one step (docs/protocol.md says what
that gives and what it does not).  WATCH has no meaning that holds across nodes (a key changed
on another node is not seen until its event arrives): it is refused with an error rather than
pretending.  Pure: the connection holds the ``Transaction``; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zkv.commands import Deferred
from zkv.protocol import resp

QUEUED = b"+QUEUED\r\n"
EXECABORT = resp.error("EXECABORT Transaction discarded because of previous errors.")
NESTED = resp.error("ERR MULTI calls can not be nested")
EXEC_ALONE = resp.error("ERR EXEC without MULTI")
DISCARD_ALONE = resp.error("ERR DISCARD without MULTI")
WATCH_IN_MULTI = resp.error("ERR WATCH inside MULTI is not allowed")
WATCH_UNSUPPORTED = resp.error(
    "ERR WATCH is not supported: a key changed on another node is not seen here until its "
    "write arrives, so no check here could make EXEC safe (MULTI/EXEC without WATCH works)")


@dataclass(frozen=True, slots=True)
class TxControl:
    """What dispatch returns for MULTI, EXEC, DISCARD, WATCH and UNWATCH: the connection acts."""

    verb: bytes


@dataclass(slots=True)
class Transaction:
    queued: list[Any] = field(default_factory=list)  # Deferred, or an immediate reply (bytes)
    aborted: bool = False

    def queue(self, reply: Any, name: bytes) -> bytes:
        """A command between MULTI and EXEC (``reply``: what dispatch made of it)."""
        if reply.__class__ is Deferred or (reply.__class__ is bytes and reply[:1] != b"-"):
            self.queued.append(reply)
            return QUEUED
        self.aborted = True
        if reply.__class__ is bytes:  # unknown command, wrong arity, syntax: EXEC will abort
            return reply
        text = name.decode("utf-8", "replace")[:64].upper()
        return resp.error(f"ERR {text} is not allowed in a transaction")

    def exec(self) -> Deferred | bytes:
        """EXEC: one Deferred holding every queued operation, answered with one array."""
        if self.aborted:
            return EXECABORT
        queued = self.queued
        ops = [op for q in queued if q.__class__ is Deferred for op in q.ops]
        if not ops:
            return b"*%d\r\n" % len(queued) + b"".join(queued)

        def encode(results: list[Any]) -> bytes:
            out = [b"*%d\r\n" % len(queued)]
            i = 0
            for q in queued:
                if q.__class__ is Deferred:
                    n = len(q.ops)
                    out.append(q.encode(results[i:i + n]))
                    i += n
                else:
                    out.append(q)
            return b"".join(out)
        return Deferred(ops, encode)
