"""The bundled demo checkpoint: small, trained (judged on clips generated fresh here, with seeds its
training and its own report never used), a checkpoint transformers loads, and `--model demo`
works in the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from xclip_stream import cli
from xclip_stream.model import XCLIPModel
from xclip_stream.model.processor import XCLIPProcessor
from xclip_stream.pipeline.scoring import DEMO_CHECKPOINT, resolve_model_path
from xclip_stream.training.report import REPORT_JSON, evaluate_synthetic, format_report
from xclip_stream.training.synthetic import Action, all_actions, render_clip, write_clip

TEST_SEED = 20261126  # the report in the folder used seed 1; training draws seeds below 2**31
# Issue 4 asks for 0.90 on held-out clips; the model reaches 0.96 (eval.json; shape 0.97, motion
# 0.99, colour 0.995). These floors guard it about 4 standard errors below that on this test's 428
# clips (52 for the unseen combinations).
SEEN_TOP1_FLOOR = 0.90


@pytest.fixture(scope="module")
def demo():
    folder = resolve_model_path("demo")
    return XCLIPModel.from_pretrained(folder).eval(), XCLIPProcessor.from_pretrained(folder)


@pytest.fixture(scope="module")
def report(demo):
    model, processor = demo
    return evaluate_synthetic(model, processor, per_label=4, seed=TEST_SEED, heldout_per_label=1)


def test_demo_checkpoint_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in DEMO_CHECKPOINT.iterdir()}
    assert sum(files.values()) <= 10 * 2**20, files
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json",
                 "preprocessor_config.json", REPORT_JSON, "README.md"):
        assert name in files
    assert "training_state.pt" not in files


def test_held_out_clips_of_trained_combinations_over_all_120_captions(report):
    assert report["labels"] == 120
    assert report["seen"]["clips"] >= 400
    assert report["seen"]["top1"] >= SEEN_TOP1_FLOOR, report["seen"]
    assert report["seen"]["color"] >= 0.9 and report["seen"]["shape"] >= 0.88, report["seen"]
    by_motion = report["seen"]["motion_by_motion"]
    assert min(by_motion[m] for m in ("growing", "shrinking", "blinking")) >= 0.85, by_motion
    # time, not one frame: each direction is a time reversal of its opposite
    assert min(by_motion[m] for m in ("moving left", "moving right", "moving up", "moving down")) >= 0.85, by_motion


def test_unseen_combinations_are_well_above_chance(report):
    unseen = report["unseen"]
    assert unseen["top1"] >= 0.75 and unseen["top1"] >= 10 * report["chance_top1"], unseen
    assert unseen["top1_among_unseen"] >= 3 * unseen["chance_among_unseen"], unseen


def test_committed_report_matches_a_fresh_evaluation(report):
    committed = json.loads((DEMO_CHECKPOINT / REPORT_JSON).read_text())
    assert committed["unseen_combinations"] == report["unseen_combinations"]
    assert abs(committed["seen"]["top1"] - report["seen"]["top1"]) < 0.06


def test_the_held_out_style_is_scored_and_reported(report):
    style = report["heldout_style"]
    assert style["seen"]["clips"] == 107 and style["unseen"]["clips"] == 13
    # Stages 9-15 (--varied) took the held-out style from 0.15 to 0.85 (motion 0.42 to 0.94, shape
    # 0.41 to 0.88; eval.json, 1,070 clips); the floors sit about 4 standard errors below on these 107.
    seen = style["seen"]
    assert seen["top1"] >= 0.71 and seen["motion"] >= 0.85 and seen["shape"] >= 0.76 and seen["color"] >= 0.9, seen
    committed = json.loads((DEMO_CHECKPOINT / REPORT_JSON).read_text())["heldout_style"]
    assert abs(committed["seen"]["motion"] - style["seen"]["motion"]) < 0.15, (committed["seen"], style["seen"])
    text = format_report(report)
    assert "held-out style: trained combinations" in text and "The same on the held-out style" in text


def test_transformers_loads_the_demo_checkpoint_with_equal_logits(demo):
    transformers = pytest.importorskip("transformers")
    model, processor = demo
    theirs = transformers.XCLIPModel.from_pretrained(DEMO_CHECKPOINT).eval()
    captions = [a.caption for a in all_actions()[:10]]
    video = render_clip(Action("green", "triangle", "moving up"), model.config.vision_config.num_frames, 64, 3)
    inputs = processor(text=captions, videos=[video], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits_per_video, theirs(**inputs).logits_per_video, atol=1e-4)


def test_classify_with_model_demo_names_the_action_of_a_clip(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", Action("blue", "circle", "growing"), num_frames=16, size=96,
                      seed=TEST_SEED)
    labels = "a blue circle growing,a blue circle shrinking,a red square growing,a white triangle blinking"
    assert cli.main(["classify", str(clip), "--model", "demo", "--labels", labels]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[0])
    assert max(result["scores"], key=result["scores"].get) == "a blue circle growing", result["scores"]
