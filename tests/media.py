"""Test media the suite generates itself: small videos whose frames encode their own index."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def index_frame(i: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A frame whose grey level tells its index (i * 8 mod 256), robust to lossy coding."""
    return np.full((height, width, 3), (i * 8) % 256, dtype=np.uint8)


def read_index(frame: np.ndarray) -> int:
    """The index (mod 32) of a frame made by index_frame, from its mean grey level."""
    return int(round(float(frame.mean()) / 8)) % 32


def write_video(path: Path, num_frames: int, fps: int = 16, height: int = 96, width: int = 128,
                codec: str = "libx264") -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10"} if codec == "libx264" else {}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, height, width), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
