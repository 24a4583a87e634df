"""Scoring preprocessed windows with X-CLIP: what a model replica does, without Ray.

``BatchScorer`` takes a batch of windows (uint8, already resized and cropped by their streams) that
may belong to different label sets, encodes all videos in one call (``encoding.VideoEncoder``: bf16
weights, torch.compile and CUDA graphs on a GPU), and scores each window against its own labels on the
encoder's copy, with text features encoded in float32 and cached per label set. Windows are stacked
straight into a pinned buffer and uploaded as uint8 without blocking; the logits of every label set
come back in one copy, so a batch waits for the device once.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model import XCLIPConfig, XCLIPModel
from ..model.checkpoint import checkpoint_digest
from ..model.processor import XCLIPProcessor, XCLIPVideoProcessor
from .encoding import VideoEncoder, bucket
from .model_check import DEFAULT_MAX_LABELS, LabelChecker, ModelMismatch, check_processor_fits

log = logging.getLogger(__name__)

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo-xclip"
# int8: int8 weights with float32 activations (dynamic quantization of the Linear layers), CPUs only;
# float8: e4m3 GEMMs with bf16 between them, GPUs with FP8 tensor cores (model.quantize)
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.qint8,
              "float8": torch.float8_e4m3fn}
FLOAT8_CAPABILITY = (8, 9)  # Ada (8.9) and Hopper (9.0) on: FP8 tensor cores


def resolve_model_path(path: str) -> Path:
    """A checkpoint folder, or ``demo`` for the checkpoint shipped with the package."""
    return DEMO_CHECKPOINT if path == "demo" else Path(path)  # loading names what a folder lacks


def model_name(path: str) -> str:
    """The name events give a checkpoint: its folder's name, or ``demo``."""
    return "demo" if path == "demo" else resolve_model_path(path).name


@dataclass(frozen=True)
class ReplicaScores:
    """A replica's answer for one window: the logits (one per label) and the checkpoint that gave
    them, so that across a model roll each event names the model that actually scored its window."""

    logits: list[float]
    model: str  # the checkpoint's name (model_name)
    checkpoint: str  # its digest (model.checkpoint.checkpoint_digest)


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
        check_processor_fits(config, processor, path)  # before any stream cuts a window for it
        return cls(name=model_name(path), num_frames=config.vision_config.num_frames,
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


def auto_precision(device: torch.device) -> str:
    """``precision: auto``: the fastest dtype the device runs natively. bf16 on GPUs with bf16 tensor
    cores (compute capability 8 on) and on CPUs with AVX512-BF16 or AMX, whose oneDNN bf16 GEMMs ran
    the replica path 2.4x as fast as float32 here; fp16 on older GPUs (a T4), which only emulate
    bf16; float32 on other CPUs, where bf16 is emulated and slower than float32. On the demo model
    bf16 logits are 6e-3 (relative) from float32's on this CPU (bench/precision.py), 9e-3 on an H200."""
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.get_device_capability(device)[0] >= 8 else "float16"
    if device.type == "cpu" and _cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def _cpu_has_native_bf16() -> bool:
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.backends.mkldnn.is_available() and any(probe is not None and probe() for probe in probes)


def has_float8(device: torch.device) -> bool:
    """Whether ``device`` has FP8 tensor cores (a GPU of compute capability 8.9 on)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= FLOAT8_CAPABILITY


def check_precision(precision: str, device: torch.device, emulate: bool = False) -> None:
    """A precision the device can run, or a ValueError that says what to choose instead. ``emulate``:
    float8 anywhere, emulated where the device lacks FP8 tensor cores (slow; for measuring accuracy)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision int8 runs on CPUs only (dynamically quantized GEMMs), not on {device.type}; "
                         "use bfloat16 or float16 there (or auto)")
    if precision == "float8" and not emulate and not has_float8(device):
        if device.type != "cuda":
            raise ValueError(f"precision float8 needs a GPU with FP8 tensor cores (Ada, Hopper), not a {device.type}; "
                             "use int8, bfloat16 or float32 there (or auto)")
        major, minor = torch.cuda.get_device_capability(device)
        raise ValueError(f"precision float8 needs FP8 tensor cores (compute capability 8.9 on: Ada, Hopper); "
                         f"{torch.cuda.get_device_name(device)} is {major}.{minor}: use bfloat16 or float16 (or auto)")


class NonFiniteScores(ValueError):
    """The model gave NaN or inf logits for a window: a broken checkpoint, an overflow at this
    precision on this input, or a faulty device. Never published as scores."""


@dataclass(frozen=True)
class WindowRefused:
    """``score_each``'s answer, in a window's slot, when that window could not be scored; ``error``
    is what a replica raises for it (``ModelMismatch``: the same window would be refused again)."""

    reason: str
    error: type[ValueError] = ModelMismatch


