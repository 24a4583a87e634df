"""Scoring preprocessed windows with X-CLIP: what a model replica does, without Ray.

``BatchScorer`` takes a batch of windows (uint8, already resized and cropped by their streams) that
may belong to different label sets, encodes all videos in one call, and scores each window against
its own labels with text features cached per label set. Uploading uint8 and normalising on the
device moves a quarter of the bytes of float32 pixels.

With ``compile`` the video encoder runs through ``torch.compile``: CUDA graphs on a GPU
("reduce-overhead"), fused kernels on a CPU. Batches are padded up to a few fixed sizes
(``BATCH_BUCKETS``) so that only that many graphs are ever captured; each is compiled at its first
batch. A compile failure is logged and the scorer goes on eagerly. Off by default until it has been
measured on a GPU (on a CPU it gave nothing).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model import XCLIPConfig, XCLIPModel
from ..model.processor import XCLIPProcessor, XCLIPVideoProcessor

log = logging.getLogger(__name__)

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo-xclip"
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def resolve_model_path(path: str) -> Path:
    """A checkpoint folder, or ``demo`` for the checkpoint shipped with the package."""
    return DEMO_CHECKPOINT if path == "demo" else Path(path)  # loading names what a folder lacks


@dataclass(frozen=True)
class ModelInfo:
    """What a stream needs to know about the model to cut windows for it (cheap to read)."""

    name: str
    num_frames: int
    video_processor: dict  # preprocessor_config.json contents

    @classmethod
    def read(cls, path: str) -> ModelInfo:
        folder = resolve_model_path(path)
        config = XCLIPConfig.from_pretrained(folder)
        processor = XCLIPVideoProcessor.from_pretrained(folder)
        return cls(name=folder.name if path != "demo" else "demo", num_frames=config.vision_config.num_frames,
                   video_processor=processor.to_dict())


def frame_preprocessor(info: ModelInfo):
    """(H, W, 3) uint8 RGB -> (3, S, S) uint8: the model's resize and crop, done once per frame
    (torch's uint8 kernel: within one grey level of the offline path, several times faster)."""
    processor = XCLIPVideoProcessor.from_dict(info.video_processor)

    def preprocess(image: np.ndarray) -> np.ndarray:
        return processor.resize_and_crop(image[None], exact=False)[0].numpy()

    return preprocess


def pick_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class BatchScorer:
    """Scores batches of windows against per-window label sets; the one place where windows meet
    the model, for the live pipeline's replicas and the offline ``classify`` alike."""

    def __init__(self, model: XCLIPModel, processor: XCLIPProcessor, precision: str = "auto",
                 cache_size: int = 64, compile: bool = False):
        self.model = model.eval()
        self.processor = processor
        self.device = next(model.parameters()).device
        if precision == "auto":
            precision = "bfloat16" if self.device.type == "cuda" else "float32"
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be auto or one of {sorted(PRECISIONS)}, got {precision!r}")
        self.precision = precision  # bf16/fp16 run as autocast over float32 weights
        self.num_frames = model.config.vision_config.num_frames
        self._text: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        self._compiled = torch.compile(model.encode_videos, mode=mode, dynamic=False) if compile else None

    @classmethod
    def load(cls, path: str, device: str | None = None, precision: str = "auto",
             compile: bool = False) -> BatchScorer:
        """From a checkpoint folder (or ``demo``), on ``device`` (default: cuda when present)."""
        folder = resolve_model_path(path)
        scorer = cls(XCLIPModel.from_pretrained(folder, device=pick_device(device)),
                     XCLIPProcessor.from_pretrained(folder), precision, compile=compile)
        log.info("loaded %s on %s (%s%s)", folder, scorer.device, scorer.precision,
                 ", compiled" if scorer._compiled else "")
        return scorer

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (B, T, 3, S, S) -> ``encode_videos``, compiled when asked for."""
        if self._compiled is None:
            return self.model.encode_videos(pixels)
        b = pixels.shape[0]
        size = next((n for n in BATCH_BUCKETS if n >= b), b)
        padded = torch.cat([pixels, pixels[-1:].expand(size - b, *pixels.shape[1:])]) if size > b else pixels
        try:
            video, context = self._compiled(padded)
        except Exception as e:  # noqa: BLE001 - compile errors surface at the first call of a shape
            log.warning("torch.compile failed, running eagerly from now on: %s: %s", type(e).__name__, e)
            self._compiled = None
            return self.model.encode_videos(pixels)
        return video[:b].clone(), context[:b].clone()  # a CUDA graph's outputs are reused by its next run

    def text_features(self, labels: tuple[str, ...]) -> torch.Tensor:
        """(N, P) label features, cached per label set (LRU)."""
        if labels in self._text:
            self._text.move_to_end(labels)
            return self._text[labels]
        tokens = self.processor.tokenizer(list(labels), padding=True, return_tensors="pt")
        with torch.inference_mode():
            features = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        self._text[labels] = features
        if len(self._text) > self._cache_size:
            self._text.popitem(last=False)
        return features

    def score(self, frames: Sequence[np.ndarray], labels: Sequence[tuple[str, ...]]) -> list[list[float]]:
        """frames: B windows (T, 3, S, S) uint8; labels: B label tuples -> B lists of logits."""
        if len(frames) != len(labels):
            raise ValueError(f"{len(frames)} windows but {len(labels)} label sets")
        for f in frames:
            if f.dtype != np.uint8 or f.ndim != 4 or f.shape[0] != self.num_frames:
                raise ValueError(
                    f"a window must be ({self.num_frames}, 3, S, S) uint8, got {f.dtype} {tuple(f.shape)}"
                )
        pixels = torch.from_numpy(np.stack(frames))
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        dtype = PRECISIONS[self.precision]
        autocast = torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, label_set in enumerate(labels):
            groups.setdefault(tuple(label_set), []).append(i)
        out: list[list[float]] = [[] for _ in frames]
        with torch.inference_mode():
            text = {key: self.text_features(key) for key in groups}
            with autocast:
                video, context = self.encode(self.processor.video_processor.normalize(pixels))
                for key, rows in groups.items():
                    index = torch.tensor(rows, device=self.device)
                    logits = self.model.score_videos(video[index], context[index], text[key])
                    for row, values in zip(rows, logits.float().cpu().tolist()):
                        out[row] = values
        return out
