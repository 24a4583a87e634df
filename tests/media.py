"""Test media the suite generates itself: small videos whose frames encode their own index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xclip_stream.pipeline.clips import write_video


def index_frame(i: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A frame whose grey level tells its index (i * 8 mod 256), robust to lossy coding."""
    return np.full((height, width, 3), (i * 8) % 256, dtype=np.uint8)


def read_index(frame: np.ndarray) -> int:
    """The index (mod 32) of a frame made by index_frame, from its mean grey level."""
    return int(round(float(frame.mean()) / 8)) % 32


def write_index_video(path: Path, num_frames: int, fps: int = 16) -> Path:
    return write_video(path, (index_frame(i) for i in range(num_frames)), fps=fps, crf=10)
