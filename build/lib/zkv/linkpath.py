"""Where a node's frontend and store meet: a Unix socket in a directory only its user can enter.

The link carries every client request unauthenticated (it is the hot path), so who may connect
is decided by the filesystem: the socket lives in ``<data_dir>/run``, a directory of mode 0700
owned by the node's user, and ``connect()`` needs search permission on every directory of the
path.  Other local users get ``EACCES`` (an abstract-namespace socket, which zkv used before,
has no permissions at all).  A Unix socket path is limited to 107 bytes; when ``data_dir`` is too
deep for that, the directory is a fresh ``mkdtemp`` one (also 0700) under the system's temp dir.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

MAX_PATH = 100  # bytes of a socket path (sun_path holds 108 with its NUL; leave some room)


class LinkError(Exception):
    """The private directory cannot be made safe; the message is one line."""


@dataclass(frozen=True, slots=True)
class Link:
    endpoint: str  # ``ipc:///.../store-<pid>.sock``, handed to both children
    path: Path
    temp_dir: Path | None  # a mkdtemp directory to remove at exit, if one was needed

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) or check that it is a directory we own; then make it 0700.
    A parent it creates (the data directory, on a first start) is 0700 too."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise LinkError(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise LinkError(f"{path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()})")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(run: Path) -> None:
    """Drop sockets left by supervisors that were killed (their pid is in the name)."""
    for sock in run.glob("store-*.sock"):
        try:
            pid = int(sock.name[len("store-"):-len(".sock")])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            sock.unlink(missing_ok=True)


def make_link(data_dir: Path, node_id: str) -> Link:
    """The socket path for this supervisor's children (called once, by ``zkv node``)."""
    run = private_dir(data_dir / "run")
    remove_stale(run)
    path = run / f"store-{os.getpid()}.sock"
    temp_dir = None
    if len(os.fsencode(path.absolute())) > MAX_PATH:
        temp_dir = Path(tempfile.mkdtemp(prefix=f"zkv-{node_id[:20]}-"))  # mode 0700
        path = temp_dir / "store.sock"
    path = path.absolute()
    return Link(f"ipc://{path}", path, temp_dir)
