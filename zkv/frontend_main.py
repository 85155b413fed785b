"""Entry point of a node's frontend process:
``python -m zkv.frontend_main CONFIG ENDPOINT READY_FD GO_FD [SUPERVISOR_PID]``.

It starts beside the store and opens its client port only once the supervisor writes "go" on
GO_FD (the store is ready); end of file there instead (the store failed) ends it with code 0."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys

from zkv.config import ConfigError, load_config


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # a libuv loop: about twice the request rate of asyncio's own

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def _open_file_limit(max_clients: int) -> int:
    """Make room for ``max_clients`` descriptors (zkv.frontend.fdlimit); the clients it allows."""
    import logging

    from zkv.frontend.fdlimit import RESERVE, apply

    log = logging.getLogger("zkv.frontend")
    before, after = apply(max_clients)
    if after.soft != before.soft:
        log.info("open-file limit raised from %d to %d (max_clients %d + %d)",
                 before.soft, after.soft, max_clients, RESERVE)
    if after.max_clients < max_clients:
        log.warning("open-file limit is %d (hard %d) and may not be raised: max_clients lowered "
                    "from %d to %d; raise it with ulimit -n or LimitNOFILE=", after.soft,
                    after.hard, max_clients, after.max_clients)
    return after.max_clients


def main() -> int:
    from zkv.frontend.metrics import MetricsListenError
    from zkv.frontend.server import Server
    from zkv.frontend.tls import TLSError
    from zkv.proc import die_with_parent, setup_logging, tune_gc

    config_path, endpoint, ready_fd, go_fd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    supervisor = int(sys.argv[5]) if len(sys.argv) > 5 else None
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"zkv: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.id, "frontend")
    die_with_parent(parent=supervisor)
    max_clients = _open_file_limit(cfg.max_clients)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with os.fdopen(go_fd, "rb") as go:
        if go.readline().strip() != b"go":
            return 0
    tune_gc()
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        def ready() -> None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)

        loop.run_until_complete(Server(cfg, endpoint, max_clients).serve(stop, ready))
    except (TLSError, MetricsListenError) as exc:
        print(f"zkv: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        print(f"zkv: listen {cfg.listen}: {reason}", file=sys.stderr)
        return 2
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
