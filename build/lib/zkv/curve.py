"""CurveZMQ for the replication bus and the catch-up channel: key files, socket set-up, admission.

With keys configured, every store's PUB and catch-up ROUTER are CURVE servers and its SUB and
DEALERs are CURVE clients, so every byte between stores is encrypted and both ends are proven:
a client must know the server's public key to finish the handshake, and the server asks its
ZAP handler (``ZapHandler``, answered in the store's own loop) whether the client's public key
belongs to a configured peer (or to the node itself, for the tools run with its config).  The
handler's answer names the peer, and ZeroMQ attaches that name to every message of the
connection as ``User-Id``, which is how the catch-up channel knows who asks.

Key files are ZeroMQ certificates (the ZPL text ``zmq.auth.create_certificates`` writes):
``PATH.public`` holds the public key, ``PATH.secret`` both (mode 0600).  A public key may also
be written inline as its 40-character Z85 text.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by the ZAP specification (RFC 27)
ZAP_DOMAIN = b"zkv"
Z85_KEY_LEN = 40


class KeyFileError(Exception):
    """A key or certificate that cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes  # Z85 text, 40 bytes
    secret: bytes

    def serve(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server (call before bind): only admitted clients get through."""
        sock.curve_server = True
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.zap_domain = ZAP_DOMAIN


def dial(sock: zmq.Socket, endpoint: str, keys: KeyPair | None, server_key: bytes | None) -> None:
    """Connect ``sock`` to ``endpoint``, as a CURVE client of ``server_key`` if keys are used.

    CURVE options are read when ``connect`` is called, so one SUB socket can reach several
    servers, each with its own key."""
    if keys is not None:
        if server_key is None:
            raise KeyFileError(f"no public key known for {endpoint}")
        sock.curve_publickey = keys.public
        sock.curve_secretkey = keys.secret
        sock.curve_serverkey = server_key
    sock.connect(endpoint)


# --- key files ---------------------------------------------------------------------------------

_BANNER = """#   ****  Generated on {date} by zkv keygen  ****
#   ZeroMQ CURVE {kind} Certificate
#   {warning}

metadata
curve
    public-key = "{public}"
"""


def keygen(path: str | os.PathLike[str], force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair as ``PATH.public`` and ``PATH.secret``; returns both paths."""
    base = Path(path)
    pub_path, sec_path = Path(f"{base}.public"), Path(f"{base}.secret")
    if not force:
        for p in (pub_path, sec_path):
            if p.exists():
                raise KeyFileError(f"{p} exists (use --force to replace it)")
    public, secret = zmq.curve_keypair()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pub_text = _BANNER.format(date=date, kind="**Public**", public=public.decode(),
                              warning="Give this file to the peers that must admit this node.")
    sec_text = _BANNER.format(date=date, kind="**Secret**", public=public.decode(),
                              warning="DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its "
                                      "permissions.")
    sec_text += f'    secret-key = "{secret.decode()}"\n'
    base.parent.mkdir(parents=True, exist_ok=True)
    pub_path.write_text(pub_text)
    fd = os.open(sec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        f.write(sec_text)
    return pub_path, sec_path


def _check_z85(key: bytes, what: str) -> bytes:
    if len(key) != Z85_KEY_LEN:
        raise KeyFileError(f"{what}: a key is {Z85_KEY_LEN} Z85 characters, got {len(key)}")
    try:
        z85.decode(key)
    except (ValueError, KeyError):
        raise KeyFileError(f"{what}: not a Z85 key") from None
    return key


def _load(path: Path, what: str) -> tuple[bytes | None, bytes | None]:
    if not path.is_file():
        raise KeyFileError(f"{what}: no such key file {path}")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{what}: cannot read {path}: {exc}") from None
    return public, secret


def load_keypair(path: str | os.PathLike[str], what: str = "secret_key") -> KeyPair:
    """This node's key pair from its ``.secret`` certificate (``PATH`` alone means
    ``PATH.secret``).  The public key is derived from the secret one and must match the file's."""
    p = Path(path)
    if not p.exists() and Path(f"{p}.secret").exists():
        p = Path(f"{p}.secret")
    public, secret = _load(p, what)
    if not secret:
        raise KeyFileError(f"{what}: {p} holds no secret key (is it the .public file?)")
    secret = _check_z85(secret, what)
    derived = zmq.curve_public(secret)
    if public and public != derived:
        raise KeyFileError(f"{what}: {p}: its public key does not belong to its secret key")
    return KeyPair(derived, secret)


def load_public(text: str, base_dir: Path | None = None, what: str = "public_key") -> bytes:
    """A public key given inline (40 Z85 characters) or as a certificate file (``PATH`` alone
    also tries ``PATH.public``); a relative path is taken from ``base_dir``."""
    p = Path(text)
    if base_dir is not None and not p.is_absolute():
        p = base_dir / p
    if not p.exists() and Path(f"{p}.public").exists():
        p = Path(f"{p}.public")
    if len(text) == Z85_KEY_LEN and not p.exists():
        try:
            return _check_z85(text.encode("ascii"), what)
        except (KeyFileError, UnicodeEncodeError):
            raise KeyFileError(f"{what}: {text!r} is neither a Z85 key nor a key file") from None
    public, _secret = _load(p, what)
    if not public:
        raise KeyFileError(f"{what}: {p} holds no public key")
    return _check_z85(public, what)


# --- admission (ZAP, RFC 27) ------------------------------------------------------------------

def zap_reply(frames: list[bytes], admitted: dict[bytes, str]) -> tuple[list[bytes], str | None]:
    """Answer one ZAP request: admit a CURVE client whose key is in ``admitted`` (Z85 -> name).

    Returns the reply frames and the name admitted (None when refused).  Pure: no sockets."""
    if len(frames) < 6:
        return [b"1.0", frames[1] if len(frames) > 1 else b"", b"500", b"malformed request",
                b"", b""], None
    version, request_id, domain, _address, _identity, mechanism = frames[:6]
    if version != b"1.0":
        return [b"1.0", request_id, b"500", b"bad ZAP version", b"", b""], None
    if domain != ZAP_DOMAIN or mechanism != b"CURVE" or len(frames) < 7 or len(frames[6]) != 32:
        return [b"1.0", request_id, b"400", b"CURVE with a zkv key required", b"", b""], None
    name = admitted.get(z85.encode(frames[6]))
    if name is None:
        return [b"1.0", request_id, b"400", b"key not admitted", b"", b""], None
    return [b"1.0", request_id, b"200", b"OK", name.encode(), b""], name


class ZapHandler:
    """The ZAP endpoint of one ZeroMQ context.  Bind it before any CURVE server socket: a CURVE
    server without a handler in its context admits every client."""

    def __init__(self, ctx: zmq.Context, admitted: dict[bytes, str]) -> None:
        self.admitted = dict(admitted)
        self.refused = 0
        self.sock = ctx.socket(zmq.REP)
        self.sock.linger = 0
        self.sock.bind(ZAP_ENDPOINT)

    def handle(self, limit: int = 100) -> list[bytes]:
        """Answer the requests waiting (at most ``limit``); returns the Z85 keys refused."""
        refused = []
        for _ in range(limit):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            reply, name = zap_reply(frames, self.admitted)
            if name is None:
                self.refused += 1
                refused.append(z85.encode(frames[6]) if len(frames) > 6 and len(frames[6]) == 32
                               else b"?")
            self.sock.send_multipart(reply)
        return refused

    def close(self) -> None:
        self.sock.close(0)
