"""The async half of a stream actor: pending windows -> model replicas -> events -> sink.

Windows go to the Serve deployment with at most ``max_in_flight`` outstanding per actor and come
back in the order they were sent, so each camera's events are published in window order. A call
that fails because a replica died, or gets no answer within ``request_timeout_s`` (a stuck
replica), is a system failure: retried with backoff until it succeeds, so a window taken from the
queue is never lost. A window the model refuses (wrong shape, a label set it cannot encode) fails
at once; NaN or inf logits (``NonFiniteScores``) are retried once, other application errors a few
times. Scores no event can carry (not finite, so not JSON) fail the window too. Either way the
window is then published as an ``xclip.window.failed`` event in its place and counted: never
dropped unsaid.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ray.exceptions import RayTaskError

from ..pipeline.events import EventBuilder, Scored, encode_event
from ..pipeline.model_check import ModelMismatch
from ..pipeline.scoring import NonFiniteScores, ReplicaScores
from ..pipeline.stream import PendingWindows
from ..schemas.windows import FrameWindow

log = logging.getLogger(__name__)

APP_ERROR_RETRIES = 3
# NaN/inf logits: a retry may reach another replica or outlast a transient device fault, but the
# same weights give the same input NaN again (a broken checkpoint, a bf16 overflow), so once only.
NON_FINITE_RETRIES = 1


@dataclass
class _InFlight:
    window: FrameWindow
    labels: tuple[str, ...]
    response: object
    attempts: int = 1
    sent: float = field(default_factory=time.monotonic)  # monotonic seconds of the latest call


@dataclass
class LoopStats:
    scored: int = 0
    retries: int = 0
    failed: int = 0  # windows given up on (each published as a failed event)
    timeouts: int = 0  # calls that got no answer within the request timeout (then retried)
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
        request_timeout_s: float = 60.0,
        redact: Callable[[str], str] = str,
        congested: Callable[[], bool] | None = None,
    ):
        self.handle = handle
        self.pending = pending
        self.builder_for = builder_for
        self.publish = publish  # (window, events) -> None: sends them and tracks their acks
        self.max_in_flight = max_in_flight
        self.source_seqs = source_seqs  # (first, last) sequence numbers as the source numbered them
        self.request_timeout_s = request_timeout_s
        self.redact = redact  # masks the source's credentials in failure reasons
        # True while the sink's unacknowledged backlog is full: no new windows are taken, so they
        # back up into PendingWindows (which drops for a live camera and blocks a file or topic).
        self.congested = congested or (lambda: False)
        self.abandoned = False  # set on stop: a congested loop then ends, leaving its queue unscored
        self.stats = LoopStats()
        self._in_flight: deque[_InFlight] = deque()
        self._other_models: set[str] = set()  # replica checkpoints named otherwise than the pipeline's model

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
            # A call past its deadline when it reaches the head (it waited behind a retried one)
            # still gets a moment: its answer may already be there.
            remaining = max(min(1.0, self.request_timeout_s), head.sent + self.request_timeout_s - time.monotonic())
            answer = await asyncio.wait_for(_awaitable(head.response), remaining)
        except TimeoutError:
            self.stats.timeouts += 1
            _cancel(head.response)
            await self._retry(head, f"no answer within {self.request_timeout_s:g} s")
            return
        except Exception as e:  # noqa: BLE001 - every failure is either retried or reported
            cause = getattr(e, "cause", None) or e  # a RayTaskError carries the replica's exception
            refused = isinstance(cause, ModelMismatch)  # the same window would be refused again
            app_error = isinstance(e, RayTaskError) or isinstance(e, (ValueError, TypeError))
            retries = NON_FINITE_RETRIES if isinstance(cause, NonFiniteScores) else APP_ERROR_RETRIES
            if refused or (app_error and head.attempts > retries):
                self._fail(head, cause)
            else:
                await self._retry(head, f"{type(e).__name__}: {e}")
            return
        builder = self.builder_for(head.window.camera_id)
        seqs = self.source_seqs(head.window) if self.source_seqs else (None, None)
        logits, model, checkpoint = _unpack(answer)
        if model and model != builder.model_name and model not in self._other_models:
            self._other_models.add(model)  # a checkpoint rolled through serveConfigV2 alone: said once
            log.warning("windows are scored by checkpoint %r (%s), the pipeline's model is %r: events name "
                        "the replica's; windows are cut for the pipeline's", model, checkpoint, builder.model_name)
        try:
            events = builder.window_events(Scored(head.window, head.labels, tuple(logits), model, checkpoint), *seqs)
            self.publish(head.window, events)  # raises before sending anything an event cannot be encoded
        except (ValueError, TypeError) as e:  # logits no event can carry (NaN from an unchecked replica)
            self._fail(head, e)
            return
        self._in_flight.popleft()
        self.stats.scored += 1
        self.stats.latencies_ms.append(events[0].latency_ms)

    async def _retry(self, head: _InFlight, why: str) -> None:
        self.stats.retries += 1
        delay = min(5.0, 0.2 * 2 ** min(head.attempts, 5)) * random.uniform(0.5, 1.0)
        log.warning("camera %s: window %d scoring failed (%s); retry %d in %.1f s",
                    head.window.camera_id, head.window.index, self.redact(why), head.attempts, delay)
        await asyncio.sleep(delay)
        head.attempts += 1
        head.response = self.handle.score.remote(head.window.frames, head.labels)
        head.sent = time.monotonic()

    def _fail(self, head: _InFlight, cause: BaseException) -> None:
        """Publish the failed event in the window's place; its frames are done once it is acknowledged."""
        self._in_flight.popleft()
        self.stats.failed += 1
        reason = self.redact(f"{type(cause).__name__}: {cause}")
        log.error("camera %s: window %d not scored after %d attempt(s): %s",
                  head.window.camera_id, head.window.index, head.attempts, reason)
        builder = self.builder_for(head.window.camera_id)
        seqs = self.source_seqs(head.window) if self.source_seqs else (None, None)
        self.publish(head.window, [builder.window_failed(head.window, head.labels, reason, head.attempts, *seqs)])


def _unpack(answer) -> tuple[list[float], str, str]:
    """A replica's answer -> (logits, checkpoint name, digest). Bare logits (a stand-in handle, or a
    replica of an earlier release during an upgrade) name no checkpoint: the event then names the
    pipeline's model."""
    if isinstance(answer, ReplicaScores):
        return answer.logits, answer.model, answer.checkpoint
    return answer, "", ""


async def _awaitable(response):
    """A Serve response (or any awaitable) as a coroutine, for ``asyncio.wait_for``."""
    return await response


def _cancel(response) -> None:
    """Ask Serve to drop a request we stopped waiting for (it may still finish on the replica)."""
    cancel = getattr(response, "cancel", None)
    if cancel is not None:
        cancel()


def send_events(delivery, topic: str, events: list, on_all_acked: Callable[[], None] | None = None) -> None:
    """Publish events in order through a ``Delivery`` (which retries each until acknowledged);
    ``on_all_acked`` runs once every one of them was acknowledged."""
    remaining = len(events)

    def acked(_=None):
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and on_all_acked is not None:
            on_all_acked()

    records = [encode_event(event) for event in events]  # all or none: a ValueError sends nothing
    if not events and on_all_acked is not None:
        on_all_acked()
    for key, value, headers in records:
        delivery.submit(topic, key, value, headers, on_ack=acked)
