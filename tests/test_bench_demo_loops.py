"""bench/demo_loops.py: the demo cameras' loops, windowed as the demo does, scored offline; and the
shipped model against them (issue 19: a model better on the synthetic report named a whole demo
scene wrongly, which only the live demo showed)."""

from __future__ import annotations

import json

from tests.benches import load_bench


def test_the_shipped_model_names_the_demo_cameras_windows_within_a_scene(tmp_path):
    out = tmp_path / "loops.json"
    assert load_bench("demo_loops").main(["--models", "demo", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["camera"] for r in rows] == [0, 1, 2, 3] and len({r["truth"] for r in rows}) == 4
    # 30 one-second windows of 1.75 s a 30-s loop of 3-s scenes: one in three spans a cut
    assert all(r["windows"] == 30 and r["within_scene"] == 20 for r in rows), rows
    assert all(w["spans_cut"] in (True, False) and w["named"] != r["truth"] for r in rows for w in r["wrong"].values())
    # The shipped model: 79 of the 80 windows within a scene (the model of stage 10, not shipped:
    # 74, a whole scene of the MJPEG camera's circle named a square).
    right = sum(r["within_scene_right"] for r in rows)
    assert right >= 76, rows
