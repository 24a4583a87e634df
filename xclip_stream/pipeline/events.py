"""Event builder: a camera's scored windows -> score events, debounced activity events, stream events.

One ``EventBuilder`` per camera (it holds that camera's activity state). ``encode_event`` turns any
event into what a sink publishes: key = camera id, JSON value, CloudEvents binary-mode headers.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..schemas.activity import ActivityEvent, LabelThresholds
from ..schemas.config import LabelSet, Thresholds
from ..schemas.events import (
    MAX_REASON_CHARS,
    ScoreEvent,
    StreamEvent,
    StreamStats,
    WindowFailed,
    make_event_id,
)
from ..schemas.windows import FrameWindow

CE_SOURCE_PREFIX = "/xclip-stream/cameras/"


def labelset_id(labels: Sequence[str]) -> str:
    """Stable id of an ordered label set (scores are only comparable within one set)."""
    return hashlib.sha1("\x1f".join(labels).encode("utf-8")).hexdigest()[:12]


def _thresholds(t: Thresholds) -> LabelThresholds:
    return LabelThresholds(t.on, t.off, t.min_on_windows, t.min_off_windows)


def softmax(logits: Sequence[float]) -> list[float]:
    m = max(logits)
    exps = [math.exp(v - m) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


@dataclass(frozen=True)
class Scored:
    """A window and the model's logits for the label set it was scored against; ``model`` and
    ``checkpoint``: the replica's checkpoint name and digest, when it said (else the pipeline's model)."""

    window: FrameWindow
    labels: tuple[str, ...]
    logits: tuple[float, ...]
    model: str = ""
    checkpoint: str = ""


class EventBuilder:
    def __init__(
        self,
        camera_id: str,
        model_name: str,
        labels: LabelSet,
        continue_every: int = 0,
        clock: Callable[[], float] = time.time,
    ):
        from .activity import ActivityTracker

        self.camera_id = camera_id
        self.model_name = model_name
        self.clock = clock
        self.labels = labels
        self.tracker = ActivityTracker(
            camera_id,
            {k: _thresholds(v) for k, v in labels.thresholds.items()},
            _thresholds(labels.default_thresholds),
            continue_every,
        )

    def relabel(self, labels: LabelSet) -> list[ActivityEvent]:
        """Switch to a new label set; incidents of labels no longer in it end now."""
        self.labels = labels
        return self.tracker.set_thresholds(
            {k: _thresholds(v) for k, v in labels.thresholds.items()},
            _thresholds(labels.default_thresholds),
            labels=labels.labels,
        )

    def window_events(self, scored: Scored, first_seq: int | None = None, last_seq: int | None = None):
        """The score event of one window and the activity events it causes (in that order)."""
        w = scored.window
        probs = softmax(scored.logits)
        top = max(range(len(probs)), key=probs.__getitem__)
        lsid = labelset_id(scored.labels)
        score = ScoreEvent(
            event_id=make_event_id(self.camera_id, "score", lsid, w.start_time, w.end_time),
            camera_id=self.camera_id,
            window_index=w.index,
            start_time=w.start_time,
            end_time=w.end_time,
            media_start=w.frame_pts[0] if w.frame_pts else None,
            media_end=w.frame_pts[-1] if w.frame_pts else None,
            frame_count=w.frame_count,
            first_seq=w.frame_seqs[0] if first_seq is None else first_seq,
            last_seq=w.frame_seqs[-1] if last_seq is None else last_seq,
            scores={label: round(p, 6) for label, p in zip(scored.labels, probs)},
            logits={label: round(v, 4) for label, v in zip(scored.labels, scored.logits)},
            top_label=scored.labels[top],
            top_score=round(probs[top], 6),
            model=scored.model or self.model_name,
            labelset_id=lsid,
            latency_ms=round(max(0.0, self.clock() - w.end_time) * 1000.0, 3),
            checkpoint=scored.checkpoint,
        )
        # A producer's clock stepped back: end what was open rather than refuse every later window.
        ended = self.tracker.restart_clock(w.start_time)
        activity = self.tracker.update(dict(zip(scored.labels, probs)), w.start_time, w.end_time)
        return [score, *ended, *activity]

    def window_failed(self, window: FrameWindow, labels: Sequence[str], reason: str, attempts: int,
                      first_seq: int | None = None, last_seq: int | None = None) -> WindowFailed:
        """The event published instead of a window's scores when the model could not score it. Its id
        is the window's (as a score event's is), so a retried failure is recognisably the same one."""
        lsid = labelset_id(labels)
        reason = " ".join(reason.split()) or "unknown error"  # one line: tracebacks stay in the logs
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 3] + "..."
        return WindowFailed(
            event_id=make_event_id(self.camera_id, "failed", lsid, window.start_time, window.end_time),
            camera_id=self.camera_id,
            window_index=window.index,
            start_time=window.start_time,
            end_time=window.end_time,
            first_seq=window.frame_seqs[0] if first_seq is None else first_seq,
            last_seq=window.frame_seqs[-1] if last_seq is None else last_seq,
            reason=reason,
            attempts=attempts,
            model=self.model_name,
            labelset_id=lsid,
        )

    def flush(self) -> list[ActivityEvent]:
        """End all incidents in progress (the stream stops or is removed)."""
        return self.tracker.flush()

    def stream_event(
        self,
        state: str,
        source: str,
        reason: str = "",
        stats: StreamStats | None = None,
        gap: tuple[float, float] | None = None,
        at: float | None = None,
    ) -> StreamEvent:
        now = self.clock() if at is None else at
        return StreamEvent(
            event_id=make_event_id(self.camera_id, "stream", state, now),
            camera_id=self.camera_id,
            state=state,
            time=now,
            source=source,
            reason=reason,
            gap_start=gap[0] if gap else None,
            gap_end=gap[1] if gap else None,
            stats=stats or StreamStats(),
        )


def event_type(event: ScoreEvent | WindowFailed | ActivityEvent | StreamEvent) -> str:
    """The CloudEvents ``type`` of an event."""
    if isinstance(event, ScoreEvent):
        return "xclip.window.scores"
    if isinstance(event, WindowFailed):
        return "xclip.window.failed"
    if isinstance(event, ActivityEvent):
        return f"xclip.activity.{event.type}"
    return f"xclip.stream.{event.state}"


def event_time(event: ScoreEvent | WindowFailed | ActivityEvent | StreamEvent) -> float:
    if isinstance(event, StreamEvent):
        return event.time
    return event.end_time


def event_json(event) -> dict:
    """The event as JSON-ready data, with its CloudEvents type under ``type`` for stdout readers."""
    return {"event_type": event_type(event), **event.to_json_dict()}


def encode_event(event) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) for a Kafka record: key = camera id, CloudEvents binary mode headers."""
    from .sinks import cloudevent_headers

    value = json.dumps(event_json(event), separators=(",", ":"), allow_nan=False).encode("utf-8")
    headers = cloudevent_headers(
        event_type=event_type(event),
        event_id=event.event_id,
        source=CE_SOURCE_PREFIX + event.camera_id,
        subject=event.camera_id,
        time=event_time(event),
    )
    return event.camera_id, value, headers
