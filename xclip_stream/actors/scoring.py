"""The async half of a stream actor: pending windows -> model replicas -> events -> sink.

Windows go to the Serve deployment with at most ``max_in_flight`` outstanding per actor and come
back in the order they were sent, so each camera's events are published in window order. A call
that fails because a replica died (or any system error) is retried with backoff until it
succeeds: a window taken from the queue is never lost. A window the model itself rejects (an
application error) is retried a few times, then reported and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ray.exceptions import RayTaskError

from ..pipeline.events import EventBuilder, Scored, encode_event
from ..pipeline.stream import PendingWindows
from ..schemas.windows import FrameWindow

log = logging.getLogger(__name__)

APP_ERROR_RETRIES = 3


@dataclass
class _InFlight:
    window: FrameWindow
    labels: tuple[str, ...]
    response: object
    attempts: int = 1


@dataclass
class LoopStats:
    scored: int = 0
    retries: int = 0
    failed: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=512))


class ScoringLoop:
    """Owns no thread: ``run()`` is a coroutine of the hosting actor's event loop."""

    def __init__(
        self,
        handle,
        pending: PendingWindows,
        builder_for: Callable[[str], EventBuilder],
        publish: Callable[[FrameWindow, list], None],
        max_in_flight: int = 2,
        source_seqs: Callable[[FrameWindow], tuple[int, int]] | None = None,
        congested: Callable[[], bool] | None = None,
    ):
        self.handle = handle
        self.pending = pending
        self.builder_for = builder_for
        self.publish = publish  # (window, events) -> None: sends them and tracks their acks
        self.max_in_flight = max_in_flight
        self.source_seqs = source_seqs  # (first, last) sequence numbers as the source numbered them
        # True while the sink's unacknowledged backlog is full: no new windows are taken, so they
        # back up into PendingWindows (which drops for a live camera and blocks a file or topic).
        self.congested = congested or (lambda: False)
        self.abandoned = False  # set on stop: a congested loop then ends, leaving its queue unscored
        self.stats = LoopStats()
        self._in_flight: deque[_InFlight] = deque()

    def in_flight_for(self, camera_id: str) -> bool:
        """Whether a window of ``camera_id`` is being scored (its events are not built yet)."""
        return any(f.window.camera_id == camera_id for f in self._in_flight)

    def _submit(self, window: FrameWindow) -> None:
        labels = tuple(self.builder_for(window.camera_id).labels.labels)
        self._in_flight.append(_InFlight(window, labels, self.handle.score.remote(window.frames, labels)))

    async def run(self) -> None:
        """Until the queue is closed and drained and nothing is in flight."""
        loop = asyncio.get_running_loop()
        while True:
            if self.congested() and not self._in_flight:
                if self.abandoned:
                    return
                await asyncio.sleep(0.05)
                continue
            while len(self._in_flight) < self.max_in_flight and not self.congested():
                window = self.pending.get(timeout=0)
                if window is None:
                    break
                self._submit(window)
            if not self._in_flight:
                if self.pending.closed and len(self.pending) == 0:
                    return
                window = await loop.run_in_executor(None, self.pending.get, 0.2)
                if window is not None:
                    self._submit(window)
                continue
            await self._finish_head()

    async def _finish_head(self) -> None:
        head = self._in_flight[0]
        try:
            logits = await head.response
        except Exception as e:  # noqa: BLE001 - every failure is either retried or reported
            app_error = isinstance(e, RayTaskError) or isinstance(e, (ValueError, TypeError))
            if app_error and head.attempts > APP_ERROR_RETRIES:
                self._in_flight.popleft()
                self.stats.failed += 1
                log.error("camera %s: window %d rejected by the model after %d attempts: %s",
                          head.window.camera_id, head.window.index, head.attempts, e)
                self.publish(head.window, [])  # nothing to publish, but its frames are done with
                return
            self.stats.retries += 1
            delay = min(5.0, 0.2 * 2 ** min(head.attempts, 5)) * random.uniform(0.5, 1.0)
            log.warning("camera %s: window %d scoring failed (%s: %s); retry %d in %.1f s",
                        head.window.camera_id, head.window.index, type(e).__name__, e, head.attempts, delay)
            await asyncio.sleep(delay)
            head.attempts += 1
            head.response = self.handle.score.remote(head.window.frames, head.labels)
            return
        self._in_flight.popleft()
        builder = self.builder_for(head.window.camera_id)
        seqs = self.source_seqs(head.window) if self.source_seqs else (None, None)
        events = builder.window_events(Scored(head.window, head.labels, tuple(logits)), *seqs)
        self.stats.scored += 1
        self.stats.latencies_ms.append(events[0].latency_ms)
        self.publish(head.window, events)


def send_events(delivery, topic: str, events: list, on_all_acked: Callable[[], None] | None = None) -> None:
    """Publish events in order through a ``Delivery`` (which retries each until acknowledged);
    ``on_all_acked`` runs once every one of them was acknowledged."""
    remaining = len(events)

    def acked(_=None):
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and on_all_acked is not None:
            on_all_acked()

    if not events and on_all_acked is not None:
        on_all_acked()
    for event in events:
        key, value, headers = encode_event(event)
        delivery.submit(topic, key, value, headers, on_ack=acked)
