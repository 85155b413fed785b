"""Faults a real machine produces, as small pieces for real-cluster tests and the chaos harness.

Owns:
  * ``AckModel`` - the model of acknowledged operations: for every key, the last SET or DELETE
    a node acknowledged (``OK``), and the check that a node holds exactly that;
  * disk damage done to a *stopped* node's ``data_dir``: ``truncate_tail`` (what a machine crash
    does to a log written with ``fsync = "everysec"``: the page cache, i.e. the end of the newest
    segment, is gone) and ``flip_bytes`` (a damaged snapshot);
  * clock skew: ``faketime_prefix`` (run a node under Debian's ``faketime``, skipping the test
    with a reason when it is not installed, or failing when ``ZKV_REQUIRE_FAKETIME=1``);
  * a hostile peer: ``HostilePublisher`` binds a PUB socket on a down node's bus address and
    publishes whatever the test gives it; ``capture_heartbeat`` takes a real heartbeat off a live
    node's bus as a raw msgpack map, so a test can forge one that differs in one field only;
  * ``frozen``: SIGSTOP whole nodes for the duration of a block.

Everything acts on real files, sockets and processes; nothing is mocked.  It depends only on
``tests.cluster.harness`` (``Node``, ``wait_until``), pyzmq and msgpack.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from tests.cluster.harness import Node, wait_until

WAL_HEADER = 8  # b"ZKVWAL1\n": the header every segment starts with


# --- the model of acknowledged operations --------------------------------------------------
@dataclass
class AckModel:
    """Last acknowledged operation per key: ``bytes`` for a SET, ``None`` for a DELETE.

    Record an operation only once its ``OK`` has been read; a write whose reply never came is
    not in the model (it may or may not have happened).  With one writer per key at a time (as
    in these tests) the last acknowledged op is the one last-writer-wins must keep.
    """

    last: dict[str, bytes | None] = field(default_factory=dict)

    def record(self, key: str, value: bytes | None) -> None:
        self.last[key] = value

    def copy(self) -> AckModel:
        return AckModel(dict(self.last))

    def expected_reply(self, key: str) -> bytes:
        value = self.last[key]
        return b"NOT FOUND" if value is None else b"VALUE " + value

    def mismatches(self, node: Node, chunk: int = 1000) -> list[tuple[str, bytes, bytes]]:
        """``(key, expected reply, actual reply)`` for every key ``node`` gets wrong."""
        keys = sorted(self.last)
        out: list[tuple[str, bytes, bytes]] = []
        with node.client() as c:
            for i in range(0, len(keys), chunk):
                part = keys[i:i + chunk]
                got = c.pipeline([f"GET {k}".encode() for k in part])
                out += [(k, self.expected_reply(k), g) for k, g in zip(part, got)
                        if g != self.expected_reply(k)]
        return out


def describe_loss(model: AckModel, nodes: list[Node]) -> str:
    """One line per node: how many acknowledged keys it gets wrong, and a few examples."""
    lines = []
    for n in nodes:
        bad = model.mismatches(n)
        lost = sum(1 for _k, want, got in bad if got == b"NOT FOUND" and want != b"NOT FOUND")
        lines.append(f"{n.id}: {len(bad)} of {len(model.last)} acknowledged keys wrong "
                     f"({lost} lost), e.g. {bad[:3]}")
    return "\n".join(lines)


def run_ops(node: Node, ops: list[tuple[str, bytes | None]], model: AckModel,
            pipeline: int = 1) -> None:
    """Send ``(key, value-or-None)`` ops to ``node`` (SET / DELETE), ``pipeline`` at a time;
    record each acknowledged one in ``model``; fail on any reply but ``OK``."""
    with node.client() as c:
        for i in range(0, len(ops), pipeline):
            part = ops[i:i + pipeline]
            lines = [b"DELETE " + k.encode() if v is None else b"SET " + k.encode() + b" " + v
                     for k, v in part]
            replies = c.pipeline(lines)
            for (k, v), r in zip(part, replies):
                assert r == b"OK", f"{node.id}: {'DELETE' if v is None else 'SET'} {k} -> {r!r}"
                model.record(k, v)


# --- disk damage (on a stopped node) -------------------------------------------------------
def newest_segment(data_dir: Path) -> Path:
    segs = sorted(data_dir.glob("wal-*.log"))
    assert segs, f"no log segment in {data_dir}"
    return segs[-1]


def truncate_tail(path: Path, keep_fraction: float = 0.5) -> tuple[int, int]:
    """Cut a log segment to its header plus ``keep_fraction`` of its records' bytes (the cut
    usually falls inside a record: a torn tail, as a lost page cache leaves it).
    Returns ``(old size, new size)``."""
    old = path.stat().st_size
    new = WAL_HEADER + int((old - WAL_HEADER) * keep_fraction)
    os.truncate(path, new)
    return old, new


def flip_bytes(path: Path, count: int = 64, offset: int | None = None) -> int:
    """Invert ``count`` bytes of ``path`` in place, in the middle unless ``offset`` is given;
    returns the offset used."""
    size = path.stat().st_size
    at = (size - count) // 2 if offset is None else offset
    assert 0 <= at and at + count <= size, f"{path.name}: {size} bytes, cannot flip {count} at {at}"
    with open(path, "r+b") as f:
        f.seek(at)
        data = f.read(count)
        f.seek(at)
        f.write(bytes(b ^ 0xFF for b in data))
    return at


# --- clock skew ----------------------------------------------------------------------------
FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1", "/usr/local/lib/faketime/libfaketime.so.1")


def faketime_prefix(offset: str = "+1h") -> list[str]:
    """The command prefix that runs a node with its wall clock moved by ``offset`` (for
    ``Node.prefix``): what ``faketime -f OFFSET`` does, without its wrapper process.

    ``faketime`` forks the program and waits for it, so the harness's SIGTERM, its death signal
    (PR_SET_PDEATHSIG) and ``Node.kill``'s check of the wrapper's exit would all reach the
    wrapper, not the node: a stopped test leaves the node running.  ``env LD_PRELOAD=...``
    execs instead, so the node *is* the process the harness started.  Falls back to the
    wrapper when the library is not where Debian puts it.  Skips the test when ``faketime`` is
    missing, unless ``ZKV_REQUIRE_FAKETIME=1`` demands it (then the test fails)."""
    exe = shutil.which("faketime")
    if exe is None:
        reason = "faketime (Debian package 'faketime') is not installed"
        if os.environ.get("ZKV_REQUIRE_FAKETIME") == "1":
            pytest.fail(reason + " and ZKV_REQUIRE_FAKETIME=1")
        pytest.skip(reason)
    lib = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
    if lib is None:
        return [exe, "-f", offset]
    return ["env", f"LD_PRELOAD={lib}", f"FAKETIME={offset}"]


# --- a hostile peer on the bus -------------------------------------------------------------
def capture_heartbeat(node: Node, timeout: float = 10.0) -> dict[str, Any]:
    """One heartbeat of ``node``, taken off its bus, as the raw msgpack map it sent."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"hb")
    sub.connect(node.bus)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sub.poll(100):
                frames = sub.recv_multipart()
                hb = msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)
                if isinstance(hb, dict) and hb.get("id") == node.id:
                    return hb
        raise AssertionError(f"no heartbeat from {node.id} on {node.bus} within {timeout}s")
    finally:
        sub.close(0)


