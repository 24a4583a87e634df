"""The owned child process behind the test services (services/process.py), with real child processes."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from xclip_stream.services.process import OwnedProcess, ProcessService, free_port, port_open


def _gone(pid: int) -> bool:
    """True once ``pid`` is reaped (not a zombie waiting for us)."""
    return not Path(f"/proc/{pid}").exists()


def test_dropped_owner_kills_and_reaps_its_child() -> None:
    owned = OwnedProcess("drop")
    pid = owned.start(["sleep", "60"]).pid
    log = owned.log
    assert owned.running and log is not None and log.exists()
    del owned
    gc.collect()
    assert _gone(pid) and not log.exists()


def test_failed_start_quotes_the_log_and_keeps_it() -> None:
    owned = OwnedProcess("boom")
    owned.start(["sh", "-c", "echo 'no such bucket' >&2; exit 3"])
    assert not owned.wait_until(lambda: False, timeout=10)  # returns when the child exits
    error = owned.failed("boom did not start")
    log = owned_log_in(error)
    try:
        assert str(error).startswith("boom did not start\nboom log (") and "no such bucket" in str(error)
        assert log.read_text() == "no such bucket\n" and owned.pid is None
    finally:
        log.unlink()


def owned_log_in(error: RuntimeError) -> Path:
    return Path(str(error).split("log (", 1)[1].split("):", 1)[0])


def test_kill_keeps_pid_until_stop_and_the_callers_log_survives(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    owned = OwnedProcess("kept", log_path=log)
    for run in range(2):  # a second start appends to the same file
        pid = owned.start(["sh", "-c", f"echo run {run}; exec sleep 60"]).pid
        line = f"run {run}"
        assert owned.wait_until(lambda line=line: log.exists() and line in log.read_text(), timeout=10)
        owned.kill()
        assert not owned.running and owned.pid == pid and _gone(pid)
    owned.stop()
    assert owned.pid is None and log.read_text() == "run 0\nrun 1\n"


class _Listener(ProcessService):
    """A ProcessService in miniature: a child that listens on a port (or, with ``fail``, dies first)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(OwnedProcess("listener"))
        self.port, self.fail = free_port(), fail

    def start(self) -> _Listener:
        script = (f"import socket, sys, time; sys.exit('port taken') if {self.fail} else None; "
                  f"s = socket.socket(); s.bind(('127.0.0.1', {self.port})); s.listen(); time.sleep(60)")
        self._process.start([sys.executable, "-c", script])
        if not self._process.wait_until(lambda: port_open(self.port), timeout=10):
            raise self._process.failed("listener did not start")
        return self


def test_process_service_starts_waits_for_the_port_and_stops_on_exit() -> None:
    with _Listener() as service:
        pid = service.pid
        assert service.running and port_open(service.port)
    assert not service.running and service.pid is None and _gone(pid)
    with pytest.raises(RuntimeError, match="listener did not start") as failed, _Listener(fail=True):
        pass
    log = owned_log_in(failed.value)
    try:
        assert "port taken" in str(failed.value) and log.exists()
    finally:
        log.unlink()
