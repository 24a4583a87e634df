"""Video sources against real media and real servers (files, RTSP over TCP/UDP, MJPEG over HTTP)."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from tests.camera_fixtures import CAMERA_FPS, CAMERA_FRAMES
from tests.media import index_frame, read_index, write_index_video
from xclip_stream.pipeline.clips import write_video
from xclip_stream.pipeline.rgb import RGBConverter
from xclip_stream.pipeline.sources import Backoff, SourceError, VideoSource, redact_url, source_kind
from xclip_stream.pipeline.windows import RateSampler
from xclip_stream.schemas.frames import SourceFrame
from xclip_stream.services.mjpeg import MjpegCamera
from xclip_stream.services.rtsp_server import RtspCamera

SECRET = "hunter2xyz"
STEP = 1.0 / CAMERA_FPS


def take(frames: Iterator[SourceFrame], n: int) -> list[SourceFrame]:
    out = []
    for frame in frames:
        out.append(frame)
        if len(out) == n:
            break
    return out


def assert_consecutive(frames: list[SourceFrame]) -> None:
    """Seq counts up by one, the pictures are consecutive frames, and time never goes back."""
    indices = [read_index(f.image) for f in frames]
    assert all((b - a) % 32 == 1 for a, b in zip(indices, indices[1:])), indices
    assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + len(frames)))
    assert all(b.time >= a.time for a, b in zip(frames, frames[1:]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StatusLog:
    """Collects on_status calls from the source's thread."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, state: str, reason: str) -> None:
        with self.lock:
            self.calls.append((state, reason))

    def states(self) -> list[str]:
        with self.lock:
            return [state for state, _ in self.calls]


class Consumer:
    """Runs a source's frames() on a thread the test owns (stop() ends it, join() waits)."""

    def __init__(self, source: VideoSource):
        self.source = source
        self.frames: list[SourceFrame] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-consumer")
        self.thread.start()

    def _run(self) -> None:
        try:
            for frame in self.source.frames():
                self.frames.append(frame)
        except BaseException as e:  # reported by the test
            self.error = e

    def stop(self) -> float:
        t0 = time.monotonic()
        self.source.stop()
        self.thread.join(timeout=10)
        return time.monotonic() - t0


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


# -- redaction and backoff ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("rtsp://user:pass@host:554/x", "rtsp://***@host:554/x"),
        ("rtsp://admin@cam.local/live", "rtsp://***@cam.local/live"),
        ("rtsp://u:p@ss@host/x", "rtsp://***@host/x"),
        ("rtsp://u:pa/ss@host/x", "rtsp://***@host/x"),
        ("rtsp://host:554/stream@1", "rtsp://host:554/stream@1"),
        ("http://h/a.m3u8?TOKEN=abc&w=1&X-Amz-Signature=zz#f", "http://h/a.m3u8?TOKEN=***&w=1&X-Amz-Signature=***#f"),
        ("https://h/s?Password=1;api_key=2&pwd=3&passwd=4&secret=5&auth=6&sig=7&credentials=8&keep=no",
         "https://h/s?Password=***;api_key=***&pwd=***&passwd=***&secret=***&auth=***&sig=***&credentials=***"
         "&keep=no"),
        ("http://cam/mjpg?fps=10&resolution=640x480", "http://cam/mjpg?fps=10&resolution=640x480"),
        ("rtsp://h/s?pw=1&auth=2&PASS=3&AuthToken=4&user=me", "rtsp://h/s?pw=***&auth=***&PASS=***&AuthToken=***&user=me"),
        ("/videos/a@b:c.mp4", "/videos/a@b:c.mp4"),
        ("C:\\videos\\a.mp4", "C:\\videos\\a.mp4"),
        ("file:///tmp/x.mp4", "file:///tmp/x.mp4"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redaction_in_exceptions_and_control_log_lines() -> None:
    from xclip_stream.pipeline.redact import redact_exception, redact_urls_in

    line = "refused {'url': 'rtsp://admin:hunter2@10.0.0.5/s?pw=swordfish&fps=5'} and http://u:p4ss@h/x."
    redacted = redact_urls_in(line)
    assert "hunter2" not in redacted and "swordfish" not in redacted and "p4ss" not in redacted
    assert "rtsp://***@10.0.0.5/s?pw=***&fps=5'" in redacted and "http://***@h/x." in redacted
    error = OSError("could not open rtsps://cam:s3cret@cam.local/live?token=t0k (Connection refused)")
    text = redact_exception(error)
    assert text.startswith("OSError: ") and "s3cret" not in text and "t0k" not in text and "refused" in text


@pytest.mark.parametrize(
    "url, kind",
    [("rtsp://h/x", "rtsp"), ("RTSPS://h/x", "rtsp"), ("http://h/x.mjpg", "http"),
     ("https://h/live/index.m3u8?token=1", "hls"), ("device:///dev/video0", "device"),
     ("/dev/video2", "device"), ("file:///a.mp4", "file"), ("clips/a.mp4", "file")],
)
def test_source_kind(url: str, kind: str) -> None:
    assert source_kind(url) == kind


def test_backoff_grows_to_its_cap_with_full_jitter_and_resets() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, factor=2.0, rng=random.Random(7))
    caps = []
    for _ in range(8):
        caps.append(backoff.cap())
        assert 0.0 <= backoff.next_delay() <= caps[-1]
    assert caps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    draws = [Backoff(rng=random.Random(seed)).next_delay() for seed in range(50)]
    assert len(set(draws)) == 50 and max(draws) <= 0.5  # jittered, all under the first cap
    backoff.reset()
    assert backoff.cap() == 0.5
    assert Backoff(rng=random.Random(3)).next_delay() == Backoff(rng=random.Random(3)).next_delay()
    huge = Backoff(maximum=30.0)
    huge.attempt = 10_000
    assert huge.next_delay() <= 30.0


