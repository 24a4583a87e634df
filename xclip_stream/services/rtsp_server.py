"""A real RTSP camera for tests and the demo: Debian's gst-rtsp-server serving an H.264 mp4 as a live,
endlessly looping stream, without re-encoding.

gst-rtsp-server's Python bindings (python3-gi) exist only for the system interpreter, so ``RtspCamera``
runs this very file with ``/usr/bin/python3`` as a child process; the part below ``_serve`` must
therefore import nothing but the standard library and ``gi``.

How the loop works without re-encoding: the child demuxes the mp4 once into H.264 access units
(``filesrc ! qtdemux ! h264parse ! appsink``), then a live ``appsrc`` replays them forever, each pass's
timestamps offset by the file's duration and each buffer pushed when its time comes, so every client
sees one continuous camera clock. The served pipeline is
``appsrc is-live=true format=time ! h264parse config-interval=-1 ! rtph264pay`` (SPS/PPS before every
keyframe, so a client joining or reconnecting decodes from the next keyframe; set on the parser, which
works per access unit, not on the payloader, which would split multi-slice keyframes). The media is shared:
all clients watch the same camera.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

SYSTEM_PYTHON = "/usr/bin/python3"
APT_HINT = (
    "apt-get install -y --no-install-recommends gir1.2-gst-rtsp-server-1.0 "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad python3-gi"
)
_PROBE = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"


def rtsp_available() -> bool:
    """Whether the system python can import gst-rtsp-server (see ``APT_HINT`` to install it)."""
    try:
        proc = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


class RtspCamera:
    """A looping H.264 RTSP camera in a child process; ``restart()`` keeps the port, so clients can
    test reconnecting to the same URL."""

    def __init__(self, video_path: str | Path, port: int | None = None, path: str = "/cam",
                 start_timeout: float = 20.0):
        self.video_path = Path(video_path)
        self.path = path if path.startswith("/") else "/" + path
        self.start_timeout = start_timeout
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the camera has no port before start()")
        return self._port

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RtspCamera:
        if self.running:
            return self
        if not self.video_path.is_file():
            raise FileNotFoundError(f"RTSP camera video not found: {self.video_path}")
        self._log = tempfile.TemporaryFile()  # the child's stderr, quoted if it fails to start
        cmd = [SYSTEM_PYTHON, os.path.abspath(__file__), str(self.video_path), str(self._port or 0), self.path]
        # stdin is the child's lifeline: it exits when the pipe closes, even if this process dies.
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        try:
            self._port = self._wait_ready()
            self._wait_accepting()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> RtspCamera:
        self.stop()
        return self.start()

    def __enter__(self) -> RtspCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self) -> int:
        """Read the child's ``READY <port>`` line (it binds first, so port 0 picks a free one)."""
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.1):
                    line = self._proc.stdout.readline().decode(errors="replace").split()
                    if len(line) == 2 and line[0] == "READY":
                        return int(line[1])
                    if not line:
                        break  # EOF: the child died
        raise RuntimeError(f"RTSP camera for {self.video_path} did not start: {self._stderr_tail()}")

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or not self.running:
                    raise RuntimeError(
                        f"RTSP camera port {self.port} never accepted connections: {self._stderr_tail()}"
                    ) from None
                time.sleep(0.05)

    def _stderr_tail(self) -> str:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait()
        if self._log is None:
            return "(no output)"
        self._log.seek(0)
        return self._log.read()[-2000:].decode(errors="replace") or "(no output)"


# ---------------------------------------------------------------------------------------------------
# The child process (system python with python3-gi). Imports gi lazily: the venv has no gi.

_SERVED = (
    "( appsrc name=src is-live=true format=time ! h264parse config-interval=-1 "
    "! rtph264pay name=pay0 pt=96 )"
)


def _load_access_units(video: str):
    """Demux the mp4 once into (data, pts, dts, duration, delta) tuples (ns, zero-based) and caps."""
    from gi.repository import Gst

    pipeline = Gst.parse_launch(
        "filesrc name=file ! qtdemux ! h264parse ! video/x-h264,stream-format=avc,alignment=au "
        "! appsink name=sink sync=false"
    )
    pipeline.get_by_name("file").set_property("location", video)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units, caps = [], None
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        caps = caps or sample.get_caps()
        buf = sample.get_buffer()
        delta = bool(buf.get_flags() & Gst.BufferFlags.DELTA_UNIT)
        units.append((buf.extract_dup(0, buf.get_size()), buf.pts, buf.dts, buf.duration, delta))
    pipeline.set_state(Gst.State.NULL)
    if not units:
        raise SystemExit(f"{video}: no H.264 video found")
    none = Gst.CLOCK_TIME_NONE
    start = min(dts if dts != none else pts for _, pts, dts, _, _ in units)
    units = [(d, pts - start, (dts if dts != none else pts) - start, dur, delta)
             for d, pts, dts, dur, delta in units]
    step = units[1][1] - units[0][1] if len(units) > 1 else Gst.SECOND // 25
    length = max(pts + (dur if dur != none else step) for _, pts, _, dur, _ in units)
    return units, caps, length


class _Replayer:
    """Feeds one media's appsrc: the access units in a loop, each pushed when the camera clock
    reaches it (need-data runs on appsrc's streaming thread, so sleeping here paces the camera)."""

    def __init__(self, units, length: int):
        self.units, self.length = units, length
        self.index = 0
        self.origin: int | None = None

    def need_data(self, src, _size) -> None:
        from gi.repository import Gst

        clock = src.get_clock()
        now = clock.get_time() - src.get_base_time() if clock is not None else 0
        if self.origin is None:
            self.origin = now
        data, pts, dts, dur, delta = self.units[self.index % len(self.units)]
        offset = self.origin + (self.index // len(self.units)) * self.length
        self.index += 1
        wait = offset + dts - now
        if wait > 0:
            time.sleep(wait / Gst.SECOND)
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts, buf.dts, buf.duration = offset + pts, offset + dts, dur
        if delta:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        src.emit("push-buffer", buf)


def _serve(video: str, port: int, path: str) -> None:
    import threading

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    units, caps, length = _load_access_units(video)

    def configure(_factory, media) -> None:
        src = media.get_element().get_by_name("src")
        src.set_property("caps", caps)
        replayer = _Replayer(units, length)
        src.connect("need-data", replayer.need_data)
        media.replayer = replayer  # keep it alive as long as the media

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_SERVED)
    factory.set_shared(True)
    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on port {port}")
    loop = GLib.MainLoop()

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
        GLib.idle_add(loop.quit)

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    print("READY", server.get_bound_port(), flush=True)
    loop.run()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
