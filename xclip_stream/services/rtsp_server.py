"""A real RTSP camera for tests and the demo: Debian's gst-rtsp-server serving an H.264 mp4 as a live,
endlessly looping stream, without re-encoding (how: ``rtsp_child.py``).

gst-rtsp-server's Python bindings (python3-gi) exist only for the system interpreter, so ``RtspCamera``
runs ``rtsp_child.py`` with ``/usr/bin/python3`` as a child process it owns.
"""

from __future__ import annotations

import selectors
import subprocess
import time
from pathlib import Path

from .process import OwnedProcess, ProcessService, port_open

SYSTEM_PYTHON = "/usr/bin/python3"
CHILD = Path(__file__).with_name("rtsp_child.py")
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


class RtspCamera(ProcessService):
    """A looping H.264 RTSP camera in a child process; ``restart()`` keeps the port, so clients can
    test reconnecting to the same URL."""

    stop_grace_s = 5.0

    def __init__(self, video_path: str | Path, port: int | None = None, path: str = "/cam",
                 start_timeout: float = 20.0):
        self.video_path = Path(video_path)
        self.path = path if path.startswith("/") else "/" + path
        self.start_timeout = start_timeout
        self._port = port
        super().__init__(OwnedProcess("rtsp-camera"))  # its log: the child's stderr

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the camera has no port before start()")
        return self._port

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def start(self) -> RtspCamera:
        if self.running:
            return self
        if not self.video_path.is_file():
            raise FileNotFoundError(f"RTSP camera video not found: {self.video_path}")
        cmd = [SYSTEM_PYTHON, str(CHILD), str(self.video_path), str(self._port or 0), self.path]
        # stdin is the child's lifeline: it exits when the pipe closes, even if this process dies.
        proc = self._process.start(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            self._port = self._wait_ready(proc)
        except BaseException:
            self.stop()
            raise
        if not self._process.wait_until(lambda: port_open(self.port), self.start_timeout):
            raise self._process.failed(f"RTSP camera port {self.port} never accepted connections")
        return self

    def restart(self) -> RtspCamera:
        self.stop()
        return self.start()

    def _wait_ready(self, proc: subprocess.Popen) -> int:
        """Read the child's ``READY <port>`` line (it binds first, so port 0 picks a free one)."""
        deadline = time.monotonic() + self.start_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.1):
                    line = proc.stdout.readline().decode(errors="replace").split()
                    if len(line) == 2 and line[0] == "READY":
                        return int(line[1])
                    if not line:
                        break  # EOF: the child died
        raise self._process.failed(f"RTSP camera for {self.video_path} did not start")
