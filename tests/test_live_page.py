"""Issue 18, part 3: what the live page shows, folded from the pipeline's events (no Ray, no
browser; the page itself is loaded in headless Chromium by tests/test_demo.py)."""

from __future__ import annotations

import json

from xclip_stream.schemas.config import parse_config
from xclip_stream.web.live import MAX_TEXT, LiveState


def window(camera: str, index: int, label: str, score: float = 0.8) -> dict:
    return {"event_type": "xclip.window.scores", "camera_id": camera, "window_index": index,
            "end_time": 100.0 + index, "top_label": label, "top_score": score,
            "scores": {label: score, "other": 1 - score, "third": 0.0, "fourth": 0.0}}


def activity(camera: str, phase: str, incident: str, label: str) -> dict:
    return {"event_type": f"xclip.activity.{phase}", "camera_id": camera, "incident_id": incident, "label": label,
            "start_time": 100.0, "end_time": 104.0, "score": 0.7, "peak_score": 0.9, "windows": 3}


def test_windows_incidents_and_states_fold_into_each_cameras_tile():
    live = LiveState(windows_kept=3, incidents_kept=2)
    live.add({"event_type": "xclip.stream.connected", "camera_id": "door", "reason": ""})
    for i, label in enumerate(["walking", "walking", "running", "falling"]):
        live.add(window("door", i, label))
    live.add(activity("door", "start", "i1", "falling"))
    live.add({"event_type": "xclip.stream.gap", "camera_id": "door", "reason": "no frames"})  # a report, not a state
    door = live.snapshot()["cameras"][0]
    assert door["state"] == "connected" and [w["label"] for w in door["windows"]] == ["walking", "running", "falling"]
    assert door["top"] == [["falling", 0.8], ["other", 0.2], ["third", 0.0]] and "top" not in door["windows"][0]
    assert [i["label"] for i in door["open"]] == ["falling"] and door["ended"] == []
    live.add(activity("door", "end", "i1", "falling"))
    for n in range(3):
        live.add(activity("door", "start", f"j{n}", "x"))
        live.add(activity("door", "end", f"j{n}", "x"))
    door = live.snapshot()["cameras"][0]
    assert door["open"] == [] and len(door["ended"]) == 2 and door["ended"][-1]["end"] == 104.0
    live.add({"event_type": "xclip.stream.disconnected", "camera_id": "door", "reason": "connection refused"})
    assert live.snapshot()["cameras"][0]["state"] == "disconnected"


def test_hostile_events_are_bounded_and_counted_not_shown():
    live = LiveState(max_cameras=2)
    for camera in ("a", "b", "c"):
        live.add(window(camera, 0, "x"))
    assert [c["id"] for c in live.snapshot()["cameras"]] == ["b", "c"] and live.evicted == 1
    for junk in (b"not json", b"[1, 2]", json.dumps({**window("d", 0, "x"), "top_score": "high"}).encode()):
        live.add_json(junk)
    assert live.malformed == 3
    live.add(window("b", 1, "y" * 10_000))
    b = next(c for c in live.snapshot()["cameras"] if c["id"] == "b")
    assert len(b["windows"][-1]["label"]) == MAX_TEXT


def test_configuration_thumbnails_and_control_outcomes():
    config = parse_config({"model": {"path": "demo"}, "labels": {"labels": ["a", "b"]},
                           "label_sets": {"night": {"labels": ["c"]}},
                           "cameras": [{"id": "gate", "url": "/x.mp4", "labels": "night"}, {"id": "yard", "url": "/y.mp4"}]})
    live = LiveState()
    live.set_config(config)
    version = live.version
    live.set_config(config)
    assert live.version == version  # unchanged: no update sent to the pages
    state = live.snapshot()
    assert [(c["id"], c["labels"], c["thumbnail"]) for c in state["cameras"]] == [("gate", "night", None),
                                                                                   ("yard", "default", None)]
    assert state["label_sets"] == {"default": ["a", "b"], "night": ["c"]} and state["control"] is False
    live.set_thumbnails({"gate": b"jpeg-1"})
    live.set_thumbnails({"gate": b"jpeg-1"})  # the same frame: no new version
    live.set_thumbnails({"gate": b"jpeg-2"})
    assert live.snapshot()["cameras"][0]["thumbnail"] == 2 and live.thumbnail("gate") == b"jpeg-2"
    live.add({"event_type": "xclip.control.refused", "op": "set_labels", "camera_id": "gate",
              "reason": "bad signature", "time": 5.0})
    assert live.snapshot()["control_outcomes"] == [{"outcome": "refused", "op": "set_labels", "camera": "gate",
                                                    "reason": "bad signature", "time": 5.0}]
