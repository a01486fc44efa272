#!/usr/bin/env python
"""The NDJSON benchmark's lower bound: a raw Twisted NDJSON + orjson echo server, no session layer.

    .venv/bin/python bench/baseline_ndjson.py --listen tcp:0:interface=127.0.0.1 \
        [--listen unix:/tmp/x.sock]

What any Twisted server speaking JSON lines must do at the least, and no more: one minimal
``Protocol`` that splits what it receives on ``b"\\n"``, parses each line with orjson,
answers it with one orjson-encoded line, and writes every answer to one ``dataReceived`` in a
single ``transport.write``. No session, no ids kept, no timers, no limits but one (a line
still arriving is dropped, with its connection, past 1 MiB, so a client cannot make it
buffer without bound). Enough of wsservice's wire format for bench/loadgen.js's
``ndjson-call`` workload to drive it with the same lines as wsservice's NDJSON listener:

- ``{"type":"hello",...}`` -> ``{"type":"welcome"}``
- ``{"type":"call","id":I,"method":"echo","params":P}`` -> ``{"type":"result","id":I,"result":P}``
- a blank line -> nothing (as wsservice)
- anything else -> ``{"type":"error","error":{"code":"bad_message","message":"..."}}``
  (``bad_json`` when the line is not a JSON object)

TCP options are Twisted's defaults, as on wsservice's NDJSON listener (no TCP_NODELAY).
It prints ``listening on DESCRIPTION: tcp://127.0.0.1:PORT`` (or ``: unix:PATH``) per
listener, and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import sys

import orjson
from twisted.internet.protocol import Factory, Protocol

import serving  # bench/serving.py: --listen, listening, SIGTERM

_loads = orjson.loads
_dumps = orjson.dumps
_NL = orjson.OPT_APPEND_NEWLINE
_JSONDecodeError = orjson.JSONDecodeError

MAX_PARTIAL = 1 << 20  # bytes of an unfinished line kept before the connection is dropped
WELCOME = b'{"type":"welcome"}\n'
BAD_JSON = b'{"type":"error","error":{"code":"bad_json","message":"not a JSON object"}}\n'
BAD_MESSAGE = (b'{"type":"error","error":{"code":"bad_message",'
               b'"message":"unsupported message"}}\n')


class EchoLines(Protocol):
    """One stream: each line in answered by one line out, all of one read in one write."""

    _partial = b""

    def dataReceived(self, data: bytes) -> None:
        """Answer every complete line of ``data`` (with what was left of the last read)."""
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_PARTIAL:
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._partial = rest
        out: list[bytes] = []
        append = out.append
        for line in lines:
            try:
                msg = _loads(line)
            except _JSONDecodeError:
                if line.strip(b" \t\r"):
                    append(BAD_JSON)
                continue  # a blank line is no message
            if type(msg) is not dict:
                append(BAD_JSON)
                continue
            kind = msg.get("type")
            if kind == "call" and msg.get("method") == "echo":
                append(_dumps({"type": "result", "id": msg.get("id"),
                               "result": msg.get("params")}, option=_NL))
            elif kind == "hello":
                append(WELCOME)
            else:
                append(BAD_MESSAGE)
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]


def main(argv: list[str]) -> int:
    """Listen on every ``--listen`` endpoint until SIGTERM or SIGINT."""
    args = serving.parser(__doc__).parse_args(argv)
    return serving.serve(Factory.forProtocol(EchoLines), args.listen,
                         tcp=lambda port: f"tcp://127.0.0.1:{port}",
                         unix=lambda name: f"unix:{name}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
