"""bench/decode.py measures like with like: every path reads the same files, and the counts it
reports show what each path decodes and delivers. Speed itself is measured, not tested."""

from __future__ import annotations

import json

from tests.benches import load_bench


def test_rows_count_decoded_and_delivered_frames(tmp_path):
    bench = load_bench("decode")
    out = tmp_path / "decode.json"
    assert bench.main(["--seconds", "2", "--repeats", "1", "--out", str(out)]) == 0
    rows = {(r["media"], r["path"]): r for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == 6 * 6
    for media, frames in (("640x480 15 fps, B-frames", 30), ("1280x720 30 fps, no B-frames", 60),
                          ("640x480 15 fps, MJPEG", 30)):
        assert rows[(media, "bare decode+RGB")]["decoded"] == frames == rows[(media, "ours, every frame")]["delivered"]
        assert rows[(media, "bare decode+RGB, one context")]["delivered"] == frames
        quarter = rows[(media, "ours, fps/4")]
        assert abs(quarter["delivered"] - frames / 4) <= 1
        assert rows[(media, "ours, fps/4, no skip")]["decoded"] == frames
    # B-frames are skipped at a quarter of the rate; without B-frames every frame is a reference
    assert rows[("640x480 15 fps, B-frames", "ours, fps/4")]["decoded"] < 30
    assert rows[("1280x720 30 fps, no B-frames", "ours, fps/4")]["decoded"] == 60
    # MJPEG: only the kept frames are decoded at all
    mjpeg = rows[("640x480 15 fps, MJPEG", "ours, fps/4")]
    assert mjpeg["decoded"] == mjpeg["delivered"]