# -- files -------------------------------------------------------------------------------------------


def test_file_frames_are_the_right_ones_with_times_from_pts(camera_video: Path) -> None:
    status = StatusLog()
    source = VideoSource("cam1", str(camera_video), clock=lambda: 1000.0, on_status=status)
    assert source.kind == "file" and not source.is_live and not source.reconnect
    frames = list(source.frames())
    assert [read_index(f.image) for f in frames] == list(range(CAMERA_FRAMES))
    assert [f.seq for f in frames] == list(range(CAMERA_FRAMES))
    assert [f.pts for f in frames] == pytest.approx([i * STEP for i in range(CAMERA_FRAMES)])
    assert [f.time for f in frames] == pytest.approx([1000.0 + f.pts for f in frames])
    assert frames[0].image.shape == (120, 160, 3) and frames[0].camera_id == "cam1"
    assert status.states() == ["connected", "ended"] and source.stats.state == "ended"


def test_keep_decides_before_conversion(camera_video: Path) -> None:
    offered: list[float] = []

    def every_fourth(t: float) -> bool:
        offered.append(t)
        return len(offered) % 4 == 1

    source = VideoSource("cam", f"file://{camera_video}")
    frames = list(source.frames(every_fourth))
    assert source.stats.frames_decoded == CAMERA_FRAMES == len(offered)
    assert source.stats.frames_kept == len(frames) == CAMERA_FRAMES // 4
    assert [f.seq for f in frames] == list(range(0, CAMERA_FRAMES, 4))  # seq counts every decoded frame
    assert [read_index(f.image) for f in frames] == [f.seq for f in frames]
    assert [f.time for f in frames] == offered[::4]


def test_frames_are_the_pixels_pyav_converts_across_codecs_and_sizes(tmp_path: Path) -> None:
    """The source keeps one conversion context per stream; its RGB must be to_ndarray's, exactly,
    in limited-range H.264 and full-range MJPEG, and when the size changes under the same context."""
    rng = np.random.default_rng(1)
    videos = [
        write_video(tmp_path / f"color{i}.{'avi' if codec == 'mjpeg' else 'mp4'}",
                    (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(6)), fps=8, codec=codec)
        for i, (codec, h, w) in enumerate([("libx264", 96, 128), ("mjpeg", 96, 128), ("libx264", 120, 160)])
    ]
    converter = RGBConverter()
    for video in videos:
        with av.open(str(video)) as container:
            expected = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        with av.open(str(video)) as container:
            shared = [converter(f) for f in container.decode(video=0)]
        ours = [f.image for f in VideoSource("cam", str(video)).frames()]
        assert len(ours) == len(expected) == 6 and len(np.unique(expected[0])) > 200
        assert all(np.array_equal(a, b) for a, b in zip(ours, expected))
        assert all(np.array_equal(a, b) for a, b in zip(shared, expected))


