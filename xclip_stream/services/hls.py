"""An HLS camera: a video cut into MPEG-TS segments (remuxed, not re-encoded) with an m3u8
playlist, served over HTTP, as an NVR or a CDN would publish it."""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av


def write_hls(video: Path, folder: Path, segment_seconds: float = 1.0) -> Path:
    """Remux ``video``'s video stream into ``folder/index.m3u8`` + segments; returns the playlist."""
    folder.mkdir(parents=True, exist_ok=True)
    playlist = folder / "index.m3u8"
    options = {"hls_time": str(segment_seconds), "hls_list_size": "0", "hls_playlist_type": "vod"}
    with av.open(str(video)) as source, av.open(str(playlist), "w", format="hls", options=options) as out:
        stream = source.streams.video[0]
        target = out.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            packet.stream = target
            out.mux(packet)
    return playlist


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class HlsCamera:
    """Serves ``video`` as HLS on 127.0.0.1 from a temporary folder it owns (context manager)."""

    def __init__(self, video: str | Path, segment_seconds: float = 1.0, port: int = 0):
        self.video = Path(video)
        self.segment_seconds = segment_seconds
        self._port = port
        self._folder: Path | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the camera has no URL before start()")
        return f"http://127.0.0.1:{self._port}/index.m3u8"

    def start(self) -> HlsCamera:
        if self._server is not None:
            return self
        self._folder = Path(tempfile.mkdtemp(prefix="xclip-hls-"))
        write_hls(self.video, self._folder, self.segment_seconds)
        handler = functools.partial(_QuietHandler, directory=str(self._folder))
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="hls-camera", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread, folder = self._server, self._thread, self._folder
        self._server = self._thread = self._folder = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> HlsCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
