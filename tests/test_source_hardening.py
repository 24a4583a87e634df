"""Live sources under a stepped wall clock, odd URL schemes, and inputs that connect but never speak."""

from __future__ import annotations

import random
import re
import socket
import threading
import time

import numpy as np
import pytest

from tests.test_sources import Consumer, StatusLog, wait_for
from xclip_stream.pipeline.source_time import Timeline
from xclip_stream.pipeline.sources import Backoff, VideoSource
from xclip_stream.pipeline.windows import RateSampler
from xclip_stream.schemas.config import ConfigError, parse_config
from xclip_stream.schemas.urls import SourceURLError, source_kind
from xclip_stream.services.mjpeg import MjpegCamera


class SteppedClock:
    """Wall clock = real time + an offset the test steps."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class FakeClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
def test_timeline_after_a_clock_step_at_reconnect_keeps_time_moving(step: float):
    wall, mono = FakeClock(1_800_000_000.0), FakeClock(50.0)
    timeline = Timeline(wall, mono)
    times = [timeline.map(i * 0.1) for i in range(10)]
    wall.now += 1.0 + step
    mono.now += 1.0
    timeline.restart()  # reconnect: the stream's PTS start again at 0
    after = []
    for i in range(10):
        after.append(timeline.map(i * 0.1))
        wall.now += 0.1
        mono.now += 0.1
    assert all(b > a for a, b in zip(after, after[1:])), after  # never frozen on one time
    assert after[0] >= times[-1]  # never backwards
    if step > 0:
        assert after[0] == pytest.approx(times[0] + 1.0 + step)  # a step forward is followed
    else:
        assert after[0] == pytest.approx(times[-1] + 1.0)  # continues by monotonic time elapsed


def test_a_camera_keeps_sampling_after_a_clock_step_back_and_a_reconnect():
    """Seen: after a one-hour step back and a reconnect, 0 of 600 frames kept, state "connected"."""
    grey = [np.full((48, 64, 3), i * 8 % 256, np.uint8) for i in range(32)]
    clock = SteppedClock()
    status = StatusLog()
    sampler = RateSampler(4.0)
    with MjpegCamera(lambda i: grey[i % 32], fps=20) as camera:
        source = VideoSource("lobby", camera.url, on_status=status, clock=clock,
                             backoff=Backoff(initial=0.05, maximum=0.1, rng=random.Random(0)))
        kept: list[tuple[int, object]] = []  # (reconnects when it was kept, frame)

        def consume() -> None:
            for frame in source.frames(sampler.keep, sample_interval=sampler.interval):
                kept.append((source.stats.reconnects, frame))

        thread = threading.Thread(target=consume, name="test-consumer")
        thread.start()
        try:
            wait_for(lambda: len(kept) >= 4)
            reconnects = source.stats.reconnects
            clock.offset = -3600.0
            camera.restart()
            try:
                wait_for(lambda: sum(r > reconnects for r, _ in kept) >= 6, timeout=20)
            except AssertionError:
                pass  # reported below, with the count
        finally:
            source.stop()
            thread.join(timeout=10)
    before = [f for r, f in kept if r <= reconnects]
    after = [f for r, f in kept if r > reconnects][:6]
    assert len(after) == 6, f"kept {len(after)} frames after the step"
    times = [f.time for f in before + after]
    assert all(b > a for a, b in zip(times, times[1:]))
    gaps = [b.time - a.time for a, b in zip(after, after[1:])]
    assert all(0.05 < g < 1.0 for g in gaps), gaps  # ~4 fps by the stream's pace (a reconnect's first frames burst)
    assert "disconnected" in status.states() and status.states()[-1] == "connected"


@pytest.mark.parametrize(
    "url, kind",
    [("udp://127.0.0.1:5004", "stream"), ("udp://@239.0.0.1:1234?fifo_size=100", "stream"),
     ("rtp://127.0.0.1:5004", "stream"), ("srt://cam.local:9000?mode=caller", "stream"),
     ("tcp://10.0.0.5:8000", "stream"), ("tcp://10.0.0.5:8000?listen=0", "stream"),
     ("RTMP://server/live/cam", "stream"), ("rtsp://h/x", "rtsp"), ("https://h/a.M3U8", "hls"),
     ("C:\\videos\\a.mp4", "file"), ("clips/a.mp4", "file"), ("file:///a.mp4", "file")],
)
def test_network_protocols_are_live_sources(url: str, kind: str):
    assert source_kind(url) == kind
    source = VideoSource("cam", url)
    assert source.is_live == (kind != "file") and source.reconnect == (kind != "file")


@pytest.mark.parametrize(
    "url, words",
    [("concat:a.mp4|b.mp4", "'concat' is not a camera source"), ("subfile:,start,0,end,9,:/etc/x", "subfile"),
     ("subfile,,start,0,end,9,,:/etc/x", "'subfile' is not a camera source"),
     ("data:video/mp4;base64,AAAA", "'data'"), ("pipe:0", "'pipe'"), ("tee:a|b", "'tee'"),
     ("ftp://h/x.mp4", "'ftp'"), ("cam:1.mp4", "file:///"), ("udp:127.0.0.1:5", "udp://"),
     ("tcp://0.0.0.0:9000?listen", "server mode"), ("tcp://0.0.0.0:9000?listen=1", "server mode"),
     ("rtmp://0.0.0.0/live?listen=1", "server mode"), ("srt://:9000?mode=listener", "server mode")],
)
def test_other_schemes_and_server_modes_are_refused_at_the_config_edge(url: str, words: str):
    with pytest.raises(SourceURLError, match=re.escape(words)):
        source_kind(url)
    with pytest.raises(ConfigError) as info:
        parse_config({"model": {"path": "demo"}, "labels": {"labels": ["a"]}, "cameras": [{"id": "c", "url": url}]})
    assert "cameras.0.url" in str(info.value) and words in str(info.value)


def test_a_scheme_in_upper_case_opens_as_the_kind_it_was_given():
    """Seen: ``HTTP://`` passed the configuration as an http camera, then FFmpeg, whose protocol
    names are case-sensitive, answered "Protocol not found" on every reconnect."""
    grey = np.full((48, 64, 3), 128, np.uint8)
    with MjpegCamera(lambda i: grey, fps=20) as camera:
        url = "HTTP" + camera.url.removeprefix("http")
        source = VideoSource("upper", url, backoff=Backoff(initial=0.05, maximum=0.1, rng=random.Random(0)))
        assert source.kind == "http"
        consumer = Consumer(source)
        try:
            wait_for(lambda: len(consumer.frames) >= 2 or source.stats.last_error is not None)
        finally:
            consumer.stop()
    assert source.stats.last_error is None and len(consumer.frames) >= 2


def _assert_retries_and_stops(url: str) -> None:
    status = StatusLog()
    source = VideoSource("gate", url, on_status=status, open_timeout=0.5, read_timeout=0.5,
                         backoff=Backoff(initial=0.05, maximum=0.1, rng=random.Random(1)))
    consumer = Consumer(source)
    t0 = time.monotonic()
    wait_for(lambda: status.states().count("disconnected") >= 2, timeout=10)
    assert time.monotonic() - t0 < 6  # two opens of at most 2 * open_timeout + 1 s each
    assert consumer.stop() < 2.0 and consumer.error is None
    assert consumer.frames == [] and source.stats.state == "stopped"
    assert all("no answer" in reason or "stalled" in reason for state, reason in status.calls if state == "disconnected")


def test_a_tcp_server_that_accepts_and_never_speaks_does_not_stall():
    accepted = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(0.1)
        done = threading.Event()

        def accept() -> None:  # holds every connection open, silent
            while not done.is_set():
                try:
                    accepted.append(server.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            _assert_retries_and_stops(f"tcp://127.0.0.1:{server.getsockname()[1]}")
        finally:
            done.set()
            thread.join()
            for conn in accepted:
                conn.close()
    assert accepted  # it did connect, and was still refused within the timeout


def test_a_udp_port_with_no_sender_does_not_stall():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _assert_retries_and_stops(f"udp://127.0.0.1:{port}")


def test_a_video_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    from tests.media import write_index_video
    from xclip_stream.pipeline.sources import SourceError

    clip = write_index_video(tmp_path / "a.mp4", 8, fps=8)  # 128x96
    with pytest.raises(SourceError, match="128x96, over the limit of 12287 pixels"):
        list(VideoSource("cam", str(clip), max_pixels=128 * 96 - 1).frames())
    assert len(list(VideoSource("cam", str(clip), max_pixels=128 * 96).frames())) == 8
