"""``zkv tail``: subscribe to replication buses and print every event as it happens.

Live events (``ev``) print one line each; ``--key GLOB`` and ``--origin ID`` filter them (an ID
matches a node's every incarnation, or one origin exactly).  Catch-up traffic does not travel
on the bus, but each store announces what it served there (``cu`` notices: events pulled by a
peer, full transfers started and ended), and tail prints those as ``catch-up`` lines, apart
from live events.  ``--stats`` prints one line a second instead: events per second per origin
and each node's lag behind the most advanced one, from their heartbeats.

Formatting and counting are pure (``format_event``, ``event_json``, ``format_catchup``,
``Filter``, ``Stats``) so they are tested without sockets.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgpack

from zkv.bus import Access, subscribe
from zkv.events import (
    TOPIC_CATCHUP, TOPIC_EVENTS, TOPIC_HEARTBEAT, DecodeError, Event, decode_batch,
    decode_heartbeat, describe, node_of,
)

MAX_SHOWN = 60  # bytes of a key or value shown before it is shortened


def show(b: bytes | str | None, limit: int = MAX_SHOWN) -> str:
    if b is None:
        return "-"
    text = b if b.__class__ is str else b.decode("utf-8", "backslashreplace")  # type: ignore[union-attr]
    if len(text) > limit:
        return f"{text[:limit]}...({len(b)} {'bytes' if b.__class__ is bytes else 'characters'})"
    return text


def _stamp(received: float) -> str:
    return datetime.fromtimestamp(received).strftime("%H:%M:%S.%f")[:-3]


def format_event(e: Event, received: float) -> str:
    op, key, element, what = describe(e.key, e.value)
    line = f"{_stamp(received)} {e.origin} #{e.seq} {op} {show(key)}"
    if element is not None:
        line += f" {show(element)}"
    shown = what or op in ("SET", "HSET")  # (a DEL, SADD or PERSIST writes no value; SET k "" does)
    return f"{line} {show(what)}" if shown else line


def event_json(e: Event, received: float) -> str:
    op, key, element, what = describe(e.key, e.value)
    return json.dumps({
        "time": received, "origin": e.origin, "seq": e.seq, "hlc": e.hlc, "op": op,
        "key": key.decode("utf-8", "backslashreplace"),
        **({} if element is None else {"element": element.decode("utf-8", "backslashreplace")}),
        "value": (None if not what and op not in ("SET", "HSET")
                  else what if what.__class__ is str else what.decode("utf-8", "backslashreplace")),
    })


def format_catchup(note: dict[str, Any], received: float) -> str:
    """A store's notice of catch-up traffic it served, as one line."""
    who, to = note.get("from", "?"), note.get("to", "?")
    kind = note.get("kind")
    if kind == "pull":
        return (f"{_stamp(received)} catch-up {who} -> {to}: {note.get('batches', 0)} batches "
                f"({note.get('bytes', 0)} bytes) of {note.get('origin', '?')} after #{note.get('after', 0)}")
    if kind == "transfer":
        return f"{_stamp(received)} full transfer {who} -> {to}: {note.get('state', '?')}"
    return f"{_stamp(received)} catch-up {who}: {note}"


@dataclass
class Filter:
    key: str | None = None  # a glob on the key (as text)
    origin: str | None = None  # a node id (every incarnation) or one origin

    def __call__(self, e: Event) -> bool:
        if self.origin is not None and e.origin != self.origin and node_of(e.origin) != self.origin:
            return False
        if self.key is not None:
            return fnmatch.fnmatchcase(e.key.decode("utf-8", "backslashreplace"), self.key)
        return True


@dataclass
class Stats:
    """Events per origin since the last line, and the latest version vector of each node."""

    events: Counter = field(default_factory=Counter)
    vvs: dict[str, dict[str, int]] = field(default_factory=dict)
    since: float = 0.0

    def lags(self) -> dict[str, int]:
        """Per node: events it lacks that the most advanced node has applied."""
        top: dict[str, int] = {}
        for vv in self.vvs.values():
            for o, s in vv.items():
                top[o] = max(top.get(o, 0), s)
        return {n: sum(s - vv.get(o, 0) for o, s in top.items()) for n, vv in sorted(self.vvs.items())}

    def line(self, now: float) -> str:
        span = max(now - self.since, 1e-9)
        rates = " ".join(f"{o}={n / span:.0f}" for o, n in sorted(self.events.items())) or "-"
        lags = " ".join(f"{n}={lag}" for n, lag in self.lags().items()) or "-"
        self.events.clear()
        self.since = now
        return f"{_stamp(now)} events/s {rates} | behind (events) {lags}"


