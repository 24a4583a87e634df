"""Fixtures for real test cameras: an H.264 test video, an RTSP camera (gst-rtsp-server) and an
MJPEG-over-HTTP camera, all serving frames that encode their own index (see tests/media.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from tests.media import index_frame
from xclip_stream.services.mjpeg import MjpegCamera
from xclip_stream.services.rtsp_server import APT_HINT, RtspCamera, rtsp_available

CAMERA_FPS = 16
CAMERA_FRAMES = 32  # read_index counts mod 32, so a looping camera's indices stay consecutive
CAMERA_GOP = 8  # a keyframe every half second: a (re)connecting client decodes soon


def write_camera_video(path: Path, num_frames: int = CAMERA_FRAMES, fps: int = CAMERA_FPS,
                       gop: int = CAMERA_GOP, size: tuple[int, int] = (160, 120)) -> Path:
    """An H.264 mp4 of index frames with a fixed keyframe interval and no B-frames."""
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": "10", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, height, width), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="session")
def camera_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160x120, 16 fps, 2 s: frame i shows index i."""
    return write_camera_video(tmp_path_factory.mktemp("camera") / "index.mp4")


@pytest.fixture(scope="session")
def rtsp_ready() -> None:
    if not rtsp_available():
        pytest.fail(f"gst-rtsp-server is not importable from /usr/bin/python3; install it with: {APT_HINT}")


@pytest.fixture
def rtsp_camera(rtsp_ready: None, camera_video: Path) -> Iterator[RtspCamera]:
    """A live RTSP camera looping the test video (its own process; tests may restart it)."""
    with RtspCamera(camera_video) as camera:
        yield camera


@pytest.fixture
def mjpeg_camera(camera_video: Path) -> Iterator[MjpegCamera]:
    """A live MJPEG HTTP camera looping the test video at its frame rate."""
    with MjpegCamera(camera_video, fps=CAMERA_FPS) as camera:
        yield camera
