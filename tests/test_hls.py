"""HLS over HTTP: a playlist of MPEG-TS segments read by VideoSource like any other camera."""

from __future__ import annotations

import pytest

from tests.media import read_index, write_index_video
from xclip_stream.pipeline.sources import VideoSource
from xclip_stream.services.hls import HlsCamera


def test_hls_camera_frames_in_order_with_stream_timestamps(tmp_path):
    video = write_index_video(tmp_path / "clip.mp4", 48, fps=16)
    with HlsCamera(video) as camera:
        source = VideoSource("hls-cam", camera.url, reconnect=False)
        assert source.kind == "hls" and source.is_live
        frames = list(source.frames())
    assert [read_index(f.image) for f in frames] == [i % 32 for i in range(48)]
    steps = [b.pts - a.pts for a, b in zip(frames, frames[1:])]
    assert steps == pytest.approx([1 / 16] * 47, abs=2e-3)  # PTS from the segments, not read time
    assert source.stats.state == "ended"


def test_hls_playlist_missing_is_a_clear_error(tmp_path):
    video = write_index_video(tmp_path / "clip.mp4", 16, fps=16)
    with HlsCamera(video) as camera:
        url = camera.url.replace("index.m3u8", "missing.m3u8")
        source = VideoSource("hls-cam", url, reconnect=False, open_timeout=5)
        with pytest.raises(Exception, match="hls-cam"):
            list(source.frames())


def test_a_remote_playlist_cannot_make_ffmpeg_read_local_files(tmp_path):
    """The source policy lets the control topic add http(s) cameras, which may be HLS: a hostile
    playlist listing file: segments must not turn one into a file reader (FFmpeg's hls demuxer
    refuses them; this guards that across FFmpeg upgrades)."""
    import re

    video = write_index_video(tmp_path / "clip.mp4", 32, fps=16)
    with HlsCamera(video) as camera:
        playlist = camera._folder / "index.m3u8"
        text = re.sub(r"^(?!#)(\S+)$", lambda m: f"file://{camera._folder / m.group(1)}",
                      playlist.read_text(), flags=re.M)
        assert "file:///" in text
        playlist.write_text(text)
        source = VideoSource("hls-cam", camera.url, reconnect=False, open_timeout=5)
        with pytest.raises(Exception, match="hls-cam.*cannot open"):
            list(source.frames())
