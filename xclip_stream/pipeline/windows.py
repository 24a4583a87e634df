"""Per-stream sampling and sliding windows (plain Python; one instance per stream, no shared state).

A source offers every decoded frame's timestamp to the ``RateSampler`` first, so frames that are not
kept are never converted or resized; kept frames are preprocessed once to the model's uint8 input and
pushed into a ``WindowBuffer``, a ring of the model's frame count that emits a window every ``hop``
frames. A gap in the stream (a reconnect, a stall) or a step back in time empties the ring, so no
window spans missing time or runs backwards.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np

from ..schemas.windows import FrameWindow


class RateSampler:
    """Keeps frames at ``fps`` by timestamp, not by count, so variable-rate and bursty sources sample
    evenly; ``fps=None`` keeps every frame. The schedule advances in whole intervals (no drift) and
    restarts after a gap or when time runs backwards (a restarted stream).

    ``absolute``: the schedule is the grid of whole intervals of the timestamps themselves (the first
    frame in each interval is kept), not one started at the first frame seen. A Kafka member that
    reads a partition again from a window's first frame then keeps the frames the member before it
    kept, so it cuts the same windows: the same event ids over the same content."""

    def __init__(self, fps: float | None, absolute: bool = False):
        if fps is not None and fps <= 0:
            raise ValueError(f"sample rate must be positive frames per second, got {fps}")
        self.interval = 0.0 if fps is None else 1.0 / fps
        self.absolute = absolute
        self._next: float | None = None  # the next kept frame's earliest time (absolute: its interval's number)
        self._last: float | None = None

    def keep(self, t: float) -> bool:
        restart = self._next is None or (self._last is not None and t < self._last)
        self._last = t
        if self.absolute and self.interval:
            slot = math.floor(t / self.interval + 0.01)  # tolerance for timestamps rounded to the time base
            if not restart and slot < self._next:
                return False
            self._next = slot + 1  # the first interval a later frame is kept in
            return True
        if restart:
            self._next = t + self.interval
            return True
        if t < self._next - 0.01 * self.interval:  # tolerance for timestamps rounded to the time base
            return False
        self._next += self.interval
        if self._next <= t:  # fell behind (a gap): restart the schedule from this frame
            self._next = t + self.interval
        return True


class WindowBuffer:
    """Ring buffer of the last ``num_frames`` kept frames of one stream; emits a window when it is full
    and ``hop`` frames have arrived since the previous window (hop < num_frames overlaps windows)."""

    def __init__(
        self,
        camera_id: str,
        num_frames: int,
        hop: int,
        max_gap_seconds: float | None = None,
        on_evict: Callable[[int], None] | None = None,
    ):
        if num_frames < 1 or hop < 1:
            raise ValueError(f"num_frames and hop must be positive, got {num_frames} and {hop}")
        if max_gap_seconds is not None and max_gap_seconds <= 0:
            raise ValueError(f"max_gap_seconds must be positive, got {max_gap_seconds}")
        self.camera_id = camera_id
        self.num_frames = num_frames
        self.hop = hop
        self.max_gap = max_gap_seconds
        self.on_evict = on_evict  # called with the seq of each frame leaving the ring (offset tracking)
        self._ring: deque[tuple[int, float, np.ndarray, float | None]] = deque()
        self._since_emit: int | None = None  # None: no window since the last reset
        self._emitted = 0
        self.gaps = 0  # how many times a gap emptied the ring (reported in stream health)

    def push(self, seq: int, t: float, image: np.ndarray, pts: float | None = None) -> FrameWindow | None:
        """Add one preprocessed (3, S, S) uint8 frame; return a window when one is due."""
        last = self._ring[-1][1] if self._ring else None
        if last is not None and (t < last or (self.max_gap is not None and t - last > self.max_gap)):
            self.reset()  # a gap, or time going back (a producer's clock stepped): no window spans it
            self.gaps += 1
        if len(self._ring) == self.num_frames:
            self._evict()
        self._ring.append((seq, t, image, pts))
        if self._since_emit is not None:
            self._since_emit += 1
        if len(self._ring) < self.num_frames or (self._since_emit is not None and self._since_emit < self.hop):
            return None
        self._since_emit = 0
        window = FrameWindow(
            camera_id=self.camera_id,
            index=self._emitted,
            frames=np.stack([image for _, _, image, _ in self._ring]),
            frame_times=tuple(t for _, t, _, _ in self._ring),
            frame_seqs=tuple(s for s, _, _, _ in self._ring),
            frame_pts=() if any(p is None for *_, p in self._ring) else tuple(p for *_, p in self._ring),
        )
        self._emitted += 1
        return window

    def seqs(self) -> list[int]:
        """The seqs of the frames in the ring, oldest first."""
        return [seq for seq, *_ in self._ring]

    def reset(self) -> None:
        """Forget buffered frames (the next window starts fresh, after a full ring)."""
        while self._ring:
            self._evict()
        self._since_emit = None

    def _evict(self) -> None:
        seq = self._ring.popleft()[0]
        if self.on_evict is not None:
            self.on_evict(seq)
