"""The store loop's durability promise, seen from its client socket: "log synced before OK".

This module owns the ordering tests of ``zkv.store.server.Store`` against the disk.  The store
runs in-process (its own loop in a thread, its real sockets); the test talks to it as the
frontend does, through a real ZeroMQ DEALER on the store's clients endpoint.  Only the
``fdatasync`` the store reaches is wrapped: it records which file it syncs and what that file
held at that moment, and it can hold the sync (a *gate*) so that the test sees what the store
does while its log is not yet on disk.

- ``fsync = "always"``: a write's reply must not leave the store while the sync of the log
  record holding it is still running; and the record must be in the file when it is synced.
  Controls in the same test: with ``"no"`` (no sync at all) and ``"everysec"`` (a sync in the
  background, not waited for) the same observation must say "replied before any sync", so the
  check is shown to fail when the sync is taken away.
- ``fsync = "everysec"``: once a background sync has failed, the store acknowledges no write.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from tests.cluster.harness import free_port
from zkv.commands import Deferred, dispatch_plain
from zkv.config import config_from_dict
from zkv.store.server import Store

WAL_NAME = re.compile(r"wal-\d+\.log$")
HELD_S = 0.3  # how long a held sync is watched for a reply that must not come
DEADLINE_S = 10.0


@dataclass
class Disk:
    """A wrapper of ``fdatasync``/``fsync`` that records log syncs and can hold them."""

    real: Callable[[int], None]
    key: bytes = b""  # the record to look for in a synced log file
    active: bool = False  # until set, every sync passes straight through (the store's start)
    armed: bool = False  # hold log syncs until ``gate`` opens
    fail: OSError | None = None  # raise this from log syncs instead of syncing
    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    seen: list[tuple[str, bool]] = field(default_factory=list)  # (file, key in it) per log sync

    def __call__(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not self.active or not WAL_NAME.search(path):
            self.real(fd)
            return
        with open(path, "rb") as f:
            holds = bool(self.key) and self.key in f.read()
        self.seen.append((path, holds))
        if self.armed:
            self.entered.set()
            self.gate.wait(DEADLINE_S)
        if self.fail is not None:
            raise self.fail
        self.real(fd)


def _wrap_syncs(monkeypatch: pytest.MonkeyPatch, disk: Disk) -> None:
    """Route every fdatasync/fsync the store's modules can reach through ``disk``."""
    targets = {id(os.fsync), id(getattr(os, "fdatasync", os.fsync))}
    for name, module in list(sys.modules.items()):
        if name == "zkv" or name.startswith("zkv."):
            for attr, value in list(vars(module).items()):
                if id(value) in targets:
                    monkeypatch.setattr(module, attr, disk)
    monkeypatch.setattr(os, "fsync", disk)
    if hasattr(os, "fdatasync"):
        monkeypatch.setattr(os, "fdatasync", disk)


@dataclass
class Running:
    store: Store
    thread: threading.Thread
    dealer: zmq.Socket
    error: list[BaseException]


@pytest.fixture
def run_store(tmp_path: Path) -> Iterator[Callable[[str], Running]]:
    """Start a one-node store in this process; its loop runs in a thread until the test ends."""
    started: list[Running] = []

    def start(fsync: str) -> Running:
        cfg = config_from_dict({"id": "n0", "listen": f"127.0.0.1:{free_port()}",
                                "bus": f"tcp://127.0.0.1:{free_port()}",
                                "data_dir": str(tmp_path / f"data-{fsync}"), "fsync": fsync})
        endpoint = f"ipc://@zkv-test-sync-{os.getpid()}-{len(started)}-{time.monotonic_ns()}"
        store = Store(cfg, endpoint)
        error: list[BaseException] = []

        def loop() -> None:
            try:
                store.run()
            except BaseException as exc:  # noqa: BLE001 - the test reads it
                error.append(exc)

        thread = threading.Thread(target=loop, name="store-loop", daemon=True)
        thread.start()
        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(endpoint)
        r = Running(store, thread, dealer, error)
        started.append(r)
        return r

    try:
        yield start
    finally:
        for r in started:
            r.store.running = False
            r.thread.join(DEADLINE_S)
            assert not r.thread.is_alive(), "the store loop did not stop"
            r.dealer.close(0)
            try:
                r.store.shutdown()
            except Exception:  # noqa: BLE001 - a store that stopped on a failed sync cannot snapshot
                pass


