"""What the server pushes (``event``, ``message``, ``call``): each seq delivered once and in
order to the application's callbacks, server calls answered, deliveries acked."""

from __future__ import annotations

from typing import Any, Callable

import orjson
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from ..errors import ApplicationError
from ..log import logger
from . import presence
from .presence import PresenceListener

Listener = Callable[[Any, int], Any]  # (data, seq)
AnyListener = Callable[[str, Any, int], Any]  # (event, data, seq)
Handler = Callable[[Any], Any]  # (params) -> result, Deferred or coroutine


def _is_id(value: Any) -> bool:
    return type(value) is str or type(value) is int


class Inbox:
    """Delivery of seq-numbered messages: ``last_seq`` is the last one delivered; one
    timer sends ``ack`` within ``ack_delay`` of the first unacked delivery, or at once
    after ``ack_every`` of them. ``send`` writes to the open connection."""

    _log = logger()

    def __init__(self, clock: IReactorTime, send: Callable[[bytes], bool], ack_every: int,
                 ack_delay: float) -> None:
        self._clock = clock
        self._send = send
        self._ack_every = ack_every
        self._ack_delay = ack_delay
        self.last_seq = 0
        self.acked = 0
        self._timer: IDelayedCall | None = None
        self.delivered = 0  # seq-numbered messages delivered, ever
        self.events: dict[str, list[Listener]] = {}
        self.any_events: list[AnyListener] = []
        self.topics: dict[str, Listener] = {}
        self.presence: dict[str, PresenceListener] = {}  # topics subscribed with presence
        self.handlers: dict[str, Handler] = {}

    # -- seq ---------------------------------------------------------------------------------

    def accept(self, message: dict[str, Any]) -> int | None:
        """The seq of a pushed message if it is the next to deliver (and now counted as
        delivered), else None: a duplicate or a bad seq is dropped and logged."""
        seq = message.get("seq")
        if type(seq) is not int or seq < 1:
            self._log.warn("wsservice client: dropped {type!r} with a bad seq {seq!r}",
                           type=message.get("type"), seq=seq)
            return None
        if seq <= self.last_seq:
            self._log.warn("wsservice client: dropped a duplicate {type} seq {seq} (already "
                           "delivered up to {last})", type=message.get("type"), seq=seq,
                           last=self.last_seq)
            return None
        if seq != self.last_seq + 1:
            self._log.warn("wsservice client: seq jumped from {last} to {seq}: messages in "
                           "between never came", last=self.last_seq, seq=seq)
        self.last_seq = seq
        self.delivered += 1
        self._delivered()
        return seq

    def reset(self) -> None:
        """A new session: its seq starts over."""
        self.stop()
        self.last_seq = self.acked = 0

    def resumed(self) -> None:
        """The resume's hello said ``last_seq``: that is acked."""
        self.acked = self.last_seq

    def stop(self) -> None:
        """The connection is gone: no ack timer."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _delivered(self) -> None:
        if self.last_seq - self.acked >= self._ack_every:
            self.ack()
        elif self._timer is None:
            self._timer = self._clock.callLater(self._ack_delay, self.ack)

    def ack(self) -> None:
        """Ack everything delivered so far, if anything is unacked."""
        self.stop()
        if self.last_seq > self.acked and self._send(b'{"type":"ack","seq":%d}'
                                                     % self.last_seq):
            self.acked = self.last_seq

    # -- delivery ----------------------------------------------------------------------------

    def event(self, message: dict[str, Any]) -> None:
        """A pushed ``event``."""
        seq = self.accept(message)
        if seq is None:
            return
        name, data = message.get("event"), message.get("data")
        if type(name) is not str:
            self._log.warn("wsservice client: dropped event seq {seq} without a name", seq=seq)
            return
        for every in list(self.any_events):
            self._run(every, f"a listener of every event ({name!r})", name, data, seq)
        for listener in list(self.events.get(name, ())):
            self._run(listener, f"a listener of event {name!r}", data, seq)
        kind = presence.EVENTS.get(name)
        if kind is not None:
            self._presence(kind, name, data, seq)

    def _presence(self, kind: str, name: str, data: Any, seq: int) -> None:
        """A ``presence.join`` / ``presence.leave`` event, for its topic's presence listener."""
        topic = data.get("topic") if isinstance(data, dict) else None
        member = presence.member(data.get("member")) if isinstance(topic, str) else None
        if member is None or not isinstance(topic, str):
            self._log.warn("wsservice client: dropped a malformed {name} event seq {seq}",
                           name=name, seq=seq)
            return
        listener = self.presence.get(topic)
        if listener is not None:
            self._run(listener, f"the presence listener of topic {topic!r}", kind, member)

    def message(self, message: dict[str, Any]) -> None:
        """A topic ``message``."""
        seq = self.accept(message)
        if seq is None:
            return
        topic = message.get("topic")
        listener = self.topics.get(topic) if type(topic) is str else None
        if listener is None:
            self._log.debug("wsservice client: message seq {seq} on {topic!r}, not subscribed",
                            seq=seq, topic=topic)
            return
        self._run(listener, f"the listener of topic {topic!r}", message.get("data"), seq)

    def call(self, message: dict[str, Any]) -> None:
        """A server-initiated ``call``: its handler's answer goes back as result/error."""
        seq = self.accept(message)
        if seq is None:
            return
        call_id, method = message.get("id"), message.get("method")
        if not _is_id(call_id) or type(method) is not str:
            self._log.warn("wsservice client: dropped server call seq {seq} without a valid "
                           "id and method", seq=seq)
            return
        handler = self.handlers.get(method)
        if handler is None:
            self._error(call_id, "unknown_method", f"no handler for method {method!r}")
            return
        d = maybeDeferred(handler, message.get("params"))
        d.addCallbacks(lambda result: self._result(call_id, method, result),
                       lambda failure: self._failed(call_id, method, failure))

    def _run(self, listener: Callable[..., Any], what: str, *args: Any) -> None:
        try:
            result = listener(*args)
        except Exception:
            self._log.failure("wsservice client: {what} failed", what=what)
            return
        if isinstance(result, Deferred):
            result.addErrback(lambda f: self._log.failure(
                "wsservice client: {what} failed", f, what=what))

    def _result(self, call_id: Any, method: str, result: Any) -> None:
        try:
            payload = orjson.dumps({"type": "result", "id": call_id, "result": result})
        except TypeError as e:
            self._log.error("wsservice client: the handler of {method!r} answered what JSON "
                            "cannot hold: {error}", method=method, error=str(e))
            self._error(call_id, "internal", "the client's handler failed")
            return
        self._reply(payload, method)

    def _failed(self, call_id: Any, method: str, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, ApplicationError):
            self._error(call_id, error.code, error.message, error.data, method)
            return
        self._log.failure("wsservice client: the handler of {method!r} failed", failure,
                          method=method)
        self._error(call_id, "internal", "the client's handler failed", None, method)

    def _error(self, call_id: Any, code: str, message: str, data: Any = None,
               method: str = "") -> None:
        body: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            body["data"] = data
        try:
            payload = orjson.dumps({"type": "error", "id": call_id, "error": body})
        except TypeError:
            del body["data"]
            payload = orjson.dumps({"type": "error", "id": call_id, "error": body})
        self._reply(payload, method)

    def _reply(self, payload: bytes, method: str) -> None:
        if not self._send(payload):
            self._log.info("wsservice client: the answer to server call {method!r} is lost: "
                           "no connection", method=method)
