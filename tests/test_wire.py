"""Unit tests for wsservice.wire: the sans-IO decoder and encoders of protocol v1.

The expectations come from /work/shared/spec/protocol.md (the normative wire protocol).
Payloads are built with the standard library's json module (not orjson) so that the tests do
not share the implementation's serializer.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsservice import errors, wire
from wsservice.wire import (
    Ack,
    Bye,
    Call,
    Cancel,
    Error,
    Event,
    Hello,
    Ping,
    Presence,
    Publish,
    Result,
    Resume,
    Subscribe,
    Unsubscribe,
    WireError,
    decode,
    depth,
)

BAD_JSON = errors.BAD_JSON
BAD_MESSAGE = errors.BAD_MESSAGE

CLIENT_TYPES = {
    "hello", "event", "call", "cancel", "result", "error",
    "subscribe", "unsubscribe", "presence", "publish", "ack", "ping", "bye",
}

_PROPERTY = settings(max_examples=200, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])

_UNSET = object()


def enc(obj) -> bytes:
    """Serialize a test message with the standard library."""
    return json.dumps(obj).encode("utf-8")


def nested_list(levels: int):
    """A list nesting ``levels`` deep (``depth(nested_list(k)) == k``); 0 gives a scalar."""
    value = 0
    for _ in range(levels):
        value = [value]
    return value


def ping_of_depth(n: int) -> bytes:
    """A ping whose whole message nests exactly ``n`` deep (the top-level object is 1)."""
    assert n >= 1
    if n == 1:
        return b'{"type":"ping"}'
    return b'{"type":"ping","data":' + b"[" * (n - 2) + b"[0]" + b"]" * (n - 2) + b"}"


def reference_depth(value) -> int:
    """Straightforward recursive definition of nesting depth, to check wire.depth against."""
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


class _WireCase(SynchronousTestCase):
    def assertDecodes(self, obj, expected, **kw):
        payload = obj if isinstance(obj, bytes) else enc(obj)
        message = decode(payload, **kw)
        self.assertIs(type(message), type(expected))
        self.assertEqual(message, expected)
        return message

    def assertWireError(self, obj, code, kind=_UNSET, id=_UNSET, **kw) -> WireError:
        payload = obj if isinstance(obj, bytes) else enc(obj)
        try:
            result = decode(payload, **kw)
        except WireError as e:
            self.assertEqual(e.code, code, f"wrong code for {payload!r}: {e.message}")
            self.assertIsInstance(e.message, str)
            self.assertTrue(e.message)
            if kind is not _UNSET:
                self.assertEqual(e.kind, kind, f"wrong kind for {payload!r}")
            if id is not _UNSET:
                self.assertEqual(e.id, id, f"wrong id for {payload!r}")
            return e
        self.fail(f"{payload!r} decoded to {result!r}, expected WireError({code!r})")


# -- every message type decodes to its class ---------------------------------------------------

class DecodeValidTests(_WireCase):
    def test_registry_has_exactly_the_client_types(self):
        self.assertEqual(set(wire.PARSERS), CLIENT_TYPES)

    def test_hello_minimal(self):
        self.assertDecodes({"type": "hello"}, Hello(auth=None, resume=None, meta=None))

    def test_hello_full(self):
        auth = {"user": "ann", "password": "s3cret", "scopes": ["a", "b"]}
        obj = {"type": "hello", "auth": auth,
               "resume": {"session": "sess-1", "token": "tok-1", "last_seq": 17},
               "meta": {"client": "test", "n": 1}}
        message = self.assertDecodes(
            obj, Hello(auth=auth, resume=Resume("sess-1", "tok-1", 17),
                       meta={"client": "test", "n": 1}))
        self.assertIsInstance(message.resume, Resume)
        self.assertEqual(message.resume.session, "sess-1")
        self.assertEqual(message.resume.token, "tok-1")
        self.assertEqual(message.resume.last_seq, 17)

    def test_hello_auth_is_any_json(self):
        for auth in ("bearer xyz", 42, 1.5, [1, "two"], True, {"nested": {"x": [None]}}):
            self.assertDecodes({"type": "hello", "auth": auth}, Hello(auth, None, None))

    def test_hello_resume_last_seq_zero(self):
        self.assertDecodes(
            {"type": "hello", "resume": {"session": "s", "token": "t", "last_seq": 0}},
            Hello(None, Resume("s", "t", 0), None))

    def test_hello_empty_meta(self):
        self.assertDecodes({"type": "hello", "meta": {}}, Hello(None, None, {}))

    def test_event_with_data(self):
        self.assertDecodes({"type": "event", "event": "clicked", "data": {"x": 1, "y": [2]}},
                           Event("clicked", {"x": 1, "y": [2]}))

    def test_event_without_data(self):
        self.assertDecodes({"type": "event", "event": "clicked"}, Event("clicked", None))

    def test_event_name_at_max_length(self):
        name = "e" * wire.MAX_NAME_LENGTH
        self.assertEqual(wire.MAX_NAME_LENGTH, 256)
        self.assertDecodes({"type": "event", "event": name}, Event(name, None))

    def test_call_string_id(self):
        self.assertDecodes({"type": "call", "id": "req-1", "method": "add", "params": [1, 2]},
                           Call("req-1", "add", [1, 2]))

    def test_call_int_id(self):
        message = self.assertDecodes(
            {"type": "call", "id": 7, "method": "add", "params": {"a": 1}},
            Call(7, "add", {"a": 1}))
        self.assertIs(type(message.id), int)

    def test_call_id_zero_and_negative(self):
        self.assertDecodes({"type": "call", "id": 0, "method": "m"}, Call(0, "m", None))
        self.assertDecodes({"type": "call", "id": -5, "method": "m"}, Call(-5, "m", None))

    def test_call_empty_string_id(self):
        self.assertDecodes({"type": "call", "id": "", "method": "m"}, Call("", "m", None))

    def test_call_id_at_max_length(self):
        self.assertEqual(wire.MAX_ID_LENGTH, 128)
        call_id = "i" * 128
        self.assertDecodes({"type": "call", "id": call_id, "method": "m"},
                           Call(call_id, "m", None))

    def test_call_without_params(self):
        self.assertDecodes({"type": "call", "id": 1, "method": "now"}, Call(1, "now", None))

    def test_cancel(self):
        self.assertDecodes({"type": "cancel", "id": "c1"}, Cancel("c1"))
        self.assertDecodes({"type": "cancel", "id": 3}, Cancel(3))

    def test_result(self):
        self.assertDecodes({"type": "result", "id": "s1", "result": [1, {"a": None}]},
                           Result("s1", [1, {"a": None}]))

    def test_result_null(self):
        self.assertDecodes({"type": "result", "id": 4, "result": None}, Result(4, None))

    def test_error_with_data(self):
        self.assertDecodes(
            {"type": "error", "id": 9,
             "error": {"code": "nope", "message": "no way", "data": {"why": 1}}},
            Error(9, "nope", "no way", {"why": 1}))

    def test_error_without_data(self):
        self.assertDecodes(
            {"type": "error", "id": "x", "error": {"code": "nope", "message": "no way"}},
            Error("x", "nope", "no way", None))

    def test_subscribe(self):
        self.assertDecodes({"type": "subscribe", "topic": "news"}, Subscribe("news", None))
        self.assertDecodes({"type": "subscribe", "topic": "news", "id": 1},
                           Subscribe("news", 1))
        self.assertDecodes({"type": "subscribe", "topic": "news", "id": "s"},
                           Subscribe("news", "s"))

    def test_subscribe_with_presence(self):
        self.assertDecodes({"type": "subscribe", "topic": "news", "presence": True},
                           Subscribe("news", None, True))
        self.assertDecodes({"type": "subscribe", "topic": "news", "id": 1, "presence": False},
                           Subscribe("news", 1, False))
        for bad in (1, 0, "yes", None, [], {}):
            self.assertWireError({"type": "subscribe", "topic": "t", "id": 4, "presence": bad},
                                 errors.BAD_MESSAGE, kind="subscribe", id=4)

    def test_hello_meta_public_is_bounded(self):
        public = {"name": "x" * (wire.MAX_PUBLIC_META - 11)}  # {"name":"…"} is 11 + n bytes
        self.assertDecodes({"type": "hello", "meta": {"public": public, "big": "y" * 5000}},
                           Hello(None, None, {"public": public, "big": "y" * 5000}))
        public["name"] += "x"
        e = self.assertWireError({"type": "hello", "meta": {"public": public}},
                                 errors.BAD_MESSAGE, kind="hello")
        self.assertIn("meta.public", e.message)

    def test_presence(self):
        self.assertDecodes({"type": "presence", "topic": "room", "id": 7}, Presence("room", 7))
        self.assertDecodes({"type": "presence", "topic": "room", "id": "p", "x": 1},
                           Presence("room", "p"))
        # a request the client waits on: a bad topic is answered with its id
        for topic in (None, "", 5, "x" * 257):
            self.assertWireError({"type": "presence", "topic": topic, "id": 9},
                                 errors.BAD_MESSAGE, kind="presence", id=9)
        for call_id in (None, True, 1.5, [], "i" * 1000):
            self.assertWireError({"type": "presence", "topic": "room", "id": call_id},
                                 errors.BAD_MESSAGE, kind="presence")

    def test_unsubscribe(self):
        self.assertDecodes({"type": "unsubscribe", "topic": "news"}, Unsubscribe("news", None))
        self.assertDecodes({"type": "unsubscribe", "topic": "news", "id": 2},
                           Unsubscribe("news", 2))
        self.assertDecodes({"type": "unsubscribe", "topic": "news", "id": "u"},
                           Unsubscribe("news", "u"))

    def test_publish(self):
        self.assertDecodes({"type": "publish", "topic": "news", "data": {"h": "x"}},
                           Publish("news", {"h": "x"}, None))
        self.assertDecodes({"type": "publish", "topic": "news", "data": [1], "id": 3},
                           Publish("news", [1], 3))
        self.assertDecodes({"type": "publish", "topic": "news", "data": 0, "id": "p"},
                           Publish("news", 0, "p"))

    def test_publish_without_data(self):
        self.assertDecodes({"type": "publish", "topic": "news"}, Publish("news", None, None))

    def test_topic_at_max_length(self):
        self.assertEqual(wire.MAX_TOPIC_LENGTH, 256)
        topic = "t" * 256
        self.assertDecodes({"type": "subscribe", "topic": topic}, Subscribe(topic, None))

    def test_ack(self):
        self.assertDecodes({"type": "ack", "seq": 0}, Ack(0))
        self.assertDecodes({"type": "ack", "seq": 42}, Ack(42))

    def test_ping(self):
        self.assertDecodes({"type": "ping", "data": "hi"}, Ping("hi"))
        self.assertDecodes({"type": "ping", "data": {"t": [1, 2.5]}}, Ping({"t": [1, 2.5]}))
        self.assertDecodes({"type": "ping"}, Ping(None))

    def test_bye(self):
        self.assertDecodes({"type": "bye"}, Bye())

    def test_unicode_members(self):
        self.assertDecodes({"type": "event", "event": "\u00e9v\u00e9nement\U0001f600",
                            "data": "\u2603"},
                           Event("\u00e9v\u00e9nement\U0001f600", "\u2603"))
        self.assertDecodes(
            '{"type":"event","event":"caf\u00e9"}'.encode("utf-8"), Event("caf\u00e9", None))

    def test_whitespace_around_object(self):
        self.assertDecodes(b' \n\t{"type" : "bye"}\r\n ', Bye())

    def test_unknown_members_are_ignored(self):
        extras = {"future": {"x": [1, 2]}, "version": 99, "zz": None, "meta2": "m"}
        cases = [
            ({"type": "hello"}, Hello(None, None, None)),
            ({"type": "event", "event": "e", "data": 1}, Event("e", 1)),
            ({"type": "call", "id": 1, "method": "m", "params": 2}, Call(1, "m", 2)),
            ({"type": "cancel", "id": 1}, Cancel(1)),
            ({"type": "result", "id": 1, "result": 2}, Result(1, 2)),
            ({"type": "error", "id": 1, "error": {"code": "c", "message": "m", "extra": 1}},
             Error(1, "c", "m", None)),
            ({"type": "subscribe", "topic": "t"}, Subscribe("t", None)),
            ({"type": "unsubscribe", "topic": "t"}, Unsubscribe("t", None)),
            ({"type": "presence", "topic": "t", "id": 1}, Presence("t", 1)),
            ({"type": "publish", "topic": "t", "data": 1}, Publish("t", 1, None)),
            ({"type": "ack", "seq": 1}, Ack(1)),
            ({"type": "ping"}, Ping(None)),
            ({"type": "bye"}, Bye()),
        ]
        self.assertEqual({obj["type"] for obj, _ in cases}, CLIENT_TYPES)
        for obj, expected in cases:
            self.assertDecodes({**obj, **extras}, expected)
        # unknown members inside 'resume' too
        self.assertDecodes(
            {"type": "hello",
             "resume": {"session": "s", "token": "t", "last_seq": 1, "new": True}},
            Hello(None, Resume("s", "t", 1), None))


# -- bad_json ----------------------------------------------------------------------------------

class DecodeBadJsonTests(_WireCase):
    def test_invalid_json(self):
        for payload in (b"", b" ", b"{", b"}", b"not json", b"{'type': 'ping'}",
                        b'{"type": "ping",}', b'{"type": "ping"} trailing',
                        b'{"type": "ping"}{"type": "ping"}', b'{"type": ping}',
                        b'{"type": "ping", "data": NaN}', b'{"type": "ping", "data": Infinity}',
                        b'{"type": "ping", "data": 1e400}', b'{"type": "ping" "data": 1}',
                        b'{type: "ping"}', b'{"type": "ping", "data": "unterminated}',
                        b'{"type": "ping", "data": "\\x41"}'):
            self.assertWireError(payload, BAD_JSON, kind=None, id=None)

    def test_invalid_utf8(self):
        for payload in (b'{"type": "ping", "data": "\xff"}',
                        b'{"type": "ping", "data": "\xc3\x28"}',
                        b'{"type": "ping", "data": "\xc0\xaf"}',          # overlong '/'
                        b'{"type": "ping", "data": "\xed\xa0\x80"}',      # encoded surrogate
                        b'{"type": "ping", "data": "\xf4\x90\x80\x80"}',  # > U+10FFFF
                        b'{"type": "ping", "data": "\xe2\x82"}',          # truncated sequence
                        b'\xff{"type": "ping"}',
                        b'{"type": "ping"}\x80',
                        b'{"type": "\xfeping"}'):
            # not bad JSON but bad text: the transport fails the connection (1007)
            self.assertWireError(payload, "invalid_utf8", kind=None, id=None)

    def test_lone_surrogate_escape(self):
        self.assertWireError(b'{"type": "ping", "data": "\\ud800"}', BAD_JSON)

    def test_top_level_not_an_object(self):
        for payload in (b"[]", b'[{"type": "ping"}]', b'"ping"', b'"{\\"type\\":\\"ping\\"}"',
                        b"0", b"42", b"-1.5", b"null", b"true", b"false"):
            self.assertWireError(payload, BAD_JSON, kind=None, id=None)


# -- exact integers ----------------------------------------------------------------------------

class IntegerRangeTests(_WireCase):
    """An integer outside the signed 64-bit range is bad_json, never silently a float."""

    def assertOutOfRange(self, payload, id=None):
        e = self.assertWireError(payload, BAD_JSON, kind=None, id=id)
        self.assertEqual(e.message, "integer out of range")

    def test_huge_integer_is_bad_json(self):
        for n in (10 ** 29, -(10 ** 29), 2 ** 63, 2 ** 64 - 1, 2 ** 64, -(2 ** 63) - 1,
                  2 ** 70, 10 ** 300):
            # a call keeps its id, so that it is answered (§3)
            self.assertOutOfRange(enc({"type": "call", "id": 1, "method": "echo",
                                       "params": n}), id=1)
            self.assertOutOfRange(enc({"type": "call", "id": "c", "method": 5,
                                       "params": [n]}), id="c")
            for obj in ({"type": "ping", "data": [1, {"a": n}]},
                        {"type": "call", "id": True, "method": "echo", "params": n},
                        {"type": "event", "event": "e", "data": n},
                        {"type": "call", "id": n, "method": "echo"},
                        {"type": "ack", "seq": n},
                        {"type": "hello", "auth": n},
                        {"type": "nope", "x": n}):
                self.assertOutOfRange(enc(obj))

    def test_64_bit_bounds_are_exact(self):
        for n in (2 ** 63 - 1, -(2 ** 63), 10 ** 18, -(10 ** 18), 0):
            message = self.assertDecodes({"type": "call", "id": n, "method": "echo",
                                          "params": [n, {"n": n}]},
                                         Call(n, "echo", [n, {"n": n}]))
            self.assertIs(type(message.params[0]), int)

    def test_long_digit_runs_that_are_not_integers(self):
        self.assertDecodes({"type": "ping", "data": "1234567890123456789012345"},
                           Ping("1234567890123456789012345"))
        self.assertDecodes({"type": "ping", "data": {"1234567890123456789012345": 1}},
                           Ping({"1234567890123456789012345": 1}))
        # floats stay floats, however many digits they are written with
        self.assertDecodes(b'{"type":"ping","data":0.1234567890123456789012345}',
                           Ping(0.1234567890123456789012345))
        self.assertDecodes(b'{"type":"ping","data":12345678901234567890123e-3}',
                           Ping(12345678901234567890123e-3))
        self.assertDecodes(b'{"type":"ping","data":1e300}', Ping(1e300))

    def test_many_digits_in_short_numbers(self):
        # many digits, no run of 19: the quick path, exact
        data = [1733243265123, 1733243265124, 17]
        self.assertDecodes({"type": "ping", "data": data}, Ping(data))

    def test_other_number_edges(self):
        # orjson refuses what overflows a double and the non-JSON constants: bad_json
        for payload in (b'{"type":"ping","data":1e400}', b'{"type":"ping","data":-1e400}',
                        b'{"type":"ping","data":NaN}', b'{"type":"ping","data":-Infinity}',
                        b'{"type":"ping","data":' + b"9" * 400 + b"}"):
            self.assertWireError(payload, BAD_JSON, kind=None, id=None)
        self.assertDecodes(b'{"type":"ping","data":-0}', Ping(0))
        message = self.assertDecodes(b'{"type":"ping","data":-0.0}', Ping(-0.0))
        self.assertEqual(str(message.data), "-0.0")
        self.assertDecodes(b'{"type":"ping","data":1e-400}', Ping(0.0))

    def test_resume_last_seq_may_be_any_non_negative_integer(self):
        for n in (2 ** 63, 2 ** 70, 10 ** 100):
            resume = {"session": "s", "token": "t", "last_seq": n}
            message = self.assertDecodes({"type": "hello", "resume": resume, "meta": {"a": 1}},
                                         Hello(None, Resume("s", "t", n), {"a": 1}))
            self.assertIs(type(message.resume.last_seq), int)

    def test_resume_last_seq_exception_is_narrow(self):
        resume = {"session": "s", "token": "t", "last_seq": 2 ** 70}
        # negative, in another message, or beside another huge integer: out of range
        self.assertOutOfRange(enc({"type": "hello", "resume": dict(resume,
                                                                   last_seq=-(2 ** 70))}))
        self.assertOutOfRange(enc({"type": "ack", "resume": resume}))
        self.assertOutOfRange(enc({"type": "hello", "resume": resume, "auth": 2 ** 70}))
        self.assertOutOfRange(enc({"type": "hello", "resume": resume, "meta": {"x": 2 ** 64}}))
        self.assertOutOfRange(enc({"type": "hello", "resume": {"last_seq": 2 ** 70},
                                   "auth": {"resume": resume}}))

    @_PROPERTY
    @given(st.recursive(st.integers() | st.text(alphabet="0123456789", max_size=30),
                        lambda c: st.lists(c, max_size=4)
                        | st.dictionaries(st.text(alphabet="0123456789", max_size=25), c,
                                          max_size=4), max_leaves=8))
    def test_integers_exact_or_out_of_range(self, data):
        ints: list[int] = []

        def walk(v):
            if type(v) is int:
                ints.append(v)
            elif type(v) is list:
                for x in v:
                    walk(x)
            elif type(v) is dict:
                for x in v.values():
                    walk(x)
        walk(data)
        payload = enc({"type": "ping", "data": data})
        if all(wire.INT_MIN <= n <= wire.INT_MAX for n in ints):
            self.assertDecodes(payload, Ping(data))
        else:
            self.assertOutOfRange(payload)


# -- nesting depth -----------------------------------------------------------------------------

class DepthTests(_WireCase):
    def test_depth_values(self):
        cases = [
            (None, 0), (True, 0), (1, 0), (1.5, 0), ("x", 0), ("[[{{}}]]", 0),
            ({}, 1), ([], 1), ({"a": 1, "b": "c"}, 1), ([1, 2, "x"], 1),
            ({"a": []}, 2), ([{}], 2), ([[]], 2),
            ([[[]]], 3), ({"a": {"b": {"c": 1}}}, 3),
            ([1, [2, [3]], {}], 3),
            ({"a": {"b": {"c": 1}}, "d": []}, 3),
            ({"a": [], "b": [[[[]]]], "c": {}}, 5),
            ([[], [[]], [[[]]], [[[[]]]]], 5),
            (nested_list(40), 40),
        ]
        for value, expected in cases:
            self.assertEqual(depth(value), expected, f"depth({value!r})")

    def test_depth_of_wide_value(self):
        self.assertEqual(depth([[] for _ in range(1000)]), 2)
        self.assertEqual(depth({str(i): {"x": [i]} for i in range(1000)}), 3)

    def test_ping_of_depth_helper(self):
        for n in (1, 2, 5, 33):
            self.assertEqual(depth(json.loads(ping_of_depth(n))), n)

    def test_default_max_depth_is_32(self):
        self.assertDecodes(ping_of_depth(32), Ping(nested_list(31)))
        self.assertWireError(ping_of_depth(33), BAD_JSON, kind=None, id=None)

    def test_explicit_default_max_depth(self):
        self.assertDecodes(ping_of_depth(32), Ping(nested_list(31)), max_depth=32)
        self.assertWireError(ping_of_depth(33), BAD_JSON, max_depth=32)

    def test_top_level_object_is_depth_one(self):
        self.assertDecodes({"type": "ping"}, Ping(None), max_depth=1)
        self.assertDecodes({"type": "ping", "data": "[[[{{{"}, Ping("[[[{{{"), max_depth=1)
        self.assertWireError({"type": "ping", "data": []}, BAD_JSON, max_depth=1)
        self.assertWireError({"type": "ping", "data": {}}, BAD_JSON, max_depth=1)

    def test_arrays_count(self):
        self.assertDecodes({"type": "ping", "data": [[]]}, Ping([[]]), max_depth=3)
        self.assertWireError({"type": "ping", "data": [[[]]]}, BAD_JSON, max_depth=3)

    def test_objects_count(self):
        self.assertDecodes({"type": "ping", "data": {"a": {}}}, Ping({"a": {}}), max_depth=3)
        self.assertWireError({"type": "ping", "data": {"a": {"b": {}}}}, BAD_JSON, max_depth=3)

    def test_mixed_objects_and_arrays(self):
        data = [{"a": [{"b": []}]}]  # 1 (message) + 5
        self.assertDecodes({"type": "ping", "data": data}, Ping(data), max_depth=6)
        self.assertWireError({"type": "ping", "data": data}, BAD_JSON, max_depth=5)

    def test_custom_max_depth(self):
        for limit in (2, 3, 10, 64, 100):
            self.assertDecodes(ping_of_depth(limit), Ping(nested_list(limit - 1)),
                               max_depth=limit)
            self.assertWireError(ping_of_depth(limit + 1), BAD_JSON, kind=None, id=None,
                                 max_depth=limit)

    def test_large_custom_max_depth_refused_by_settings(self):
        """orjson stops at 1024 levels, so Settings caps max_depth at 1000 instead of lying."""
        from wsservice.config import MAX_DEPTH, Settings
        self.assertEqual(Settings(max_depth=MAX_DEPTH).max_depth, 1000)
        self.assertRaises(ValueError, Settings, max_depth=MAX_DEPTH + 1)

    def test_max_depth_one_thousand_boundary(self):
        message = decode(ping_of_depth(1000), max_depth=1000)
        self.assertIs(type(message), Ping)
        self.assertEqual(depth(message.data), 999)
        self.assertWireError(ping_of_depth(1001), BAD_JSON, max_depth=1000)

    def test_brackets_inside_strings_do_not_count(self):
        data = "[" * 100 + "{" * 100
        self.assertDecodes({"type": "ping", "data": data}, Ping(data))
        self.assertDecodes({"type": "ping", "data": data}, Ping(data), max_depth=1)
        # and they do not hide real nesting either
        deep = {"type": "ping", "data": nested_list(32), "s": "[["}
        self.assertWireError(deep, BAD_JSON)

    def test_many_shallow_containers_are_fine(self):
        data = [[] for _ in range(100)] + [{} for _ in range(100)]
        self.assertDecodes({"type": "ping", "data": data}, Ping(data))
        self.assertDecodes({"type": "ping", "data": data}, Ping(data), max_depth=3)
        self.assertWireError({"type": "ping", "data": data}, BAD_JSON, max_depth=2)

    def test_depth_checked_before_type(self):
        # a message too deep is bad_json whatever its type (known, unknown or missing)
        for obj in ({"type": "call", "id": 5, "method": "m", "params": nested_list(40)},
                    {"type": "nope", "x": nested_list(40)},
                    {"x": nested_list(40)}):
            self.assertWireError(obj, BAD_JSON, kind=None, id=None)

    def test_very_deep_input_is_bad_json(self):
        payload = b'{"type":"ping","data":' + b"[" * 100000 + b"]" * 100000 + b"}"
        self.assertWireError(payload, BAD_JSON)
        payload = b'{"type":"ping","data":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"
        self.assertWireError(payload, BAD_JSON)


# -- bad_message -------------------------------------------------------------------------------

class DecodeBadMessageTests(_WireCase):
    def test_missing_type(self):
        for obj in ({}, {"event": "e"}, {"Type": "ping"}, {"TYPE": "ping"}):
            self.assertWireError(obj, BAD_MESSAGE, kind=None, id=None)

    def test_non_string_type(self):
        for value in (None, 1, 1.5, True, False, [], ["ping"], {}, {"ping": 1}):
            self.assertWireError({"type": value}, BAD_MESSAGE, kind=None, id=None)

    def test_unknown_type(self):
        # server-to-client types are not valid client messages
        for value in ("", "nope", "PING", "Hello", " ping", "ping ", "welcome", "message",
                      "pong", "type", "hello\x00"):
            self.assertWireError({"type": value, "id": 1}, BAD_MESSAGE, kind=None, id=None)

    def test_unknown_type_with_otherwise_valid_members(self):
        self.assertWireError({"type": "calls", "id": "x", "method": "m"}, BAD_MESSAGE,
                             kind=None)

    def _bad_ids(self):
        return [True, False, 1.5, 1.0, -0.0, None, [], [1], {}, {"id": 1}, "x" * 129]

    def test_call_bad_id(self):
        for bad in self._bad_ids():
            self.assertWireError({"type": "call", "id": bad, "method": "m"}, BAD_MESSAGE,
                                 kind="call", id=None)

    def test_call_boolean_id_true_is_not_one(self):
        # bool is an int subclass in Python; 'true' must not pass as integer id 1
        self.assertWireError({"type": "call", "id": True, "method": "m"}, BAD_MESSAGE,
                             kind="call")
        self.assertWireError(b'{"type":"call","id":false,"method":"m"}', BAD_MESSAGE,
                             kind="call")

    def test_call_float_id(self):
        self.assertWireError(b'{"type":"call","id":1.0,"method":"m"}', BAD_MESSAGE,
                             kind="call")
        self.assertWireError(b'{"type":"call","id":1e3,"method":"m"}', BAD_MESSAGE,
                             kind="call")

    def test_call_too_long_string_id(self):
        self.assertWireError({"type": "call", "id": "a" * 129, "method": "m"}, BAD_MESSAGE,
                             kind="call", id=None)
        self.assertWireError({"type": "call", "id": "a" * 1000, "method": "m"}, BAD_MESSAGE,
                             kind="call", id=None)

    def test_call_without_id(self):
        self.assertWireError({"type": "call", "method": "m", "params": []}, BAD_MESSAGE,
                             kind="call", id=None)

    def test_call_bad_method_carries_id(self):
        for call_id in ("req-7", 7, 0, ""):
            for method in (_UNSET, "", "m" * 257, 5, None, ["m"], {"m": 1}, True):
                obj = {"type": "call", "id": call_id, "params": None}
                if method is not _UNSET:
                    obj["method"] = method
                e = self.assertWireError(obj, BAD_MESSAGE, kind="call")
                self.assertEqual(e.id, call_id)
                self.assertIs(type(e.id), type(call_id))

    def test_call_bad_id_and_bad_method_has_no_id(self):
        self.assertWireError({"type": "call", "id": True, "method": ""}, BAD_MESSAGE,
                             kind="call", id=None)

    def test_call_method_at_max_length(self):
        self.assertDecodes({"type": "call", "id": 1, "method": "m" * 256},
                           Call(1, "m" * 256, None))

    def test_event_bad_name(self):
        for name in (_UNSET, "", "e" * 257, 1, None, True, ["e"], {"e": 1}):
            obj = {"type": "event", "data": 1}
            if name is not _UNSET:
                obj["event"] = name
            self.assertWireError(obj, BAD_MESSAGE, kind="event", id=None)

    def test_cancel_bad_id(self):
        self.assertWireError({"type": "cancel"}, BAD_MESSAGE, kind="cancel")
        for bad in self._bad_ids():
            self.assertWireError({"type": "cancel", "id": bad}, BAD_MESSAGE, kind="cancel")

    def test_result_without_result(self):
        self.assertWireError({"type": "result", "id": 1}, BAD_MESSAGE, kind="result")
        self.assertWireError({"type": "result", "id": "a", "data": 1}, BAD_MESSAGE,
                             kind="result")

    def test_result_bad_id(self):
        self.assertWireError({"type": "result", "result": 1}, BAD_MESSAGE, kind="result")
        for bad in self._bad_ids():
            self.assertWireError({"type": "result", "id": bad, "result": 1}, BAD_MESSAGE,
                                 kind="result")

    def test_error_non_object_error(self):
        for err in (_UNSET, None, "boom", 1, True, [], ["code", "message"]):
            obj = {"type": "error", "id": 1}
            if err is not _UNSET:
                obj["error"] = err
            self.assertWireError(obj, BAD_MESSAGE, kind="error")

    def test_error_missing_or_ill_typed_code_or_message(self):
        for err in ({}, {"code": "c"}, {"message": "m"}, {"code": 1, "message": "m"},
                    {"code": "c", "message": None}, {"code": None, "message": "m"},
                    {"code": ["c"], "message": "m"}, {"code": "c", "message": {"m": 1}},
                    {"code": True, "message": "m"}):
            self.assertWireError({"type": "error", "id": 1, "error": err}, BAD_MESSAGE,
                                 kind="error")

    def test_error_bad_id(self):
        err = {"code": "c", "message": "m"}
        self.assertWireError({"type": "error", "error": err}, BAD_MESSAGE, kind="error")
        for bad in self._bad_ids():
            self.assertWireError({"type": "error", "id": bad, "error": err}, BAD_MESSAGE,
                                 kind="error")

    def test_hello_resume_not_an_object(self):
        for resume in ("s", 1, True, [], ["s", "t", 1]):
            self.assertWireError({"type": "hello", "resume": resume}, BAD_MESSAGE,
                                 kind="hello", id=None)

    def test_hello_resume_missing_or_ill_typed_session_or_token(self):
        for resume in ({"session": "s", "last_seq": 1},
                       {"token": "t", "last_seq": 1},
                       {"session": "s", "token": None, "last_seq": 1},
                       {"session": "s", "token": 1, "last_seq": 1},
                       {"session": 1, "token": "t", "last_seq": 1},
                       {"session": ["s"], "token": "t", "last_seq": 1},
                       {}):
            self.assertWireError({"type": "hello", "resume": resume}, BAD_MESSAGE,
                                 kind="hello")

    def test_hello_resume_bad_last_seq(self):
        for last_seq in (_UNSET, -1, -100, 1.5, 1.0, "1", True, False, None, [1]):
            resume = {"session": "s", "token": "t"}
            if last_seq is not _UNSET:
                resume["last_seq"] = last_seq
            self.assertWireError({"type": "hello", "resume": resume}, BAD_MESSAGE,
                                 kind="hello")

    def test_hello_meta_not_an_object(self):
        for meta in ("m", 1, 1.5, True, [], [{"k": "v"}]):
            self.assertWireError({"type": "hello", "meta": meta}, BAD_MESSAGE, kind="hello",
                                 id=None)

    def test_ack_bad_seq(self):
        for seq in (_UNSET, -1, 1.5, 1.0, "1", True, False, None, [1], {}):
            obj = {"type": "ack"}
            if seq is not _UNSET:
                obj["seq"] = seq
            self.assertWireError(obj, BAD_MESSAGE, kind="ack", id=None)

    def test_topic_bad(self):
        for kind in ("subscribe", "unsubscribe", "publish"):
            for topic in (_UNSET, "", "t" * 257, 1, None, True, ["t"], {"t": 1}):
                obj = {"type": kind, "data": 1}
                if topic is not _UNSET:
                    obj["topic"] = topic
                self.assertWireError(obj, BAD_MESSAGE, kind=kind)

    def test_topic_messages_bad_optional_id(self):
        for kind in ("subscribe", "unsubscribe", "publish"):
            for bad in (True, 1.5, [], {}, "x" * 129):
                self.assertWireError({"type": kind, "topic": "t", "id": bad}, BAD_MESSAGE,
                                     kind=kind)

    def test_wire_error_attributes(self):
        e = WireError(BAD_MESSAGE, "msg", 3)
        self.assertIsInstance(e, Exception)
        self.assertEqual((e.code, e.message, e.id, e.kind), (BAD_MESSAGE, "msg", 3, None))
        e = WireError(BAD_JSON, "msg")
        self.assertIsNone(e.id)


# -- encoders ----------------------------------------------------------------------------------

class EncoderTests(SynchronousTestCase):
    def parsed(self, data: bytes):
        self.assertIsInstance(data, bytes)
        return json.loads(data.decode("utf-8"))

    def test_welcome(self):
        self.assertEqual(
            self.parsed(wire.encode_welcome("sess", "tok", False, 25, "wsservice/1.0")),
            {"type": "welcome", "session": "sess", "token": "tok", "resumed": False,
             "heartbeat": 25, "server": "wsservice/1.0"})
        self.assertEqual(
            self.parsed(wire.encode_welcome("s2", "t2", True, 2.5, "wsservice/x")),
            {"type": "welcome", "session": "s2", "token": "t2", "resumed": True,
             "heartbeat": 2.5, "server": "wsservice/x"})

    def test_event(self):
        self.assertEqual(self.parsed(wire.encode_event("tick", {"n": [1, 2]}, 3)),
                         {"type": "event", "event": "tick", "data": {"n": [1, 2]}, "seq": 3})

    def test_event_null_data_is_present(self):
        self.assertEqual(self.parsed(wire.encode_event("tick", None, 1)),
                         {"type": "event", "event": "tick", "data": None, "seq": 1})

    def test_message(self):
        self.assertEqual(self.parsed(wire.encode_message("news", "hello", 9)),
                         {"type": "message", "topic": "news", "data": "hello", "seq": 9})
        self.assertEqual(self.parsed(wire.encode_message("news", None, 10)),
                         {"type": "message", "topic": "news", "data": None, "seq": 10})

    def test_call(self):
        self.assertEqual(self.parsed(wire.encode_call("s-1", "confirm", {"q": "?"}, 4)),
                         {"type": "call", "id": "s-1", "method": "confirm",
                          "params": {"q": "?"}, "seq": 4})
        self.assertEqual(self.parsed(wire.encode_call(12, "confirm", None, 5)),
                         {"type": "call", "id": 12, "method": "confirm", "params": None,
                          "seq": 5})

    def test_result(self):
        self.assertEqual(self.parsed(wire.encode_result("r1", [1, "a"])),
                         {"type": "result", "id": "r1", "result": [1, "a"]})
        self.assertEqual(self.parsed(wire.encode_result(0, None)),
                         {"type": "result", "id": 0, "result": None})

    def test_error_without_id(self):
        parsed = self.parsed(wire.encode_error("bad_json", "not valid JSON"))
        self.assertEqual(parsed, {"type": "error",
                                  "error": {"code": "bad_json", "message": "not valid JSON"}})
        self.assertNotIn("id", parsed)
        self.assertNotIn("data", parsed["error"])

    def test_error_with_id(self):
        self.assertEqual(
            self.parsed(wire.encode_error("unknown_method", "no such method", call_id="c9")),
            {"type": "error", "id": "c9",
             "error": {"code": "unknown_method", "message": "no such method"}})

    def test_error_with_id_zero(self):
        # 0 and "" are valid ids and must not be mistaken for "no id"
        self.assertEqual(self.parsed(wire.encode_error("timeout", "too slow", call_id=0)),
                         {"type": "error", "id": 0,
                          "error": {"code": "timeout", "message": "too slow"}})
        self.assertEqual(self.parsed(wire.encode_error("timeout", "too slow", call_id="")),
                         {"type": "error", "id": "",
                          "error": {"code": "timeout", "message": "too slow"}})

    def test_error_with_data(self):
        self.assertEqual(
            self.parsed(wire.encode_error("invalid_params", "bad", {"field": "x"}, 3)),
            {"type": "error", "id": 3,
             "error": {"code": "invalid_params", "message": "bad", "data": {"field": "x"}}})
        self.assertEqual(
            self.parsed(wire.encode_error("app", "m", [1])),
            {"type": "error", "error": {"code": "app", "message": "m", "data": [1]}})

    def test_error_falsy_data_is_kept(self):
        for data in (0, False, "", [], {}):
            self.assertEqual(self.parsed(wire.encode_error("app", "m", data)),
                             {"type": "error",
                              "error": {"code": "app", "message": "m", "data": data}})

    def test_error_data_none_omitted(self):
        parsed = self.parsed(wire.encode_error("app", "m", None, "i"))
        self.assertEqual(parsed, {"type": "error", "id": "i",
                                  "error": {"code": "app", "message": "m"}})

    def test_pong(self):
        self.assertEqual(self.parsed(wire.encode_pong({"t": 1})), {"type": "pong", "data": {"t": 1}})
        self.assertEqual(self.parsed(wire.encode_pong(None)), {"type": "pong", "data": None})

    def test_encoded_is_utf8_text(self):
        data = wire.encode_event("\u00e9v\U0001f600", "\u2603", 1)
        self.assertEqual(self.parsed(data)["event"], "\u00e9v\U0001f600")

    def test_server_error_decodes_as_client_error_shape(self):
        # an error with id encoded by the server has the shape a client error must have
        self.assertEqual(wire.decode(wire.encode_error("c", "m", {"d": 1}, 5)),
                         Error(5, "c", "m", {"d": 1}))


    def test_result_with_huge_integers_is_exact(self):
        frame = wire.encode_result(7, {"n": 10 ** 29, "l": [-(2 ** 70), (2 ** 64 - 1,)],
                                       "f": 1.5})
        self.assertEqual(frame, b'{"type":"result","id":7,"result":{"n":'
                                b'100000000000000000000000000000,"l":[-1180591620717411303424,'
                                b'[18446744073709551615]],"f":1.5}}')
        self.assertEqual(json.loads(wire.encode_result(1, 2 ** 200))["result"], 2 ** 200)

    def test_result_not_json_still_type_error(self):
        cycle: list = [2 ** 70]
        cycle.append(cycle)
        for value in (object(), {1: 2 ** 70}, [2 ** 70, object()], 10 ** 5000, cycle):
            self.assertRaises(TypeError, wire.encode_result, 1, value)


# -- property tests ----------------------------------------------------------------------------

# JSON that any serializer and orjson agree on: 64-bit ints, finite floats, no surrogates.
_scalars = (st.none() | st.booleans()
            | st.integers(min_value=-(2 ** 63) + 1, max_value=2 ** 63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=20))
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)

# Anything the stdlib json module can write: big ints, NaN/Infinity, lone surrogates.
_wild_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
                 | st.text(alphabet=st.characters(blacklist_categories=()), max_size=20))
wild_json = st.recursive(
    _wild_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)

ids = st.integers(min_value=-(2 ** 63) + 1, max_value=2 ** 63 - 1) | st.text(max_size=128)
names = st.text(min_size=1, max_size=256)
topics = st.text(min_size=1, max_size=256)
seqs = st.integers(min_value=0, max_value=2 ** 63 - 1)
extra_members = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in {
        "type", "id", "auth", "resume", "meta", "event", "data", "method", "params",
        "result", "error", "topic", "seq", "presence"}),
    json_values, max_size=3)


def _maybe(strategy):
    return st.just(_UNSET) | strategy


@st.composite
def valid_messages(draw):
    """(message object, expected decoded message) pairs of every client type."""
    kind = draw(st.sampled_from(sorted(CLIENT_TYPES)))
    obj = {"type": kind}

    def opt(key, strategy):
        value = draw(_maybe(strategy))
        if value is _UNSET:
            return None
        obj[key] = value
        return value

    if kind == "hello":
        auth = opt("auth", json_values)
        resume = draw(st.none() | st.builds(Resume, st.text(max_size=40),
                                            st.text(max_size=40), seqs))
        if resume is not None:
            obj["resume"] = {"session": resume.session, "token": resume.token,
                             "last_seq": resume.last_seq}
        meta = opt("meta", st.dictionaries(st.text(max_size=8), json_values, max_size=3))
        expected = Hello(auth, resume, meta)
    elif kind == "event":
        obj["event"] = name = draw(names)
        expected = Event(name, opt("data", json_values))
    elif kind == "call":
        obj["id"] = call_id = draw(ids)
        obj["method"] = method = draw(names)
        expected = Call(call_id, method, opt("params", json_values))
    elif kind == "cancel":
        obj["id"] = call_id = draw(ids)
        expected = Cancel(call_id)
    elif kind == "result":
        obj["id"] = call_id = draw(ids)
        obj["result"] = result = draw(json_values)
        expected = Result(call_id, result)
    elif kind == "error":
        obj["id"] = call_id = draw(ids)
        code, message = draw(st.text(max_size=20)), draw(st.text(max_size=40))
        err = {"code": code, "message": message}
        data = draw(_maybe(json_values))
        if data is not _UNSET:
            err["data"] = data
        obj["error"] = err
        expected = Error(call_id, code, message, None if data is _UNSET else data)
    elif kind == "subscribe":
        obj["topic"] = topic = draw(topics)
        call_id = opt("id", ids)
        presence = opt("presence", st.booleans())
        expected = Subscribe(topic, call_id, bool(presence))
    elif kind == "unsubscribe":
        obj["topic"] = topic = draw(topics)
        expected = Unsubscribe(topic, opt("id", ids))
    elif kind == "presence":
        obj["topic"] = topic = draw(topics)
        obj["id"] = call_id = draw(ids)
        expected = Presence(topic, call_id)
    elif kind == "publish":
        obj["topic"] = topic = draw(topics)
        data = opt("data", json_values)
        expected = Publish(topic, data, opt("id", ids))
    elif kind == "ack":
        obj["seq"] = seq = draw(seqs)
        expected = Ack(seq)
    elif kind == "ping":
        expected = Ping(opt("data", json_values))
    else:
        expected = Bye()
    obj.update(draw(extra_members))
    return obj, expected


_MEMBERS = {
    "hello": ("auth", "resume", "meta"),
    "event": ("event", "data"),
    "call": ("id", "method", "params"),
    "cancel": ("id",),
    "result": ("id", "result"),
    "error": ("id", "error"),
    "subscribe": ("topic", "id", "presence"),
    "unsubscribe": ("topic", "id"),
    "presence": ("topic", "id"),
    "publish": ("topic", "data", "id"),
    "ack": ("seq",),
    "ping": ("data",),
    "bye": (),
}


@st.composite
def typed_objects(draw):
    """An object with a known 'type' and arbitrary (often ill-typed) members of that type."""
    kind = draw(st.sampled_from(sorted(CLIENT_TYPES)))
    nearly = {
        "id": ids, "event": names, "method": names, "topic": topics, "seq": seqs,
        "resume": st.fixed_dictionaries(
            {}, optional={"session": wild_json, "token": wild_json, "last_seq": wild_json}),
        "error": st.fixed_dictionaries(
            {}, optional={"code": wild_json, "message": wild_json, "data": wild_json}),
    }
    obj = {"type": kind}
    for key in _MEMBERS[kind]:
        strategy = st.just(_UNSET) | wild_json
        if key in nearly:
            strategy = strategy | nearly[key]
        value = draw(strategy)
        if value is not _UNSET:
            obj[key] = value
    return obj


class PropertyTests(SynchronousTestCase):
    def _decode_or_wire_error(self, payload: bytes, **kw):
        try:
            return decode(payload, **kw)
        except WireError as e:
            self.assertIn(e.code, (BAD_JSON, BAD_MESSAGE, "invalid_utf8"))
            valid_text = True
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                valid_text = False
            self.assertEqual(e.code == "invalid_utf8", not valid_text)
            self.assertIsInstance(e.message, str)
            self.assertTrue(e.id is None or type(e.id) in (str, int))
            self.assertTrue(e.kind is None or e.kind in CLIENT_TYPES)
            return e

    @_PROPERTY
    @given(st.binary(max_size=200), st.integers(min_value=1, max_value=40))
    def test_arbitrary_bytes_only_raise_wire_error(self, payload, max_depth):
        result = self._decode_or_wire_error(payload, max_depth=max_depth)
        if not isinstance(result, WireError):
            self.assertIn(type(result), {Hello, Event, Call, Cancel, Result, Error, Subscribe,
                                         Unsubscribe, Presence, Publish, Ack, Ping, Bye})

    @_PROPERTY
    @given(wild_json, st.booleans())
    def test_arbitrary_json_only_raises_wire_error(self, value, ensure_ascii):
        payload = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
        result = self._decode_or_wire_error(payload)
        if type(value) is not dict:
            self.assertIsInstance(result, WireError)
            # a lone surrogate written without ensure_ascii is not UTF-8: that is said first
            try:
                payload.decode("utf-8")
                expected = BAD_JSON
            except UnicodeDecodeError:
                expected = errors.INVALID_UTF8
            self.assertEqual(result.code, expected)

    @_PROPERTY
    @given(typed_objects(), st.booleans())
    def test_typed_objects_with_arbitrary_members(self, obj, ensure_ascii):
        payload = json.dumps(obj, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
        result = self._decode_or_wire_error(payload)
        if isinstance(result, WireError) and result.code == BAD_MESSAGE:
            self.assertEqual(result.kind, obj["type"])

    @_PROPERTY
    @given(valid_messages())
    def test_valid_messages_round_trip(self, case):
        obj, expected = case
        for payload in (json.dumps(obj).encode("utf-8"),
                        json.dumps(obj, ensure_ascii=False).encode("utf-8"),
                        json.dumps(obj, indent=2).encode("utf-8")):
            message = decode(payload)
            self.assertIs(type(message), type(expected))
            self.assertEqual(message, expected)

    @_PROPERTY
    @given(json_values, st.integers(min_value=1, max_value=8))
    def test_depth_and_depth_limit_match_reference(self, data, max_depth):
        self.assertEqual(depth(data), reference_depth(data))
        obj = {"type": "ping", "data": data}
        payload = json.dumps(obj).encode("utf-8")
        if reference_depth(obj) <= max_depth:
            self.assertEqual(decode(payload, max_depth=max_depth), Ping(data))
        else:
            with self.assertRaises(WireError) as cm:
                decode(payload, max_depth=max_depth)
            self.assertEqual(cm.exception.code, BAD_JSON)

    @_PROPERTY
    @given(names, json_values, seqs, ids, json_values)
    def test_encoders_round_trip(self, name, data, seq, call_id, other):
        loads = json.loads
        self.assertEqual(loads(wire.encode_event(name, data, seq)),
                         {"type": "event", "event": name, "data": data, "seq": seq})
        self.assertEqual(loads(wire.encode_message(name, data, seq)),
                         {"type": "message", "topic": name, "data": data, "seq": seq})
        self.assertEqual(loads(wire.encode_call(call_id, name, data, seq)),
                         {"type": "call", "id": call_id, "method": name, "params": data,
                          "seq": seq})
        self.assertEqual(loads(wire.encode_result(call_id, data)),
                         {"type": "result", "id": call_id, "result": data})
        self.assertEqual(loads(wire.encode_pong(data)), {"type": "pong", "data": data})
        err = {"code": name, "message": "m"}
        if other is not None:
            err["data"] = other
        self.assertEqual(loads(wire.encode_error(name, "m", other)),
                         {"type": "error", "error": err})
        self.assertEqual(loads(wire.encode_error(name, "m", other, call_id)),
                         {"type": "error", "error": err, "id": call_id})
        # and what a client sends back in reply to a server call decodes to the same values
        self.assertEqual(decode(wire.encode_result(call_id, data)), Result(call_id, data))
