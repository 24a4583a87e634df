"""bench/precision.py compares each reduced-precision scorer with float32 on the same held-out clips
of the demo world; what the figures are is measured, not tested, beyond bounds a broken path fails."""

from __future__ import annotations

import json

from tests.benches import load_bench


def test_bf16_and_int8_rows_against_float32_on_the_demo_model(tmp_path):
    bench = load_bench("precision")
    out = tmp_path / "precision.json"
    assert bench.main(["--device", "cpu", "--per-label", "1", "--dtypes", "bfloat16,int8", "--out", str(out)]) == 0
    rows = {(r["split"], r["dtype"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {(s, d) for s in ("seen", "unseen") for d in ("float32", "bfloat16", "int8")}
    assert rows[("seen", "float32")]["clips"] == 107 and rows[("unseen", "float32")]["clips"] == 13
    for split in ("seen", "unseen"):
        exact, half, int8 = rows[(split, "float32")], rows[(split, "bfloat16")], rows[(split, "int8")]
        assert exact["rel_error_vs_float32"] == 0.0 and exact["top1_agrees_with_float32"] == 1.0
        assert 0.0 < half["rel_error_vs_float32"] < 2e-2  # bf16 rounds: not zero, and not broken
        assert half["top1_agrees_with_float32"] >= 0.9
        # int8: 3.7e-2 over 1,200 clips (bench/measured/cpu-2026-12-01/precision-stage13-model.json), up to
        # 5.3e-2 on these 13 unseen ones; a broken path is off by about 1
        assert 0.0 < int8["rel_error_vs_float32"] < 8e-2 and int8["top1_agrees_with_float32"] >= 0.9
    assert rows[("seen", "float32")]["top1_accuracy"] > 0.7  # the trained model, far above chance (1/120)
