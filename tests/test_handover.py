"""Partitions and cameras leaving a Kafka frame member: the rebalance hand-over, idle cameras, and
the window queue giving up a revoked camera's windows (plain Python; the end-to-end runs with two
members are in test_pipeline_faults.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from xclip_stream.pipeline.idle import IdleCameras
from xclip_stream.pipeline.offsets import HandOver, OffsetTracker
from xclip_stream.pipeline.stream import PendingWindows
from xclip_stream.schemas.windows import FrameWindow


def tracker_with(outstanding: dict[str, list[int]], done: dict[str, int]) -> OffsetTracker:
    """Partitions with offsets 0..done-1 handled, and ``outstanding`` offsets still held."""
    tracker = OffsetTracker()
    for tp, n in done.items():
        for offset in range(n):
            tracker.add(tp, offset)
            tracker.release(tp, offset)
    for tp, offsets in outstanding.items():
        for offset in offsets:
            tracker.add(tp, offset)
    return tracker


def test_revoke_commits_what_is_done_forgets_and_drops():
    tracker = tracker_with({"p0": [5, 6], "p1": [3]}, {"p0": 5, "p1": 3})
    commits, drops = [], []
    handover = HandOver(tracker, commits.append, drops.append)
    handover.on_partitions_revoked({"p0"})  # on the consumer's IO thread: noted only
    assert commits == [] and tracker.outstanding() == 3
    assert handover.settle() == {"p0"} and handover.settle() == set()
    assert commits == [{"p0": 5}]  # only the revoked partition, up to its first unfinished record
    assert drops == [{"p0"}] and handover.revocations == 1
    assert tracker.release("p0", 5) is False  # a late acknowledgement of a revoked window: no effect
    assert tracker.outstanding() == 1 and tracker.committable() == {"p1": 3}
    tracker.add("p0", 5)  # assigned back and re-read from the commit point: no "already outstanding"


def test_a_failed_commit_on_revoke_is_logged_not_raised(caplog):
    tracker = tracker_with({"p0": [2]}, {"p0": 2})

    def refused(_):
        raise RuntimeError("the group rebalanced")

    with caplog.at_level(logging.WARNING, "xclip_stream.pipeline.offsets"):
        handover = HandOver(tracker, refused, lambda _: None, "m#0")
        handover.on_partitions_revoked({"p0"})
        handover.settle()
    assert "m#0: commit of revoked partitions failed (RuntimeError" in caplog.text
    assert tracker.outstanding() == 0  # forgotten all the same: the new owner re-reads


def test_empty_revocation_does_nothing():
    commits = []
    handover = HandOver(OffsetTracker(), commits.append, commits.append)
    handover.on_partitions_revoked(set())
    assert handover.settle() == set()
    assert commits == [] and handover.revocations == 0


def test_idle_counts_only_waiting_and_reports_a_camera_once():
    idle = IdleCameras(2.0)
    idle.seen("a")
    idle.seen("b")
    idle.waited(1.5)
    idle.seen("b")
    assert idle.due() == []
    idle.waited(0.6)
    assert idle.due() == ["a"] and idle.due() == []  # once, until it sends again
    idle.waited(5.0)
    assert idle.due() == ["b"]
    idle.seen("a")
    idle.forget("a")
    idle.waited(5.0)
    assert idle.due() == []
    with pytest.raises(ValueError):
        IdleCameras(0)


def window(camera: str, index: int) -> FrameWindow:
    return FrameWindow(camera_id=camera, index=index, frames=np.zeros((1, 3, 2, 2), np.uint8),
                       frame_times=(float(index),), frame_seqs=(index,))


def test_pending_windows_give_up_a_cameras_windows():
    pending = PendingWindows(8, drop_oldest=False)
    for i, camera in enumerate(["a", "b", "a", "c"]):
        pending.put(window(camera, i))
    assert pending.holds("a") and not pending.holds("z")
    gone = pending.discard(lambda w: w.camera_id == "a")
    assert [w.index for w in gone] == [0, 2] and not pending.holds("a")
    assert [pending.get(0).camera_id for _ in range(2)] == ["b", "c"]


def test_partitions_given_straight_back_are_read_again_from_where_the_member_stopped():
    """kafka-python 3 keeps its read position on partitions an eager rebalance revokes and gives
    straight back: past the frames the hand-over dropped. The member seeks them back to its first
    unfinished record (at once, or when the assignment arrives in a later poll)."""
    tracker = tracker_with({"p0": [5, 6], "p1": [3]}, {"p0": 5, "p1": 3, "p2": 9})
    assigned: set = {"p0"}
    seeks: list[dict] = []

    def rewind(resume: dict) -> set:
        held = set(resume) & assigned
        seeks.append({tp: resume[tp] for tp in held})
        return held

    handover = HandOver(tracker, lambda _: None, lambda _: None, rewind=rewind)
    handover.on_partitions_revoked({"p0", "p1", "p2", "p3"})  # p3: never read here, nothing to rewind
    handover.settle()
    assert seeks == [{"p0": 5}] and handover.rewound == {"p0"}  # p0 came back at once
    assigned.add("p2")  # p2 came back in a later poll; p1 went to another member
    handover.settle()
    assert seeks[-1] == {"p2": 9} and handover.rewound == {"p2"}
    handover.settle()
    assert handover.rewound == set()  # p1 is still pending, but not ours: no seek
    handover.on_partitions_revoked({"p0"})  # the next rebalance replaces what was pending
    assigned.add("p1")
    handover.settle()
    assert handover.rewound == set() and seeks[-1] == {}