def silence_warning(endpoints: list[str], heard: dict[str, set[str]], origin: str | None,
                    keyed: bool, expected: dict[str, str] | None = None) -> str | None:
    """What to tell a user after HEARD_S seconds of tailing (pure): nothing heard at all (a
    wrong endpoint, or a keyed bus without the keys), some expected nodes not heard
    (``expected``: endpoint -> the node a config says is there), or no heard node matching
    ``--origin`` (``heard``: node id -> the origins and peer ids its heartbeats named)."""
    silent = [f"{n} ({e})" for e, n in (expected or {}).items() if n not in heard]
    if heard and silent:
        return f"# nothing heard from {', '.join(silent)} in {HEARD_S:.0f} s: down, or cut off?"
    if not heard:
        hint = ("nothing listens there, the node is down, or it does not accept these keys "
                "(check --cert and --server-key)" if keyed else
                "a wrong endpoint, a node that is down, or a keyed bus (give the node's config, "
                "or --cert and --server-key)")
        return f"# nothing heard from {', '.join(endpoints)} in {HEARD_S:.0f} s: {hint}"
    if origin is not None and not any(origin == n or origin in o or origin in map(node_of, o)
                                      for n, o in heard.items()):
        return (f"# no node or origin {origin!r} among those heard ({', '.join(sorted(heard))}): "
                f"nothing will be shown")
    return None


HEARD_S = 3.0  # seconds of tailing before saying that nothing (or nothing matching) is heard


def tail(endpoints: Iterable[tuple[str, Access]], as_json: bool = False, limit: int | None = None,
         out=sys.stdout, keep: Filter | None = None, stats: bool = False, err=sys.stderr,
         expected: dict[str, str] | None = None) -> int:
    """Print events until interrupted (or ``limit`` events); returns how many were printed.
    Heartbeats are always read, to say on ``err`` when nothing is heard (see silence_warning;
    ``expected``: endpoint -> node id, where a config says)."""
    endpoints = list(endpoints)
    sub = subscribe(endpoints, [TOPIC_EVENTS, TOPIC_CATCHUP, TOPIC_HEARTBEAT])
    keep = keep or Filter()
    st = Stats(since=time.time())
    printed = 0
    heard: dict[str, set[str]] = {}
    started = time.monotonic()
    checked = False
    try:
        while limit is None or printed < limit:
            if stats and time.time() - st.since >= 1.0:
                print(st.line(time.time()), file=out, flush=True)
            if not checked and time.monotonic() - started >= HEARD_S:
                checked = True
                warning = silence_warning([e for e, _a in endpoints], heard, keep.origin,
                                          any(a.keys is not None for _e, a in endpoints), expected)
                if warning:
                    print(warning, file=err, flush=True)
            if not sub.poll(200):
                continue
            frames = sub.recv_multipart()
            if len(frames) != 2:
                continue
            topic, payload = frames
            now = time.time()
            try:
                if topic == TOPIC_HEARTBEAT:
                    hb = decode_heartbeat(payload)
                    heard.setdefault(hb.id, set()).update((hb.origin, *hb.vv, *hb.peers))
                    if stats:
                        st.vvs[hb.id] = hb.vv
                elif topic == TOPIC_CATCHUP:
                    note = msgpack.unpackb(payload, raw=False)
                    if stats or not isinstance(note, dict):
                        continue
                    print(json.dumps({"time": now, "catchup": note}) if as_json
                          else format_catchup(note, now), file=out, flush=True)
                elif topic == TOPIC_EVENTS:
                    for e in decode_batch(payload).events():
                        if not keep(e):
                            continue
                        if stats:
                            st.events[e.origin] += 1
                            continue
                        print(event_json(e, now) if as_json else format_event(e, now), file=out, flush=True)
                        printed += 1
            except (DecodeError, ValueError) as exc:
                print(f"# undecodable message: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close(0)
    return printed
