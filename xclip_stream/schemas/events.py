"""Events the pipeline publishes (key = camera id, value = JSON of one of these types).

Every event has a deterministic ``event_id`` (a hash of what identifies it, never of when it was
made), so a window scored twice after a crash or a replica restart yields the same id and a
consumer can drop the duplicate. JSON Schema files generated from these types live in
``schemas/json/`` (``python -m xclip_stream.schemas.export``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

STREAM_STATES = ("connected", "disconnected", "gap", "dropped", "ended", "failed", "restarted")


def make_event_id(*parts: object) -> str:
    """Deterministic id from the parts that identify an event; floats enter at millisecond precision."""
    text = "\x1f".join(f"{round(p, 3) + 0.0:.3f}" if isinstance(p, float) else str(p) for p in parts)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class ScoreEvent:
    """The scores of one window against the camera's label set: published for every window.

    Times are wall-clock UNIX seconds of the window's first and last frame (stream PTS mapped to
    wall time); ``media_start``/``media_end`` are the same frames on the stream's own clock.
    ``scores`` are softmax probabilities over the label set, ``logits`` the raw logits (comparable
    across windows of one model). ``model`` names the checkpoint of the replica that scored the
    window and ``checkpoint`` is its digest (empty if the replica did not say): across a model roll
    a consumer tells which model scored each window, and two events with one ``event_id`` and one
    ``checkpoint`` carry the same scores. ``latency_ms`` runs from the window's last frame to the event."""

    event_id: str
    camera_id: str
    window_index: int
    start_time: float
    end_time: float
    media_start: float | None
    media_end: float | None
    frame_count: int
    first_seq: int
    last_seq: int
    scores: dict[str, float]
    logits: dict[str, float]
    top_label: str
    top_score: float
    model: str
    labelset_id: str
    latency_ms: float
    checkpoint: str = ""

    def __post_init__(self):
        if set(self.scores) != set(self.logits) or not self.scores:
            raise ValueError("scores and logits need the same, non-empty set of labels")
        if self.top_label not in self.scores:
            raise ValueError(f"top label {self.top_label!r} is not among the scored labels")
        bad = sum(not math.isfinite(v) for v in self.logits.values())
        if bad or not all(map(math.isfinite, [*self.scores.values(), self.top_score])):  # not JSON: the window fails
            raise ValueError(f"non-finite scores: {bad} of {len(self.logits)} labels NaN/inf")
        if not (math.isfinite(self.start_time) and math.isfinite(self.end_time)) or self.end_time < self.start_time:
            raise ValueError(f"bad window times {self.start_time!r}..{self.end_time!r}")

    def to_json_dict(self) -> dict:
        return asdict(self)


MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class WindowFailed:
    """A window the model could not score, published in its place so no window vanishes unreported.

    ``reason`` is the model's error (credentials redacted, at most 500 characters); ``attempts``
    counts the calls made before giving up (1 for a window refused outright: wrong shape, a label
    set the model cannot encode). For a Kafka source the window's frames count as done (and their
    offsets may be committed) only once this event is acknowledged, as for a dead letter."""

    event_id: str
    camera_id: str
    window_index: int
    start_time: float
    end_time: float
    first_seq: int
    last_seq: int
    reason: str
    attempts: int
    model: str
    labelset_id: str

    def __post_init__(self):
        if not self.reason or len(self.reason) > MAX_REASON_CHARS:
            raise ValueError(f"reason must be 1..{MAX_REASON_CHARS} characters, got {len(self.reason)}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")

    def to_json_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StreamStats:
    """Counters of one stream since its stage started (health reports and stream events)."""

    frames_decoded: int = 0
    frames_sampled: int = 0
    windows_emitted: int = 0
    windows_scored: int = 0
    windows_dropped: int = 0  # live sources drop the oldest pending windows instead of lagging
    reconnects: int = 0
    gaps: int = 0
    dead_letters: int = 0
    windows_failed: int = 0  # windows the model could not score (each one an ``xclip.window.failed`` event)


@dataclass(frozen=True)
class StreamEvent:
    """A change in a stream's health: connected, disconnected (with the reason), a gap in the
    frames (``gap_start``..``gap_end``, wall clock), windows dropped under backpressure, the end of a
    file, a stream given up on, or its actor restarted after it was lost (``restarted``: the gap
    from the loss to the new actor's first frame; the windows the lost one held were not scored).
    ``source`` is the URL with any credentials redacted."""

    event_id: str
    camera_id: str
    state: str
    time: float
    source: str
    reason: str = ""
    gap_start: float | None = None
    gap_end: float | None = None
    stats: StreamStats = StreamStats()

    def __post_init__(self):
        if self.state not in STREAM_STATES:
            raise ValueError(f"stream state must be one of {STREAM_STATES}, got {self.state!r}")

    def to_json_dict(self) -> dict:
        return asdict(self)
