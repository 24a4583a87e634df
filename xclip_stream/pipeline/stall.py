"""Telling a stuck model replica from an idle one, for its health check.

A forward pass that never returns (a wedged device, a deadlocked kernel) leaves the replica's
event loop answering health checks while every window sent to it waits forever. ``StallWatch``
counts the requests a replica holds and the batches it completes: with work waiting and no batch
completed for ``stall_timeout_s``, the replica is stuck, its health check fails, and Serve
replaces it (callers retry the windows it held). An idle replica is never stuck.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class StallWatch:
    """Not thread-safe: called from the replica's event loop only."""

    def __init__(self, stall_timeout_s: float, clock: Callable[[], float] = time.monotonic):
        if stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be positive, got {stall_timeout_s}")
        self.stall_timeout_s = stall_timeout_s
        self.clock = clock
        self.waiting = 0  # requests received and not yet answered (queued or in a batch)
        self.batches = 0
        self._since = clock()  # the latest completed batch, or when work arrived at an idle replica

    def request_started(self) -> None:
        if self.waiting == 0:
            self._since = self.clock()  # idle time is not stall time
        self.waiting += 1

    def request_finished(self) -> None:
        self.waiting -= 1

    def batch_done(self) -> None:
        """A batch completed, scored or failed: the replica is moving."""
        self.batches += 1
        self._since = self.clock()

    def problem(self) -> str | None:
        """Why the replica is stuck, or None."""
        quiet = self.clock() - self._since
        if self.waiting and quiet > self.stall_timeout_s:
            return (f"stuck: {self.waiting} request(s) waiting and no batch completed for {quiet:.0f} s "
                    f"(serve.stall_timeout_s {self.stall_timeout_s:g})")
        return None
