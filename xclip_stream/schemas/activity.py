"""Debounced activity events: one alert per incident instead of one per scored window.

An incident of a label on a camera produces a "start" event, optional "continue" events while it
lasts, and one "end" event (the new/update/end pattern of NVR event streams such as Frigate's).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

from .events import make_event_id

EVENT_TYPES = ("start", "continue", "end")


@dataclass(frozen=True)
class LabelThresholds:
    """Hysteresis for one label: an incident starts after ``min_on_windows`` consecutive windows
    scoring >= ``on`` and ends after ``min_off_windows`` consecutive windows scoring < ``off``.
    ``off <= on`` so a score wobbling between the two neither starts nor ends an incident."""

    on: float
    off: float
    min_on_windows: int = 1
    min_off_windows: int = 1

    def __post_init__(self):
        if not (0.0 <= self.off <= self.on <= 1.0):  # also false for NaN
            raise ValueError(f"thresholds need 0 <= off <= on <= 1, got on={self.on!r}, off={self.off!r}")
        for name in ("min_on_windows", "min_off_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def make_incident_id(camera_id: str, label: str, start_time: float) -> str:
    """Deterministic id of an incident, so a replay after a crash yields the same ids and consumers
    can drop duplicates. The start time enters at millisecond precision, so float noise below that
    does not change the id."""
    start_ms = f"{round(start_time, 3) + 0.0:.3f}"  # + 0.0 turns -0.0 into 0.0
    key = "\x1f".join((camera_id, label, start_ms))
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class ActivityEvent:
    """One event of an incident. Times are wall-clock seconds: ``start_time`` is the start of the
    incident's first window, ``end_time`` the end of the latest window that belongs to it. ``score``
    is the score of the window that produced this event, ``peak_score`` the incident's maximum so far,
    ``windows`` the number of windows in the incident so far."""

    type: str
    camera_id: str
    label: str
    incident_id: str
    start_time: float
    end_time: float
    score: float
    peak_score: float
    windows: int
    event_id: str = ""  # derived: hash of incident, type and window count (see __post_init__)

    def __post_init__(self):
        if not self.event_id:  # deterministic, so a replayed incident repeats its ids
            object.__setattr__(self, "event_id", make_event_id(self.incident_id, self.type, self.windows))
        if self.type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {self.type!r}")
        if not (math.isfinite(self.start_time) and math.isfinite(self.end_time)):
            raise ValueError(f"event times must be finite, got {self.start_time!r}..{self.end_time!r}")
        if self.end_time < self.start_time:
            raise ValueError(f"event ends before it starts: {self.start_time!r} > {self.end_time!r}")
        if self.windows < 1:
            raise ValueError(f"an incident has at least one window, got {self.windows!r}")

    def to_json_dict(self) -> dict:
        out = asdict(self)
        out["score"] = round(self.score, 6)
        out["peak_score"] = round(self.peak_score, 6)
        return out
