#!/usr/bin/env python
"""The benchmark's baseline: a bare Autobahn/Twisted JSON echo server, no session layer.

    .venv/bin/python bench/baseline_autobahn.py --listen tcp:0:interface=127.0.0.1 \
        [--listen unix:/tmp/x.sock] [--path /ws]

It speaks just enough of wsservice's wire format for bench/loadgen.js to drive it with the
same messages as wsservice, doing the least work a straightforward Autobahn server would:

- ``{"type":"hello",...}``            -> ``{"type":"welcome"}`` (no session, no secrets)
- ``{"type":"call","id":I,"method":"echo","params":P}`` -> ``{"type":"result","id":I,"result":P}``
- ``{"type":"event","event":"echo","data":D}`` -> ``{"type":"event","event":"echo","data":D,"seq":N}``
  (N counts 1, 2, 3, ... per connection)
- ``{"type":"subscribe","topic":T[,"id":I]}`` -> joins T (``{"type":"result","id":I,"result":null}``
  when ``id`` is given)
- ``{"type":"publish","topic":T,"data":D}`` -> ``{"type":"message","topic":T,"data":D}`` to every
  subscriber of T, encoded and framed once (Autobahn's ``prepareMessage``) and sent with
  ``sendPreparedMessage`` (no per-subscriber ``seq``: that is what a broadcast costs bare)
- ``{"type":"ping","data":D}``          -> ``{"type":"pong","data":D}``
- anything else -> ``{"type":"error","error":{"code":"bad_message","message":"..."}}``

JSON with orjson, like wsservice. Autobahn's protocol options are left at their defaults
(UTF-8 validation of incoming text on, no compression offered, TCP_NODELAY). The WebSocket
factory serves the listening port directly (no twisted.web Site in front of it).
It prints ``listening on ws://127.0.0.1:PORT/ws`` (or ``listening on unix:PATH``) per
listener, and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

import serving  # bench/serving.py: --listen, listening, SIGTERM

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError

WELCOME = b'{"type":"welcome"}'
BAD_JSON = b'{"type":"error","error":{"code":"bad_json","message":"not a JSON object"}}'
BAD_MESSAGE = b'{"type":"error","error":{"code":"bad_message","message":"unsupported message"}}'


class EchoProtocol(WebSocketServerProtocol):
    seq = 0
    topics: set | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            msg = _loads(payload)
        except _JSONDecodeError:
            self.sendMessage(BAD_JSON, False)
            return
        if type(msg) is not dict:
            self.sendMessage(BAD_JSON, False)
            return
        kind = msg.get("type")
        if kind == "call":
            if msg.get("method") == "echo":
                self.sendMessage(_dumps({"type": "result", "id": msg.get("id"),
                                         "result": msg.get("params")}), False)
                return
        elif kind == "event":
            if msg.get("event") == "echo":
                self.seq = seq = self.seq + 1
                self.sendMessage(_dumps({"type": "event", "event": "echo",
                                         "data": msg.get("data"), "seq": seq}), False)
                return
        elif kind == "publish":
            topic = msg.get("topic")
            if type(topic) is str:
                self.factory.publish(topic, msg.get("data"))
                if "id" in msg:
                    self.sendMessage(_dumps({"type": "result", "id": msg["id"],
                                             "result": None}), False)
                return
        elif kind == "subscribe":
            topic = msg.get("topic")
            if type(topic) is str:
                self.factory.subscribe(self, topic)
                if self.topics is None:
                    self.topics = set()
                self.topics.add(topic)
                if "id" in msg:
                    self.sendMessage(_dumps({"type": "result", "id": msg["id"],
                                             "result": None}), False)
                return
        elif kind == "hello":
            self.sendMessage(WELCOME, False)
            return
        elif kind == "ping":
            self.sendMessage(_dumps({"type": "pong", "data": msg.get("data")}), False)
            return
        self.sendMessage(BAD_MESSAGE, False)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self.topics:
            for topic in self.topics:
                self.factory.unsubscribe(self, topic)
            self.topics = None


class EchoFactory(WebSocketServerFactory):
    protocol = EchoProtocol

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscribers: dict[str, set] = {}

    def subscribe(self, proto: EchoProtocol, topic: str) -> None:
        self.subscribers.setdefault(topic, set()).add(proto)

    def unsubscribe(self, proto: EchoProtocol, topic: str) -> None:
        subs = self.subscribers.get(topic)
        if subs is not None:
            subs.discard(proto)
            if not subs:
                del self.subscribers[topic]

    def publish(self, topic: str, data: Any) -> None:
        subs = self.subscribers.get(topic)
        if not subs:
            return
        payload = _dumps({"type": "message", "topic": topic, "data": data})
        prepared = self.prepareMessage(payload, False)
        for proto in tuple(subs):
            if proto.state == proto.STATE_OPEN:
                proto.sendPreparedMessage(prepared)


def main(argv: list[str]) -> int:
    """Serve on every ``--listen`` endpoint until SIGTERM or SIGINT."""
    p = serving.parser(__doc__)
    p.add_argument("--path", default="/ws", help="accepted for symmetry; any path is served")
    args = p.parse_args(argv)
    return serving.serve(EchoFactory("ws://127.0.0.1"), args.listen,
                         tcp=lambda port: f"ws://127.0.0.1:{port}{args.path}",
                         unix=lambda name: f"unix {name}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
