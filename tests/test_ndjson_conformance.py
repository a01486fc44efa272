"""The conformance checks of the trial suite that make sense for a stream, over NDJSON.

tests/test_e2e.py's end-to-end tests (but those about WebSocket or HTTP, listed below) and
tests/test_flow.py's slow consumer, rate limit, limits and drain tests run here unchanged,
with tests/ndjsonclient.py's client (the same interface as the WebSocket client) on an
NDJSON listener beside the server's WebSocket one, over loopback TCP and unix sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsservice import Settings

from . import ndjsonclient, test_e2e, test_flow
from .ndjsonclient import NDJSONClient

# tests of test_e2e._EndToEnd that are about WebSocket or HTTP, not the session protocol
WEBSOCKET_ONLY = {
    "test_hello_welcome": "expects heartbeat 25 and a subprotocol (FramingTests has ours)",
    "test_client_close_1000_ends_session": "a closing handshake with 1000",
    "test_binary_closes_1003": "a stream has no binary messages",
    "test_bad_client_does_not_disturb_others": "sends a binary message",
    "test_wrong_subprotocol_400": "the WebSocket handshake",
    "test_foreign_origin_403": "the WebSocket handshake",
    "test_same_origin_and_no_subprotocol_accepted": "the WebSocket handshake",
    "test_permessage_deflate": "a WebSocket extension",
    "test_demo_page": "HTTP only",
    "test_demo_favicon": "HTTP only",
    "test_unknown_path_404": "HTTP only",
}


def _stream_half(cls: type) -> type:
    """``cls`` (a mixin of tests and their helpers) without its WebSocket-only tests."""
    kept = {name: value for name, value in vars(cls).items()
            if name not in WEBSOCKET_ONLY and name not in ("__dict__", "__weakref__")}
    return type(f"_Stream{cls.__name__}", (), kept)


class _OverNDJSON:
    """test_e2e's tests with NDJSON clients (the WebSocket listener still serves HTTP)."""

    async def _start(self) -> None:
        await super()._start()  # type: ignore[misc]
        self.ndjson = await ndjsonclient.listen(self.server, self.unix)  # type: ignore

    async def client(self, **kwargs: Any) -> NDJSONClient:
        assert not kwargs, kwargs  # WebSocket handshake options
        return await ndjsonclient.admitted(self.server, self.ndjson)  # type: ignore

    async def session(self, **hello: Any) -> tuple[NDJSONClient, dict[str, Any]]:
        c = await self.client()
        return c, await c.hello(**hello)


_StreamEndToEnd = _stream_half(test_e2e._EndToEnd)


class NDJSONEndToEndTCPTests(_OverNDJSON, _StreamEndToEnd, TestCase):  # type: ignore
    """tests/test_e2e.py's stream-relevant tests over an NDJSON TCP listener."""


class NDJSONEndToEndUNIXTests(_OverNDJSON, _StreamEndToEnd, TestCase):  # type: ignore
    """tests/test_e2e.py's stream-relevant tests over an NDJSON unix socket listener."""

    unix = True


class WebSocketOnlyListTests(SynchronousTestCase):
    """The list above names tests that exist (a renamed one would run over NDJSON unseen)."""

    def test_names_exist(self) -> None:
        self.assertLessEqual(set(WEBSOCKET_ONLY), set(vars(test_e2e._EndToEnd)))
        self.assertTrue(any(name.startswith("test_") for name in vars(_StreamEndToEnd)))


class _FlowOverNDJSON:
    """test_flow's tests with NDJSON clients: slow consumer, rate limit, limits, drain."""

    unix = False

    async def start(self, settings: Settings, listen: str | None = None,
                    clock: Clock | None = None) -> str:
        address = await super().start(settings, listen, clock)  # type: ignore[misc]
        self.ndjson = await ndjsonclient.listen(self.server, self.unix)  # type: ignore
        return address

    async def client(self, **kwargs: Any) -> NDJSONClient:
        return await ndjsonclient.admitted(self.server, self.ndjson)  # type: ignore


for _flow in (test_flow.SlowConsumerTests, test_flow.RateLimitTests,
              test_flow.MaxSessionsTests, test_flow.DrainTests):
    for _unix in (False, True):
        _name = f"NDJSON{'UNIX' if _unix else 'TCP'}{_flow.__name__}"
        globals()[_name] = type(_name, (_FlowOverNDJSON, _flow), {
            "unix": _unix, "__doc__": f"tests/test_flow.py's {_flow.__name__} over NDJSON "
                                      f"({'unix socket' if _unix else 'TCP'})."})
del _flow, _unix, _name
