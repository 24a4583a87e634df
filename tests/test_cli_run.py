"""`xclip-stream run`: the simple case end to end in a subprocess, and configuration errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.media import write_index_video
from xclip_stream.actors.runner import ConfigWatcher
from xclip_stream.cli import main, run_summary

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


def _misfit_checkpoint(folder, tiny_checkpoint):
    """The tiny checkpoint with a processor that crops 48x48 frames for a model that takes 32x32."""
    import shutil

    from xclip_stream.model.processor import XCLIPVideoProcessor

    shutil.copytree(tiny_checkpoint, folder)
    XCLIPVideoProcessor(size={"shortest_edge": 48}, crop_size=48).save_pretrained(folder)
    return folder


def test_run_refuses_a_processor_that_does_not_fit_the_model_at_start_up(tmp_path, tiny_checkpoint):
    """Seen: 4 windows cut, 0 scored, nothing said, exit 0. Now refused before Ray or any camera
    starts, with classify's message and exit 2."""
    model = _misfit_checkpoint(tmp_path / "misfit", tiny_checkpoint)
    video = write_index_video(tmp_path / "clip.mp4", 64, fps=16)
    run = subprocess.run([*CMD, "run", "--source", str(video), "--labels", "a,b", "--model", str(model)],
                         capture_output=True, text=True, timeout=120)
    classify = subprocess.run([*CMD, "classify", str(video), "--labels", "a,b", "--model", str(model)],
                              capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and classify.returncode == 2, run.stderr[-2000:]
    message = "frames are 48x48 (preprocessor_config.json) but the model takes 32x32"
    assert message in run.stderr and message in classify.stderr
    assert run.stderr.split("error: ")[1] == classify.stderr.split("error: ")[1]
    assert run.stdout == "" and "camera:cam-0" not in run.stderr  # no camera started, no health to print


def test_run_refuses_label_sets_the_model_cannot_encode_at_start_up(tmp_path, tiny_checkpoint):
    config = tmp_path / "p.yaml"
    config.write_text(
        f"model: {{path: {tiny_checkpoint}}}\nserve: {{max_labels: 3}}\nlabels: {{labels: [a, b]}}\n"
        "label_sets: {many: {labels: [a, b, c, d]}}\n"
        "cameras: [{id: c1, url: x.mp4, labels: [" + "'" + "walk " * 80 + "', b]}]\n")
    proc = subprocess.run([*CMD, "run", "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "label_sets.many: 4 labels, more than serve.max_labels (3)" in proc.stderr
    assert "camera 'c1': label 'walk walk" in proc.stderr and "tokens, over the model's 75" in proc.stderr


def test_run_exits_1_when_any_window_could_not_be_scored(capsys):
    ok = {"camera:a": {"windows_scored": 3, "windows_failed": 0, "latency_ms": [1.0]}}
    assert run_summary(ok) == 0
    assert run_summary({**ok, "camera:b": {"windows_scored": 1, "windows_failed": 2}}) == 1
    err = capsys.readouterr().err
    assert '"windows_failed": 2' in err and "error: 2 window(s) could not be scored" in err


def test_a_reload_with_a_label_set_the_model_cannot_encode_is_refused(tmp_path, tiny_checkpoint, caplog):
    from xclip_stream.pipeline.model_check import LabelChecker

    path = tmp_path / "p.yaml"
    path.write_text(f"model: {{path: {tiny_checkpoint}}}\nlabels: {{labels: [a]}}\ncameras: [{{id: c1, url: x}}]\n")
    watcher = ConfigWatcher(path, LabelChecker.load(tiny_checkpoint, max_labels=2).check_config)
    path.write_text(f"model: {{path: {tiny_checkpoint}}}\nlabels: {{labels: [a, b, c]}}\ncameras: [{{id: c1, url: x}}]\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert watcher.changed() is None
    assert "configuration change refused" in caplog.text and "3 labels, more than serve.max_labels (2)" in caplog.text
    path.write_text(f"model: {{path: {tiny_checkpoint}}}\nlabels: {{labels: [a, b]}}\ncameras: [{{id: c1, url: x}}]\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert watcher.changed().labels.labels == ["a", "b"]
