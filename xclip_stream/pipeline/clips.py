"""Offline windows from a video file: which frames each window takes, and decoding just those.

Two ways to pick the T frames of a window (T = the model's num_frames):
- segment centres (default, the paper's evaluation): a window of L frames is cut into T equal
  segments and the centre frame of each is taken, index = start + int((i + 0.5) * L / T);
- a fixed stride: frames start, start + k, ..., start + (T - 1) k.

Windows are planned in frame indices (exact for constant-rate video); their times come from the
decoded frames' PTS.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .rgb import RGBConverter


@dataclass(frozen=True)
class WindowSampling:
    """How a file is cut into windows. ``window_seconds=None`` and no stride: one window, whole video."""

    num_frames: int
    window_seconds: float | None = None
    hop_seconds: float | None = None
    stride: int | None = None

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be positive, got {self.num_frames}")
        if self.window_seconds is not None and self.stride is not None:
            raise ValueError("give either a window length in seconds or a frame stride, not both")
        for name in ("window_seconds", "hop_seconds"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be a positive number of frames, got {self.stride}")
        if self.hop_seconds is not None and self.window_seconds is None and self.stride is None:
            raise ValueError("hop_seconds needs window_seconds or stride")


@dataclass(frozen=True)
class Window:
    index: int
    frame_indices: tuple[int, ...]
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    times: tuple[float, ...]  # presentation time of each frame, seconds


def plan_windows(num_video_frames: int, fps: float, sampling: WindowSampling) -> list[tuple[int, ...]]:
    """Frame indices of every window that fits in the video (a trailing partial window is dropped)."""
    t = sampling.num_frames
    if sampling.stride is not None:
        length = (t - 1) * sampling.stride + 1
    elif sampling.window_seconds is not None:
        length = max(t, round(sampling.window_seconds * fps))
    else:
        length = num_video_frames
    if num_video_frames < t or length > num_video_frames:
        raise ValueError(
            f"the video has {num_video_frames} frames, too few for one window of {length} frames "
            f"({t} sampled frames)"
        )
    if sampling.hop_seconds is not None:
        hop = max(1, round(sampling.hop_seconds * fps))
    else:
        hop = t * sampling.stride if sampling.stride is not None else length
    windows = []
    for start in range(0, num_video_frames - length + 1, hop):
        if sampling.stride is not None:
            windows.append(tuple(start + i * sampling.stride for i in range(t)))
        else:
            windows.append(tuple(start + int((i + 0.5) * length / t) for i in range(t)))
    return windows


def open_video(path: str | Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise ValueError(f"cannot open video {str(path)!r}: {e}") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{str(path)!r} has no video stream")
    return container


def probe(path: str | Path) -> tuple[int, float]:
    """(frame count, average frame rate). The count is the header's, or counted by demuxing (no decode)."""
    with open_video(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        frames = stream.frames
        if not frames:
            frames = sum(1 for packet in container.demux(stream) if packet.size)
    return frames, fps


def read_windows(path: str | Path, sampling: WindowSampling) -> Iterator[Window]:
    """Decode ``path`` once, front to back, yielding each window as soon as its last frame is decoded.

    Only frames some window needs are converted to RGB and kept, so memory stays at about one
    window's frames however long the video is.
    """
    num_video_frames, fps = probe(path)
    plan = plan_windows(num_video_frames, fps, sampling)
    wanted = {i for window in plan for i in window}
    kept: dict[int, tuple[np.ndarray, float]] = {}
    next_window, index = 0, -1
    to_rgb = RGBConverter()
    with open_video(path) as container:
        stream = container.streams.video[0]
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    kept[index] = (to_rgb(frame), float(frame.time or 0.0))
                while next_window < len(plan) and plan[next_window][-1] <= index:
                    indices = plan[next_window]
                    yield Window(
                        index=next_window,
                        frame_indices=indices,
                        frames=np.stack([kept[i][0] for i in indices]),
                        times=tuple(kept[i][1] for i in indices),
                    )
                    next_window += 1
                    still_needed = plan[next_window][0] if next_window < len(plan) else index + 1
                    kept = {i: v for i, v in kept.items() if i >= still_needed}
        except av.error.FFmpegError as e:
            raise ValueError(f"decoding {str(path)!r} failed at frame {index + 1}: {e}") from None
    if next_window < len(plan):
        raise ValueError(
            f"{str(path)!r} ended after {index + 1} decodable frames, fewer than the {num_video_frames} its "
            f"header announced; {len(plan) - next_window} window(s) could not be filled"
        )


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int, codec: str = "libx264",
                crf: int = 18) -> Path:
    """Encode (H, W, 3) uint8 RGB frames to a video file (test media, synthetic cameras)."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = None
        for frame in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"  # JPEG's full range
                if codec == "libx264":
                    stream.options = {"crf": str(crf)}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        if stream is None:
            raise ValueError("write_video got no frames")
        for packet in stream.encode():
            out.mux(packet)
    return path