class HostilePublisher:
    """A PUB socket bound on another node's bus address: every store that lists that node as a
    peer subscribes to it, and believes what it says.  Bind it only while that node is down."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.linger = 0
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        deadline = time.monotonic() + 10
        while True:  # the node's port may take a moment to come free after its kill
            try:
                self.sock.bind(endpoint)
                break
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.handshakes = 0

    def wait_subscribers(self, n: int, timeout: float = 15.0) -> None:
        """Wait until ``n`` peers have connected (ZeroMQ handshake done)."""
        def enough() -> bool:
            while self.monitor.poll(0):
                self.monitor.recv_multipart()
                self.handshakes += 1
            return self.handshakes >= n
        wait_until(enough, timeout=timeout, what=f"{n} subscribers on the hostile publisher")

    def publish(self, messages: list[tuple[bytes, bytes]], rounds: int = 10, gap: float = 0.05) -> None:
        """Send every ``(topic, payload)`` ``rounds`` times, ``gap`` seconds apart (a subscription
        travels to the publisher just after the handshake: the first round may be dropped)."""
        for _ in range(rounds):
            for topic, payload in messages:
                self.sock.send_multipart([topic, payload])
            time.sleep(gap)

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)


def forged_heartbeat(real: dict[str, Any], **changes: Any) -> bytes:
    """A copy of a captured heartbeat map with some fields replaced, msgpack-encoded."""
    return msgpack.packb({**real, **changes}, use_bin_type=True)


# --- processes -----------------------------------------------------------------------------
@contextmanager
def frozen(*nodes: Node) -> Iterator[None]:
    """SIGSTOP whole nodes (every process of each); SIGCONT them on the way out."""
    for n in nodes:
        n.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for n in nodes:
            try:
                n.signal(signal.SIGCONT)
            except ProcessLookupError:
                pass


def store_pid(node: Node) -> int:
    return node.child_pid("store")
