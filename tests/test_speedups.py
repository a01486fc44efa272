"""The small-frame unmasker agrees with a plain XOR, however the payload is chunked."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsservice.speedups import SMALL, LazyFormat, SmallMasker, create_xor_masker


def reference(mask: bytes, data: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class MaskerTests(SynchronousTestCase):
    """SmallMasker against the definition of RFC 6455 masking."""

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.binary(min_size=4, max_size=4), st.binary(max_size=600),
           st.lists(st.integers(0, 100), max_size=8))
    def test_chunked_equals_reference(self, mask: bytes, data: bytes, cuts: list[int]) -> None:
        masker = SmallMasker(mask)
        out, pos = [], 0
        for cut in cuts:
            out.append(masker.process(data[pos:pos + cut]))
            pos += cut
        out.append(masker.process(data[pos:]))
        self.assertEqual(b"".join(out), reference(mask, data))
        self.assertEqual(masker.pointer(), len(data))
        masker.reset()
        self.assertEqual(masker.pointer(), 0)
        self.assertEqual(masker.process(data), reference(mask, data))

    def test_large_frames_keep_autobahns_masker(self) -> None:
        self.assertIsInstance(create_xor_masker(b"abcd", SMALL), SmallMasker)
        self.assertNotIsInstance(create_xor_masker(b"abcd", SMALL + 1), SmallMasker)
        big = create_xor_masker(b"abcd", 100000)
        self.assertEqual(big.process(b"\x00" * 8), b"abcdabcd")


class LazyFormatTests(SynchronousTestCase):
    """The deferred pformat gives the same text when it is finally needed."""

    def test_same_text(self) -> None:
        import pprint
        value = [("maxMessagePayloadSize", 1048576, "WebSocketFactory")] * 3
        self.assertEqual(str(LazyFormat(value)), pprint.pformat(value))
