"""FrameLog, the memory store's buffer of kept frames, against a deque of bytes."""

from __future__ import annotations

import random
from collections import deque

from twisted.trial.unittest import SynchronousTestCase

from wsservice.framelog import FrameLog


class FrameLogTests(SynchronousTestCase):
    """Appends, drops from the front and reads give what a deque of the frames would."""

    def test_empty(self) -> None:
        log = FrameLog()
        self.assertEqual((len(log), log.frames(), log.drop(3)), (0, [], 0))
        self.assertRaises(IndexError, log.popleft)

    def test_order_and_lengths(self) -> None:
        log = FrameLog()
        for frame in (b"a", b"", b"bcd", b"\x00\xff"):
            log.append(frame)
        self.assertEqual(log.frames(), [b"a", b"", b"bcd", b"\x00\xff"])
        self.assertEqual((log.popleft(), log.popleft(), len(log)), (1, 0, 2))
        self.assertEqual(log.drop(5), 5)  # more than kept: all of them
        self.assertEqual((len(log), log.frames()), (0, []))
        log.append(b"again")
        self.assertEqual(log.frames(), [b"again"])

    def test_random_operations_match_a_deque(self) -> None:
        rng = random.Random(13)
        log, model = FrameLog(), deque()
        for step in range(20000):
            op = rng.random()
            if op < 0.45:
                frame = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
                log.append(frame)
                model.append(frame)
            elif op < 0.85:
                if model:
                    self.assertEqual(log.popleft(), len(model.popleft()))
            elif op < 0.92:
                # add: append, then trim to the limits, as the memory store does per push
                frame = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
                max_count, max_bytes = rng.randrange(0, 40), rng.randrange(0, 4000)
                size = sum(map(len, model))
                model.append(frame)
                after = size + len(frame)
                while model and (len(model) > max_count or after > max_bytes):
                    after -= len(model.popleft())
                self.assertEqual(log.add(frame, size, max_count, max_bytes), after)
            elif op < 0.97:
                k = rng.randrange(0, 8)
                gone = [model.popleft() for _ in range(min(k, len(model)))]
                self.assertEqual(log.drop(k), sum(map(len, gone)))
            else:
                log.clear()
                model.clear()
            self.assertEqual(len(log), len(model))
            if step % 500 == 0:
                self.assertEqual(log.frames(), list(model))
        self.assertEqual(log.frames(), list(model))
