"""The calibration point the issue gives, measured in the same run: a bare Python server.

One process, one uvloop event loop (asyncio's if uvloop is missing), a dict, no replication, no
log and no second process: the most a Python server on this machine does for ``SET``/``GET``.
It parses with zkv's own request parser (``zkv.protocol.requests``), so the difference between
it and zkv is what zkv's design adds (the frontend<->store hop, the log, two replicas applying
every write), not a parser written differently.  The report prints zkv's rates as a fraction of
this server's beside the ratios to Redis.

    python bench/bare.py --port 7999       # serves until SIGTERM / Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zkv.protocol import resp  # noqa: E402
from zkv.protocol.requests import parse_requests  # noqa: E402

MAX_LINE = 64 * 1024
OK, PONG, EMPTY = b"+OK\r\n", b"+PONG\r\n", b"*0\r\n"  # EMPTY: CONFIG GET's empty answer


class BareConnection(asyncio.Protocol):
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data
        self.buf = bytearray()
        self.resume: list = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, chunk: bytes) -> None:
        buf = self.buf
        if buf:
            buf += chunk
            parsed = parse_requests(buf, MAX_LINE, resume=self.resume)
            del buf[:parsed.consumed]
        else:
            parsed = parse_requests(chunk, MAX_LINE, resume=self.resume)
            if parsed.consumed < len(chunk):
                buf += chunk[parsed.consumed:]
        data = self.data
        out = []
        for args, _is_resp in parsed.requests:
            name = args[0].upper()
            if name == b"SET" and len(args) == 3:
                data[args[1]] = args[2]
                out.append(OK)
            elif name == b"GET" and len(args) == 2:
                out.append(resp.bulk(data.get(args[1])))
            elif name == b"PING":
                out.append(PONG)
            elif name == b"CONFIG":
                out.append(EMPTY)
            else:
                out.append(resp.error(f"ERR unknown command for the bare server: {name.decode(errors='replace')}"))
        if parsed.fatal is not None:
            out.append(parsed.fatal)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        if parsed.fatal is not None and self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    data: dict[bytes, bytes] = {}
    server = await loop.create_server(lambda: BareConnection(data), host, port,
                                      reuse_address=True, backlog=4096)
    try:
        await stop.wait()
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve(args.host, args.port))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
