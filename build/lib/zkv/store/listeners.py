"""Who connects to the store's two listening sockets, the bus PUB and the catch-up ROUTER.

Anyone who can reach these ports can open a TCP connection to them.  ZeroMQ accepts it before
the handshake (with keys: CurveZMQ, which a stranger cannot finish), and the store gives it
``HANDSHAKE_TIMEOUT_MS`` (zkv.store.server) to finish, then closes it.  Meanwhile it holds one
of the store's descriptors.  These figures, from ZeroMQ's socket monitor, show an operator
what came: connections accepted, open now and the most open at once (peers included), and
those closed because their handshake failed (timed out, a key not admitted, bytes that are
not ZMTP).  They go to INFO under ``listeners``.

A monitor's events travel over an inproc PAIR, and ZeroMQ's I/O thread *blocks* when that
pipe is full: if the store loop read the events, a busy loop turn (or its shutdown, which
closes the monitored sockets while holding the lock the blocked I/O thread holds) would stall
or deadlock every socket of the store.  So one thread of its own reads both monitors and
counts; it owns their PAIR sockets, and stops after the monitored sockets are closed.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import zmq

EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
          | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_HEAD = struct.Struct("=HI")  # event, value: the first frame of a monitor message (version 1)


@dataclass(slots=True)
class Counts:
    accepted: int = 0
    open: int = 0  # accepted, not disconnected yet (peers and strangers)
    open_peak: int = 0
    handshake_failures: int = 0

    def event(self, event: int) -> None:
        if event == zmq.EVENT_ACCEPTED:
            self.accepted += 1
            self.open += 1
            self.open_peak = max(self.open_peak, self.open)
        elif event == zmq.EVENT_DISCONNECTED:
            self.open = max(0, self.open - 1)
        elif event & _FAILED:
            self.handshake_failures += 1

    def figures(self) -> dict[str, int]:
        return {"accepted": self.accepted, "open": self.open, "open_peak": self.open_peak,
                "handshake_failures": self.handshake_failures}


class ListenerWatch:
    """Counts what the monitors of ``sockets`` (role -> socket) report, in a thread of its own.
    Create it in the thread that owns the sockets; ``stop`` after closing them."""

    def __init__(self, sockets: dict[str, zmq.Socket]) -> None:
        self.counts = {role: Counts() for role in sockets}
        # get_monitor_socket makes the PAIR here; from now on only the thread touches it
        self._monitors = {s.get_monitor_socket(EVENTS): self.counts[role]
                          for role, s in sockets.items()}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zkv-listeners", daemon=True)
        self._thread.start()

    def figures(self) -> dict[str, dict[str, int]]:
        return {role: c.figures() for role, c in self.counts.items()}

    def _run(self) -> None:
        poller = zmq.Poller()
        for m in self._monitors:
            poller.register(m, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                for m, _ in poller.poll(100):
                    self._drain(m)
            for m in self._monitors:
                self._drain(m)
        except zmq.ZMQError:
            pass  # the context is going
        finally:
            for m in self._monitors:
                m.close(0)

    def _drain(self, m: zmq.Socket) -> None:
        counts = self._monitors[m]
        while True:
            try:
                frames = m.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frames and len(frames[0]) >= _HEAD.size:
                counts.event(_HEAD.unpack_from(frames[0])[0])

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
