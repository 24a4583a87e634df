"""`xclip-stream classify` end to end: a generated video, a checkpoint folder, JSON lines out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from xclip_stream.cli import main
from xclip_stream.model import XCLIPConfig, XCLIPModel, XCLIPTextConfig, XCLIPVisionConfig
from xclip_stream.model.processor import XCLIPProcessor, XCLIPVideoProcessor
from xclip_stream.model.tokenizer import CLIPTokenizer
from xclip_stream.pipeline.clips import WindowSampling, plan_windows, read_windows

from .media import write_index_video

LABELS = ["a grey square", "a person running", "an empty road"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, clip_vocab_dir):
    """A small random-weight checkpoint folder with the real CLIP tokenizer and a 64-pixel processor."""
    folder = tmp_path_factory.mktemp("tiny-xclip")
    torch.manual_seed(0)
    config = XCLIPConfig.from_text_vision_configs(
        XCLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        XCLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          image_size=64, patch_size=16, num_frames=4, mit_hidden_size=32,
                          mit_intermediate_size=64, mit_num_attention_heads=2),
        projection_dim=32, prompt_num_attention_heads=2,
    )
    XCLIPModel(config).save_pretrained(folder)
    CLIPTokenizer.from_pretrained(clip_vocab_dir).save_pretrained(folder)
    XCLIPVideoProcessor(size={"shortest_edge": 64}, crop_size=64).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_index_video(tmp_path_factory.mktemp("media") / "clip.mp4", num_frames=40, fps=10)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xclip_stream.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_classify_prints_one_json_line_per_window(checkpoint, video):
    proc = run_cli("classify", str(video), "--model", str(checkpoint), "--labels", ",".join(LABELS),
                   "--window-seconds", "1", "--hop-seconds", "0.5", "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    plan = plan_windows(40, 10.0, WindowSampling(4, window_seconds=1.0, hop_seconds=0.5))
    assert [line["window"] for line in lines] == list(range(len(plan))) and len(plan) == 7
    assert [line["frame_indices"] for line in lines] == [list(w) for w in plan]
    for line in lines:
        assert set(line["scores"]) == set(LABELS) == set(line["logits"])
        assert sum(line["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert line["top_label"] == max(line["scores"], key=line["scores"].get)
        assert line["start"] == pytest.approx(line["frame_indices"][0] / 10)
        assert line["end"] == pytest.approx(line["frame_indices"][-1] / 10)

    # The scores are the model's: recompute the windows directly through the Python API.
    model = XCLIPModel.from_pretrained(checkpoint)
    processor = XCLIPProcessor.from_pretrained(checkpoint)
    windows = list(read_windows(video, WindowSampling(4, window_seconds=1.0, hop_seconds=0.5)))
    inputs = processor(text=LABELS, videos=[w.frames for w in windows], return_tensors="pt", padding=True)
    with torch.no_grad():
        want = model(**inputs).logits_per_video
    got = torch.tensor([[line["logits"][label] for label in LABELS] for line in lines])
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)


def test_default_is_one_window_over_the_whole_video(checkpoint, video, capsys):
    assert main(["classify", str(video), "--model", str(checkpoint), "--labels", "a, b"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["frame_indices"] == [5, 15, 25, 35]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", " , "], "label list is empty"),
        (["--labels", "a,b,a"], "duplicate labels: a"),
        (["--labels", "a", "--stride", "20"], "too few for one window"),
    ],
)
def test_bad_input_exits_2_with_a_message(checkpoint, video, capsys, args, message):
    assert main(["classify", str(video), "--model", str(checkpoint), *args]) == 2
    assert message in capsys.readouterr().err


def test_not_a_checkpoint(tmp_path, video, capsys):
    assert main(["classify", str(video), "--model", str(tmp_path), "--labels", "a"]) == 2
    assert "config.json is missing" in capsys.readouterr().err
