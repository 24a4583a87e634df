"""A live, human-readable view of the events topic: per camera, the latest window's top label.

It reads the events back from Kafka (what any downstream consumer sees), and when a camera's true
activity is known (the demo's synthetic cameras) it counts the windows whose top label names it.
On a terminal the table is redrawn in place; otherwise each event is one line.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

from kafka import KafkaConsumer

DRAIN_QUIET_S = 3.0  # after the pipeline stops, read until the topic has been quiet this long


@dataclass(frozen=True)
class ViewCamera:
    id: str
    via: str
    truth: str | None = None


@dataclass
class _Row:
    windows: int = 0
    correct: int = 0
    label: str = "(waiting for the first window)"
    score: float = 0.0
    latency_ms: float = 0.0
    state: str = ""


@dataclass
class _State:
    rows: dict[str, _Row] = field(default_factory=dict)
    activity: deque = field(default_factory=lambda: deque(maxlen=6))
    other_events: int = 0


class LiveView:
    def __init__(self, bootstrap: str, topic: str, cameras: list[ViewCamera], out: TextIO,
                 seconds: float | None = None, plain: bool | None = None, stop: threading.Event | None = None):
        self.cameras = {c.id: c for c in cameras}
        self.out = out
        self.plain = (not out.isatty()) if plain is None else plain
        self.seconds, self.stop = seconds, stop or threading.Event()
        self.state = _State(rows={c.id: _Row() for c in cameras})
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                      enable_auto_commit=False, group_id=None)
        self.bootstrap, self.topic = bootstrap, topic
        self.started = time.monotonic()
        self.first_window = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-view", daemon=True)

    def start(self) -> LiveView:
        self._thread.start()
        return self

    def finish(self) -> dict:
        """Read what is left on the topic, close, and return the per-camera summary."""
        self.stop.set()
        self._finished.set()
        self._thread.join(timeout=60)
        self.consumer.close()
        if not self.plain:
            self._draw()
        summary = self.summary()
        self.out.write(self._summary_text(summary) + "\n")
        self.out.flush()
        return summary

    # -- reading ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        last_draw = quiet_since = 0.0
        while True:
            got = 0
            for records in self.consumer.poll(timeout_ms=250).values():
                for record in records:
                    got += 1
                    self._apply(record.value)
            now = time.monotonic()
            if got:
                quiet_since = now
            if not self.plain and now - last_draw >= 0.5:
                self._draw()
                last_draw = now
            if self._finished.is_set() and now - quiet_since >= DRAIN_QUIET_S:
                return

    def _apply(self, value: bytes) -> None:
        try:
            event = json.loads(value)
        except ValueError:
            return
        kind, camera = event.get("event_type", ""), event.get("camera_id", "")
        row = self.state.rows.setdefault(camera, _Row())
        if kind == "xclip.window.scores":
            if not self.first_window.is_set():
                self.first_window.set()
                self.started = time.monotonic()
            row.windows += 1
            row.label, row.score = event["top_label"], float(event["top_score"])
            row.latency_ms = float(event.get("latency_ms", 0.0))
            truth = self.cameras.get(camera, ViewCamera(camera, "?")).truth
            ok = truth is not None and row.label == truth
            row.correct += ok
            if self.plain:
                mark = "" if truth is None else ("  ok" if ok else f"  MISS (truth: {truth})")
                self._line(f"{camera:>14}  window {event['window_index']:>4}  {row.label!r} "
                           f"p={row.score:.2f}{mark}")
        elif kind.startswith("xclip.activity."):
            text = f"{time.strftime('%H:%M:%S')} {kind.rsplit('.', 1)[-1]:>8}  {camera}  {event.get('label', '')!r}"
            self.state.activity.append(text)
            if self.plain:
                self._line(f"{'activity':>14}  {text}")
        elif kind.startswith("xclip.stream."):
            row.state = kind.rsplit(".", 1)[-1]
            if self.plain:
                self._line(f"{camera:>14}  stream {row.state} {event.get('reason', '')}".rstrip())
        else:
            self.state.other_events += 1

    # -- showing ---------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _draw(self) -> None:
        elapsed = time.monotonic() - self.started
        left = f"{max(0.0, self.seconds - elapsed):4.0f} s left, " if self.seconds else ""
        lines = [f"xclip-stream live view: topic {self.topic} on {self.bootstrap}  ({left}Ctrl-C stops)", ""]
        lines.append(f"{'camera':<16} {'via':<6} {'true activity':<30} {'model says (last window)':<30} "
                     f"{'p':>5} {'correct':>9} {'latency':>8}")
        for camera, row in self.state.rows.items():
            info = self.cameras.get(camera, ViewCamera(camera, "?"))
            correct = f"{row.correct}/{row.windows}" if info.truth else "-"
            mark = " " if info.truth is None or not row.windows else ("+" if row.label == info.truth else "x")
            lines.append(f"{camera:<16} {info.via:<6} {info.truth or '?':<30} {mark}{row.label:<29} "
                         f"{row.score:>5.2f} {correct:>9} {row.latency_ms:>6.0f}ms")
        lines += ["", "activity events (start / end):"] + [f"  {a}" for a in self.state.activity]
        self.out.write("\033[H\033[J" + "\n".join(lines) + "\n")
        self.out.flush()

    def summary(self) -> dict:
        cameras = {}
        for camera, row in self.state.rows.items():
            info = self.cameras.get(camera)
            cameras[camera] = {"truth": info.truth if info else None, "windows": row.windows, "correct": row.correct,
                               "accuracy": row.correct / row.windows if row.windows else None}
        windows = sum(c["windows"] for c in cameras.values())
        correct = sum(c["correct"] for c in cameras.values())
        return {"cameras": cameras, "windows": windows, "correct": correct,
                "accuracy": correct / windows if windows else None}

    @staticmethod
    def _summary_text(summary: dict) -> str:
        parts = [f"{cam}: {c['correct']}/{c['windows']}" for cam, c in summary["cameras"].items()]
        accuracy = summary["accuracy"]
        total = f"{accuracy:.1%}" if accuracy is not None else "n/a"
        return (f"\nxclip-stream demo: {summary['windows']} windows scored, top label = true activity in "
                f"{summary['correct']} ({total}); " + ", ".join(parts))
