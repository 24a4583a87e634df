"""Behaviour of the debounced activity-event stage (schemas.activity + pipeline.activity)."""

from __future__ import annotations

import json

import pytest

from xclip_stream.pipeline.activity import ActivityTracker
from xclip_stream.schemas.activity import ActivityEvent, LabelThresholds, make_incident_id

HOP = 1.0  # windows start every second and last two seconds


def feed(tracker: ActivityTracker, series: list[float], label: str = "fall", t0: float = 100.0):
    """Feed one label's scores as consecutive windows; return all events."""
    events = []
    for i, score in enumerate(series):
        start = t0 + i * HOP
        events += tracker.update({label: score}, start, start + 2.0)
    return events


def tracker(on=0.8, off=0.5, min_on=1, min_off=1, continue_every=0, **per_label) -> ActivityTracker:
    return ActivityTracker("cam-1", per_label, LabelThresholds(on, off, min_on, min_off), continue_every)


def types(events):
    return [e.type for e in events]


def test_single_spike_below_min_on_windows_gives_no_event():
    events = feed(tracker(min_on=2), [0.1, 0.95, 0.1, 0.2, 0.9, 0.3])
    assert events == []


def test_sustained_activity_gives_one_start_and_one_end():
    events = feed(tracker(min_on=2), [0.1, 0.9, 0.92, 0.97, 0.9, 0.85, 0.1, 0.1])
    assert types(events) == ["start", "end"]
    start, end = events
    assert start.incident_id == end.incident_id
    assert start.start_time == 101.0  # first of the two windows that triggered the start
    assert start.end_time == 104.0  # the window that triggered it ends at 102 + 2
    assert start.windows == 2 and start.peak_score == 0.92
    assert end.start_time == 101.0
    assert end.end_time == 107.0  # end of the last window >= off (starts at 105)
    assert end.windows == 5 and end.peak_score == 0.97
    assert end.score == 0.1


def test_score_between_off_and_on_keeps_incident_active():
    events = feed(tracker(on=0.8, off=0.5), [0.9, 0.6, 0.55, 0.7, 0.6, 0.4])
    assert types(events) == ["start", "end"]
    assert events[1].windows == 5
    # and a score between off and on never starts one
    assert feed(tracker(on=0.8, off=0.5), [0.6, 0.7, 0.79, 0.6]) == []


def test_min_off_windows_bridges_short_dips():
    series = [0.9, 0.9, 0.1, 0.9, 0.9, 0.2, 0.3, 0.1]
    bridged = feed(tracker(min_off=2), series)
    assert types(bridged) == ["start", "end"]
    assert bridged[1].windows == 5  # the one-window dip belongs to the incident, the trailing dip not
    assert bridged[1].end_time == 100.0 + 4 * HOP + 2.0
    # without bridging the dip splits the activity into two incidents
    split = feed(tracker(min_off=1), series)
    assert types(split) == ["start", "end", "start", "end"]
    assert split[0].incident_id != split[2].incident_id


def test_incident_ids_are_deterministic():
    series = [0.1, 0.9, 0.9, 0.1, 0.9, 0.1]
    first = feed(tracker(), series)
    again = feed(tracker(), series)
    assert [e.incident_id for e in first] == [e.incident_id for e in again]
    assert first == again
    shifted = feed(tracker(), series, t0=100.5)
    assert first[0].incident_id != shifted[0].incident_id
    assert make_incident_id("cam-1", "fall", 101.0) == first[0].incident_id
    assert make_incident_id("cam-1", "fall", 101.0001) == first[0].incident_id  # ms precision
    assert make_incident_id("cam-2", "fall", 101.0) != first[0].incident_id
    assert make_incident_id("cam-1", "fight", 101.0) != first[0].incident_id
    assert len(first[0].incident_id) == 16 and int(first[0].incident_id, 16) >= 0


def test_continue_every_cadence():
    events = feed(tracker(continue_every=3), [0.9] * 8 + [0.1])
    assert types(events) == ["start", "continue", "continue", "end"]
    assert [e.windows for e in events] == [1, 4, 7, 8]
    assert len({e.incident_id for e in events}) == 1
    assert types(feed(tracker(continue_every=0), [0.9] * 8 + [0.1])) == ["start", "end"]


