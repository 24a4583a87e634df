"""Decoded frames to RGB arrays, with one swscale context per stream.

``frame.to_ndarray(format="rgb24")`` sets up a new swscale context, with a thread pool sized to the
machine (PyAV 17 on), for every frame; on a 2-core machine that set-up costs more than the
conversion (0.38 ms a 640x480 frame against 0.11 ms with a context kept; ``bench/decode.py``
measures it). A converter keeps one context for the frames of one stream, and converts on the
calling thread: a pipeline's parallelism is its cameras, one actor each.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import VideoReformatter

__all__ = ["RGBConverter", "to_rgb"]

# PyAV 17 made the conversion multithreaded (``threads``, default: one per CPU); before, it had one
# thread and no such argument.
_ONE_THREAD = {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}


class RGBConverter:
    """Frames -> (H, W, 3) uint8 RGB, the same pixels as ``frame.to_ndarray(format="rgb24")``. Frames
    may change size or format between calls (a camera reconfigured); the context follows."""

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        return self._reformatter.reformat(frame, format="rgb24", **_ONE_THREAD).to_ndarray()


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """One frame on its own (a still image): no context worth keeping, and no thread pool either."""
    return frame.to_ndarray(format="rgb24", **_ONE_THREAD)
