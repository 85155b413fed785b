"""TLS on the client port: the server-side ``ssl.SSLContext`` built from the config's files.

With ``tls_cert_file`` and ``tls_key_file`` the client port speaks only TLS (both protocols, plain
text and RESP, inside it): ``redis-cli --tls``, redis-py ``ssl=True``, ``openssl s_client``.
With ``tls_ca_file`` too, a client must present a certificate signed by that CA (Redis's
``tls-auth-clients yes``).  TLS 1.2 is the oldest version accepted.
"""

from __future__ import annotations

import ssl

from zkv.config import Config


class TLSError(Exception):
    """The certificate, key or CA cannot be used; the message is one line."""


def server_context(cfg: Config) -> ssl.SSLContext | None:
    """The context for the client port, or None when TLS is not configured."""
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"tls_cert_file {cfg.tls_cert_file} / tls_key_file {cfg.tls_key_file}: "
                       f"{exc}") from None
    if cfg.tls_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(cfg.tls_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"tls_ca_file {cfg.tls_ca_file}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