def test_flush_ends_active_incidents_and_resets():
    t = tracker(min_on=2)
    feed(t, [0.9, 0.9, 0.9])
    t.update({"fall": 0.9, "fight": 0.9}, 103.0, 105.0)  # fight pending (1 of 2), not active
    events = t.flush()
    assert types(events) == ["end"] and events[0].label == "fall"
    assert events[0].end_time == 105.0 and events[0].windows == 4
    assert t.active_labels == []
    assert t.flush() == []
    # the pending fight window was forgotten: one more window is not enough to start
    assert t.update({"fight": 0.9}, 104.0, 106.0) == []


def test_flush_with_explicit_end_time():
    t = tracker()
    feed(t, [0.9, 0.9])
    with pytest.raises(ValueError, match="before the end"):
        t.flush(end_time=102.0)
    (event,) = t.flush(end_time=110.0)
    assert event.end_time == 110.0


def test_out_of_order_window_raises():
    t = tracker()
    t.update({"fall": 0.1}, 10.0, 12.0)
    t.update({"fall": 0.1}, 10.0, 12.0)  # same start is allowed
    with pytest.raises(ValueError, match=r"cam-1.*9\.5.*10\.0"):
        t.update({"fall": 0.1}, 9.5, 11.5)
    with pytest.raises(ValueError, match="bad window"):
        t.update({"fall": 0.1}, 12.0, 11.0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.5, 0.8), r"on=0\.5.*off=0\.8"),
        ((1.2, 0.5), r"on=1\.2"),
        ((0.8, -0.1), r"off=-0\.1"),
        ((0.8, 0.5, 0), "min_on_windows"),
        ((0.8, 0.5, 1, 0), "min_off_windows"),
    ],
)
def test_threshold_validation(args, match):
    with pytest.raises(ValueError, match=match):
        LabelThresholds(*args)


def test_equal_on_and_off_is_valid():
    assert LabelThresholds(0.5, 0.5).on == 0.5


def test_labels_are_tracked_independently():
    t = ActivityTracker(
        "cam-1",
        {"fight": LabelThresholds(on=0.6, off=0.3, min_on_windows=2)},
        default=LabelThresholds(on=0.8, off=0.5),
    )
    windows = [
        {"fall": 0.9, "fight": 0.7},  # fall starts; fight pending
        {"fall": 0.2, "fight": 0.7},  # fall ends; fight starts (its own min_on_windows)
        {"fall": 0.1, "fight": 0.4},  # fight stays (its off is 0.3)
        {"fall": 0.1},  # fight absent: below off, ends
    ]
    events = []
    for i, scores in enumerate(windows):
        events += t.update(scores, float(i), i + 2.0)
    assert [(e.type, e.label) for e in events] == [
        ("start", "fall"),
        ("end", "fall"),
        ("start", "fight"),
        ("end", "fight"),
    ]
    assert events[0].incident_id != events[2].incident_id
    assert events[3].end_time == 4.0


def test_set_thresholds_ends_removed_labels_only():
    t = ActivityTracker("cam-1", {"fight": LabelThresholds(0.6, 0.3)}, default=LabelThresholds(0.8, 0.5))
    t.update({"fight": 0.9, "fall": 0.9, "run": 0.9}, 0.0, 2.0)
    assert t.active_labels == ["fall", "fight", "run"]
    events = t.set_thresholds({}, labels=["fall", "wave"])
    assert sorted((e.type, e.label) for e in events) == [("end", "fight"), ("end", "run")]
    assert t.active_labels == ["fall"]
    assert t.update({"fall": 0.6}, 1.0, 3.0) == []  # fall keeps going under the default


def test_to_json_dict_is_json_serialisable():
    (event,) = feed(tracker(), [0.9])
    data = json.loads(json.dumps(event.to_json_dict(), allow_nan=False))
    assert data["type"] == "start" and data["camera_id"] == "cam-1" and data["label"] == "fall"
    assert data["incident_id"] == event.incident_id and data["windows"] == 1
    assert set(data) == {
        "type",
        "camera_id",
        "label",
        "incident_id",
        "start_time",
        "end_time",
        "score",
        "peak_score",
        "windows",
        "event_id",
    }
    assert len(data["event_id"]) == 32 and data["event_id"] == feed(tracker(), [0.9])[0].event_id


def test_event_validation():
    with pytest.raises(ValueError, match="event type"):
        ActivityEvent("begin", "c", "l", "id", 0.0, 1.0, 0.9, 0.9, 1)
    with pytest.raises(ValueError, match="ends before"):
        ActivityEvent("start", "c", "l", "id", 2.0, 1.0, 0.9, 0.9, 1)
