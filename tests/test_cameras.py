"""The bounded camera registry of a frames topic: allow-list, cap, idle eviction, busy cameras kept."""

from __future__ import annotations

import pytest

from xclip_stream.pipeline.cameras import CameraRegistry
from xclip_stream.pipeline.kafka_io import BadMessage


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def registry(clock, max_cameras=2, idle_s=10.0, allowed=None, busy=()):
    closed: list[tuple[str, str]] = []
    reg = CameraRegistry(max_cameras, idle_s, allowed, create=lambda c: f"state-{c}",
                         close=lambda c, s: closed.append((c, s)), busy=lambda c: c in busy, clock=clock)
    return reg, closed


def test_state_is_created_once_and_reused():
    reg, closed = registry(Clock())
    assert reg.get("a") == "state-a" and reg.get("a") == "state-a"
    assert reg.ids() == ["a"] and not closed


def test_a_camera_over_the_cap_is_refused_while_none_is_idle():
    clock = Clock()
    reg, closed = registry(clock)
    reg.get("a"), reg.get("b")
    clock.now += 9.9
    with pytest.raises(BadMessage) as info:
        reg.get("c")
    assert info.value.reason == "camera_limit" and "max_cameras" in str(info.value)
    assert reg.refused == 1 and reg.ids() == ["a", "b"] and not closed


def test_the_least_recently_seen_idle_camera_makes_room():
    clock = Clock()
    reg, closed = registry(clock)
    reg.get("a"), reg.get("b")
    clock.now += 5
    reg.get("a")  # a is fresh again: b is the older one
    clock.now += 6
    assert reg.get("c") == "state-c"
    assert closed == [("b", "state-b")] and reg.ids() == ["a", "c"] and reg.evicted == 1


def test_sweep_evicts_every_idle_camera_but_not_busy_ones():
    clock = Clock()
    reg, closed = registry(clock, max_cameras=5, busy={"b"})
    for camera in "abc":
        reg.get(camera)
    clock.now += 3
    reg.get("c")
    clock.now += 8  # a and b idle 11 s, c 8 s
    assert reg.sweep() == ["a"]  # b still has windows in flight
    assert [c for c, _ in closed] == ["a"] and reg.ids() == ["b", "c"]


def test_an_evicted_camera_comes_back_with_fresh_state():
    clock = Clock()
    created = []
    reg = CameraRegistry(1, 1.0, create=lambda c: created.append(c) or len(created), close=lambda c, s: None,
                         clock=clock)
    assert reg.get("a") == 1
    clock.now += 2
    assert reg.sweep() == ["a"] and len(reg) == 0
    assert reg.get("a") == 2


def test_allow_list_patterns_refuse_other_cameras():
    reg, _ = registry(Clock(), allowed=["lobby-*", "gate"])
    assert reg.get("lobby-3") and reg.get("gate")
    for camera in ("gate2", "Lobby-1", "x"):
        with pytest.raises(BadMessage) as info:
            reg.get(camera)
        assert info.value.reason == "camera_not_allowed"
    assert reg.refused == 3


def test_invalid_bounds_are_refused():
    with pytest.raises(ValueError, match="max_cameras"):
        CameraRegistry(0, 1.0, create=str, close=lambda c, s: None)
