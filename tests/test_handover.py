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
    straight back: past the frames the hand-over dropped. When the assignment that follows the
    revocation arrives (at once or in a later poll), the member seeks the partitions it got back to
    its first unfinished record; the revoked ones that went elsewhere are not touched, even though
    ``consumer.assignment()`` still lists them until then."""
    tracker = tracker_with({"p0": [5, 6], "p1": [3]}, {"p0": 5, "p1": 3, "p2": 9})
    seeks: list[dict] = []
    handover = HandOver(tracker, lambda _: None, lambda _: None, rewind=seeks.append)
    handover.on_partitions_revoked({"p0", "p1", "p2", "p3"})  # p3: never read here, nothing to rewind
    handover.settle()
    assert seeks == [] and handover.rewound == set()  # the outcome is not known yet
    handover.on_partitions_assigned({"p0", "p2", "p3"})  # p1 went to another member
    handover.settle()
    assert seeks == [{"p0": 5, "p2": 9}] and handover.rewound == {"p0", "p2"}
    handover.settle()
    assert handover.rewound == set()  # named for the poll of the assignment only
    handover.on_partitions_assigned({"p1"})  # a later assignment with no revocation: nothing to rewind
    handover.settle()
    assert len(seeks) == 1 and handover.rewound == set()


def test_a_partition_given_back_with_nothing_to_read_gets_its_commit_point_although_the_revocation_could_not_commit():
    """The CI failure behind this test: a member had handled every record of a partition when an
    eager rebalance revoked it; the revocation's commit was refused (the member was rebalancing
    already), the partition came straight back with nothing left to read, and its commit point
    stayed at the last periodic commit for good: lag that never fell, a group never scaled down."""
    tracker = tracker_with({}, {"p1": 32})
    tracker.mark_committed({"p1": 4})  # the last periodic commit

    def refused(_):
        raise RuntimeError("RebalanceInProgressError")

    handover = HandOver(tracker, refused, lambda _: None, rewind=lambda _: None)
    handover.on_partitions_revoked({"p1"})
    handover.on_partitions_assigned({"p1"})  # revoked and given back within one poll
    handover.settle()
    assert tracker.committable() == {"p1": 32}  # committed at the next interval
    tracker.add("p1", 32)  # the next record: the commit point stays at it until it is done
    assert tracker.committable() == {"p1": 32}


def test_lost_partitions_are_dropped_without_a_commit_and_not_rewound(caplog):
    """A member whose session expired finds the group went on without it: another member may have
    read and committed its partitions since, so nothing of them is committed or rewound here."""
    tracker = tracker_with({"p0": [5]}, {"p0": 5})
    commits, drops, seeks = [], [], []
    handover = HandOver(tracker, commits.append, drops.append, "m#0", rewind=seeks.append)
    with caplog.at_level(logging.WARNING, "xclip_stream.pipeline.offsets"):
        handover.on_partitions_lost({"p0"})
    handover.on_partitions_assigned({"p0"})
    assert handover.settle() == {"p0"}
    assert "m#0: partitions lost" in caplog.text
    assert commits == [] and seeks == [] and drops == [{"p0"}] and tracker.outstanding() == 0
    assert tracker.committable() == {}  # read again from the group's commit point


def test_a_release_from_before_a_hand_over_does_not_touch_the_offset_read_again():
    """A window scored before its partition was handed over is acknowledged after the member read
    the same records again: its release must not count against the new reads, or the commit would
    pass frames whose windows are not published yet."""
    tracker = OffsetTracker()
    old = tracker.add("p0", 7)
    tracker.hold("p0", 7)  # a window in flight
    tracker.forget({"p0"})
    new = tracker.add("p0", 7)  # read again after the partition came back
    assert new != old
    assert tracker.release("p0", 7, old) is False  # the old window's acknowledgement
    assert tracker.outstanding() == 1 and tracker.committable() == {"p0": 7}  # still held
    assert tracker.release("p0", 7, new) is True and tracker.committable() == {"p0": 8}
