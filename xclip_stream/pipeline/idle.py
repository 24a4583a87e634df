"""Which cameras of a shared frame topic went quiet.

A camera's window ring holds its last frames (and, on a Kafka source, their offsets) until the
next frames push them out; a camera that stops sending would hold them, and pin its partition's
commit point, forever. Idle time here counts only the time the consumer spent waiting for records
that did not come, not time it spent blocked on a full window queue or busy with a backlog, so a
slow model never makes a live camera look idle.
"""

from __future__ import annotations


class IdleCameras:
    """Per camera, seconds of waiting since its last frame; ``due()`` reports each quiet camera once."""

    def __init__(self, timeout_s: float):
        if timeout_s <= 0:
            raise ValueError(f"idle timeout must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self._idle: dict[str, float] = {}  # camera -> seconds waited since its last frame

    def seen(self, camera: str) -> None:
        self._idle[camera] = 0.0

    def waited(self, seconds: float) -> None:
        """The consumer waited ``seconds`` for records (a poll call's duration)."""
        for camera in self._idle:
            self._idle[camera] += seconds

    def due(self) -> list[str]:
        """Cameras idle for at least the timeout; each is reported once, until it is seen again."""
        quiet = [camera for camera, idle in self._idle.items() if idle >= self.timeout_s]
        for camera in quiet:
            del self._idle[camera]
        return quiet

    def forget(self, camera: str) -> None:
        self._idle.pop(camera, None)
