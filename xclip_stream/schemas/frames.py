"""A decoded frame as a source hands it on: the unit between a source and its sampler."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SourceFrame:
    camera_id: str
    seq: int  # per-source sequence number: increasing, restarts never (a reconnect continues it)
    time: float  # wall-clock UNIX seconds: the stream's PTS mapped to wall time (see pipeline.source_time)
    pts: float  # media seconds on the stream's own clock (a looped file keeps counting up)
    image: np.ndarray  # (H, W, 3) uint8 RGB

    def __post_init__(self):
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8, got {self.image.dtype} {self.image.shape}")
