"""Sans-IO wire model of protocol v1: bytes in, a typed message or a precise WireError out.

Nothing here knows about Twisted, sockets or sessions, so it is unit-testable and fuzzable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Union

import orjson

from . import errors

MAX_NAME_LENGTH = 256
MAX_ID_LENGTH = 128
MAX_TOPIC_LENGTH = 256
# what a member shows every other member of its topics (meta.public), as JSON: every
# presence.join and .leave carries it to every watcher, so it stays small
MAX_PUBLIC_META = 1024

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError
_Fragment = orjson.Fragment

# Integers a message may carry: the signed 64-bit range. orjson would read a longer integer
# as a float (10**29 -> 1.2345678901234568e+29), silently inexact.
INT_MIN = -(2 ** 63)
INT_MAX = 2 ** 63 - 1
# The shortest integer literal outside that range has 19 digits. A payload with no more
# than this many digits and '{' '[' brackets in all needs neither the exact check nor the
# depth walk.
_QUICK_MARKS = 18
_MARKS = b"0123456789{["
# digits become b"0", anything else b" ": a run of 19 digits is then a plain substring (a
# translate and a find cost less than half of a regex search here)
_DIGIT_CLASSES = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_RUN = b"0" * 19

CallId = Union[str, int]


class WireError(Exception):
    """A received text that breaks the protocol; ``code`` is ``bad_json`` or ``bad_message``."""

    def __init__(self, code: str, message: str, id: CallId | None = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.id = id
        # the message's 'type' when it had a known one (e.g. to tell a malformed hello)
        self.kind: str | None = None


@dataclass(slots=True)
class Resume:
    """The ``resume`` member of a ``hello``."""

    session: str
    token: str
    last_seq: int


@dataclass(slots=True)
class Hello:
    """``hello``: the first client message."""

    auth: Any
    resume: Resume | None
    meta: dict | None


@dataclass(slots=True)
class Event:
    """``event``: fire-and-forget to the event handler named ``event``."""

    event: str
    data: Any


@dataclass(slots=True)
class Call:
    """``call``: a request answered by exactly one ``result`` or ``error`` with the same id."""

    id: CallId
    method: str
    params: Any


@dataclass(slots=True)
class Cancel:
    """``cancel``: cancel the client's in-flight call ``id``."""

    id: CallId


@dataclass(slots=True)
class Result:
    """``result``: the client's answer to a server-initiated call."""

    id: CallId
    result: Any


@dataclass(slots=True)
class Error:
    """``error``: the client's failure answer to a server-initiated call."""

    id: CallId
    code: str
    message: str
    data: Any


@dataclass(slots=True)
class Subscribe:
    """``subscribe``: join ``topic`` (``presence``: also hear who joins and leaves it);
    answered when ``id`` is given."""

    topic: str
    id: CallId | None
    presence: bool = False


@dataclass(slots=True)
class Unsubscribe:
    """``unsubscribe``: leave ``topic``; answered when ``id`` is given."""

    topic: str
    id: CallId | None


@dataclass(slots=True)
class Presence:
    """``presence``: who is in ``topic``; always answered."""

    topic: str
    id: CallId


@dataclass(slots=True)
class Publish:
    """``publish``: deliver ``data`` to every subscriber of ``topic``."""

    topic: str
    data: Any
    id: CallId | None


@dataclass(slots=True)
class Ack:
    """``ack``: the client holds every server message up to ``seq``."""

    seq: int


@dataclass(slots=True)
class Ping:
    """``ping``: answered by ``pong`` with the same data."""

    data: Any


@dataclass(slots=True)
class Bye:
    """``bye``: end the session for good."""


Message = Union[
    Hello, Event, Call, Cancel, Result, Error, Subscribe, Unsubscribe, Presence, Publish, Ack, Ping,
    Bye
]


def _bad(message: str, id: CallId | None = None) -> WireError:
    return WireError(errors.BAD_MESSAGE, message, id)


