"""FrameLog: a session's kept frames in one buffer, oldest first, for the memory store.

A deque of bytes objects costs each frame its object header (33 bytes, rounded up to 8)
and a slot; a replay buffer holds up to a thousand small frames per session, so that was a
fifth of what it kept. Here the frames lie end to end in one bytearray (dropping from its
front is cheap: CPython moves its start, not the bytes) and their lengths in an array of
4-byte ints, whose front is dropped lazily: about 1.1x the frames' bytes in all.
"""

from __future__ import annotations

from array import array

_COMPACT = 256  # lengths dropped from the front before the array is compacted


class FrameLog:
    """Frames appended at the end and dropped from the front, with their lengths."""

    __slots__ = ("_buf", "_lens", "_head")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lens = array("I")
        self._head = 0  # lengths before this index are dropped already

    def __len__(self) -> int:
        return len(self._lens) - self._head

    def append(self, frame: bytes) -> None:
        """Keep ``frame`` after the others."""
        self._buf += frame
        self._lens.append(len(frame))

    def add(self, frame: bytes, size: int, max_count: int, max_bytes: int) -> int:
        """Keep ``frame`` after the others (``size`` bytes kept before it), then drop the
        oldest while more than ``max_count`` frames or ``max_bytes`` bytes are kept; the
        bytes kept after. One call per push: the trim is inline (the hot path)."""
        self._buf += frame
        lens = self._lens
        lens.append(len(frame))
        size += len(frame)
        head = self._head
        count = len(lens) - head
        if count > max_count or size > max_bytes:
            freed = 0
            while count and (count > max_count or size > max_bytes):
                n = lens[head]
                freed += n
                size -= n
                head += 1
                count -= 1
            del self._buf[:freed]
            if not count or head >= _COMPACT and head * 2 >= len(lens):
                self._dropped(head)
            else:
                self._head = head
        return size

    def popleft(self) -> int:
        """Drop the oldest frame; its length (IndexError when there is none)."""
        lens = self._lens
        head = self._head
        if head >= len(lens):
            raise IndexError("no frame kept")
        n = lens[head]
        del self._buf[:n]
        self._dropped(head + 1)
        return n

    def drop(self, count: int) -> int:
        """Drop the oldest ``count`` frames (all, if fewer are kept); their total length."""
        head = self._head
        stop = min(head + count, len(self._lens))
        if stop <= head:
            return 0
        n = sum(self._lens[head:stop])
        del self._buf[:n]
        self._dropped(stop)
        return n

    def _dropped(self, head: int) -> None:
        lens = self._lens
        if head >= len(lens):
            del lens[:]
            head = 0
        elif head >= _COMPACT and head * 2 >= len(lens):
            del lens[:head]  # one move of the lengths still kept, now and then
            head = 0
        self._head = head

    def clear(self) -> None:
        """Drop every frame."""
        self._buf = bytearray()
        self._lens = array("I")
        self._head = 0

    def frames(self) -> list[bytes]:
        """The kept frames, oldest first, each as bytes of its own."""
        out = []
        pos = 0
        with memoryview(self._buf) as view:
            for i in range(self._head, len(self._lens)):
                n = self._lens[i]
                out.append(bytes(view[pos:pos + n]))
                pos += n
        return out
