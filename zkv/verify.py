"""``zkv verify``: do the nodes agree?  Compares heartbeats (version vector + digest) of each.

Each store announces on its bus, several times a second, its version vector and a digest of its
data taken at the same instant.  Nodes agree when they have applied the same events (equal
vectors) and hold the same data (equal digests).  While writes are flowing the vectors differ
briefly, so verify keeps listening until they agree or ``timeout`` passes; on disagreement it
asks the nodes' catch-up sockets for per-bucket hashes and names the buckets and keys that differ.
A node not heard at all is named as unreachable; unless told to wait the whole ``timeout``, verify
stops waiting for it once the others agree and it has been silent for ``unheard_s`` (3 s, or three
heartbeat periods if longer): its silence is not a disagreement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgpack
from zkv.bus import OPEN, Access, ask, subscribe
from zkv.events import TOPIC_HEARTBEAT, DecodeError, Heartbeat, decode_heartbeat, vv_text
from zkv.replication import catchup as wire


UNHEARD_S = 3.0  # seconds without one heartbeat of a node, at least (a store sends five a second)


@dataclass
class Verdict:
    agree: bool
    heartbeats: dict[str, Heartbeat]
    missing: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def collect(buses: list[tuple[str, Access]], timeout: float,
            unheard_s: float | None = UNHEARD_S) -> Verdict:
    """Listen to every ``(bus, access)`` until all nodes agree, or until ``timeout``; with
    ``unheard_s``, also once the nodes heard agree and that long has passed without a word from
    the others."""
    sub = subscribe(buses, TOPIC_HEARTBEAT)
    latest: dict[str, Heartbeat] = {}
    by_bus_count = len(buses)
    start = time.monotonic()
    deadline = start + timeout
    try:
        while time.monotonic() < deadline:
            if (unheard_s is not None and latest and time.monotonic() - start >= unheard_s
                    and _agree(latest)):
                break  # the others agree; a node silent this long is unreachable
            if not sub.poll(100):
                continue
            topic, payload = sub.recv_multipart()
            try:
                hb = decode_heartbeat(payload)
            except DecodeError:
                continue
            latest[hb.id] = hb
            if len(latest) >= by_bus_count and _agree(latest):
                return Verdict(True, latest)
    finally:
        sub.close(0)
    return Verdict(False, latest)


def _agree(hbs: dict[str, Heartbeat]) -> bool:
    first = next(iter(hbs.values()))
    # (equal folds too: a node that has not yet read its peers' folds may lack events they
    # hide, even where the data it holds is the same)
    return all(h.vv == first.vv and h.digest == first.digest and h.folds == first.folds
               for h in hbs.values())


def headline(v: Verdict, expected: list[str]) -> str:
    """``agree``, ``UNREACHABLE`` (the nodes heard agree, some were not heard) or ``DISAGREE``."""
    missing = [n for n in expected if n not in v.heartbeats]
    if v.heartbeats and _agree(v.heartbeats):
        if not missing:
            hb = next(iter(v.heartbeats.values()))
            return f"agree: {len(v.heartbeats)} nodes, {hb.keys} keys, digest {hb.digest.hex()[:16]}"
        return (f"UNREACHABLE: {', '.join(missing)} (no heartbeat; down, or a wrong bus address); "
                f"the {len(v.heartbeats)} heard agree")
    if not v.heartbeats:
        return f"UNREACHABLE: {', '.join(missing)} (no heartbeat from any node)"
    return "DISAGREE" + (f"; not heard: {', '.join(missing)}" if missing else "")


def explain(v: Verdict, expected: int, access: dict[str, Access] | None = None) -> list[str]:
    """Human-readable lines that say where the nodes differ (``access``: how to reach each
    node's catch-up socket, by node id)."""
    access = access or {}
    lines = []
    if len(v.heartbeats) < expected:
        lines.append(f"heard from {len(v.heartbeats)} of {expected} nodes: {', '.join(sorted(v.heartbeats)) or 'none'}")
    hbs = sorted(v.heartbeats.values(), key=lambda h: h.id)
    if len(hbs) >= 2 and _agree(v.heartbeats):
        for h in hbs:
            lines.append(f"{h.id}: keys={h.keys} digest={h.digest.hex()[:16]} vv={vv_text(h.vv)}")
        return lines  # nothing differs among those heard
    for h in hbs:
        lines.append(f"{h.id}: keys={h.keys} digest={h.digest.hex()[:16]} vv={vv_text(h.vv)}")
    if len(hbs) < 2:
        return lines
    tables: dict[str, list[int]] = {}
    for h in hbs:
        reply = ask(h.catchup, [wire.BUCKETS], access=access.get(h.id, OPEN))
        if reply and reply[0] == wire.BUCKETS:
            tables[h.id] = msgpack.unpackb(reply[1], raw=False)[1]
    if len(tables) >= 2:
        ids = sorted(tables)
        base = tables[ids[0]]
        differing = sorted({i for n in ids[1:] for i, (a, b) in enumerate(zip(base, tables[n])) if a != b})
        if differing:
            lines.append(f"{len(differing)} bucket(s) differ: {differing[:20]}")
            entries: dict[str, dict[bytes, tuple]] = {}
            for h in hbs:
                reply = ask(h.catchup, [wire.ENTRIES, msgpack.packb(differing[:20])],
                            access=access.get(h.id, OPEN))
                if reply and reply[0] == wire.ENTRIES:
                    _hz, _b, es = msgpack.unpackb(reply[1], raw=False)
                    entries[h.id] = {e[0]: tuple(e[1:]) for e in es}
            keys = sorted({k for es in entries.values() for k in es})
            shown = 0
            for k in keys:
                vals = {n: es.get(k) for n, es in entries.items()}
                if len({repr(x) for x in vals.values()}) > 1 and shown < 20:
                    shown += 1
                    desc = "; ".join(f"{n}={'absent' if x is None else ('deleted' if x[2] is None else repr(x[2][:40]))}"
                                     for n, x in sorted(vals.items()))
                    lines.append(f"  key {k!r}: {desc}")
        else:
            lines.append("bucket hashes agree; the nodes differ only in applied events (still catching up?)")
    return lines
