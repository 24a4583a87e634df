"""A child process that one test service owns (a broker, an S3 emulator, a TLS terminator, a camera).

Each such service is a ``ProcessService`` holding one ``OwnedProcess``, and adds only what is its own
(the command, how to tell it is ready, signals it offers). The owner's promises, kept here once: the process is reaped on ``stop`` (SIGTERM, then SIGKILL
after a grace period) and also when the owner is dropped without ``stop`` or the interpreter exits; its
output goes to a log (the caller's file, appended to, or a temporary one deleted on ``stop``); and a
failed start quotes the log's tail and keeps the temporary log, so the path in the error can be read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

FINALIZE_GRACE_S = 2.0  # SIGTERM grace when an owner is dropped or the interpreter exits


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:port (a cheap, quiet first check)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _reap(proc: subprocess.Popen, grace_s: float, temp_log: Path | None) -> None:
    """Close the pipes held to the child, SIGTERM it, SIGKILL it if it outlives ``grace_s``, reap it.

    Closing its stdin first lets a child that watches stdin for EOF (the RTSP camera) exit by itself."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    if temp_log is not None:
        temp_log.unlink(missing_ok=True)


class OwnedProcess:
    """At most one running child at a time, with its log; ``name`` prefixes temporary logs and
    names the log in errors. With ``log_path`` output is appended there and the file is kept."""

    def __init__(self, name: str, log_path: Path | None = None):
        self.name = name
        self.log_path = Path(log_path) if log_path else None
        self._temp_log: Path | None = None  # this run's temporary log, deleted on stop
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's pid until ``stop`` (also after it exited or was killed)."""
        return self._proc.pid if self._proc else None

    @property
    def log(self) -> Path | None:
        """This run's log file: the caller's ``log_path`` or the temporary one."""
        return self.log_path or self._temp_log

    def start(self, cmd: list[str], env: dict[str, str] | None = None, stdin: int = subprocess.DEVNULL,
              stdout: int | None = None) -> subprocess.Popen:
        """Spawn ``cmd`` (stopping any previous child), its stderr into the log; stdout too unless
        ``stdout`` is given (a pipe the owner reads). ``env`` is added to this process's environment."""
        self.stop()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(self.log_path, "ab")
        else:
            fd, name = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
            self._temp_log = Path(name)
            log_file = os.fdopen(fd, "ab")
        with log_file:
            self._proc = subprocess.Popen(
                cmd, stdin=stdin, stdout=log_file if stdout is None else stdout, stderr=log_file,
                env={**os.environ, **env} if env else None,
            )
        self._finalizer = weakref.finalize(self, _reap, self._proc, FINALIZE_GRACE_S, self._temp_log)
        return self._proc

    def wait_until(self, ready: Callable[[], bool], timeout: float, poll_s: float = 0.05) -> bool:
        """Poll ``ready()`` until it holds while the child runs (True), or the child exits or
        ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            if ready() and self.running:
                return True
            time.sleep(poll_s)
        return False

    def signal(self, sig: int) -> None:
        """Send ``sig`` (SIGSTOP, SIGCONT) if the child runs."""
        if self.running:
            self._proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, as a crash would; the pid and the log stay until ``stop`` or the next ``start``."""
        if self.running:
            self._proc.kill()
            self._proc.wait()

    def stop(self, grace_s: float = FINALIZE_GRACE_S) -> None:
        """SIGTERM the child, SIGKILL it if it outlives ``grace_s``; delete a temporary log. Idempotent."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _reap(self._proc, grace_s, None)
            self._proc = None
        if self._temp_log is not None:
            self._temp_log.unlink(missing_ok=True)
            self._temp_log = None

    def failed(self, summary: str, limit: int = 4000) -> RuntimeError:
        """Stop the child and return an error of ``summary`` and the log's tail (the last ``limit``
        bytes); a temporary log that is not empty is kept for the reader, its path named in the error."""
        self._temp_log, kept = None, self._temp_log  # so stop() leaves it
        self.stop()
        path = self.log_path or kept
        try:
            text = path.read_bytes()[-limit:].decode("utf-8", "replace") if path else ""
        except OSError:
            text = ""
        if not text and kept is not None:
            kept.unlink(missing_ok=True)  # nothing to read there
        tail = f"{self.name} log ({path}):\n{text}" if text else f"{self.name} log is empty"
        return RuntimeError(f"{summary}\n{tail}")


class ProcessService:
    """The part every service made of one owned process shares: ``running``, ``pid``, ``stop``, and
    use as a context manager (``start`` on entry, ``stop`` on exit). A subclass defines ``start``."""

    stop_grace_s = FINALIZE_GRACE_S

    def __init__(self, process: OwnedProcess):
        self._process = process

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self) -> ProcessService:
        raise NotImplementedError

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM the process, SIGKILL it if it outlives ``grace`` seconds (default
        ``stop_grace_s``); idempotent."""
        self._process.stop(self.stop_grace_s if grace is None else grace)

    def __enter__(self) -> ProcessService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
