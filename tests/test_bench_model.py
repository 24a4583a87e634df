"""bench/model.py compares like with like: the same weights on both sides (float32 logits agree to
rounding), one row per (config, dtype, batch), written as JSON. Speed itself is measured, not tested."""

from __future__ import annotations

import json

import pytest

from tests.benches import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("model")


def test_rows_compare_the_same_weights(bench, tmp_path):
    out = tmp_path / "model.json"
    code = bench.main(["--device", "cpu", "--configs", "tiny", "--batch-sizes", "1", "--dtypes", "float32,int8",
                       "--seconds", "0", "--min-runs", "1", "--rounds", "1", "--max-error", "1e-5",
                       "--out", str(out)])
    assert code == 0  # the bound judges float32; int8's cost is bench/precision.py's
    result = json.loads(out.read_text())
    assert result["labels"] == 16 and result["frames"] == 8
    row, int8 = result["rows"]
    assert (row["config"], row["dtype"], row["batch"]) == ("tiny", "float32", 1)
    assert row["rel_error_vs_ref_fp32"] < 1e-5 and row["ref_rel_error_vs_ref_fp32"] == 0.0
    assert row["ours_clips_per_s"] > 0 and row["ref_clips_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["ref_ms_per_batch"] / row["ours_ms_per_batch"], rel=0.02)
    # int8 against transformers' float32 (it has no int8): rounded, but the same model
    assert (int8["dtype"], int8["ref_rel_error_vs_ref_fp32"]) == ("int8", 0.0)
    assert 0 < int8["embed_rel_error_vs_ref_fp32"] < 0.1, int8


def test_label_tokens_are_clip_shaped(bench):
    ids, mask = bench.label_tokens(16)
    assert ids.shape == mask.shape and ids.shape[0] == 16
    lengths = mask.sum(dim=1)
    assert int(lengths.min()) >= 4 and int(lengths.max()) == ids.shape[1]
    for row, n in zip(ids.tolist(), lengths.tolist()):
        assert row[0] == bench.BOS and row[n - 1] == bench.EOS and all(t == bench.EOS for t in row[n:])


def test_unknown_dtypes_and_ones_the_device_cannot_run_are_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--dtypes", "float4"])
    assert "unknown dtype ['float4']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--dtypes", "float32,float8"])
    assert "float8 needs a GPU with FP8 tensor cores" in capsys.readouterr().err
