"""``zkv node``: starts and supervises a node's two processes, the store and the frontend.

Start order: both children start at once; the store recovers its data and binds the bus, then
says "ready" on a pipe; only then is the frontend told to open its client port, so an open
client port means the node can answer.  The two talk over
a Unix socket in a directory only this user can enter (zkv.linkpath), removed when the node
stops.  If either child exits, the other is stopped and
``zkv node`` exits non-zero; SIGTERM/SIGINT stop both cleanly (the store writes a snapshot).
If ``zkv node`` dies, even by SIGKILL, both children get SIGTERM (zkv.proc.die_with_parent),
also one killed in the moment between starting a child and the child's asking for that.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from zkv.config import Config, ConfigError, load_config
from zkv.linkpath import LinkError, make_link

log = logging.getLogger("zkv.node")

STOP_GRACE = 30.0  # seconds a child gets to exit after SIGTERM before SIGKILL


class Supervisor:
    def __init__(self, cfg: Config, config_path: str) -> None:
        self.cfg = cfg
        self.config_path = str(Path(config_path).resolve())
        self.link = make_link(cfg.data_dir, cfg.id)
        self.endpoint = self.link.endpoint
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def _spawn(self, role: str, extra: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
        # our pid last: the child dies at once if we died before it could ask to die with us
        cmd = [sys.executable, "-m", f"zkv.{role}_main", self.config_path, self.endpoint, *extra,
               str(os.getpid())]
        return subprocess.Popen(cmd, pass_fds=pass_fds)

    def _spawn_ready(self, role: str, extra_fds: tuple[int, ...] = ()) -> int:
        """Spawn one child with a pipe to say "ready" on; the pipe's read end."""
        rfd, wfd = os.pipe()
        self.children[role] = self._spawn(role, [str(wfd), *map(str, extra_fds)],
                                          pass_fds=(wfd, *extra_fds))
        os.close(wfd)
        return rfd

    def _wait_ready(self, role: str, rfd: int) -> int:
        """Wait until the child says "ready"; 0, or its exit code."""
        with os.fdopen(rfd, "rb") as ready:
            line = ready.readline()  # EOF if the child died during start-up
        if line.strip() != b"ready":
            code = self.children[role].wait()
            log.error("%s failed to start (exit code %s)", role, code)
            return code or 1
        return 0

    def start(self) -> int:
        """Both children start at once, but the frontend opens its client port only when told
        to, once the store is ready (recovered, bus bound): an open client port means the node
        can answer, and the frontend's start-up (its imports) overlaps the store's.  0 when
        both are up."""
        if self.cfg.password is not None:
            mode = os.stat(self.config_path).st_mode
            if mode & 0o077:
                log.warning("%s holds the client password and other users may read it "
                            "(mode %o): chmod 600 it", self.config_path, mode & 0o777)
        store = self._spawn_ready("store")
        go_r, go_w = os.pipe()
        frontend = self._spawn_ready("frontend", (go_r,))
        os.close(go_r)
        code = self._wait_ready("store", store)
        if not code:
            try:
                os.write(go_w, b"go\n")
            except BrokenPipeError:
                pass  # the frontend died meanwhile: _wait_ready below reports its exit code
        os.close(go_w)  # without "go" (the store failed), the frontend exits at once
        if code:
            os.close(frontend)
            return code
        return self._wait_ready("frontend", frontend)

    def wait(self) -> int:
        """Block until a signal or a child's death; then stop everything. Returns the exit code."""
        sel = selectors.DefaultSelector()
        rsig, wsig = os.pipe()
        os.set_blocking(rsig, False)
        os.set_blocking(wsig, False)
        signal.set_wakeup_fd(wsig)  # any signal, SIGCHLD included, wakes the select below
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        sel.register(rsig, selectors.EVENT_READ)
        code = 0
        while not self.stopping:
            sel.select(timeout=0.2)
            try:
                os.read(rsig, 512)
            except BlockingIOError:
                pass
            for role, child in self.children.items():
                rc = child.poll()
                if rc is not None and not self.stopping:
                    log.error("%s process exited with code %s; stopping the node", role, rc)
                    code = rc or 1
                    self.stopping = True
        self.stop()
        return code

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def stop(self) -> None:
        """Frontend first (no new writes), then the store (final snapshot)."""
        for role in ("frontend", "store"):
            child = self.children.get(role)
            if child is None or child.poll() is not None:
                continue
            child.terminate()
            try:
                child.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop in %.0fs; killing it", role, STOP_GRACE)
                child.kill()
                child.wait()


def run_node(cfg: Config, config_path: str) -> int:
    from zkv.proc import setup_logging

    setup_logging(cfg.id, "node")
    try:
        sup = Supervisor(cfg, config_path)
    except (LinkError, OSError) as exc:
        log.error("cannot prepare the frontend-store link under %s: %s", cfg.data_dir, exc)
        return 1
    signal.signal(signal.SIGINT, lambda *_: setattr(sup, "stopping", True))
    signal.signal(signal.SIGTERM, lambda *_: setattr(sup, "stopping", True))
    t0 = time.perf_counter()
    try:
        try:
            code = sup.start()
        except OSError as exc:  # a child could not be spawned (no memory, no pids left)
            log.error("cannot start the node's processes: %s", exc)
            code = 1
        if code:
            sup.stop()
            return code
        log.info("node %s up in %.2fs: clients on %s, bus %s, data in %s", cfg.id,
                 time.perf_counter() - t0, cfg.listen, cfg.bus, cfg.data_dir)
        return sup.wait()
    finally:
        sup.link.remove()


def main(config_path: str) -> int:
    """``zkv node CONFIG``: a bad or missing config is one line and exit code 2."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"zkv: {exc}", file=sys.stderr)
        return 2
    return run_node(cfg, config_path)
