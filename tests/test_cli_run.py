"""`xclip-stream run`: the simple case end to end in a subprocess, and configuration errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.media import write_index_video
from xclip_stream.actors.runner import ConfigWatcher
from xclip_stream.cli import main

CMD = [sys.executable, "-m", "xclip_stream.cli"]


def test_run_file_source_prints_events_and_ends_at_eof(tmp_path, tiny_checkpoint):
    video = write_index_video(tmp_path / "clip.mp4", 48, fps=16)  # 3 s
    proc = subprocess.run(
        [*CMD, "run", "--source", f"porch={video}", "--labels", "a car, a person walking",
         "--model", str(tiny_checkpoint), "--sample-fps", "4"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    windows = [e for e in events if e["event_type"] == "xclip.window.scores"]
    # 48 frames at 16 fps sampled at 4 fps: 12 frames, three 4-frame windows, then the file ends.
    assert [w["window_index"] for w in windows] == [0, 1, 2]
    assert all(w["camera_id"] == "porch" and set(w["scores"]) == {"a car", "a person walking"} for w in windows)
    assert [w["media_start"] for w in windows] == [0.0, 1.0, 2.0]
    assert "camera:porch" in proc.stderr and '"windows_scored": 3' in proc.stderr


def test_run_refuses_bad_arguments_with_a_message(capsys, tmp_path):
    assert main(["run", "--source", "x.mp4", "--model", "m"]) == 2
    assert "--labels and --model are required" in capsys.readouterr().err
    bad = tmp_path / "p.yaml"
    bad.write_text("model: {path: m}\ncameras: [{id: c, url: x, sample_fps: 3}]\n")
    assert main(["run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cameras.0.sample_fps: Extra inputs are not permitted" in err and str(bad) in err
    assert main(["run", "--config", str(bad), "--labels", "a"]) == 2
    assert "cannot be combined" in capsys.readouterr().err


def test_config_watcher_applies_valid_edits_and_ignores_broken_ones(tmp_path, caplog):
    path = tmp_path / "p.yaml"
    path.write_text("model: {path: m}\nlabels: {labels: [a]}\ncameras: [{id: c1, url: x}]\n")
    watcher = ConfigWatcher(path)
    assert watcher.changed() is None
    time.sleep(0.01)
    path.write_text("model: {path: m}\nlabels: {labels: [a]}\ncameras: [{id: c1, url: x}, {id: c2, url: y}]\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert [c.id for c in watcher.changed().cameras] == ["c1", "c2"]
    path.write_text("model: {path: m}\ncameras: [{id: c1, url: x, labels: nope}]\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert watcher.changed() is None and "configuration change refused" in caplog.text
