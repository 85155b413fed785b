"""``zkv status``: one table of the cluster, from its nodes' own figures.

A node's figures are its store's INFO dict: read over the catch-up channel when we have its
config (with the config's keys on a keyed cluster; a config also leads to its peers), or over
the client port (``INFO json``, after ``AUTH`` if a password is given, through TLS if asked).
Gathering does I/O (``gather``); turning reports into rows, a verdict and a table is pure.
"""

from __future__ import annotations

import json
import socket
import ssl
import statistics
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from zkv.bus import Access, ask, config_access
from zkv.config import Config, parse_host_port
from zkv.protocol import resp
from zkv.replication import catchup as wire


@dataclass
class Report:
    name: str
    info: dict[str, Any] | None  # None: the node did not answer
    error: str = ""


# --- gathering (I/O) -----------------------------------------------------------------------------

class ConfigSource:
    """Every node a set of configs can reach: each config's node and its peers, by node id."""

    def __init__(self, cfgs: list[Config], timeout: float = 2.0) -> None:
        self.timeout = timeout
        self.targets: dict[str, tuple[str, Access]] = {}  # node id -> (bus, access)
        for cfg in cfgs:
            self.targets[cfg.id] = (cfg.bus, config_access(cfg))
        for cfg in cfgs:
            for p in cfg.peers:
                self.targets.setdefault(p.id, (p.bus, config_access(cfg, p.id)))
        self.catchup: dict[str, str] = {}  # node id -> catch-up endpoint, from its heartbeat

    def _discover(self, missing: list[str]) -> None:
        from zkv.bus import subscribe
        from zkv.events import TOPIC_HEARTBEAT, DecodeError, decode_heartbeat

        sub = subscribe([self.targets[n] for n in missing], TOPIC_HEARTBEAT)
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline and any(n not in self.catchup for n in missing):
                if sub.poll(50):
                    try:
                        hb = decode_heartbeat(sub.recv_multipart()[-1])
                    except DecodeError:
                        continue
                    if hb.id in self.targets:
                        self.catchup[hb.id] = hb.catchup
        finally:
            sub.close(0)

    def reports(self) -> list[Report]:
        missing = [n for n in self.targets if n not in self.catchup]
        if missing:
            self._discover(missing)
        out = []
        for node, (_bus, access) in sorted(self.targets.items()):
            endpoint = self.catchup.get(node)
            if endpoint is None:
                out.append(Report(node, None, "no heartbeat on its bus"))
                continue
            reply = ask(endpoint, [wire.INFO], timeout=self.timeout, access=access)
            if not reply or reply[0] != wire.INFO:
                self.catchup.pop(node, None)  # restarted elsewhere? look again next time
                out.append(Report(node, None, "no answer on its catch-up socket"))
                continue
            out.append(Report(node, msgpack.unpackb(reply[1], raw=False)))
        return out


def _read_reply(f: Any) -> bytes:
    head = f.readline()
    if head[:1] == b"$":
        n = int(head[1:])
        return f.read(n + 2)[:n] if n >= 0 else b""
    if head[:1] == b"-":
        raise ConnectionError(head[1:].decode(errors="replace").strip())
    if not head:
        raise ConnectionError("connection closed")
    return head.strip()


def client_report(address: str, password: str | None = None, tls: bool = False,
                  cafile: str | None = None, timeout: float = 3.0) -> Report:
    """One node's INFO dict over its client port (``INFO json``)."""
    try:
        host, port = parse_host_port(address, "address")
        raw = socket.create_connection((host, port), timeout=timeout)
        sock: socket.socket = raw
        if tls:
            ctx = ssl.create_default_context(cafile=cafile)
            sock = ctx.wrap_socket(raw, server_hostname=host)
        with sock, sock.makefile("rb") as f:
            if password is not None:
                sock.sendall(resp.array([b"AUTH", password.encode()]))
                _read_reply(f)
            sock.sendall(resp.array([b"INFO", b"json"]))
            info = json.loads(_read_reply(f))
    except Exception as exc:  # noqa: BLE001 - any failure means: this node is not answering
        return Report(address, None, explain(exc, tls))
    return Report(info.get("id", address), info)


def explain(exc: BaseException, tls: bool) -> str:
    """Why a client port did not answer INFO, in words that say what to do (pure)."""
    text = f"{type(exc).__name__}: {exc}"
    if "NOAUTH" in text:
        return "needs --password (the node requires AUTH)"
    if "WRONGPASS" in text:
        return "wrong --password"
    if "without any password configured" in text:
        return "the node has no password: drop --password"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens there (node down, or a wrong port)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no answer in time (node paused or overloaded?)"
    if tls and isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted: give --cacert, or check its name ({exc})"
    if tls and isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: a plain port? try without --tls ({exc})"
    if not tls and "connection closed" in text:
        return "closed without a reply: a TLS port? use --tls (or the node is stopping)"
    return text


# --- rows, verdict, table (pure) -----------------------------------------------------------------