def _request(line: bytes) -> Deferred:
    req = dispatch_plain(line.split(b" ", 2))
    assert isinstance(req, Deferred), req
    return req


def _send(dealer: zmq.Socket, lines: list[bytes]) -> list[Deferred]:
    """One batch of plain-text requests, as the frontend sends one loop turn's worth."""
    reqs = [_request(line) for line in lines]
    dealer.send(msgpack.packb([op for r in reqs for op in r.ops], use_bin_type=True))
    return reqs


def _replies(dealer: zmq.Socket, reqs: list[Deferred], timeout: float) -> list[bytes] | None:
    """The plain-text replies to one batch, or None if nothing came within ``timeout``."""
    if not dealer.poll(int(timeout * 1000)):
        return None
    results = msgpack.unpackb(dealer.recv(), raw=False)
    out, i = [], 0
    for r in reqs:
        out.append(r.encode(results[i:i + len(r.ops)]))
        i += len(r.ops)
    return out


@dataclass
class Observation:
    synced_first: bool  # a log sync of the record started, and no reply came while it was held
    replies: list[bytes]
    syncs: list[tuple[str, bool]]


def _observe_one_write(running: Running, disk: Disk, key: bytes) -> Observation:
    """Send a batch of writes with log syncs held; say whether the reply waited for the sync."""
    disk.key, disk.active, disk.armed = key, True, True
    reqs = _send(running.dealer, [b"SET " + key + b" v1", b"SET " + key + b"-2 v2", b"DEL " + key + b"-2"])
    deadline = time.monotonic() + DEADLINE_S
    replies = None
    while replies is None and not disk.entered.is_set():
        assert time.monotonic() < deadline, "neither a reply nor a log sync came"
        assert not running.error, running.error
        replies = _replies(running.dealer, reqs, 0.01)
    synced_first = False
    if replies is None:  # a log sync started first: while it is held, no reply may leave
        replies = _replies(running.dealer, reqs, HELD_S)
        synced_first = replies is None
    disk.gate.set()
    if replies is None:
        replies = _replies(running.dealer, reqs, DEADLINE_S)
    assert replies is not None, "no reply after the sync was let through"
    return Observation(synced_first, replies, list(disk.seen))


@pytest.mark.parametrize("mode, expect_synced_first", [
    ("always", True),
    ("no", False),  # control: no sync at all, so the check must see the reply first
    ("everysec", False),  # control: the sync runs in the background, not before the reply
])
def test_the_log_is_synced_before_the_write_is_acknowledged(
        run_store: Callable[[str], Running], monkeypatch: pytest.MonkeyPatch,
        mode: str, expect_synced_first: bool) -> None:
    disk = Disk(real=getattr(os, "fdatasync", os.fsync))
    _wrap_syncs(monkeypatch, disk)
    running = run_store(mode)
    try:
        seen = _observe_one_write(running, disk, b"durable-key")
    finally:
        disk.gate.set()
    assert seen.replies == [b"OK\n", b"OK\n", b"OK\n"]
    assert seen.synced_first is expect_synced_first, seen
    if mode == "always":
        # the record was in the log file when that file was synced
        assert any(holds for _path, holds in seen.syncs), seen.syncs
    if mode == "no":
        assert seen.syncs == [], "fsync = \"no\" synced the log"


def test_a_failed_background_sync_stops_the_store_acknowledging_writes(
        run_store: Callable[[str], Running], monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Disk(real=getattr(os, "fdatasync", os.fsync))
    _wrap_syncs(monkeypatch, disk)
    running = run_store("everysec")
    disk.active, disk.fail = True, OSError(errno.EIO, "Input/output error")
    first = _send(running.dealer, [b"SET before-failure 1"])
    assert _replies(running.dealer, first, DEADLINE_S) == [b"OK\n"]  # acknowledged, sync pending
    deadline = time.monotonic() + DEADLINE_S
    while not disk.seen:  # the once-a-second background sync of that write: it fails
        assert time.monotonic() < deadline, "the background sync never ran"
        time.sleep(0.02)
    later = _send(running.dealer, [b"SET after-failure 2"])
    running.thread.join(DEADLINE_S)  # it stops: at this write, or at its next periodic check
    assert not running.thread.is_alive(), "the store loop kept running after the failed sync"
    got: Any = _replies(running.dealer, later, HELD_S)  # (a reply sent before it stopped is here by now)
    assert got is None, f"a write was acknowledged after the log failed to sync: {got}"
    assert running.error and "fdatasync" in str(running.error[0]), running.error
