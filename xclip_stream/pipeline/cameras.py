"""Bounded per-camera state for a topic that carries many cameras.

On a frames topic the camera ids come from the messages, so whoever can write to the topic decides
how many window rings and event builders a consumer holds. ``CameraRegistry`` bounds that: an
optional allow-list of id patterns, a cap on cameras held at once, and eviction of cameras that
sent nothing for ``idle_s`` (least recently seen first). A camera that cannot be admitted is a
:class:`BadMessage` (``camera_not_allowed``, ``camera_limit``), so its records are dead-lettered like
any other refused record. Evicting hands the camera's state to ``close`` (which ends its incidents
and releases its buffered frames); a camera that is ``busy`` (windows still being scored) is not
evicted, so nothing it owns is released twice or left behind.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Generic, TypeVar

from .frame_messages import BadMessage

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    state: T
    last_seen: float  # clock() seconds


class CameraRegistry(Generic[T]):
    """Camera id -> state, created on first sight, at most ``max_cameras`` at once (one thread)."""

    def __init__(
        self,
        max_cameras: int,
        idle_s: float,
        allowed: Sequence[str] | None = None,
        *,
        create: Callable[[str], T],
        close: Callable[[str, T], None],
        busy: Callable[[str], bool] = lambda _camera: False,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_cameras < 1 or idle_s <= 0:
            raise ValueError(f"max_cameras must be >= 1 and idle_s > 0, got {max_cameras} and {idle_s}")
        self.max_cameras = max_cameras
        self.idle_s = idle_s
        self.allowed = tuple(allowed) if allowed is not None else None  # shell patterns (fnmatch)
        self._create, self._close, self._busy, self._clock = create, close, busy, clock
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()  # least recently seen first
        self.evicted = 0
        self.refused = 0

    def get(self, camera_id: str) -> T:
        """The camera's state, created if new; raises BadMessage when the camera may not be held."""
        now = self._clock()
        entry = self._entries.get(camera_id)
        if entry is not None:
            entry.last_seen = now
            self._entries.move_to_end(camera_id)
            return entry.state
        if self.allowed is not None and not any(fnmatchcase(camera_id, p) for p in self.allowed):
            self.refused += 1
            raise BadMessage("camera_not_allowed", f"camera {camera_id!r} is not in allowed_cameras")
        if len(self._entries) >= self.max_cameras and not self._evict_idle(now, limit=1):
            self.refused += 1
            raise BadMessage(
                "camera_limit",
                f"camera {camera_id!r} refused: {self.max_cameras} cameras are held (max_cameras) and "
                f"none has been idle for {self.idle_s:g} s",
            )
        state = self._create(camera_id)
        self._entries[camera_id] = _Entry(state, now)
        return state

    def sweep(self) -> list[str]:
        """Evict every camera idle for ``idle_s``; returns their ids."""
        return self._evict_idle(self._clock())

    def close_all(self) -> list[str]:
        """Evict every camera that is not busy (shutdown)."""
        return self._evict_idle(float("inf"))

    def peek(self, camera_id: str) -> T | None:
        """The camera's state if held, without counting it as seen."""
        entry = self._entries.get(camera_id)
        return entry.state if entry is not None else None

    def remove(self, camera_id: str) -> T | None:
        """Forget a camera without closing it (its partition went to another member, who owns it now)."""
        entry = self._entries.pop(camera_id, None)
        return entry.state if entry is not None else None

    def ids(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, camera_id: str) -> bool:
        return camera_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _evict_idle(self, now: float, limit: int | None = None) -> list[str]:
        evicted: list[str] = []
        for camera_id, entry in list(self._entries.items()):
            if now - entry.last_seen < self.idle_s or (limit is not None and len(evicted) >= limit):
                break  # ordered by last_seen: the rest are more recent
            if self._busy(camera_id):
                continue
            del self._entries[camera_id]
            self.evicted += 1
            evicted.append(camera_id)
            self._close(camera_id, entry.state)
        return evicted
