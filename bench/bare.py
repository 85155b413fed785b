"""The calibration point the issue gives, measured in the same run: a bare Python server.

One process, one uvloop event loop (asyncio's if uvloop is missing: the server's log says
which), a dict, no replication, no log and no second process: the most a Python server on this machine does for ``SET``/``GET``/``INCR``.
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

from zkv.commands import Hello, dispatch  # noqa: E402
from zkv.protocol import resp  # noqa: E402
from zkv.protocol.requests import parse_requests  # noqa: E402

MAX_LINE = 64 * 1024
OK = b"+OK\r\n"


class BareConnection(asyncio.Protocol):
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data
        self.buf = bytearray()
        self.resume: list = []
        self.resp3 = False  # after HELLO 3, nulls are written the RESP3 way
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
        for args, is_resp in parsed.requests:
            name = args[0].upper()
            if name == b"SET" and len(args) == 3:
                data[args[1]] = args[2]
                out.append(OK)
            elif name == b"GET" and len(args) == 2:
                value = data.get(args[1])
                out.append(resp.bulk3(value) if self.resp3 else resp.bulk(value))
            elif name == b"INCR" and len(args) == 2:
                n = int(data.get(args[1], b"0")) + 1
                data[args[1]] = b"%d" % n
                out.append(b":%d\r\n" % n)
            else:  # PING, CONFIG GET, HELLO, COMMAND...: what zkv answers without its store
                r = dispatch(args, is_resp, self.resp3)
                if r.__class__ is Hello:
                    self.resp3 = r.proto == 3
                if r.__class__ is not bytes:  # HELLO and QUIT carry their reply; others need a store
                    r = getattr(r, "reply", None) or resp.error(
                        f"ERR the bare server has no {name.decode(errors='replace')}")
                out.append(r)
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
    print(f"bare server on {args.host}:{args.port}, event loop {type(loop).__module__}", flush=True)
    try:
        loop.run_until_complete(serve(args.host, args.port))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
