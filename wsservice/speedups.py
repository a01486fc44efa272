"""Two costs Autobahn pays per frame and per connection, removed (installed at import).

- Unmasking: RFC 6455 makes clients mask every frame, and Autobahn builds a native (NVX,
  cffi) masker per frame; building it (an import, two cffi allocations, a finalizer) costs
  more than unmasking a small payload: profiled, about a fifth of the server's time on a
  call workload. For frames up to SMALL bytes a Python integer XOR is cheaper; larger
  frames keep Autobahn's SIMD masker.
- Every new connection pretty-printed its ~30 settings for a DEBUG line that is then
  dropped; pformat now defers the work until a line is really written.
"""

from __future__ import annotations

import pprint

import autobahn.websocket.protocol as _protocol

SMALL = 4096
_original = _protocol.create_xor_masker
_from_bytes = int.from_bytes


class SmallMasker:
    """Autobahn's masker interface (pointer, reset, process) for one small frame."""

    __slots__ = ("_mask", "_ptr")

    def __init__(self, mask: bytes) -> None:
        self._mask = bytes(mask)
        self._ptr = 0

    def pointer(self) -> int:
        """Bytes processed so far."""
        return self._ptr

    def reset(self) -> None:
        """Start over."""
        self._ptr = 0

    def process(self, data: bytes) -> bytes:
        """XOR the next ``len(data)`` bytes of the payload with the (rotated) mask."""
        n = len(data)
        if not n:
            return b""
        k = self._ptr & 3
        mask = self._mask[k:] + self._mask[:k] if k else self._mask
        self._ptr += n
        key = mask * ((n >> 2) + 1)
        return (_from_bytes(data, "little") ^ _from_bytes(key[:n], "little")).to_bytes(
            n, "little")


def create_xor_masker(mask: bytes, length: int | None = None) -> object:
    """SmallMasker for small frames, Autobahn's own otherwise."""
    if length is not None and length <= SMALL:
        return SmallMasker(mask)
    return _original(mask, length)


class LazyFormat:
    """pprint.pformat(value), computed only if the log line is written."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def __str__(self) -> str:
        return pprint.pformat(self._value)


def install() -> None:
    """Make Autobahn use create_xor_masker and LazyFormat (idempotent)."""
    _protocol.create_xor_masker = create_xor_masker
    _protocol.pformat = LazyFormat  # type: ignore[assignment]
