"""Scoring made fast: uint8 windows on the device -> video embeddings and prompt context -> logits.

What a replica does on every batch, so everything here is about not wasting the device:

* normalisation runs on the device from uint8 (a quarter of float32's bytes cross the bus);
* on a CPU, ``int8`` runs the copy's Linear layers as dynamically quantized int8 GEMMs
  (``model.quantize``), the rest in float32; on a GPU with FP8 tensor cores, ``float8`` runs them
  as e4m3 GEMMs with per-channel and per-token scales, the rest in bf16;
* in bf16/fp16 the encoder is a copy of the model cast once to that dtype, not autocast over float32
  weights, which would cast every weight on every call and upcast around every LayerNorm; LayerNorm
  and softmax statistics stay float32 inside their kernels;
* on a GPU attention runs on SDPA's memory-efficient kernel, chosen over its default (cuDNN) for
  these short sequences: 77 us against cuDNN's 105 and flash's 149 on an H200 for a batch of 64
  (512 frames x 12 heads x 51 tokens, bf16);
* the copy's patch embedding and q/k/v projections run as single GEMMs (``fuse_for_inference``);
  a GPU always gets a copy;
* batches are padded up to a few fixed sizes (``BATCH_BUCKETS``), so that on a GPU each size is
  captured once as a CUDA graph and then replayed: one launch instead of hundreds of small kernels,
  which is most of the time at batch 1;
* on a GPU the encoder goes through ``torch.compile`` first (fused kernels, captured in the graphs):
  1.4x at batch 64 and 1.3x at batch 1 on an H200. It is compiled twice, for batch 1 and for every other size
  (``dynamic``), about 20 s each, which ``warm_up`` pays when a replica starts rather than live.

Label scoring (``score``) runs on the same copy: its prompt generator in bf16 too (in float32 its
GEMMs ran on SIMT cores, 0.5 ms of a 12.6 ms batch of 64 on an H200), while the label residual
stream, the norms and the cosines stay float32, where the logits' precision is decided. The text
tower stays with the caller's float32 model (``BatchScorer``): labels are encoded once per label set.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..model import XCLIPModel
from ..model.quantize import E4M3, float8_linears_, quantize_linears

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def bucket(batch: int) -> int:
    """The smallest bucket that holds ``batch`` (larger batches run at their own size)."""
    return next((n for n in BATCH_BUCKETS if n >= batch), batch)


def buckets_up_to(max_batch: int) -> list[int]:
    """The batch sizes a replica batching up to ``max_batch`` windows will run at."""
    return sorted({n for n in BATCH_BUCKETS if n < max_batch} | {bucket(max_batch)})


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    frames: torch.Tensor  # static input (bucket, T, 3, S, S) uint8
    outputs: tuple[torch.Tensor, torch.Tensor]  # static outputs, overwritten by each replay


class VideoEncoder:
    """``encoder(frames)``: (B, T, 3, S, S) uint8 on the model's device -> (B, P) video embeddings and
    (B, S-1, P) prompt context, in ``dtype`` (float32 when None)."""

    def __init__(self, model: XCLIPModel, normalization: tuple[torch.Tensor, torch.Tensor],
                 dtype: torch.dtype | None = None, compile: bool = False, cuda_graphs: bool = True):
        self.device = next(model.parameters()).device
        float8 = dtype == E4M3
        if float8:  # e4m3 GEMMs, bf16 between them
            dtype = torch.bfloat16
        if self.device.type == "cuda" or dtype not in (None, torch.float32):
            # Our own copy, cast once and with fused q/k/v; the caller keeps its float32 model.
            model = copy.deepcopy(model).to(torch.float32 if dtype in (None, torch.qint8) else dtype)
            model.text_model = None  # labels come encoded
            model.fuse_for_inference()
        if dtype == torch.qint8:  # int8 weights, float32 activations between the GEMMs
            model, dtype = quantize_linears(model), None
        if float8:  # quantized from the bf16 copy (its 8 mantissa bits against e4m3's 3: no loss that counts)
            model = float8_linears_(model, dtype)
        self.model = model.eval()
        self.dtype = dtype
        self.shift, self.scale = (t.to(self.device) for t in normalization)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.compiled = compile
        self._fn: Callable = self._encode
        if compile:  # on a GPU the graphs below do what "reduce-overhead" would do without them
            graphs_here = self.device.type == "cuda" and not self.cuda_graphs
            self._fn = torch.compile(self._encode, mode="reduce-overhead" if graphs_here else "default",
                                     dynamic=True)
        self._graphs: dict[int, _Graph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None

    def _encode(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = (frames.float() - self.shift) / self.scale
        if self.dtype is not None:
            pixels = pixels.to(self.dtype)
        return self.model.encode_videos(pixels)

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._attention():  # also what compile traces and graphs capture
            return self._call(frames)

    def _attention(self):
        """SDPA's memory-efficient kernel on a GPU (see the module's docstring); the default elsewhere."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def _call(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = frames.shape[0]
        if not (self.cuda_graphs or self.compiled):
            return self._encode(frames)
        size = bucket(b)
        if self.cuda_graphs and size in BATCH_BUCKETS:  # larger batches run without a graph
            graph = self._graphs.get(size) or self._capture(size, frames)
            if graph is not None:
                graph.frames[:b].copy_(frames, non_blocking=True)  # rows past b keep old frames: never read
                graph.graph.replay()
                return tuple(out[:b].clone() for out in graph.outputs)  # the next replay overwrites them
        padded = torch.cat([frames, frames[-1:].expand(size - b, *frames.shape[1:])]) if size > b else frames
        video, context = self._run(padded)
        return video[:b], context[:b]

    def score(self, video: torch.Tensor, context: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Logits (B, N) of encoded videos (this encoder's outputs) against (N, P) label features."""
        return self.model.score_videos(video, context, text_features)

    def warm_up(self, max_batch: int) -> None:
        """Compile and capture every bucket up to ``max_batch`` now (a no-op when running eagerly)."""
        if not (self.cuda_graphs or self.compiled):
            return
        vision = self.model.config.vision_config
        with torch.inference_mode():
            for b in buckets_up_to(max_batch):
                # contiguous, as live batches are (a compiled function guards on strides)
                self(torch.zeros((b, vision.num_frames, 3, vision.image_size, vision.image_size),
                                 dtype=torch.uint8, device=self.device))

    def _run(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (maybe compiled) encoder; a compile failure is logged once and the encoder goes on eagerly."""
        try:
            return self._fn(frames)
        except Exception as e:  # noqa: BLE001 - compile errors surface at the first call of a shape
            if self._fn is self._encode:
                raise
            log.warning("torch.compile failed, running eagerly from now on: %s: %s", type(e).__name__, e)
            self._fn, self.compiled = self._encode, False
            return self._encode(frames)

    def _capture(self, size: int, example: torch.Tensor) -> _Graph | None:
        """Warm up on a side stream (lazy cuBLAS/compile work must not be captured), then capture."""
        static = example[-1:].expand(size, *example.shape[1:]).clone()
        try:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._run(static)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                outputs = self._fn(static)
        except Exception as e:  # noqa: BLE001 - a graph is an optimisation: fall back, say why
            log.warning("CUDA graph capture failed at batch %d, running without graphs: %s: %s",
                        size, type(e).__name__, e)
            self.cuda_graphs = False
            return None
        self._graphs[size] = _Graph(graph, static, outputs)
        log.info("captured a CUDA graph of the video encoder at batch %d", size)
        return self._graphs[size]