def test_sparse_sampling_skips_non_reference_frames_and_keeps_times_true(tmp_path: Path) -> None:
    video = write_index_video(tmp_path / "bframes.mp4", 64, fps=16)  # x264 defaults: B-frames
    runs = {}
    for interval in (0.0, 0.25):  # every frame; a quarter of the frame rate
        sampler = RateSampler(1 / interval if interval else None)
        source = VideoSource("cam", str(video))
        runs[interval] = (source.stats, list(source.frames(sampler.keep, sample_interval=interval)))
    stats, frames = runs[0.0]
    assert stats.frames_decoded == 64 == len(frames)
    stats, frames = runs[0.25]
    assert stats.frames_decoded < 48  # the B-frames were never decoded
    assert 14 <= len(frames) <= 16
    # Each kept frame is the one its timestamp says, and the spacing stays near the interval.
    assert [read_index(f.image) for f in frames] == [round(f.pts * 16) % 32 for f in frames]
    gaps = np.diff([f.pts for f in frames])
    assert gaps.min() >= 0.25 - 1e-6 and gaps.max() <= 0.25 + 2 / 16 + 1e-6, gaps


def test_sparse_sampling_of_mjpeg_decodes_only_the_kept_frames(tmp_path: Path) -> None:
    video = write_video(tmp_path / "mjpeg.avi", (index_frame(i) for i in range(64)), fps=16, codec="mjpeg")
    runs = {}
    for interval in (0.0, 0.25):  # the sampler alone (every frame decoded); the source told too
        sampler = RateSampler(4)
        source = VideoSource("cam", str(video))
        runs[interval] = (source.stats, list(source.frames(sampler.keep, sample_interval=interval)))
    (eager_stats, eager), (stats, frames) = runs[0.0], runs[0.25]
    assert eager_stats.frames_decoded == 64 and eager_stats.frames_skipped == 0
    assert len(frames) == 16 and stats.frames_decoded == 16 and stats.frames_skipped == 48
    # The same frames, timestamps and sequence numbers either way, each the frame its timestamp says.
    assert [(f.seq, f.pts) for f in frames] == [(f.seq, f.pts) for f in eager]
    assert [read_index(f.image) for f in frames] == [round(f.pts * 16) % 32 for f in frames]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, eager))


def test_a_corrupt_kept_mjpeg_packet_passes_its_sample_to_the_next_frame(tmp_path: Path) -> None:
    """The sampler has already counted a packet it kept when its decode fails; the next frame takes the
    sample, so the lazy path delivers the frames decoding everything delivers and no window runs short."""
    clean = write_video(tmp_path / "clean.avi", (index_frame(i) for i in range(64)), fps=16, codec="mjpeg")
    video = tmp_path / "corrupt.avi"
    with av.open(str(clean)) as src, av.open(str(video), "w") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for i, packet in enumerate(p for p in src.demux(video=0) if p.size):
            if i == 8:  # a frame the sampler keeps at 4 fps: bytes that are no JPEG at all
                garbage = av.Packet(bytes(200))
                garbage.pts, garbage.dts, garbage.time_base = packet.pts, packet.dts, packet.time_base
                packet = garbage
            packet.stream = stream
            out.mux(packet)
    runs = {}
    for interval in (0.0, 0.25):
        sampler = RateSampler(4)
        source = VideoSource("cam", str(video))
        runs[interval] = (source.stats, [read_index(f.image) for f in source.frames(sampler.keep, interval)])
    (eager_stats, eager), (stats, lazy) = runs[0.0], runs[0.25]
    assert eager_stats.decode_errors == stats.decode_errors == 1
    assert lazy == eager and len(lazy) == 16 and lazy[:4] == [0, 4, 9, 12]
    assert stats.frames_decoded == 16 and stats.frames_skipped == 64 - 16 - 1  # and one failed


def test_loop_keeps_pts_and_time_increasing(camera_video: Path) -> None:
    source = VideoSource("cam", str(camera_video), loop=True, realtime=False)
    assert source.is_live and not source.reconnect
    frames = take(source.frames(), 3 * CAMERA_FRAMES + 5)
    assert_consecutive(frames)
    assert np.diff([f.pts for f in frames]) == pytest.approx(np.full(len(frames) - 1, STEP))
    assert np.diff([f.time for f in frames]) == pytest.approx(np.full(len(frames) - 1, STEP))


