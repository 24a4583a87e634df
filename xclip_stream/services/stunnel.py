"""TLS in front of a plaintext TCP service (a Tansu broker, a SASL proxy), by Debian's stunnel4,
for tests: Tansu's own TLS does not work in the build we have. With ``client_ca`` the terminator
demands a client certificate signed by that CA (mutual TLS).

stunnel reads its configuration from stdin (``-fd 0``) and logs to stderr, so it needs no folder of
its own: the log is the owned process's log."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

from .process import OwnedProcess, ProcessService, free_port, port_open

_INSTALL_HINT = "apt-get install -y --no-install-recommends stunnel4 (scripts/system-deps.sh)"


def stunnel_binary() -> str:
    path = shutil.which("stunnel4") or shutil.which("stunnel")
    if path is None:
        raise FileNotFoundError(f"stunnel was not found: {_INSTALL_HINT}")
    return path


class TlsTerminator(ProcessService):
    """One stunnel process accepting TLS on 127.0.0.1:``port`` and relaying plaintext to
    ``upstream`` (host:port); the object owns the process."""

    def __init__(self, upstream: str, cert_file: Path, key_file: Path, port: int | None = None,
                 client_ca: Path | None = None):
        self.upstream = upstream
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.cert_file, self.key_file, self.client_ca = cert_file, key_file, client_ca
        super().__init__(OwnedProcess(f"stunnel-{self.port}"))

    def _config(self) -> str:
        lines = [
            "foreground = yes",  # stay a child of ours, log to stderr
            "syslog = no",
            "pid =",
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
        proc = self._process.start([stunnel_binary(), "-fd", "0"], stdin=subprocess.PIPE)
        with contextlib.suppress(BrokenPipeError):  # stunnel died at once: failed() below shows why
            proc.stdin.write(self._config().encode())
            proc.stdin.close()  # EOF ends the configuration
        if self._process.wait_until(lambda: port_open(self.port), timeout):
            return self
        raise self._process.failed(f"stunnel on {self.bootstrap} did not start")

    def log(self) -> str:
        """The tail of stunnel's log (its handshakes and refusals, at debug level 5)."""
        path = self._process.log
        return path.read_text(errors="replace")[-4000:] if path and path.exists() else ""
