"""A progress bar on stderr: redrawn in place on a terminal, one line per 5% in a log."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, start: int = 0, enabled: bool = True, stream: TextIO | None = None):
        self.total, self.start, self.enabled = total, start, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_logged = start
        self.open_line = False

    def update(self, step: int, info: str) -> None:
        if not self.enabled:
            return
        done = step - self.start
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * step / max(1, self.total))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} {info} "
                f"{rate:.2f} it/s eta {int(eta // 60)}:{int(eta % 60):02d}")
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            self.open_line = True
        elif step == self.total or step - self.last_logged >= max(1, self.total // 20):
            self.stream.write(line + "\n")
            self.last_logged = step
        self.stream.flush()

    def write(self, message: str) -> None:
        """A line that stays (an evaluation), printed above the bar."""
        if not self.enabled:
            return
        if self.open_line:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False