def test_realtime_file_is_paced_like_a_camera(camera_video: Path) -> None:
    source = VideoSource("cam", str(camera_video), realtime=True)
    assert source.is_live
    t0 = time.monotonic()
    frames = list(source.frames())
    elapsed = time.monotonic() - t0
    duration = (CAMERA_FRAMES - 1) * STEP
    assert len(frames) == CAMERA_FRAMES
    assert duration - 0.05 <= elapsed < duration + 1.0
    lateness = [time.time() - f.time for f in frames[-1:]]
    assert lateness[0] < 0.5


def test_looped_realtime_file_stops_promptly(camera_video: Path) -> None:
    consumer = Consumer(VideoSource("cam", str(camera_video), loop=True))
    wait_for(lambda: len(consumer.frames) >= 3)
    assert consumer.stop() < 1.0 and consumer.error is None
    assert consumer.source.stats.state == "stopped"


def test_missing_file_raises_source_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match="nope.mp4") as info:
        list(VideoSource("cam7", str(missing)).frames())
    assert "cam7" in str(info.value)


# -- RTSP --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_yields_consecutive_frames(rtsp_camera: RtspCamera, transport: str) -> None:
    status = StatusLog()
    source = VideoSource("door", rtsp_camera.url, rtsp_transport=transport, on_status=status)
    assert source.kind == "rtsp" and source.is_live and source.reconnect
    t0 = time.time()
    frames = take(source.frames(), 24)
    assert_consecutive(frames)
    assert np.diff([f.pts for f in frames]) == pytest.approx(np.full(len(frames) - 1, STEP), abs=2e-3)
    assert frames[0].time >= t0 - 0.01 and frames[-1].time - frames[0].time == pytest.approx(23 * STEP, abs=0.01)
    assert status.states() == ["connected"] and source.stats.reconnects == 0


def split_at_reconnect(source: VideoSource, frames: Iterator[SourceFrame], after: int, limit: int = 400
                       ) -> tuple[list[SourceFrame], list[SourceFrame]]:
    """Frames of the first connection (read so far) and ``after`` frames of the next one; fails
    (rather than reading a live camera forever) if no reconnect came within ``limit`` frames."""
    before, later = [], []
    try:
        for frame in frames:
            (later if source.stats.reconnects else before).append(frame)
            if len(later) == after:
                break
            assert len(before) < limit, f"no reconnect within {limit} frames: {source.stats}"
    finally:
        frames.close()
    return before, later


def test_rtsp_reconnects_after_the_camera_restarts(rtsp_camera: RtspCamera) -> None:
    status = StatusLog()
    source = VideoSource("door", rtsp_camera.url, on_status=status, read_timeout=2.0,
                         backoff=Backoff(initial=0.1, maximum=0.3, rng=random.Random(1)))
    frames = source.frames()
    first = take(frames, 4)
    rtsp_camera.stop()
    restart = threading.Timer(1.0, rtsp_camera.start)
    restart.start()
    try:
        before, after = split_at_reconnect(source, frames, 8)
    finally:
        restart.join()
    before = first + before
    assert_consecutive(before)
    assert_consecutive(after)
    assert after[0].seq == before[-1].seq + 1  # seq continues across the reconnect
    assert after[0].time > before[-1].time + 0.5  # the gap shows in wall time
    states = status.states()
    assert states[0] == "connected" and "disconnected" in states and states[-1] == "connected"
    assert source.stats.reconnects >= 1 and source.stats.state == "connected"


def test_rtsp_stall_is_caught_by_the_watchdog(rtsp_camera: RtspCamera) -> None:
    status = StatusLog()
    source = VideoSource("door", rtsp_camera.url, on_status=status, open_timeout=1.0, read_timeout=1.0,
                         backoff=Backoff(initial=0.1, maximum=0.2, rng=random.Random(2)))
    frames = source.frames()
    take(frames, 1)
    pid = rtsp_camera.pid  # freeze the camera: the connection stays up but goes silent
    os.kill(pid, signal.SIGSTOP)
    # Silent for 4 s, well past the 1 s watchdog even if a second of video sat in socket buffers.
    thaw = threading.Timer(4.0, os.kill, (pid, signal.SIGCONT))
    thaw.start()
    try:
        _, resumed = split_at_reconnect(source, frames, 4)
    finally:
        thaw.join()
        os.kill(pid, signal.SIGCONT)
    assert_consecutive(resumed)
    reasons = [reason for state, reason in status.calls if state == "disconnected"]
    assert reasons and reasons[0].startswith("stalled"), reasons
    assert "1 s" in reasons[0]


