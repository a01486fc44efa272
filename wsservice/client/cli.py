"""``python -m wsservice.client URL call|publish|presence|listen ...``: the client for
operators and scripts. Results and pushes go to stdout as JSON lines, everything else to
stderr.

Exit codes: 0 done, 1 the server answered an error or could not be reached, 2 a usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn, Sequence

import orjson
from twisted.internet.defer import Deferred
from twisted.internet.task import react

from ..errors import RemoteError
from .client import CLOSED, RECONNECTING, Client, connect
from .url import parse_url

PROG = "python -m wsservice.client"
USAGE_ERROR = 2


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    p = _Parser(prog=PROG, description="Call, publish to, ask who is in a topic of, or "
                "listen on a wsservice server.")
    p.add_argument("url", metavar="URL",
                   help="ws://HOST:PORT/ws, wss://HOST:PORT/ws or unix:/PATH/TO/SOCKET")
    p.add_argument("command", choices=("call", "publish", "presence", "listen"),
                   help="call METHOD [JSON] | publish TOPIC JSON | presence TOPIC | "
                   "listen [TOPIC...]")
    p.add_argument("args", nargs="*", metavar="ARG")
    p.add_argument("--meta", default=None, metavar="JSON", help="the hello's meta (an object)")
    p.add_argument("--auth", default=None, metavar="JSON", help="the hello's auth")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for an answer (default 30)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="an extra handshake header (repeatable)")
    p.add_argument("--cafile", default=None, metavar="PEM",
                   help="trust this CA certificate for wss:// (instead of the system's)")
    return p


def _json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise UsageError(f"{what}: not valid JSON ({e}): {text!r}") from None


class Command:
    """A parsed, checked command line."""

    def __init__(self, argv: Sequence[str]) -> None:
        ns = parser().parse_intermixed_args(list(argv))
        try:
            self.target = parse_url(ns.url)
        except ValueError as e:
            raise UsageError(str(e)) from None
        self.url: str = ns.url
        self.command: str = ns.command
        args: list[str] = ns.args
        if not 0 < ns.timeout < float("inf"):
            raise UsageError(f"--timeout must be a number > 0, got {ns.timeout:g}")
        self.timeout: float = ns.timeout
        self.meta = _json(ns.meta, "--meta") if ns.meta is not None else None
        if self.meta is not None and not isinstance(self.meta, dict):
            raise UsageError("--meta must be a JSON object")
        self.auth = _json(ns.auth, "--auth") if ns.auth is not None else None
        self.headers: dict[str, str] = {}
        for header in ns.header:
            name, sep, value = header.partition(":")
            if not sep or not name.strip():
                raise UsageError(f"--header must be 'NAME: VALUE', got {header!r}")
            self.headers[name.strip()] = value.strip()
        self.cafile: str | None = ns.cafile
        if self.command == "call":
            if len(args) not in (1, 2):
                raise UsageError("call takes METHOD and optionally JSON params")
            self.method = args[0]
            self.params = _json(args[1], "the params") if len(args) == 2 else None
        elif self.command == "publish":
            if len(args) != 2:
                raise UsageError("publish takes TOPIC and JSON data")
            self.topic = args[0]
            self.data = _json(args[1], "the data")
        elif self.command == "presence":
            if len(args) != 1:
                raise UsageError("presence takes TOPIC")
            self.topic = args[0]
        else:
            self.topics: list[str] = args

    def options(self) -> dict[str, Any]:
        """The connect() options this command line asks for."""
        options: dict[str, Any] = {"call_timeout": self.timeout, "headers": self.headers}
        if self.cafile is not None:
            from twisted.internet.ssl import Certificate, optionsForClientTLS
            try:
                with open(self.cafile, "rb") as f:
                    ca = Certificate.loadPEM(f.read())
            except Exception as e:
                raise UsageError(f"--cafile {self.cafile}: cannot load a PEM certificate "
                                 f"({e})") from None
            options["tls_options"] = optionsForClientTLS(self.target.host, trustRoot=ca)
        return options


def _line(stream: Any, value: Any) -> None:
    stream.write(orjson.dumps(value).decode() + "\n")
    stream.flush()


def _say(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")
    sys.stderr.flush()


async def _run(reactor: Any, command: Command) -> int:
    try:
        client = await connect(command.url, meta=command.meta, auth=command.auth,
                               reactor=reactor, **command.options())
    except RemoteError as e:
        _say(f"cannot connect to {command.url}: {e.code}: {e.message}")
        return 1
    except Exception as e:  # refused, unreachable, TLS: one line, no traceback
        _say(f"cannot connect to {command.url}: {' '.join(str(e).split()) or repr(e)}")
        return 1
    try:
        if command.command == "listen":
            return await _listen(reactor, client, command)
        if command.command == "call":
            _line(sys.stdout, await client.call(command.method, command.params))
        elif command.command == "presence":
            _line(sys.stdout, await client.presence(command.topic))
        else:
            await client.publish(command.topic, command.data)
        return 0
    except RemoteError as e:
        error: dict[str, Any] = {"code": e.code, "message": e.message}
        if e.data is not None:
            error["data"] = e.data
        _line(sys.stderr, {"error": error})
        return 1
    finally:
        if client.state != CLOSED:
            await client.close()


async def _listen(reactor: Any, client: Client, command: Command) -> int:
    """Print every push and topic message until SIGINT/SIGTERM (0) or the session ends (1)."""
    ended: Deferred[int] = Deferred()

    def event(name: str, data: Any, seq: int) -> None:
        _line(sys.stdout, {"type": "event", "event": name, "data": data, "seq": seq})

    def message(topic: str) -> Any:
        return lambda data, seq: _line(sys.stdout, {"type": "message", "topic": topic,
                                                    "data": data, "seq": seq})

    def state(new: str, info: dict[str, Any]) -> None:
        if new == RECONNECTING:
            _say(f"connection lost (close {info.get('code')}); reconnecting")
        elif new == CLOSED:
            if not ended.called:
                _say(f"the server ended the session (close {info.get('code')}: "
                     f"{info.get('reason')})")
                ended.callback(1)
        elif info.get("lost"):
            _say("the session could not be resumed: messages pushed meanwhile are lost")
        elif info.get("resumed"):
            _say(f"resumed ({info.get('replayed', 0)} messages replayed)")

    def stopping() -> Deferred[None]:
        if not ended.called:
            ended.callback(0)  # first: the close below is ours, not the server's
        return client.close()

    client.onAnyEvent(event)
    client.onStateChange(state)
    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    for topic in command.topics:
        await client.subscribe(topic, message(topic))
    _say("listening" + (f" on {', '.join(command.topics)}" if command.topics else "")
         + " (Ctrl-C stops)")
    return await ended


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The command line: parse ``argv`` (default sys.argv[1:]), run, exit."""
    try:
        command = Command(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        _say(f"error: {e}")
        sys.exit(USAGE_ERROR)

    async def run(reactor: Any) -> None:
        code = await _run(reactor, command)
        if code:
            raise SystemExit(code)

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
