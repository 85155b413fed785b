"""``zkv tail``: subscribe to replication buses and print every event as it happens.

Formatting is pure (``format_event``, ``event_json``) so it is tested without sockets.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from datetime import datetime

from zkv.bus import Access, subscribe
from zkv.events import TOPIC_EVENTS, DecodeError, Event, decode_batch

MAX_SHOWN = 60  # bytes of a key or value shown before it is shortened


def show(b: bytes | None, limit: int = MAX_SHOWN) -> str:
    if b is None:
        return "-"
    text = b.decode("utf-8", "backslashreplace")
    if len(text) > limit:
        return f"{text[:limit]}...({len(b)} bytes)"
    return text


def format_event(e: Event, received: float) -> str:
    stamp = datetime.fromtimestamp(received).strftime("%H:%M:%S.%f")[:-3]
    line = f"{stamp} {e.origin} #{e.seq} {e.op} {show(e.key)}"
    return line if e.value is None else f"{line} {show(e.value)}"


def event_json(e: Event, received: float) -> str:
    return json.dumps({
        "time": received, "origin": e.origin, "seq": e.seq, "hlc": e.hlc, "op": e.op,
        "key": e.key.decode("utf-8", "backslashreplace"),
        "value": None if e.value is None else e.value.decode("utf-8", "backslashreplace"),
    })


def tail(endpoints: Iterable[tuple[str, Access]], as_json: bool = False, limit: int | None = None,
         out=sys.stdout) -> int:
    """Print events until interrupted (or ``limit`` events); returns how many were printed."""
    sub = subscribe(endpoints, TOPIC_EVENTS)
    printed = 0
    try:
        while limit is None or printed < limit:
            if not sub.poll(200):
                continue
            frames = sub.recv_multipart()
            if len(frames) != 2 or frames[0] != TOPIC_EVENTS:
                continue
            try:
                batch = decode_batch(frames[1])
            except DecodeError as exc:
                print(f"# undecodable event: {exc}", file=sys.stderr)
                continue
            now = time.time()
            for e in batch.events():
                print(event_json(e, now) if as_json else format_event(e, now), file=out, flush=True)
                printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        sub.close(0)
    return printed
