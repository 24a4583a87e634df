"""A source's clocks: the stream's own time (PTS) per connection, and its mapping to wall time.

Timestamps come from the stream, not from when a frame happened to be read: at the first frame of
each connection the stream clock is anchored to the wall clock (``anchor = clock() - pts``) and every
frame's time is ``anchor + pts``, so network jitter does not move timestamps; a wall clock stepped
back is not followed (``Timeline``), so a camera's times never run backwards or stand still. Formats
without a clock of their own (MJPEG over HTTP: FFmpeg just numbers its frames at an assumed 25 fps)
use each packet's arrival time since the connection opened as PTS instead (``PassClock``; the 2-3
frames FFmpeg reads while probing arrive together, so a connection's first frames can be closer in
time than they were sent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import av

logger = logging.getLogger(__name__)

CLOCK_STEP_S = 2.0  # a wall clock this far behind a timeline was stepped (reported in the log)


class Timeline:
    """Maps stream PTS to wall time from an anchor; time never goes backwards and never stands still.

    The anchor is taken at a connection's first frame (``restart()``) and again when PTS jumps back.
    If the wall clock then puts a frame before the last one given out (the clock was stepped back, by
    NTP or by hand), the timeline does not follow it, nor wait for it to catch up (which would hand
    every frame the same time, so a sampler keeping frames by time would keep none for as long as
    the step): it continues from the last time by the monotonic time elapsed since, and stays that
    far ahead of the wall clock. A step forward is followed (a gap, as after any outage)."""

    def __init__(self, clock: Callable[[], float], monotonic: Callable[[], float] = time.monotonic):
        self._clock, self._monotonic = clock, monotonic
        self.anchor: float | None = None
        self._last: tuple[float, float] | None = None  # (time given out, monotonic() then)

    def restart(self) -> None:
        """A new connection: re-anchored at its first frame."""
        self.anchor = None

    def map(self, pts: float) -> float:
        if self.anchor is None:
            self.anchor = self._clock() - pts
        t = self.anchor + pts
        if self._last is not None and t < self._last[0]:
            self.anchor = self._clock() - pts
            t = self.anchor + pts
            last, then = self._last
            if t < last:
                t = last + max(0.0, self._monotonic() - then)
                if last - self._clock() > CLOCK_STEP_S:
                    logger.warning("wall clock is %.0f s behind a camera's timeline (stepped back?); its "
                                   "frame times continue monotonically", last - self._clock())
                self.anchor = t - pts
        self._last = (t, self._monotonic())
        return t


class PassClock:
    """PTS in seconds for one connection: the frame's own, else by arrival (untimed formats) or by
    counting at the stream rate; ``offset`` continues a looped file where the last pass ended."""

    def __init__(self, rate: float, untimed: bool, offset: float, time_base: float | None = None):
        self.rate, self.untimed, self.offset = rate, untimed, offset
        self.time_base = time_base  # the stream's, as a float: Fraction arithmetic per frame is slow
        self.first: float | None = None
        self.end = 0.0  # end of the last frame seen, for the next pass's offset
        self._last: float | None = None
        self._first_arrival: float | None = None

    def pts(self, frame: av.VideoFrame | av.Packet, arrival: float) -> float:
        """A decoded frame's, or an intra-only stream's packet's (the same: nothing is reordered)."""
        if self._first_arrival is None:
            self._first_arrival = arrival
        raw = None
        time_base = self.time_base or float(frame.time_base or 0)
        if not self.untimed and frame.pts is not None and time_base:
            raw = frame.pts * time_base
        if raw is None:
            if self.untimed:
                raw = arrival - self._first_arrival
            else:
                raw = 0.0 if self._last is None else self._last + 1.0 / self.rate
        self._last = raw
        if self.first is None:
            self.first = raw
        duration = frame.duration * time_base if frame.duration else 0.0
        self.end = max(self.end, raw + (duration or 1.0 / self.rate))
        return raw + self.offset

    def next_offset(self) -> float:
        return self.offset + self.end - (self.first or 0.0)