def test_unreachable_camera_retries_with_backoff_and_stops_promptly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    status = StatusLog()
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/cam?token={SECRET}t"
    source = VideoSource("gate", url, on_status=status,
                         backoff=Backoff(initial=0.05, maximum=0.2, rng=random.Random(5)))
    consumer = Consumer(source)
    wait_for(lambda: status.states().count("disconnected") >= 3)
    assert consumer.stop() < 1.0 and consumer.error is None
    assert source.stats.reconnects >= 2 and "connected" not in status.states()
    assert source.stats.state == "stopped" and consumer.frames == []
    texts = [source.stats.last_error, *(reason for _, reason in status.calls), caplog.text]
    assert "***@127.0.0.1" in caplog.text
    assert not any(SECRET in text for text in texts)


def test_stop_interrupts_a_blocked_open() -> None:
    with socket.socket() as silent:  # accepts TCP connections (backlog) but never answers RTSP
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        status = StatusLog()
        consumer = Consumer(VideoSource("gate", f"rtsp://127.0.0.1:{port}/cam", on_status=status))
        time.sleep(0.5)
        assert consumer.stop() < 1.0 and consumer.error is None
        assert status.states() == []  # it was still opening


def test_credentials_never_leak_from_a_failing_source(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/cam"
    source = VideoSource("gate", url, reconnect=False)
    with pytest.raises(SourceError) as info:
        list(source.frames())
    message = str(info.value)
    assert "'gate'" in message and "rtsp://***@127.0.0.1" in message and "refused" in message.lower()
    assert SECRET not in message and SECRET not in caplog.text
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- devices and HTTP --------------------------------------------------------------------------------


def test_missing_device_is_a_clear_error_not_a_crash() -> None:
    with pytest.raises(SourceError, match="/dev/video9"):
        list(VideoSource("webcam", "device:///dev/video9", reconnect=False).frames())
    status = StatusLog()
    source = VideoSource("webcam", "/dev/video9", on_status=status,
                         backoff=Backoff(initial=0.05, maximum=0.1))
    assert source.kind == "device" and source.reconnect
    consumer = Consumer(source)
    wait_for(lambda: "disconnected" in status.states())
    assert consumer.stop() < 1.0 and consumer.error is None
    assert "/dev/video9" in status.calls[0][1]


def test_mjpeg_http_camera(mjpeg_camera: MjpegCamera) -> None:
    status = StatusLog()
    source = VideoSource("lobby", mjpeg_camera.url, on_status=status)
    assert source.kind == "http"
    frames = take(source.frames(), 12)
    assert_consecutive(frames)
    span = frames[-1].pts - frames[0].pts
    assert 0.3 < span < 1.2  # arrival-time PTS: about 11 frames at 16 fps (the first few may burst)
    assert status.states() == ["connected"]


def test_sampled_mjpeg_http_camera_decodes_only_kept_frames(mjpeg_camera: MjpegCamera) -> None:
    sampler = RateSampler(CAMERA_FPS / 4)
    source = VideoSource("lobby", mjpeg_camera.url)
    frames = take(source.frames(sampler.keep, sample_interval=sampler.interval), 6)
    stats = source.stats
    assert stats.frames_decoded == stats.frames_kept == 6 and stats.frames_skipped >= 12
    # Each kept picture is the frame its sequence number says (the camera loops 32 indexed frames).
    steps = [((read_index(b.image) - read_index(a.image)) % 32, b.seq - a.seq) for a, b in zip(frames, frames[1:])]
    assert all(picture == seq % 32 for picture, seq in steps), steps


def test_mjpeg_camera_from_a_function_reconnects() -> None:
    grey = [np.full((48, 64, 3), i * 8 % 256, np.uint8) for i in range(32)]
    status = StatusLog()
    with MjpegCamera(lambda i: grey[i % 32], fps=20) as camera:
        source = VideoSource("lobby", camera.url, on_status=status,
                             backoff=Backoff(initial=0.05, maximum=0.1, rng=random.Random(0)))
        frames = source.frames()
        first = take(frames, 3)
        camera.restart()
        _, again = split_at_reconnect(source, frames, 3)
    assert_consecutive(first)
    assert_consecutive(again)
    assert first[0].image.shape == (48, 64, 3)
    assert "disconnected" in status.states() and source.stats.reconnects >= 1
