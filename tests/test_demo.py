"""`make demo`'s program runs end to end and prints one well-formed window result per window."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xclip_stream.demo import FPS, LABELS, SECONDS
from xclip_stream.pipeline.clips import WindowSampling, plan_windows


def test_demo_runs_and_prints_windows():
    proc = subprocess.run([sys.executable, "-m", "xclip_stream.demo"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "untrained" in proc.stderr  # it says plainly that the scores are not predictions
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    # 1-second windows (15 frames) every 0.5 s (8 frames) over 60 frames: 6 windows.
    plan = plan_windows(FPS * SECONDS, FPS, WindowSampling(8, window_seconds=1.0, hop_seconds=0.5))
    assert len(plan) == 6
    assert [line["frame_indices"] for line in lines] == [list(w) for w in plan]
    for i, line in enumerate(lines):
        assert line["window"] == i and set(line["scores"]) == set(LABELS)
        assert line["start"] == pytest.approx(line["frame_indices"][0] / FPS, abs=1e-5)
