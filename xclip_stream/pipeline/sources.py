"""Video sources: files, RTSP, HTTP (MJPEG or anything FFmpeg reads), HLS and V4L2 devices, via PyAV.

A source converts to RGB only the frames its consumer keeps: ``keep(time)`` is asked first, with the
frame's wall-clock time, because the conversion costs about as much as the decode (half as much at
640x480, more at 720p: ``bench/decode.py``). When the consumer says it keeps frames at least
``SKIP_NONREF_FRAMES`` frame intervals apart, the decoder also drops the frames no other frame refers
to (B-frames, in most encodings) without decoding them. In intra-only streams (MJPEG cameras) every
packet is a whole frame with its frame's time, so a sampling consumer is asked before the decode and
only the frames it keeps are decoded at all (a kept frame that fails to decode hands its sample to
the next frame, as it would had it been decoded first).

Timestamps come from the stream, mapped to wall time from an anchor taken at each connection's
first frame, never backwards even when the wall clock is stepped back (``source_time``). Network
and device inputs are opened and read on a thread the source owns, so ``stop()`` and the stall
watchdog never wait on a blocked FFmpeg call (``source_input``). Live inputs reconnect forever,
with jittered exponential backoff.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import av

from ..schemas.config import CameraCredentials
from ..schemas.frames import SourceFrame
from ..schemas.urls import CREDENTIAL_KINDS, ffmpeg_url, source_kind
from .backoff import Backoff
from .credentials import camera_url
from .redact import redact_text, redact_url
from .rgb import RGBConverter
from .source_input import POLL_S, Input, Stalled, ThreadedInput
from .source_time import PassClock, Timeline

__all__ = ["Backoff", "SourceError", "SourceStats", "VideoSource", "redact_url", "source_kind"]

logger = logging.getLogger(__name__)

_UNTIMED_FORMATS = {"mpjpeg", "mjpeg"}  # demuxers whose timestamps are a frame count at a guessed rate
_EOF, _ERROR, _STOPPED = "eof", "error", "stopped"
# Skipping non-reference frames moves a sampled frame by at most the run of B-frames it sits in
# (2-3 frames): negligible against a sample interval of 4 frames or more.
SKIP_NONREF_FRAMES = 4
MAX_SOURCE_PIXELS = 8192 * 8192  # twice 8K UHD: what a decoder may allocate per frame of a source


class SourceError(Exception):
    """A source that cannot (or may no longer) deliver frames; the message names the camera and the
    redacted URL."""


@dataclass
class SourceStats:
    state: str = "idle"  # idle | connecting | connected | disconnected | ended | stopped
    frames_decoded: int = 0
    frames_skipped: int = 0  # intra-only streams (MJPEG): frames keep() did not want, never decoded
    frames_kept: int = 0
    decode_errors: int = 0  # corrupt packets skipped
    reconnects: int = 0
    last_error: str | None = None  # redacted
    last_frame_time: float | None = None  # wall-clock time of the last frame (decoded or skipped)
    connected_since: float | None = None  # wall clock when frames started flowing on this connection


def _keep_all(_time: float) -> bool:
    return True


class VideoSource:
    """One camera or file as an iterator of ``SourceFrame``; see the module docstring."""

    def __init__(
        self,
        camera_id: str,
        url: str,
        *,
        loop: bool = False,
        realtime: bool | None = None,
        rtsp_transport: str = "tcp",
        open_timeout: float = 10.0,
        read_timeout: float = 5.0,
        reconnect: bool | None = None,
        backoff: Backoff | None = None,
        on_status: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        max_pixels: int = MAX_SOURCE_PIXELS,
        credentials: CameraCredentials | None = None,
    ):
        if rtsp_transport not in ("tcp", "udp"):
            raise ValueError(f"rtsp_transport must be 'tcp' or 'udp', got {rtsp_transport!r}")
        if open_timeout <= 0 or read_timeout <= 0:
            raise ValueError(f"timeouts must be positive, got {open_timeout} and {read_timeout}")
        self.camera_id = camera_id
        self.url = url
        self.redacted_url = redact_url(url)
        self.kind = source_kind(url)
        if credentials is not None and self.kind not in CREDENTIAL_KINDS:
            raise ValueError(f"credentials apply to rtsp and http(s) cameras, not to a {self.kind} source")
        # Read at each connection (a rotated Secret file is used from the next one); the URL that
        # carries the password lives only in _auth_url, for FFmpeg and for redacting its errors.
        self.credentials = credentials
        self._auth_url: str | None = None
        # loop and realtime concern files only; a camera is live and paced by nature.
        self.loop = loop and self.kind == "file"
        self.realtime = (loop if realtime is None else realtime) and self.kind == "file"
        self.is_live = self.kind != "file" or self.loop or self.realtime
        self.reconnect = self.kind != "file" if reconnect is None else reconnect
        self.rtsp_transport = rtsp_transport
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.stats = SourceStats()
        self._backoff = backoff or Backoff()
        self._on_status = on_status
        self._clock = clock
        self.max_pixels = max_pixels
        self._stop = threading.Event()
        self._timeline = Timeline(clock)
        self._seq = 0
        self._offset = 0.0  # PTS where the next pass of a looped file starts
        self._to_rgb = RGBConverter()

    def stop(self) -> None:
        """Ends ``frames()`` promptly; safe from any thread."""
        self._stop.set()

    def frames(self, keep: Callable[[float], bool] = _keep_all, sample_interval: float = 0.0
               ) -> Iterator[SourceFrame]:
        """Kept frames, in order, until the end (files), stop(), or a SourceError.

        ``sample_interval``: seconds ``keep`` leaves at least between kept frames (0: it may keep
        every frame); from ``SKIP_NONREF_FRAMES`` frame intervals on, non-reference frames are skipped.
        """
        while not self._stop.is_set():
            if self.stats.state != "connected":  # a looped file's next pass is no new connection
                self.stats.state = "connecting"
            try:
                source = self._open()
            except Exception as e:
                reason = self._reason("cannot open", e)
                if not self.reconnect:
                    raise SourceError(self._describe(reason)) from None
                if not self._wait_to_retry(reason):
                    break
                continue
            if source is None:
                break
            try:
                outcome, reason, passed = yield from self._decode(source, keep, sample_interval)
            finally:
                source.close()
            if outcome == _STOPPED:
                break
            if outcome == _EOF and self.kind == "file" and self.loop:
                if passed.first is None:
                    raise SourceError(self._describe("no decodable frames to loop"))
                self._offset = passed.next_offset()
                continue
            if outcome == _EOF and (self.kind == "file" or not self.reconnect):
                self._set_state("ended", "")
                return
            reason = reason if outcome == _ERROR else "end of stream"
            if not self.reconnect:
                raise SourceError(self._describe(reason))
            if not self._wait_to_retry(reason):
                break
        self.stats.state = "stopped"

    # -- connection -----------------------------------------------------------------------------

    def _open(self) -> Input | None:
        """An open input, or None if stop() came first; raises why it could not open."""
        url = ffmpeg_url(self.url)
        if self.kind == "file":
            path = unquote(urlsplit(url).path) if url.startswith("file://") else url
            source = Input(self._check_video(av.open(path)))
            if self._timeline.anchor is None:
                self._timeline.anchor = self._clock()  # files: wall time at open, kept across loops
            return source
        fmt, target, options = None, camera_url(url, self.credentials, self.camera_id), {}
        self._auth_url = target if self.credentials is not None else None
        if self.kind == "rtsp":
            # A short analysis: FFmpeg would otherwise buffer ~2 s of frames while it probes.
            options = {"rtsp_transport": self.rtsp_transport, "analyzeduration": "500000"}
        elif self.kind == "device":
            fmt, target = "v4l2", url.removeprefix("device://")

        def opener() -> av.container.InputContainer:
            return self._check_video(av.open(target, format=fmt, options=options,
                                             timeout=(self.open_timeout, self.read_timeout)))

        source = ThreadedInput(opener, f"source-{self.camera_id}", self.read_timeout)
        try:
            opened = source.wait_open(self._stop, 2 * self.open_timeout + 1.0)
        except BaseException:
            source.close()
            raise
        if not opened:
            source.close()
            return None
        self._timeline.restart()  # live: re-anchored at this connection's first frame
        return source

    def _check_video(self, container: av.container.InputContainer) -> av.container.InputContainer:
        """A video stream no larger than ``max_pixels``; the decoder is held to that size too (FFmpeg's
        ``max_pixels``), so a stream that grows mid-way cannot make it allocate more."""
        if not container.streams.video:
            container.close()
            raise ValueError("no video stream")
        codec = container.streams.video[0].codec_context
        if codec.width * codec.height > self.max_pixels:
            container.close()
            raise ValueError(f"video is {codec.width}x{codec.height}, over the limit of {self.max_pixels} pixels")
        codec.options = {**codec.options, "max_pixels": str(self.max_pixels)}
        return container

    def _wait_to_retry(self, reason: str) -> bool:
        """Report the failure and wait out the backoff; False when stop() came first."""
        self.stats.last_error = reason
        self.stats.connected_since = None
        self._set_state("disconnected", reason)
        delay = self._backoff.next_delay()
        logger.warning("camera %s (%s): %s; reconnecting in %.1f s", self.camera_id, self.redacted_url,
                       reason, delay)
        if self._stop.wait(delay):
            return False
        self.stats.reconnects += 1
        return True

    # -- decoding -------------------------------------------------------------------------------

    def _decode(self, source: Input, keep: Callable[[float], bool], sample_interval: float
                ) -> Generator[SourceFrame, None, tuple[str, str, PassClock]]:
        """Kept frames of one connection; returns (outcome, reason, the pass's clock)."""
        stream = source.stream
        rate = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 25)
        if sample_interval * rate >= SKIP_NONREF_FRAMES:
            stream.codec_context.skip_frame = "NONREF"
        # MJPEG and other intra-only codecs: each packet is a whole frame, with the frame's own time,
        # so keep() is asked before decoding and frames it does not keep are never decoded.
        intra_only = sample_interval > 0 and stream.codec_context.codec.intra_only
        untimed = source.container.format.name in _UNTIMED_FORMATS
        passed = PassClock(rate, untimed, self._offset, float(stream.time_base) if stream.time_base else None)
        deadline = time.monotonic() + self.read_timeout
        retake = False  # a kept packet did not decode: the next frame takes its sample
        while not self._stop.is_set():
            try:
                item = source.next(POLL_S)
            except queue.Empty:
                if time.monotonic() > deadline:
                    return _ERROR, f"stalled: no frame within {self.read_timeout:g} s", passed
                continue
            except Stalled as e:
                return _ERROR, str(e), passed
            except Exception as e:
                return _ERROR, self._reason("read failed", e), passed
            if item is None:
                return _EOF, "", passed
            packet, arrival = item
            lazy = intra_only and packet.size > 0  # a whole frame, not decoded unless kept
            for frame in [None] if lazy else self._decode_packet(stream, packet):
                pts = passed.pts(packet if frame is None else frame, arrival)
                offered = self._offer(pts)
                if offered is None:
                    return _STOPPED, "", passed
                (seq, t), deadline = offered, time.monotonic() + self.read_timeout
                if not (keep(t) or retake):
                    self.stats.frames_skipped += lazy
                    continue
                if lazy:
                    frame = next(iter(self._decode_packet(stream, packet)), None)
                    retake = frame is None
                    if retake:
                        continue
                yield self._kept(frame, seq, t, pts)
        return _STOPPED, "", passed

    def _decode_packet(self, stream: av.video.stream.VideoStream, packet: av.Packet) -> list[av.VideoFrame]:
        """The packet's frames; none, counted and logged, when it is corrupt."""
        try:
            frames = stream.codec_context.decode(packet)
        except av.error.FFmpegError as e:
            self.stats.decode_errors += 1
            logger.debug("camera %s: skipped a corrupt packet (%s)", self.camera_id, e)
            return []
        self.stats.frames_decoded += len(frames)
        return frames

    def _offer(self, pts: float) -> tuple[int, float] | None:
        """(seq, wall time) of the stream's next frame, after pacing a realtime file to it; None when
        stop() came first."""
        t = self._timeline.map(pts)
        if self.realtime and self._stop.wait(max(0.0, t - self._clock())):
            return None
        seq = self._seq
        self._seq += 1
        self._frame_seen(t)
        return seq, t

    def _kept(self, frame: av.VideoFrame, seq: int, t: float, pts: float) -> SourceFrame:
        self.stats.frames_kept += 1
        return SourceFrame(self.camera_id, seq, t, pts, self._to_rgb(frame))

    def _frame_seen(self, t: float) -> None:
        self.stats.last_frame_time = t
        if self.stats.state != "connected":
            self.stats.connected_since = self._clock()
            self._backoff.reset()
            logger.info("camera %s (%s): connected", self.camera_id, self.redacted_url)
            self._set_state("connected", "")

    # -- reporting ------------------------------------------------------------------------------

    def _set_state(self, state: str, reason: str) -> None:
        self.stats.state = state
        if self._on_status is not None:
            self._on_status(state, reason)

    def _reason(self, what: str, error: BaseException) -> str:
        if isinstance(error, av.error.ExitError):  # PyAV's timeout interrupted FFmpeg
            return f"{what}: no answer within {self.open_timeout:g} s"
        text = f"{what}: {type(error).__name__}: {error}"
        if self._auth_url is not None:  # FFmpeg's errors quote the URL it was given, password and all
            text = redact_text(text, self._auth_url)
        return redact_text(text, self.url)

    def _describe(self, reason: str) -> str:
        return f"camera {self.camera_id!r} ({self.redacted_url}): {reason}"
