"""`make demo` for now: the offline path end to end on a generated clip, with an UNTRAINED model.

Until the project trains its own demo checkpoint (issue 4), this shows the real plumbing (PyAV
decoding, windowing, preprocessing, a CLIP-style tokenizer, X-CLIP, JSON output) on a randomly
initialised small model: the scores it prints are not predictions.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import cli
from .model import XCLIPConfig, XCLIPModel, XCLIPTextConfig, XCLIPVisionConfig
from .model.processor import XCLIPVideoProcessor
from .model.tokenizer import CLIPTokenizer, train_clip_vocab
from .pipeline.clips import write_video

LABELS = ["a square moving right", "a square moving left", "an empty scene"]
FPS, SECONDS, SIZE = 15, 4, (120, 160)


def moving_square_frames(seed: int = 0):
    """A white square crossing a noisy grey background from left to right."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    for i in range(FPS * SECONDS):
        frame = rng.integers(90, 110, size=(h, w, 3), dtype=np.uint8)
        x = int(i * (w - 30) / (FPS * SECONDS - 1))
        frame[45:75, x : x + 30] = 240
        yield frame


def untrained_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    config = XCLIPConfig.from_text_vision_configs(
        XCLIPTextConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4),
        XCLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          image_size=64, patch_size=16, num_frames=8, mit_hidden_size=64,
                          mit_intermediate_size=128, mit_num_attention_heads=4),
        projection_dim=64, prompt_num_attention_heads=4,
    )
    XCLIPModel(config).save_pretrained(folder)
    vocab, merges = train_clip_vocab(LABELS * 4, vocab_size=config.text_config.vocab_size)
    CLIPTokenizer.from_vocab(vocab, merges).save_pretrained(folder)
    XCLIPVideoProcessor(size={"shortest_edge": 64}, crop_size=64).save_pretrained(folder)
    return folder


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="xclip-demo-") as tmp:
        work = Path(tmp)
        clip = write_video(work / "moving-square.mp4", moving_square_frames(), fps=FPS)
        checkpoint = untrained_checkpoint(work / "untrained-xclip")
        print(f"xclip-stream demo: {clip.name} ({SECONDS} s at {FPS} fps), labels {LABELS}", file=sys.stderr)
        print("NOTE: untrained random weights (the trained demo model is issue 4): scores are not "
              "predictions.", file=sys.stderr)
        return cli.main(["classify", str(clip), "--model", str(checkpoint), "--labels", ",".join(LABELS),
                         "--window-seconds", "1", "--hop-seconds", "0.5"])


if __name__ == "__main__":
    sys.exit(main())
