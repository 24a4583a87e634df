"""Turn a camera's per-window label scores into debounced incidents (start / continue / end events).

Scoring every window gives one detection per window; alerting on each would page users many times
for one fall or one fight. An ``ActivityTracker`` keeps, per label, a small hysteresis state machine:

    idle --(min_on_windows consecutive windows >= on)--> active --(min_off_windows consecutive
    windows < off)--> idle

``off <= on`` means a score hovering between the two neither starts nor ends an incident, and
``min_off_windows`` bridges short dips (a person briefly occluded) so they do not split one incident
in two. Pure Python and deterministic: replaying the same windows yields the same events and ids.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..schemas.activity import ActivityEvent, LabelThresholds, make_incident_id


@dataclass
class _LabelState:
    """Mutable per-label state of one tracker. Idle states (nothing pending, not active) are dropped."""

    pending: int = 0  # consecutive windows >= on while idle
    pending_start: float = 0.0
    active: bool = False
    incident_id: str = ""
    start_time: float = 0.0
    last_end: float = 0.0  # end of the latest window >= off: where the incident ends
    peak: float = 0.0
    windows: int = 0  # windows in the incident, bridged dips included, trailing dip excluded
    below: int = 0  # consecutive windows < off while active (a dip that may still be bridged)
    emitted_at: int = 0  # value of ``windows`` at the last start/continue event
    last_score: float = 0.0

    @property
    def idle(self) -> bool:
        return not self.active and self.pending == 0


class ActivityTracker:
    """Debounces one camera's window scores into incidents, independently per label.

    ``thresholds`` gives per-label hysteresis; labels not in it use ``default``. With
    ``continue_every=N > 0`` an active incident emits a "continue" event every N windows so consumers
    can refresh its end time and peak score; 0 disables them.
    """

    def __init__(
        self,
        camera_id: str,
        thresholds: Mapping[str, LabelThresholds],
        default: LabelThresholds,
        continue_every: int = 0,
    ):
        if isinstance(continue_every, bool) or not isinstance(continue_every, int) or continue_every < 0:
            raise ValueError(f"continue_every must be an integer >= 0, got {continue_every!r}")
        self.camera_id = camera_id
        self.continue_every = continue_every
        self._thresholds, self._default = self._checked(thresholds, default)
        self._states: dict[str, _LabelState] = {}
        self._last_start: float | None = None

    @property
    def active_labels(self) -> list[str]:
        """Labels with an incident in progress, sorted."""
        return sorted(label for label, state in self._states.items() if state.active)

    def update(self, scores: Mapping[str, float], start_time: float, end_time: float) -> list[ActivityEvent]:
        """Feed the next window's scores (windows must arrive in start-time order). Labels missing
        from ``scores`` count as below their ``off`` threshold, so a label dropped by the scorer
        cannot keep an incident open forever. Returns the events this window caused, by label."""
        self._check_window(start_time, end_time)
        for label, score in scores.items():
            if not math.isfinite(score):
                raise ValueError(f"camera {self.camera_id!r}: score of {label!r} is not finite: {score!r}")
        self._last_start = start_time
        events = []
        for label in sorted(set(scores) | set(self._states)):
            state = self._states.setdefault(label, _LabelState())
            event = self._step(label, state, scores.get(label), start_time, end_time)
            if event is not None:
                events.append(event)
            if state.idle:
                del self._states[label]
        return events

    def flush(self, end_time: float | None = None) -> list[ActivityEvent]:
        """End every incident in progress and forget pending starts (shutdown, camera removed).

        Each incident ends at its last window scoring >= off, or at ``end_time`` if given (which
        must not be before that window's end). The window order check is kept: later windows must
        still not start before the last one seen."""
        events = self._end_labels(sorted(self._states), end_time)
        self._states.clear()
        return events

    def restart_clock(self, start_time: float) -> list[ActivityEvent]:
        """The camera's clock stepped back (a window starts before the last one): incidents in
        progress end at their last window, and window order is checked again from ``start_time`` on.
        A no-op, returning nothing, for a window in order."""
        if self._last_start is None or start_time >= self._last_start:
            return []
        events = self.flush()
        self._last_start = None
        return events

    def set_thresholds(
        self,
        thresholds: Mapping[str, LabelThresholds],
        default: LabelThresholds | None = None,
        *,
        labels: Iterable[str] | None = None,
        end_time: float | None = None,
    ) -> list[ActivityEvent]:
        """Replace the thresholds, e.g. after relabelling, and end the incidents of removed labels.

        A label counts as removed if it had its own thresholds and no longer has, or, when the new
        label set ``labels`` is given, if it is not in it. Incidents of the remaining labels carry
        on under the new thresholds from the next window on."""
        new_thresholds, new_default = self._checked(thresholds, default or self._default)
        removed = set(self._thresholds) - set(new_thresholds)
        if labels is not None:
            removed |= set(self._states) - set(labels)
        removed &= set(self._states)
        events = self._end_labels(sorted(removed), end_time)
        for label in removed:
            del self._states[label]
        self._thresholds, self._default = new_thresholds, new_default
        return events

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _checked(
        thresholds: Mapping[str, LabelThresholds], default: LabelThresholds
    ) -> tuple[dict[str, LabelThresholds], LabelThresholds]:
        for label, value in [*thresholds.items(), ("<default>", default)]:
            if not isinstance(value, LabelThresholds):
                raise TypeError(
                    f"thresholds for {label!r} must be LabelThresholds, got {type(value).__name__}"
                )
        return dict(thresholds), default  # a copy: later changes by the caller must not leak in

    def _check_window(self, start_time: float, end_time: float) -> None:
        if not (math.isfinite(start_time) and math.isfinite(end_time)) or end_time < start_time:
            raise ValueError(
                f"camera {self.camera_id!r}: bad window times start={start_time!r} end={end_time!r}"
            )
        if self._last_start is not None and start_time < self._last_start:
            raise ValueError(
                f"camera {self.camera_id!r}: window starting at {start_time!r} arrived after one "
                f"starting at {self._last_start!r}; windows must arrive in order"
            )

    def _step(
        self, label: str, state: _LabelState, score: float | None, start_time: float, end_time: float
    ) -> ActivityEvent | None:
        th = self._thresholds.get(label, self._default)
        if score is not None:
            state.last_score = score
        if not state.active:
            if score is None or score < th.on:
                state.pending = 0
                return None
            if state.pending == 0:
                state.pending_start, state.peak = start_time, score
            state.pending += 1
            state.peak = max(state.peak, score)
            if state.pending < th.min_on_windows:
                return None
            state.active = True
            state.start_time = state.pending_start
            state.incident_id = make_incident_id(self.camera_id, label, state.start_time)
            state.windows = state.emitted_at = state.pending
            state.last_end, state.below, state.pending = end_time, 0, 0
            return self._event("start", label, state, score, end_time)
        if score is not None and score >= th.off:
            state.windows += state.below + 1  # a bridged dip belongs to the incident
            state.below = 0
            state.last_end = end_time
            state.peak = max(state.peak, score)
            if self.continue_every and state.windows - state.emitted_at >= self.continue_every:
                state.emitted_at = state.windows
                return self._event("continue", label, state, score, end_time)
            return None
        state.below += 1
        if state.below < th.min_off_windows:
            return None
        event = self._event("end", label, state, 0.0 if score is None else score, state.last_end)
        state.active, state.below = False, 0
        return event

    def _end_labels(self, labels: list[str], end_time: float | None) -> list[ActivityEvent]:
        active = [(label, self._states[label]) for label in labels if self._states[label].active]
        for label, state in active:  # check all before emitting anything
            if end_time is not None and end_time < state.last_end:
                raise ValueError(
                    f"camera {self.camera_id!r}: end_time {end_time!r} is before the end of "
                    f"{label!r}'s last window {state.last_end!r}"
                )
        events = []
        for label, state in active:
            end = state.last_end if end_time is None else end_time
            events.append(self._event("end", label, state, state.last_score, end))
            state.active, state.below = False, 0
        return events

    def _event(
        self, type_: str, label: str, state: _LabelState, score: float, end_time: float
    ) -> ActivityEvent:
        return ActivityEvent(
            type=type_,
            camera_id=self.camera_id,
            label=label,
            incident_id=state.incident_id,
            start_time=state.start_time,
            end_time=end_time,
            score=score,
            peak_score=state.peak,
            windows=state.windows,
        )
