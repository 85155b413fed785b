"""Child processes of the benchmark: start, register, and always clean up.

Every long-lived child (redis-server, zkv nodes, load generators, redis-benchmark) is started in
its own session, so it is the leader of its own process group, and is recorded in a module
registry.  :func:`cleanup_all` sends SIGTERM to each group, waits up to a deadline, then sends
SIGKILL; it runs from ``finally`` blocks, from ``atexit`` and on SIGTERM/SIGHUP, so Ctrl-C or a
crash never leaves servers behind.  On Linux each child also gets PR_SET_PDEATHSIG, so even a
SIGKILL of the harness takes its direct children along.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

LOOPBACK = "127.0.0.1"


@dataclass
class Child:
    """A started child process, the leader of its own process group."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


_REGISTRY: list[Child] = []
_HANDLERS_INSTALLED = False


def _set_pdeathsig() -> None:
    """preexec hook: die with SIGTERM when the harness dies (Linux only; best effort)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def install_handlers() -> None:
    """Clean up on exit and turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks run."""
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(cleanup_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, _on_signal)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path | None = None,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    capture_stdout: bool = False,
) -> Child:
    """Start ``argv`` in a new session (its own process group), registered for cleanup.

    stdout: a pipe if ``capture_stdout``, else ``log_path`` (or discarded without one).
    stderr: ``log_path``; without one, a pipe if ``capture_stdout``, else discarded.
    """
    install_handlers()
    log_file: IO[bytes] | None = None
    if log_path is not None:
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
    sink: int | IO[bytes] = log_file if log_file is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE if capture_stdout else sink,
        stderr=sink if log_file is not None or not capture_stdout else subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,
    )
    child = Child(name, proc, log_path, log_file)
    _REGISTRY.append(child)
    return child


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(child: Child, timeout: float = 5.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``timeout`` s; reap; close its log."""
    pgid = child.proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None and not _group_alive(pgid):
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.proc.wait(timeout=2.0)
    # A group member that ignored SIGTERM and outlived the leader: one last SIGKILL.
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for stream in (child.proc.stdin, child.proc.stdout, child.proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    if child.log_file is not None:
        child.log_file.close()
        child.log_file = None
    with contextlib.suppress(ValueError):
        _REGISTRY.remove(child)


def stop_all(children: Sequence[Child], timeout: float = 5.0) -> None:
    """Stop several children: SIGTERM them all first, so their deadlines overlap."""
    for c in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, signal.SIGTERM)
    for c in children:
        stop(c, timeout)


def cleanup_all() -> None:
    """Stop every registered child (idempotent)."""
    stop_all(list(_REGISTRY))


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all bound at once, so no duplicates)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_capture(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion in its own group, killed (group and all) at ``timeout``."""
    install_handlers()
    child = spawn(argv[0], argv, capture_stdout=True)
    try:
        out, err = child.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(child, timeout=1.0)
        raise
    finally:
        if child in _REGISTRY:
            _REGISTRY.remove(child)
    return subprocess.CompletedProcess(list(argv), child.proc.returncode,
                                       out.decode(errors="replace"), (err or b"").decode(errors="replace"))


# --------------------------------------------------------------------------- /proc helpers


def proc_cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def proc_children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children, else by scanning ppid)."""
    kids: set[int] = set()
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError):
                kids.update(int(x) for x in (task / "children").read_text().split())
    except OSError:
        pass
    if kids:
        return sorted(kids)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the ppid; the command name (field 2) may contain spaces, so split after ')'.
        rest = stat.rsplit(")", 1)[-1].split()
        if len(rest) >= 2 and int(rest[1]) == pid:
            kids.add(int(entry.name))
    return sorted(kids)


def proc_descendants(pid: int) -> list[int]:
    """All descendants of ``pid``, breadth first (bounded)."""
    out: list[int] = []
    frontier = [pid]
    for _ in range(8):
        nxt: list[int] = []
        for p in frontier:
            nxt.extend(proc_children(p))
        if not nxt:
            break
        out.extend(nxt)
        frontier = nxt
    return out


def proc_rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` (all its threads) plus that of children it has reaped, in seconds
    (0 if the process is gone).  A zkv store reaps its snapshot children, so theirs counts."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # after the command: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
