"""TLS in front of a plaintext TCP service (a Tansu broker, a SASL proxy), by Debian's stunnel4,
for tests: Tansu's own TLS does not work in the build we have. With ``client_ca`` the terminator
demands a client certificate signed by that CA (mutual TLS)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

from .tansu import _kill, _port_open, free_port

_INSTALL_HINT = "apt-get install -y --no-install-recommends stunnel4 (scripts/system-deps.sh)"


def stunnel_binary() -> str:
    path = shutil.which("stunnel4") or shutil.which("stunnel")
    if path is None:
        raise FileNotFoundError(f"stunnel was not found: {_INSTALL_HINT}")
    return path


class TlsTerminator:
    """One stunnel process accepting TLS on 127.0.0.1:``port`` and relaying plaintext to
    ``upstream`` (host:port); the object owns the process and its folder."""

    def __init__(self, upstream: str, cert_file: Path, key_file: Path, port: int | None = None,
                 client_ca: Path | None = None):
        self.upstream = upstream
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.cert_file, self.key_file, self.client_ca = cert_file, key_file, client_ca
        self._proc: subprocess.Popen | None = None
        self._folder: Path | None = None
        self._finalizer: weakref.finalize | None = None

    def _config(self, folder: Path) -> str:
        lines = [
            "foreground = yes",
            "pid =",
            f"output = {folder / 'stunnel.log'}",
            "debug = 5",
            "[kafka]",
            f"accept = 127.0.0.1:{self.port}",
            f"connect = {self.upstream}",
            f"cert = {self.cert_file}",
            f"key = {self.key_file}",
        ]
        if self.client_ca is not None:
            lines += [f"CAfile = {self.client_ca}", "verifyChain = yes", "requireCert = yes"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> TlsTerminator:
        self._folder = Path(tempfile.mkdtemp(prefix=f"stunnel-{self.port}-"))
        conf = self._folder / "stunnel.conf"
        conf.write_text(self._config(self._folder))
        self._proc = subprocess.Popen([stunnel_binary(), str(conf)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._finalizer = weakref.finalize(self, _kill, self._proc, 2.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            if _port_open(self.port):
                return self
            time.sleep(0.05)
        log = self.log()
        self.stop()
        raise RuntimeError(f"stunnel on {self.bootstrap} did not start:\n{log}")

    def log(self) -> str:
        path = self._folder / "stunnel.log" if self._folder else None
        return path.read_text(errors="replace")[-4000:] if path and path.exists() else ""

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _kill(self._proc, 2.0)
            self._proc = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> TlsTerminator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
