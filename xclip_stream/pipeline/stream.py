"""One stream's path from decoded frames to windows awaiting the model.

``WindowStage`` = sampler -> preprocess (once, to the model's uint8 input) -> window ring.
``PendingWindows`` is the bounded queue between a stream's decode thread and the stage that sends
windows to the model. Its policy is the stream's backpressure: a live camera drops its oldest
pending window (counted) rather than fall further behind real time; a file or a Kafka topic
blocks its reader instead, so nothing is ever dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from ..schemas.frames import SourceFrame
from ..schemas.windows import FrameWindow
from .windows import RateSampler, WindowBuffer


class WindowStage:
    """Sampling, preprocessing and windowing of one stream (no threads; the caller owns the loop).

    ``preprocess`` maps an (H, W, 3) uint8 RGB frame to the model's (3, S, S) uint8 input.
    """

    def __init__(
        self,
        camera_id: str,
        preprocess: Callable[[np.ndarray], np.ndarray],
        num_frames: int,
        sample_fps: float | None,
        hop: int | None = None,
        max_gap_seconds: float | None = None,
        on_evict: Callable[[int], None] | None = None,
        absolute_sampling: bool = False,
    ):
        self.camera_id = camera_id
        self.preprocess = preprocess
        self.sampler = RateSampler(sample_fps, absolute_sampling)
        self.buffer = WindowBuffer(camera_id, num_frames, hop or num_frames, max_gap_seconds, on_evict)

    def keep(self, t: float) -> bool:
        """Whether the frame at wall time ``t`` is sampled (asked before it is converted)."""
        return self.sampler.keep(t)

    def push(self, frame: SourceFrame) -> FrameWindow | None:
        """Add a sampled frame; returns a window when one is due."""
        return self.buffer.push(frame.seq, frame.time, self.preprocess(frame.image), frame.pts)


class PendingWindows:
    """Bounded, thread-safe FIFO of windows. ``drop_oldest=True`` never blocks ``put`` (a live
    source); otherwise ``put`` waits for room (a file or a topic slows down instead of dropping)."""

    def __init__(self, capacity: int, drop_oldest: bool):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self._items: deque[FrameWindow] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, window: FrameWindow) -> FrameWindow | None:
        """Queue a window; returns the window dropped to make room, if any. Raises once closed."""
        with self._cond:
            dropped = None
            while len(self._items) >= self.capacity and not self._closed:
                if self.drop_oldest:
                    dropped = self._items.popleft()
                    self.dropped += 1
                    break
                self._cond.wait(0.5)
            if self._closed:
                raise QueueClosed("the window queue is closed")
            self._items.append(window)
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> FrameWindow | None:
        """The oldest window, or None on timeout or when closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            window = self._items.popleft()
            self._cond.notify_all()
            return window

    def holds(self, camera_id: str) -> bool:
        """Whether a window of ``camera_id`` is queued."""
        with self._cond:
            return any(w.camera_id == camera_id for w in self._items)

    def discard(self, drop: Callable[[FrameWindow], bool]) -> list[FrameWindow]:
        """Remove the queued windows ``drop`` selects (a revoked partition's cameras); returns them."""
        with self._cond:
            gone = [w for w in self._items if drop(w)]
            if gone:
                self._items = deque(w for w in self._items if not drop(w))
                self._cond.notify_all()
            return gone

    def close(self) -> None:
        """No more puts; queued windows can still be taken (shutdown drains them)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class QueueClosed(RuntimeError):
    pass