def own_offset_ms(info: dict[str, Any]) -> int | None:
    """This node's clock minus the median of the cluster's clocks, as its store measures them."""
    offsets = [p["clock_offset_ms"] for p in info.get("peers", {}).values()
               if p.get("clock_offset_ms") is not None]
    if not offsets:
        return None
    return int(-statistics.median([0, *offsets]))


def row(r: Report) -> dict[str, Any]:
    if r.info is None:
        return {"node": r.name, "up": False, "error": r.error}
    info = r.info
    peers = info.get("peers", {})
    lags = [p.get("lag", {}) for p in peers.values()]
    mem = info.get("memory", {})
    return {
        "node": info.get("id", r.name), "up": True, "origin": info.get("origin", ""),
        "keys": info.get("keys", 0), "seq": info.get("seq", 0),
        "peers_up": sum(1 for p in peers.values() if p.get("connected")), "peers": len(peers),
        "behind_events": max((lag.get("events", 0) for lag in lags), default=0),
        "behind_ms": max((lag.get("ms", 0) for lag in lags), default=0),
        "clock_offset_ms": own_offset_ms(info),
        "log_bytes": info.get("disk", {}).get("log_bytes", 0),
        "memory": mem.get("store_rss", 0) + mem.get("frontend_rss", 0),
        "uptime_s": info.get("uptime_s", 0), "clients": info.get("clients", 0),
        "clock_refusing": info.get("clock", {}).get("refusing", ""),
    }


def applied(reports: list[Report]) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Origins worth showing (every node's current one, and any the nodes disagree on) and,
    per node, its applied sequence of each."""
    up = {r.info["id"]: r.info.get("vv", {}) for r in reports if r.info is not None}
    current = {r.info.get("origin") for r in reports if r.info is not None}
    every = sorted({o for vv in up.values() for o in vv})
    shown = [o for o in every if o in current or len({vv.get(o, 0) for vv in up.values()}) > 1]
    return shown, up


def problems(reports: list[Report], max_lag_ms: int | None) -> list[str]:
    out = []
    for r in reports:
        if r.info is None:
            out.append(f"{r.name} is down ({r.error})")
            continue
        rw = row(r)
        if max_lag_ms is not None and rw["behind_ms"] > max_lag_ms:
            out.append(f"{rw['node']} lags {rw['behind_events']} events, {rw['behind_ms']} ms "
                       f"(> {max_lag_ms} ms)")
    return out


def _size(n: int) -> str:
    """Bytes in at most about five characters: 512B, 5.2K, 118M, 11.5G."""
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            if unit == "B":
                return f"{n:.0f}B"
            return f"{n:.1f}{unit}" if n < 100 else f"{n:.0f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _duration(s: int) -> str:
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _ms(ms: int) -> str:
    return f"{ms}ms" if ms < 1000 else f"{ms / 1000:.1f}s" if ms < 100_000 else f"{ms // 1000}s"


def render(reports: list[Report], max_lag_ms: int | None = None) -> Any:
    """A rich renderable: the node table, the applied-events table, and any problems."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # No vertical rules, short headers and compact cells: the table fits 80 columns.
    t = Table(title="zkv cluster", title_justify="left", box=None, pad_edge=False,
              collapse_padding=True)
    for col in ("node", "state", "keys", "peers", "behind", "clock", "log", "memory",
                "up", "clients"):
        t.add_column(col, justify="left" if col in ("node", "state") else "right", no_wrap=True)
    for r in reports:
        rw = row(r)
        if not rw["up"]:
            t.add_row(rw["node"], Text("DOWN", style="bold red"), *[""] * 8)
            continue
        state = Text("refusing", style="yellow") if rw["clock_refusing"] else Text("up", style="green")
        behind = "0" if not rw["behind_events"] else f"{rw['behind_events']}/{_ms(rw['behind_ms'])}"
        clock = "?" if rw["clock_offset_ms"] is None else f"{rw['clock_offset_ms']:+d}ms"
        t.add_row(rw["node"], state, str(rw["keys"]), f"{rw['peers_up']}/{rw['peers']}",
                  behind, clock, _size(rw["log_bytes"]), _size(rw["memory"]),
                  _duration(rw["uptime_s"]), str(rw["clients"]))
    origins, vvs = applied(reports)
    parts: list[Any] = [t]
    if origins and vvs:
        a = Table(title="applied events per origin",
                  title_justify="left", box=None, pad_edge=False, collapse_padding=True)
        a.add_column("origin")
        for node in vvs:
            a.add_column(node, justify="right")
        for o in origins:
            seqs = [vvs[n].get(o, 0) for n in vvs]
            top = max(seqs)
            a.add_row(o, *[Text(str(s), style="" if s == top else "yellow") for s in seqs])
        parts.append(a)
    for p in problems(reports, max_lag_ms):
        parts.append(Text(p, style="bold red"))
    return Group(*parts)


def as_json(reports: list[Report], max_lag_ms: int | None) -> str:
    return json.dumps({
        "nodes": {r.name if r.info is None else r.info.get("id", r.name): r.info for r in reports},
        "rows": [row(r) for r in reports],
        "problems": problems(reports, max_lag_ms),
    }, indent=2, sort_keys=True, default=str)
