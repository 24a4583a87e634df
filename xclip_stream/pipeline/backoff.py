"""Reconnect delays: exponential backoff with full jitter.

Full jitter (a uniform draw below the exponential cap) spreads the retries of many cameras that lost
the same network at once, instead of having them hammer the recorder in lockstep. ``retry`` uses
it for services that must be reached before a pipeline can start (a Kafka broker still booting).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def retry(action: Callable[[], T], what: str, stop: threading.Event | None = None,
          retry_on: tuple[type[BaseException], ...] = (Exception,), backoff: Backoff | None = None) -> T:
    """``action()`` until it returns, with one log line per failure ("kafka 127.0.0.1:9092 unreachable,
    retrying in 2.1 s (KafkaTimeoutError: ...)") and no traceback; ``Stopped`` if ``stop`` is set first."""
    stop = stop or threading.Event()
    backoff = backoff or Backoff(initial=1.0, maximum=15.0)
    while not stop.is_set():
        try:
            return action()
        except retry_on as e:
            delay = backoff.next_delay()
            log.warning("%s unreachable, retrying in %.1f s (%s: %s)", what, delay, type(e).__name__, e)
            stop.wait(delay)
    raise Stopped(f"stopped while waiting for {what}")


class Stopped(RuntimeError):
    """``retry`` gave up because it was asked to stop."""
