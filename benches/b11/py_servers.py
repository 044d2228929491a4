#!/usr/bin/env python3
"""B11 peer servers: 64-byte TCP echo in the Python libraries beamvm is compared with.

    python benches/b11/py_servers.py KIND [--hog] [--hog-slice-ms 10] [--port 0]

KIND: asyncio-streams, asyncio-protocol, uvloop-protocol, gevent.

Prints ``READY <port> <pid>`` on stdout once listening on 127.0.0.1, then serves until
SIGTERM/SIGINT (the runner's contract, benches/b11/README.md).

``--hog`` adds one CPU-bound handler inside the server: pure-Python arithmetic that
yields to its event loop every ``--hog-slice-ms`` (10 ms) of work -- the friendliest
hog a cooperative runtime can get (one that never yields stops these servers
entirely, so nothing could be measured).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import sys
import time

KINDS = ("asyncio-streams", "asyncio-protocol", "uvloop-protocol", "gevent")
BACKLOG = 1024  # the same for every server (the generator keeps <= 512 connects in flight)
READ_SIZE = 65536


def raise_nofile() -> None:
    """Lift the soft descriptor limit to the hard one (10,000 connections need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spin(seconds: float) -> int:
    """Pure-Python CPU work for about ``seconds`` (checks the clock every 1,000 steps)."""
    end = time.perf_counter() + seconds
    x = 0
    while True:
        for _ in range(1000):
            x += 1
        if time.perf_counter() >= end:
            return x


def ready(port: int) -> None:
    print(f"READY {port} {os.getpid()}", flush=True)


# ----------------------------------------------------------------- asyncio / uvloop
def run_asyncio(kind: str, port: int, hog_slice: float | None) -> None:
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(READ_SIZE):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    async def hog(slice_s: float) -> None:
        while True:
            spin(slice_s)
            await asyncio.sleep(0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if kind == "asyncio-streams":
            server = await asyncio.start_server(
                handle, "127.0.0.1", port, backlog=BACKLOG, reuse_address=True
            )
        else:
            server = await loop.create_server(
                Echo, "127.0.0.1", port, backlog=BACKLOG, reuse_address=True
            )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        hog_task = asyncio.create_task(hog(hog_slice)) if hog_slice else None
        ready(server.sockets[0].getsockname()[1])
        await stop.wait()
        if hog_task:
            hog_task.cancel()
        server.close()

    if kind == "uvloop-protocol":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# ----------------------------------------------------------------------- gevent
def run_gevent(port: int, hog_slice: float | None) -> None:
    import gevent
    from gevent.server import StreamServer

    def handle(sock: socket.socket, _addr: object) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := sock.recv(READ_SIZE):
                sock.sendall(data)
        except OSError:
            pass
        finally:
            sock.close()

    def hog(slice_s: float) -> None:
        while True:
            spin(slice_s)
            gevent.sleep(0)

    server = StreamServer(("127.0.0.1", port), handle, backlog=BACKLOG)
    server.init_socket()
    server.start()
    if hog_slice:
        gevent.spawn(hog, hog_slice)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    ready(server.server_port)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--hog", action="store_true", help="add one CPU-bound handler")
    ap.add_argument("--hog-slice-ms", type=float, default=10.0)
    args = ap.parse_args(argv)
    raise_nofile()
    hog_slice = args.hog_slice_ms / 1000 if args.hog else None
    if args.kind == "gevent":
        run_gevent(args.port, hog_slice)
    else:
        run_asyncio(args.kind, args.port, hog_slice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
