"""What the live page shows, folded from the pipeline's own events (the events topic, or the lines
of stdout mode): per camera its connection state, the top labels of its last windows with their
scores, its open incidents and their history; beside them the label sets of the running
configuration and each camera's latest thumbnail. Thread-safe: events come from a consumer thread,
the configuration and thumbnails from the driver's loop, reads from the HTTP server.

Bounded against hostile input: camera ids of a frames topic come from the messages, so at most
``max_cameras`` are kept (the least recently heard from go first, counted in ``evicted``), each
with at most ``windows_kept`` windows and ``incidents_kept`` ended incidents, and label texts are
cut to ``MAX_TEXT``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

MAX_TEXT = 200  # characters of a label, reason or camera id shown
TOP_K = 3  # scores shown per window


def _text(value: object) -> str:
    return str(value)[:MAX_TEXT]


@dataclass
class _Camera:
    state: str = "starting"
    reason: str = ""
    windows: deque = field(default_factory=deque)  # {"index", "end", "label", "score", "top"}, oldest first
    open: dict = field(default_factory=dict)  # incident id -> {"label", "start", "score", "peak", "windows"}
    ended: deque = field(default_factory=deque)  # the same, with "end", newest last
    failed: int = 0  # windows the model could not score
    thumbnail: bytes | None = None
    thumbnail_version: int = 0


def _window_entry(event: dict) -> dict:
    """A scored window as a tile shows it (rounded: the page's updates stay small); raises
    TypeError/ValueError for a malformed one."""
    scores = event.get("scores") if isinstance(event.get("scores"), dict) else {}
    top = sorted(([_text(k), round(float(v), 3)] for k, v in scores.items()), key=lambda kv: -kv[1])[:TOP_K]
    return {"index": int(event.get("window_index", 0)), "end": round(float(event.get("end_time", 0.0)), 2),
            "label": _text(event.get("top_label", "")), "score": round(float(event.get("top_score", 0.0)), 3),
            "top": top}


class LiveState:
    def __init__(self, max_cameras: int = 256, windows_kept: int = 40, incidents_kept: int = 20):
        self.max_cameras, self.windows_kept, self.incidents_kept = max_cameras, windows_kept, incidents_kept
        self._cameras: OrderedDict[str, _Camera] = OrderedDict()
        self._config: dict = {"cameras": {}, "label_sets": {}, "control": False}
        self._control: deque = deque(maxlen=10)  # the latest control outcomes
        self._lock = threading.Lock()
        self.evicted = 0
        self.malformed = 0  # events that are not ours (not JSON objects, wrong types): counted, not shown
        self.version = 0  # bumped on every change: the stream sends a snapshot only when it moved

    # -- writers ---------------------------------------------------------------------------------
    def add_json(self, value: bytes | str) -> None:
        try:
            event = json.loads(value)
        except ValueError:
            event = None
        try:
            if not isinstance(event, dict):
                raise TypeError("not a JSON object")
            self.add(event)
        except (TypeError, ValueError, AttributeError):  # not one of our events: counted, not shown
            self.malformed += 1

    def add(self, event: dict) -> None:
        kind = str(event.get("event_type", ""))
        with self._lock:
            if kind.startswith("xclip.control."):
                self._control.append({"outcome": kind.rsplit(".", 1)[-1], "op": _text(event.get("op", "")),
                                      "camera": _text(event.get("camera_id") or ""),
                                      "reason": _text(event.get("reason", "")), "time": event.get("time")})
                self.version += 1
                return
            camera_id = _text(event.get("camera_id", ""))
            if not camera_id:
                return
            # parsed before the camera is looked up: a malformed event changes nothing
            entry = _window_entry(event) if kind == "xclip.window.scores" else None
            camera = self._camera(camera_id)
            if entry is not None:
                self._window(camera, entry)
            elif kind == "xclip.window.failed":
                camera.failed += 1
            elif kind.startswith("xclip.activity."):
                self._activity(camera, kind.rsplit(".", 1)[-1], event)
            elif kind.startswith("xclip.stream."):
                state = kind.rsplit(".", 1)[-1]
                if state not in ("gap", "dropped", "restarted"):  # reports, not states
                    camera.state, camera.reason = state, _text(event.get("reason", ""))
            self.version += 1

    def _camera(self, camera_id: str) -> _Camera:
        camera = self._cameras.get(camera_id)
        if camera is None:
            if len(self._cameras) >= self.max_cameras:
                self._cameras.popitem(last=False)
                self.evicted += 1
            camera = self._cameras[camera_id] = _Camera()
        self._cameras.move_to_end(camera_id)
        return camera

    def _window(self, camera: _Camera, entry: dict) -> None:
        camera.windows.append(entry)
        if camera.state in ("starting", "connecting"):
            camera.state = "connected"  # scored windows: whatever state event was missed
        while len(camera.windows) > self.windows_kept:
            camera.windows.popleft()

    def _activity(self, camera: _Camera, phase: str, event: dict) -> None:
        incident = _text(event.get("incident_id", ""))
        entry = {"label": _text(event.get("label", "")), "start": event.get("start_time"),
                 "score": event.get("score"), "peak": event.get("peak_score"), "windows": event.get("windows")}
        if phase == "end":
            camera.open.pop(incident, None)
            camera.ended.append({**entry, "end": event.get("end_time")})
            while len(camera.ended) > self.incidents_kept:
                camera.ended.popleft()
        elif len(camera.open) < self.incidents_kept or incident in camera.open:  # start, continue
            camera.open[incident] = entry

    def set_config(self, config) -> None:
        """The running configuration's cameras (their label sets) and named label sets."""
        cameras = {c.id: {"labels": c.labels if isinstance(c.labels, str) else ("default" if c.labels is None
                                                                                   else "(own list)"),
                          "label_list": list(config.label_set(c.labels).labels)} for c in config.cameras}
        sets = {name: list(s.labels) for name, s in config.label_sets.items()}
        if config.labels is not None:
            sets = {"default": list(config.labels.labels), **sets}
        view = {"cameras": cameras, "label_sets": sets,
                "control": bool(config.kafka and config.kafka.control_topic)}
        with self._lock:
            if view != self._config:
                self._config = view
                self.version += 1

    def set_thumbnails(self, images: dict[str, bytes]) -> None:
        with self._lock:
            for camera_id, jpeg in images.items():
                camera = self._cameras.get(camera_id)
                if camera is None:  # one that has sent no event yet gets a tile anyway
                    camera = self._camera(camera_id)
                if jpeg != camera.thumbnail:
                    camera.thumbnail, camera.thumbnail_version = jpeg, camera.thumbnail_version + 1
                    self.version += 1

    # -- readers ---------------------------------------------------------------------------------
    def thumbnail(self, camera_id: str) -> bytes | None:
        with self._lock:
            camera = self._cameras.get(camera_id)
            return camera.thumbnail if camera else None

    def snapshot(self) -> dict:
        """Everything the page draws, as plain JSON data."""
        with self._lock:
            configured = self._config["cameras"]
            ids = list(configured) + [c for c in self._cameras if c not in configured]
            cameras = []
            for camera_id in ids:
                c = self._cameras.get(camera_id) or _Camera()
                windows = [{k: v for k, v in w.items() if k != "top"} for w in c.windows]  # top 3: the last only
                cameras.append({
                    "id": camera_id, "state": c.state, "reason": c.reason, "failed": c.failed,
                    "labels": configured.get(camera_id, {}).get("labels", "(from its topic)"),
                    "windows": windows, "top": c.windows[-1]["top"] if c.windows else [],
                    "open": list(c.open.values()), "ended": list(c.ended),
                    "thumbnail": c.thumbnail_version if c.thumbnail is not None else None,
                })
            return {"version": self.version, "time": time.time(), "cameras": cameras,
                    "label_sets": self._config["label_sets"], "control": self._config["control"],
                    "control_outcomes": list(self._control), "evicted": self.evicted}