class BatchScorer:
    """Scores batches of windows against per-window label sets; the one place where windows meet
    the model, for the live pipeline's replicas and the offline ``classify`` alike."""

    def __init__(self, model: XCLIPModel, processor: XCLIPProcessor | None, precision: str = "auto",
                 cache_size: int = 64, compile: bool | None = None, cuda_graphs: bool = True,
                 max_labels: int = DEFAULT_MAX_LABELS, emulate: bool = False):
        self.label_checker = LabelChecker.for_model(processor.tokenizer, model.config, max_labels) if processor else None
        self.model = model.eval()
        self.processor = processor
        self.device = next(model.parameters()).device
        if precision == "auto":
            precision = auto_precision(self.device)
        check_precision(precision, self.device, emulate)
        self.precision = precision
        self.num_frames = model.config.vision_config.num_frames
        self.image_size = model.config.vision_config.image_size
        self._text: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self.cache_stats = {"label_cache_hits": 0, "label_cache_misses": 0}  # for the replica's metrics
        if compile is None:
            compile = self.device.type == "cuda"
        video_processor = processor.video_processor if processor is not None else XCLIPVideoProcessor()
        self.encoder = VideoEncoder(model, video_processor.normalization(self.device), PRECISIONS[precision],
                                    compile=compile, cuda_graphs=cuda_graphs)
        self._staging: dict[int, torch.Tensor] = {}  # pinned host buffers, one per batch bucket
        self._lock = threading.Lock()  # one batch at a time owns the buffers and graphs
        self.name, self.digest = "", ""  # the checkpoint's, when loaded from a folder (load)

    @classmethod
    def load(cls, path: str, device: str | None = None, precision: str = "auto",
             compile: bool | None = None, cuda_graphs: bool = True,
             max_labels: int = DEFAULT_MAX_LABELS, emulate: bool = False) -> BatchScorer:
        """From a checkpoint folder (or ``demo``), on ``device`` (default: cuda when present);
        ``compile`` None: on a GPU; ``emulate``: see ``check_precision``. A processor that does not
        fit the model is refused first."""
        folder = resolve_model_path(path)
        config, processor = XCLIPConfig.from_pretrained(folder), XCLIPProcessor.from_pretrained(folder)
        check_processor_fits(config, processor.video_processor, path)  # before the weights are read
        scorer = cls(XCLIPModel.from_pretrained(folder, device=pick_device(device)), processor, precision,
                     compile=compile, cuda_graphs=cuda_graphs, max_labels=max_labels, emulate=emulate)
        scorer.name, scorer.digest = model_name(path), checkpoint_digest(folder)
        log.info("loaded %s (%s) on %s (%s%s%s)", folder, scorer.digest, scorer.device, scorer.precision,
                 ", compiled" if scorer.encoder.compiled else "", ", CUDA graphs" if scorer.encoder.cuda_graphs else "")
        return scorer

    def text_features(self, labels: tuple[str, ...]) -> torch.Tensor:
        """(N, P) label features, cached per label set (LRU)."""
        if labels in self._text:
            self._text.move_to_end(labels)
            self.cache_stats["label_cache_hits"] += 1
            return self._text[labels]
        self.cache_stats["label_cache_misses"] += 1
        if self.label_checker is not None:
            self.label_checker.check(labels)  # a label cut at 77 tokens or an id past the embedding: say so
        tokens = self.processor.tokenizer(list(labels), padding=True, return_tensors="pt")
        with torch.inference_mode():
            features = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        if not bool(features.isfinite().all()):
            return features  # not cached: a transient fault must not fail this label set for good
        self._text[labels] = features
        if len(self._text) > self._cache_size:
            self._text.popitem(last=False)
        return features

    def remember(self, labels: tuple[str, ...], features: torch.Tensor) -> None:
        """Cache label features computed elsewhere (benchmarks that hold token ids, not strings)."""
        self._text[tuple(labels)] = features.to(self.device)

    def upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """B windows -> (B, T, 3, S, S) uint8 on the device: on a GPU stacked into a pinned buffer
        (reused per batch bucket) and copied without blocking."""
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(frames))
        b, shape = len(frames), (len(frames), *frames[0].shape)
        size = bucket(b)
        buf = self._staging.get(size)
        if buf is None or tuple(buf.shape[1:]) != shape[1:]:
            buf = self._staging[size] = torch.empty((size, *shape[1:]), dtype=torch.uint8, pin_memory=True)
        np.stack(frames, out=buf.numpy()[:b])
        return buf[:b].to(self.device, non_blocking=True)  # the caller's .cpu() waits for it

    def score(self, frames: Sequence[np.ndarray], labels: Sequence[tuple[str, ...]]) -> list[list[float]]:
        """frames: B windows (T, 3, S, S) uint8; labels: B label tuples -> B lists of logits; raises
        ``NonFiniteScores`` naming the windows whose logits are NaN or inf."""
        out = self._forward(frames, labels)
        bad = [f"window {i} of {len(out)}: {r.reason}" for i, r in enumerate(out) if isinstance(r, WindowRefused)]
        if bad:
            raise NonFiniteScores("; ".join(bad))
        return out

    def _forward(self, frames: Sequence[np.ndarray],
                 labels: Sequence[tuple[str, ...]]) -> list[list[float] | WindowRefused]:
        """The forward pass, and the one place where logits become per-window results: a window
        whose logits are not all finite gets a ``WindowRefused`` (its neighbours are unaffected:
        nothing in X-CLIP mixes the windows of a batch)."""
        if len(frames) != len(labels):
            raise ValueError(f"{len(frames)} windows but {len(labels)} label sets")
        for f in frames:
            if f.dtype != np.uint8 or f.ndim != 4 or f.shape[0] != self.num_frames or f.shape != frames[0].shape:
                raise ValueError(
                    f"a window must be ({self.num_frames}, 3, S, S) uint8 (all of one size), "
                    f"got {f.dtype} {tuple(f.shape)}"
                )
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, label_set in enumerate(labels):
            groups.setdefault(tuple(label_set), []).append(i)
        out: list[list[float] | WindowRefused] = [[] for _ in frames]
        with self._lock, torch.inference_mode():
            text = {key: self.text_features(key) for key in groups}
            video, context = self.encoder(self.upload(frames))
            logits = []  # (B_key, N_key) per label set, on the device
            for key, rows in groups.items():
                index = torch.tensor(rows, device=self.device) if len(groups) > 1 else slice(None)
                logits.append(self.encoder.score(video[index], context[index], text[key]))
            values = torch.cat([g.float().flatten() for g in logits]).tolist()  # one copy back, one sync a batch
        at = 0
        for key, rows in groups.items():
            for row in rows:
                window, at = values[at:at + len(key)], at + len(key)
                bad = sum(not math.isfinite(v) for v in window)
                out[row] = window if not bad else WindowRefused(
                    _non_finite_reason(bad, len(key), text[key]), NonFiniteScores)
        return out

    def window_problem(self, frames: np.ndarray, labels: Sequence[str]) -> str | None:
        """Why one window cannot be scored before trying (wrong shape, a label set refused), or None."""
        want = (self.num_frames, 3, self.image_size, self.image_size)
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.shape != want:
            got = f"{frames.dtype} {tuple(frames.shape)}" if isinstance(frames, np.ndarray) else type(frames).__name__
            return f"a window must be {want} uint8, got {got}"
        if self.label_checker is not None and tuple(labels) not in self._text:
            problems = self.label_checker.problems(list(labels))
            if problems:
                return "; ".join(problems)
        return None

    def score_each(self, frames: Sequence[np.ndarray],
                   labels: Sequence[tuple[str, ...]]) -> list[list[float] | WindowRefused]:
        """``score``, but a window that cannot be scored fails alone: it is refused up front when its
        shape or label set is wrong, when its logits are not finite, and when a batch fails anyway it
        is scored again per label set, then per window, so only the culprit gets a ``WindowRefused``
        (a batch mixes cameras)."""
        out: list[list[float] | WindowRefused | None] = [None] * len(frames)
        rows = []
        for i, (window, label_set) in enumerate(zip(frames, labels)):
            problem = self.window_problem(window, label_set)
            if problem is None:
                rows.append(i)
            else:
                out[i] = WindowRefused(problem)
        self._score_isolating(frames, labels, rows, out)
        return out

    def _score_isolating(self, frames, labels, rows: list[int], out: list, by_labels: bool = True) -> None:
        if not rows:
            return
        try:
            for row, result in zip(rows, self._forward([frames[i] for i in rows], [labels[i] for i in rows])):
                out[row] = result
            return
        except Exception as e:  # noqa: BLE001 - narrowed down below; one window's error is its own
            if len(rows) == 1:
                out[rows[0]] = WindowRefused(f"{type(e).__name__}: {e}")
                return
            log.warning("a batch of %d windows failed (%s: %s); scoring it in parts", len(rows), type(e).__name__, e)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i in rows:
            groups.setdefault(tuple(labels[i]), []).append(i)
        if by_labels and len(groups) > 1:
            for group in groups.values():
                self._score_isolating(frames, labels, group, out, by_labels=False)
        else:
            for i in rows:
                self._score_isolating(frames, labels, [i], out, by_labels=False)


def _non_finite_reason(bad: int, labels: int, text_features: torch.Tensor) -> str:
    """Why a window's logits are refused; says whether the label set's own features are at fault."""
    where = "the label set's text features are NaN/inf" if not bool(text_features.isfinite().all()) else (
        "a broken checkpoint, an overflow at this precision or a faulty device")
    return f"non-finite scores from the model: {bad} of {labels} labels NaN/inf ({where})"
