"""A window of preprocessed frames from one stream: the unit sent to a model replica."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameWindow:
    camera_id: str
    index: int  # per-stream count of emitted windows, from 0
    frames: np.ndarray  # (T, 3, S, S) uint8, already resized and cropped to the model's input
    frame_times: tuple[float, ...]  # wall-clock seconds of each frame (stream PTS mapped to wall time)
    frame_seqs: tuple[int, ...]  # the source's sequence number of each frame
    frame_pts: tuple[float, ...] = ()  # media seconds of each frame; () when the source has none

    def __post_init__(self):
        t = self.frames.shape[0]
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4:
            raise ValueError(f"frames must be (T, 3, S, S) uint8, got {self.frames.dtype} {self.frames.shape}")
        if not (len(self.frame_times) == len(self.frame_seqs) == t):
            raise ValueError("frame_times and frame_seqs need one entry per frame")
        if self.frame_pts and len(self.frame_pts) != t:
            raise ValueError("frame_pts needs one entry per frame (or none)")

    @property
    def start_time(self) -> float:
        return self.frame_times[0]

    @property
    def end_time(self) -> float:
        return self.frame_times[-1]

    @property
    def frame_count(self) -> int:
        return len(self.frame_times)
