"""Reconnect delays: exponential backoff with full jitter.

Full jitter (a uniform draw below the exponential cap) spreads the retries of many cameras that lost
the same network at once, instead of having them hammer the recorder in lockstep.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for successive reconnect attempts; ``reset()`` once a connection delivered frames."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0,
                 rng: random.Random | None = None):
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError(
                f"backoff needs 0 < initial <= maximum and factor >= 1, got {initial}, {maximum}, {factor}"
            )
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempt = 0
        self._rng = rng if rng is not None else random.Random()

    def cap(self) -> float:
        """The upper bound of the next delay."""
        # min() before the power would overflow after ~1,000 attempts of a camera that never returns.
        exponent = min(self.attempt, 1023)
        try:
            return min(self.maximum, self.initial * self.factor**exponent)
        except OverflowError:
            return self.maximum

    def next_delay(self) -> float:
        delay = self._rng.uniform(0.0, self.cap())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
