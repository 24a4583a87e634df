"""bench/serve.py's core: real callers through a real Serve handle into the pipeline's replica, and
the replica's whole call beside it. What the figures are is measured, not tested; that every window
is answered, counted and compared is."""

from __future__ import annotations

import json

from tests.benches import load_bench


def test_windows_through_serve_and_the_whole_call_side_by_side(ray_session, tmp_path):
    bench = load_bench("serve")
    out = tmp_path / "serve.json"
    assert bench.main(["--callers", "3", "--inflight", "2", "--batch", "4", "--seconds", "1.5", "--rounds", "1",
                       "--threads", "1", "--precision", "float32", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["errors"] == 0 and row["windows"] > 0 and result["precision"] == "float32"
    assert row["serve_windows_per_s"] > 0 and row["direct_windows_per_s"] > 0
    assert abs(row["serve_over_direct"] - row["serve_windows_per_s"] / row["direct_windows_per_s"]) < 0.01
    assert 1 <= row["mean_serve_batch"] <= 4  # the replica batched the callers' windows, never past its max
    assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert row["direct_at_serve_batch_windows_per_s"] > 0
    expected = 1e3 * (1 / row["serve_windows_per_s"] - 1 / row["direct_at_serve_batch_windows_per_s"])
    assert abs(row["overhead_ms_per_window"] - expected) < 0.05 * abs(expected) + 0.01
