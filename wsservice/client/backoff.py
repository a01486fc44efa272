"""Reconnect delays: exponential backoff with full jitter."""

from __future__ import annotations

import random
from typing import Callable


class Backoff:
    """Delay before attempt N: uniform(0, min(maximum, initial * factor ** N)); reset() on
    success starts over."""

    def __init__(self, initial: float = 0.5, factor: float = 2.0, maximum: float = 10.0,
                 uniform: Callable[[float, float], float] = random.uniform) -> None:
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self.attempt = 0
        self._uniform = uniform

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.maximum, self.initial * self.factor ** self.attempt)

    def next(self) -> float:
        """The delay before the next attempt, in seconds; counts the attempt."""
        ceiling = self.ceiling()
        if ceiling < self.maximum:  # once at the cap the exponent stops growing (no overflow)
            self.attempt += 1
        return self._uniform(0, ceiling)

    def reset(self) -> None:
        """The connection succeeded: the next delay is the shortest again."""
        self.attempt = 0
