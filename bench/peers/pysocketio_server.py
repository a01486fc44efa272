#!/usr/bin/env python
"""A peer of the wsservice benchmark: python-socketio 5 (asyncio, ASGI) on uvicorn.

    .venv/bin/python bench/peers/pysocketio_server.py [--unix PATH] [--ws websockets]

bench/run.py starts one per run, pinned to the server CPU, and drives it with
bench/sioloadgen.js. ``socketio.AsyncServer(async_mode="asgi")`` with the websocket transport
only (no HTTP long-polling), no HTTP compression, the default JSON module; uvicorn with
permessage-deflate off, HTTP by httptools, the event loop uvloop (installed by the ``bench``
extra; asyncio's own loop without it) and the WebSocket protocol ``websockets-sansio`` (the
cheapest of uvicorn's three here: see bench/README.md), access log off.
Everything else at its default (Engine.IO pings every 25 s, uvicorn's WebSocket pings every
20 s, handlers each run as their own task). Handlers, as in socketio_server.js:

- ``echo``: the ack carries the data back (request/response)
- ``subscribe``: join room ``bench``, then ack
- ``publish``: ``emit("message", data, room="bench")`` (a room broadcast), then ack

It listens on 127.0.0.1, port 0 (and on a unix socket with ``--unix``), prints
``listening on ...`` lines with the URLs, and stops on SIGTERM (uvicorn's graceful shutdown).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from importlib.metadata import version
from typing import Any

import socketio  # type: ignore[import-untyped]
import uvicorn


def make_app() -> Any:
    """The socket.io server with the benchmark's three handlers, as an ASGI app."""
    sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"],
                               http_compression=False, cors_allowed_origins=None)

    @sio.on("echo")
    async def echo(sid: str, data: Any) -> Any:
        return data  # the handler's return value is the ack

    @sio.on("subscribe")
    async def subscribe(sid: str) -> None:
        await sio.enter_room(sid, "bench")

    @sio.on("publish")
    async def publish(sid: str, data: Any) -> None:
        await sio.emit("message", data, room="bench")

    return socketio.ASGIApp(sio)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--unix", metavar="PATH", help="also listen on this unix socket")
    p.add_argument("--ws", default="websockets-sansio",
                   choices=["websockets", "websockets-sansio", "wsproto"],
                   help="uvicorn's WebSocket implementation (default websockets-sansio)")
    p.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                   help="event loop (auto: uvloop when installed, as by the bench extra)")
    args = p.parse_args(argv)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    sockets = [tcp]
    if args.unix:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(args.unix)
        unix.listen(2048)
        sockets.append(unix)
    config = uvicorn.Config(make_app(), loop=args.loop, http="httptools", ws=args.ws,
                            ws_per_message_deflate=False, lifespan="off",
                            access_log=False, log_level="warning", backlog=2048)
    server = uvicorn.Server(config)
    port = tcp.getsockname()[1]
    loop = args.loop
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(f"python-socketio {version('python-socketio')} (python-engineio "
          f"{version('python-engineio')}) on uvicorn {uvicorn.__version__}: ws {args.ws}, "
          f"loop {loop}, pid {os.getpid()}")
    print(f"listening on tcp 127.0.0.1:{port}: ws://127.0.0.1:{port}/socket.io/")
    if args.unix:
        print(f"listening on unix {args.unix}: ws+unix:{args.unix}:/socket.io/")
    sys.stdout.flush()
    # uvicorn's run() builds the loop its config names (uvloop) and serves the bound sockets;
    # on SIGTERM it shuts down gracefully, then re-raises the signal on itself
    server.run(sockets=sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
