"""An MJPEG-over-HTTP camera (``multipart/x-mixed-replace``), the protocol of most cheap IP cameras.

It serves a live stream: every client sees the frame that is due *now* on the camera's clock, paced at
``fps``. JPEGs are encoded with PyAV's mjpeg encoder, so no imaging library is needed at runtime.
FFmpeg (and so ``VideoSource``) reads it with its ``mpjpeg`` demuxer, chosen from the Content-Type.
With ``auth=(user, password)`` it asks for HTTP Basic authentication, as such cameras do, and
answers 401 to a request without the right credentials.
"""

from __future__ import annotations

import base64
import hmac
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np

from ..pipeline.jpeg import JpegEncoder

FrameFn = Callable[[int], np.ndarray]  # frame index -> (H, W, 3) uint8 RGB
BOUNDARY = "xclipframe"


class _JpegFrames:
    """JPEG of frame ``i``, encoded once per index however many clients watch (thread-safe)."""

    def __init__(self, frame_fn: FrameFn):
        self._frame_fn = frame_fn
        self._encoder = JpegEncoder()
        self._lock = threading.Lock()
        self._last: tuple[int, bytes] | None = None

    @classmethod
    def from_video(cls, path: Path) -> _JpegFrames:
        """Decode a (short) video once; the camera then loops its frames."""
        with av.open(str(path)) as container:
            images = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
        if not images:
            raise ValueError(f"{path}: no video frames")
        return cls(lambda i: images[i % len(images)])

    def jpeg(self, index: int) -> bytes:
        with self._lock:
            if self._last is None or self._last[0] != index:
                self._last = (index, self._encoder.encode(self._frame_fn(index)))
            return self._last[1]


class _StreamHandler(BaseHTTPRequestHandler):
    server: _CameraServer
    timeout = 5.0  # a client that stops reading cannot hold the camera's shutdown for long

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        cam = self.server
        if not cam.authorized(self.headers.get("Authorization", "")):
            cam.refused += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="camera"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        index = cam.current_index()
        try:
            while not cam.stopping.is_set():
                delay = cam.due(index) - time.monotonic()
                if delay > 0 and cam.stopping.wait(delay):
                    break
                jpeg = cam.frames.jpeg(index)
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode() + jpeg + b"\r\n")
                self.wfile.flush()
                index += 1
        except OSError:
            pass  # the client went away

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # no access log on stderr


class _CameraServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the client threads: the camera owns them
    block_on_close = True

    def __init__(self, address: tuple[str, int], frames: _JpegFrames, fps: float, auth: tuple[str, str] | None):
        super().__init__(address, _StreamHandler)
        self.frames = frames
        self.fps = fps
        self.expected = None if auth is None else "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        self.refused = 0  # requests answered 401
        self.origin = time.monotonic()
        self.stopping = threading.Event()

    def authorized(self, header: str) -> bool:
        return self.expected is None or hmac.compare_digest(header.encode(), self.expected.encode())

    def current_index(self) -> int:
        return int((time.monotonic() - self.origin) * self.fps)

    def due(self, index: int) -> float:
        return self.origin + index / self.fps


class MjpegCamera:
    """A live MJPEG HTTP camera on ``127.0.0.1``; frames come from ``frame_fn(index)`` or loop a video."""

    def __init__(self, source: FrameFn | str | Path, fps: float = 10.0, port: int | None = None,
                 host: str = "127.0.0.1", path: str = "/stream.mjpg", auth: tuple[str, str] | None = None):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._source = source
        self.fps = fps
        self.host = host
        self.path = path
        self.auth = auth
        self._port = port or 0
        self._server: _CameraServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the camera has no URL before start()")
        return f"http://{self.host}:{self._port}{self.path}"

    @property
    def refused(self) -> int:
        """Requests this start answered 401 (Basic authentication missing or wrong)."""
        return self._server.refused if self._server is not None else 0

    def start(self) -> MjpegCamera:
        if self._server is not None:
            return self
        if callable(self._source):
            frames = _JpegFrames(self._source)
        else:
            frames = _JpegFrames.from_video(Path(self._source))
        self._server = _CameraServer((self.host, self._port), frames, self.fps, self.auth)
        self._port = self._server.server_address[1]  # keep it: a restart serves the same URL
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="mjpeg-camera", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def restart(self) -> MjpegCamera:
        self.stop()
        return self.start()

    def __enter__(self) -> MjpegCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