def _name(obj: dict, key: str) -> str:
    value = obj.get(key)
    if type(value) is not str or not value or len(value) > MAX_NAME_LENGTH:
        raise _bad(f"'{key}' must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
    return value


def _topic(obj: dict) -> str:
    value = obj.get("topic")
    if type(value) is not str or not value or len(value) > MAX_TOPIC_LENGTH:
        raise _bad(f"'topic' must be a non-empty string of at most {MAX_TOPIC_LENGTH} characters")
    return value


def _is_id(value: Any) -> bool:
    # bool is a subclass of int, and true/false are not ids.
    t = type(value)
    return (t is int) or (t is str and len(value) <= MAX_ID_LENGTH)


def _id(obj: dict) -> CallId:
    value = obj.get("id")
    if not _is_id(value):
        raise _bad(f"'id' must be an integer or a string of at most {MAX_ID_LENGTH} characters")
    return value  # type: ignore[return-value]  # _is_id checked it


def _optional_id(obj: dict) -> CallId | None:
    return _id(obj) if "id" in obj else None


def _seq(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _bad(f"'{what}' must be a non-negative integer")
    return value


def _hello(obj: dict) -> Hello:
    resume = obj.get("resume")
    if resume is not None:
        if type(resume) is not dict:
            raise _bad("'resume' must be an object")
        session, token = resume.get("session"), resume.get("token")
        if type(session) is not str or type(token) is not str:
            raise _bad("'resume' needs string 'session' and 'token'")
        resume = Resume(session, token, _seq(resume.get("last_seq"), "resume.last_seq"))
    meta = obj.get("meta")
    if meta is not None:
        if type(meta) is not dict:
            raise _bad("'meta' must be an object")
        public = meta.get("public")
        if public is not None and len(_dumps(public)) > MAX_PUBLIC_META:
            raise _bad(f"'meta.public' must be at most {MAX_PUBLIC_META} bytes of JSON (every "
                       "member of your topics is sent it)")
    return Hello(obj.get("auth"), resume, meta)


def _event(obj: dict) -> Event:
    return Event(_name(obj, "event"), obj.get("data"))


def _call(obj: dict) -> Call:
    # the checks of _id and _name inline (the hot path: one call per request), and theirs
    # when one fails, for their errors
    call_id = obj.get("id")
    method = obj.get("method")
    if (type(call_id) is int or type(call_id) is str and len(call_id) <= MAX_ID_LENGTH) \
            and type(method) is str and 0 < len(method) <= MAX_NAME_LENGTH:
        return Call(call_id, method, obj.get("params"))
    call_id = _id(obj)
    try:
        method = _name(obj, "method")
    except WireError as e:
        e.id = call_id
        raise
    return Call(call_id, method, obj.get("params"))


def _cancel(obj: dict) -> Cancel:
    return Cancel(_id(obj))


def _result(obj: dict) -> Result:
    call_id = _id(obj)
    if "result" not in obj:
        raise _bad("'result' is missing")
    return Result(call_id, obj["result"])


def _error(obj: dict) -> Error:
    call_id = _id(obj)
    err = obj.get("error")
    if type(err) is not dict or type(err.get("code")) is not str \
            or type(err.get("message")) is not str or len(err["code"]) > MAX_NAME_LENGTH:
        raise _bad("'error' must be an object with string 'code' (at most "
                   f"{MAX_NAME_LENGTH} characters) and string 'message'")
    return Error(call_id, err["code"], err["message"], err.get("data"))


def _subscribe(obj: dict) -> Subscribe:
    presence = obj.get("presence", False)
    if type(presence) is not bool:
        raise _bad("'presence' must be true or false", _optional_id(obj))
    return Subscribe(_topic(obj), _optional_id(obj), presence)


def _presence(obj: dict) -> Presence:
    call_id = _id(obj)
    try:
        return Presence(_topic(obj), call_id)
    except WireError as e:
        e.id = call_id  # a request the client waits on: its answer names it
        raise


def _unsubscribe(obj: dict) -> Unsubscribe:
    return Unsubscribe(_topic(obj), _optional_id(obj))


def _publish(obj: dict) -> Publish:
    return Publish(_topic(obj), obj.get("data"), _optional_id(obj))


def _ack(obj: dict) -> Ack:
    return Ack(_seq(obj.get("seq"), "seq"))


def _ping(obj: dict) -> Ping:
    return Ping(obj.get("data"))


def _bye(obj: dict) -> Bye:
    return Bye()


# The one registry of message types; decoding dispatches on it, never on an if-chain.
PARSERS: dict[str, Callable[[dict], Message]] = {
    "hello": _hello,
    "event": _event,
    "call": _call,
    "cancel": _cancel,
    "result": _result,
    "error": _error,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "presence": _presence,
    "publish": _publish,
    "ack": _ack,
    "ping": _ping,
    "bye": _bye,
}


def depth(value: Any, limit: int | None = None) -> int:
    """How deeply ``value`` nests objects and arrays (a bare object is 1, a scalar 0).

    With ``limit``, stops as soon as the depth is known to pass it (returns limit + 1).
    """
    level: list[Any] = [value] if type(value) in (dict, list) else []
    deepest = 0
    while level:
        deepest += 1
        if limit is not None and deepest > limit:
            return deepest
        below: list[Any] = []
        extend = below.extend
        for item in level:
            children = item.values() if type(item) is dict else item
            extend([c for c in children if type(c) is dict or type(c) is list])
        level = below
    return deepest


def _exact(payload: bytes, obj: dict) -> dict:
    """``obj`` (orjson's reading of ``payload``) if every integer in it is exact, else
    WireError ``bad_json``; a hello's ``resume.last_seq`` alone may be any size.

    The slow path, taken only for a payload with a run of 19 digits: the stdlib parser
    reads every integer exactly (digits inside strings are not integers). orjson has
    already accepted the text, so both read the same JSON.
    """
    big: list[int] = []

    def parse_int(text: str) -> int:
        if len(text) < 19:
            return int(text)  # always in range
        # (orjson has refused any number past a double's range, 309 digits: int() copes)
        n = int(text)
        if n < INT_MIN or n > INT_MAX:
            big.append(n)
        return n

    try:
        exact = json.loads(payload.decode("utf-8"), parse_int=parse_int)
    except (ValueError, RecursionError):  # not expected: orjson read it
        raise WireError(errors.BAD_JSON, "not valid JSON") from None
    if not big:
        return obj
    # A last_seq past any seq is valid: the store answers it with a new session (§2).
    resume = exact.get("resume")
    if len(big) == 1 and big[0] > 0 and exact.get("type") == "hello" \
            and type(resume) is dict and resume.get("last_seq") is big[0]:
        return exact
    # A call whose own id is sound is answered with that id: every call gets one reply (§3).
    call_id = exact.get("id")
    raise WireError(errors.BAD_JSON, "integer out of range",
                    call_id if exact.get("type") == "call" and _is_id(call_id)
                    and call_id not in big else None)


def load_object(payload: bytes, max_depth: int = 32) -> dict:
    """A JSON object under the protocol's rules (UTF-8, nested at most ``max_depth``,
    integers in 64 bits); WireError (invalid_utf8 / bad_json) otherwise. A message's first
    step, and the HTTP API's reading of a body."""
    try:
        obj = _loads(payload)
    except _JSONDecodeError:
        # orjson checks UTF-8 as it parses, so the transport need not check it first; only
        # here, on the error path, is it told apart from bad JSON.
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(errors.INVALID_UTF8, "text is not valid UTF-8") from None
        raise WireError(errors.BAD_JSON, "not valid JSON") from None
    if type(obj) is not dict:
        raise WireError(errors.BAD_JSON, "a message must be a JSON object")
    # One C-speed pass counts digits and opening brackets together (costing about what the
    # two bracket counts it replaces did): a typical message has few of either and skips
    # both checks below.
    marks = len(payload) - len(payload.translate(None, _MARKS))
    # Cheap bounds first: fewer brackets than the limit cannot nest past it.
    if marks > max_depth and payload.count(b"{") + payload.count(b"[") > max_depth \
            and depth(obj, max_depth) > max_depth:
        raise WireError(errors.BAD_JSON, f"nested deeper than {max_depth}")
    if marks > _QUICK_MARKS and _RUN in payload.translate(_DIGIT_CLASSES):
        obj = _exact(payload, obj)
    return obj


def decode(payload: bytes, max_depth: int = 32) -> Message:
    """Parse one text message; raise WireError (bad_json / bad_message) if it breaks the spec."""
    obj = load_object(payload, max_depth)
    kind = obj.get("type")
    parse = PARSERS.get(kind) if type(kind) is str else None
    if parse is None:
        if type(kind) is not str:
            raise _bad("'type' must be a string")
        raise _bad("unknown message type")
    try:
        return parse(obj)
    except WireError as e:
        e.kind = kind
        raise


# -- encoding: a v1 server sends exactly the listed members ------------------------------------

def encode_welcome(session: str, token: str, resumed: bool, heartbeat: float, server: str) -> bytes:
    """Encode ``welcome``."""
    return _dumps({"type": "welcome", "session": session, "token": token,
                   "resumed": resumed, "heartbeat": heartbeat, "server": server})


# Pushed messages (event, message, call) end with their seq. They are encoded once as a
# prefix and stamped per session with stamp(): a publication to many subscribers costs one
# encode, and each stamped frame is a fresh, exactly sized bytes object (orjson's own
# results keep a few KiB of slack each, which a replay buffer would multiply).

def event_prefix(event: str, data: Any) -> bytes:
    """Everything of a pushed ``event`` but its seq."""
    return b'{"type":"event","event":' + _dumps(event) + b',"data":' + _dumps(data) + b',"seq":'


def presence_prefix(event: str, topic: str, member: Any) -> bytes:
    """Everything of a ``presence.join`` / ``presence.leave`` event but its seq."""
    return b'{"type":"event","event":"' + event.encode("ascii") + b'","data":{"topic":' \
        + _dumps(topic) + b',"member":' + _dumps(member) + b'},"seq":'


def message_prefix(topic: str, data: Any) -> bytes:
    """Everything of a topic ``message`` but its seq."""
    return b'{"type":"message","topic":' + _dumps(topic) + b',"data":' + _dumps(data) \
        + b',"seq":'


def call_prefix(call_id: CallId, method: str, params: Any) -> bytes:
    """Everything of a server-initiated ``call`` but its seq."""
    return b'{"type":"call","id":' + _dumps(call_id) + b',"method":' + _dumps(method) \
        + b',"params":' + _dumps(params) + b',"seq":'


def stamp(prefix: bytes, seq: int) -> bytes:
    """Complete a pushed message's prefix with its seq."""
    return b"%b%d}" % (prefix, seq)


def encode_event(event: str, data: Any, seq: int) -> bytes:
    """Encode a server-pushed ``event``."""
    return stamp(event_prefix(event, data), seq)


def encode_message(topic: str, data: Any, seq: int) -> bytes:
    """Encode a topic ``message`` delivery."""
    return stamp(message_prefix(topic, data), seq)


def encode_call(call_id: CallId, method: str, params: Any, seq: int) -> bytes:
    """Encode a server-initiated ``call``."""
    return stamp(call_prefix(call_id, method, params), seq)


def _wide(value: Any) -> Any:
    """``value`` with every integer orjson cannot write (beyond 64 bits) as its exact digits."""
    t = type(value)
    if t is int:
        return value if -(2 ** 63) <= value < 2 ** 64 else _Fragment(str(value).encode())
    if t is dict:
        return {k: _wide(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [_wide(v) for v in value]
    return value


def encode_result(call_id: CallId, result: Any) -> bytes:
    """Encode a ``result`` answering a client request; a handler's integer beyond 64 bits is
    written exactly (never as a float, never refused)."""
    try:
        return _dumps({"type": "result", "id": call_id, "result": result})
    except TypeError:
        # off the hot path: only a result orjson refused is walked
        try:
            wide = _wide(result)
        except (ValueError, RecursionError) as e:  # past int()'s 4300 digits; a cycle
            raise TypeError(f"result cannot be written: {e}") from None
        return _dumps({"type": "result", "id": call_id, "result": wide})


def encode_error(code: str, message: str, data: Any = None, call_id: CallId | None = None) -> bytes:
    """Encode an ``error``; ``id`` only when it answers a request, ``data`` only when given."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    if call_id is None:
        return _dumps({"type": "error", "error": err})
    return _dumps({"type": "error", "error": err, "id": call_id})


def encode_pong(data: Any) -> bytes:
    """Encode ``pong``."""
    return _dumps({"type": "pong", "data": data})
