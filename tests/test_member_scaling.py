"""Frames members that follow consumer lag: the policy (pure), the follower around it (a fake
measurement at the broker boundary), the configuration, and the supervisor's count per topic."""

from __future__ import annotations

import logging
import time

import pytest
import ray
from kafka.structs import OffsetAndMetadata, TopicPartition

from tests.frames_topic import cameras_on_distinct_partitions, committed, produce
from tests.pipeline_harness import PipelineThread, TopicReader, by_camera, pipeline_config
from xclip_stream.actors.output import SinkSpec
from xclip_stream.actors.supervisor import Supervisor
from xclip_stream.pipeline.consumer_lag import GroupLag, LagProbe
from xclip_stream.pipeline.kafka_clients import create_topics
from xclip_stream.pipeline.member_scaling import LagFollower, LagSample, MemberPolicy
from xclip_stream.pipeline.offsets import make_consumer
from xclip_stream.pipeline.scoring import ModelInfo
from xclip_stream.schemas.config import ConfigError, KafkaFrames, MemberScaling, parse_config
from xclip_stream.services.tansu import free_port

SCALE = MemberScaling(max_members=3, lag_per_member=100, up_after_s=10, down_after_s=30, interval_s=5)


def run(policy: MemberPolicy, lags: list[tuple[float, int]], members: int, partitions: int = 4) -> list[int]:
    """Feed (time, lag) samples, applying each decision as the supervisor would; the counts after each."""
    counts = []
    for t, lag in lags:
        members = policy.decide(LagSample(t, lag, partitions, members))
        counts.append(members)
    return counts


def test_scales_up_one_step_after_the_lag_stays_high():
    policy = MemberPolicy(SCALE, least=1)
    # above 100 x 1 from t=0: up at t=10; above 100 x 2 again from t=15 (the wait restarted): up at t=25
    counts = run(policy, [(0, 500), (5, 500), (10, 500), (15, 500), (20, 500), (25, 500), (30, 500)], members=1)
    assert counts == [1, 1, 2, 2, 2, 3, 3]


def test_a_dip_restarts_the_wait_up():
    policy = MemberPolicy(SCALE, least=1)
    counts = run(policy, [(0, 500), (5, 500), (8, 50), (10, 500), (15, 500), (20, 500)], members=1)
    assert counts == [1, 1, 1, 1, 1, 2]


def test_never_above_max_members_nor_the_partition_count():
    policy = MemberPolicy(SCALE, least=1)
    assert run(policy, [(t, 10_000) for t in range(0, 200, 5)], members=1)[-1] == 3  # max_members
    policy = MemberPolicy(SCALE, least=1)
    assert run(policy, [(t, 10_000) for t in range(0, 200, 5)], members=1, partitions=2)[-1] == 2
    # a count above the partitions (fewer than max_members) comes down at once, never below least
    assert MemberPolicy(SCALE, least=1).decide(LagSample(0, 0, 2, 3)) == 2
    assert MemberPolicy(MemberScaling(max_members=4), least=2).decide(LagSample(0, 0, 1, 3)) == 2


def test_scales_down_one_step_after_the_lag_stays_low_never_below_members():
    policy = MemberPolicy(SCALE, least=1)
    lows = [(t, 10) for t in range(0, 100, 5)]
    counts = run(policy, lows, members=3)
    assert counts[counts.index(2) - 1] == 3 and counts[-1] == 1
    # at t=30, then 30 s after the next sample (t=35): the wait starts again after each step
    assert counts.index(2) == 6 and counts.index(1) == 13
    assert run(MemberPolicy(SCALE, least=2), lows, members=2) == [2] * len(lows)


def test_hysteresis_between_the_thresholds_holds_the_count():
    """Lag between lag_per_member (down) and lag_per_member x members (up) changes nothing, however long."""
    policy = MemberPolicy(SCALE, least=1)
    assert run(policy, [(t, 150) for t in range(0, 600, 5)], members=2) == [2] * 120
    # alternating high and low samples never wait long enough either way
    policy = MemberPolicy(SCALE, least=1)
    assert set(run(policy, [(t, 500 if t % 10 else 0) for t in range(0, 300, 5)], members=2)) == {2}


class FakeLag:
    """The broker boundary: a lag per call, or an error."""

    def __init__(self, values):
        self.values = list(values)
        self.calls: list[tuple[str, str]] = []

    def __call__(self, topic: str, group: str) -> GroupLag:
        self.calls.append((topic, group))
        value = self.values.pop(0)
        if isinstance(value, Exception):
            raise value
        return GroupLag(4, value)


def frames(**scale) -> list[KafkaFrames]:
    settings = {"max_members": 3, "lag_per_member": 100, "up_after_s": 2, "down_after_s": 4, "interval_s": 1}
    return [KafkaFrames(topic="fixed", members=2),
            KafkaFrames(topic="t", group_id="g", members=1, scale=MemberScaling(**{**settings, **scale}))]


def test_follower_measures_when_due_and_reports_changes():
    lag = FakeLag([500, 500, 500, 0])
    follower = LagFollower(frames(), lag)
    assert (follower.members("fixed"), follower.members("t")) == (2, 1)
    assert follower.poll(0.0) == [] and follower.poll(0.5) == []  # not due again before interval_s
    assert follower.poll(1.0) == []
    [change] = follower.poll(2.0)
    assert (change.topic, change.before, change.after, change.lag) == ("t", 1, 2, 500)
    assert follower.members("t") == 2 and lag.calls == [("t", "g")] * 3  # the fixed topic is never measured
    follower.poll(3.0)
    health = follower.health(3.5)["t"]
    assert health == {"target": 2, "least": 1, "most": 3, "lag": 0, "partitions": 4, "measured_s_ago": 0.5,
                      "changes": 1, "lag_errors": 0, "last_lag_error": ""}


def test_follower_keeps_the_count_while_measuring_fails_and_backs_off(caplog):
    lag = FakeLag([500, 500, 500, ConnectionError("broker down"), ConnectionError("broker down"), 500])
    follower = LagFollower(frames(), lag)
    for t in (0.0, 1.0, 2.0):
        follower.poll(t)
    assert follower.members("t") == 2
    with caplog.at_level(logging.WARNING, "xclip_stream.pipeline.member_scaling"):
        assert follower.poll(3.0) == []  # next try after 2 s
        assert follower.poll(4.0) == [] and len(lag.calls) == 4
        assert follower.poll(5.0) == []  # next try after 4 s
        assert follower.poll(8.0) == [] and len(lag.calls) == 5
        follower.poll(9.0)
    assert len(lag.calls) == 6 and follower.members("t") == 2
    assert "cannot measure the lag of group g (ConnectionError: broker down); members stay 2" in caplog.text
    assert follower.health(9.0)["t"]["lag_errors"] == 2


def test_reconfiguration_keeps_or_restarts_the_count():
    follower = LagFollower(frames(), FakeLag([500] * 3))
    for t in (0.0, 1.0, 2.0):
        follower.poll(t)
    assert follower.members("t") == 2
    follower.configure(frames())  # unchanged settings (another topic's edit): kept
    assert follower.members("t") == 2
    follower.configure(frames(lag_per_member=50))  # changed settings: from members again
    assert follower.members("t") == 1
    follower.configure([KafkaFrames(topic="t", group_id="g", members=2)])  # no scale: the fixed count
    assert follower.members("t") == 2 and follower.health(0.0) == {}


def test_configuration_is_validated_with_its_path():
    base = {"model": {"path": "m"}, "labels": {"labels": ["a"]}}

    def kafka(frame: dict) -> dict:
        return {**base, "kafka": {"bootstrap": "127.0.0.1:9092", "frames": [frame]}}

    with pytest.raises(ConfigError, match=r"kafka\.frames\.0: .*scale\.max_members \(2\) is below members \(3\)"):
        parse_config(kafka({"topic": "t", "members": 3, "scale": {"max_members": 2}}))
    with pytest.raises(ConfigError, match=r"kafka\.frames\.0\.scale\.lag_per_members: Extra inputs"):
        parse_config(kafka({"topic": "t", "scale": {"max_members": 2, "lag_per_members": 5}}))
    with pytest.raises(ConfigError, match=r"kafka\.frames\.0\.scale\.up_after_s: Input should be greater than 0"):
        parse_config(kafka({"topic": "t", "scale": {"max_members": 2, "up_after_s": 0}}))
    config = parse_config(kafka({"topic": "t", "scale": {"max_members": 4}}))
    assert config.kafka.frames[0].scale == MemberScaling(max_members=4, lag_per_member=1000, up_after_s=30,
                                                         down_after_s=300, interval_s=10)


def test_supervisor_runs_the_followed_count_and_keeps_the_count_out_of_the_spec():
    """The count of members is not part of a member's spec: scaling adds or removes members and
    leaves the running ones alone (a changed spec would restart them)."""

    data = {"model": {"path": "m"}, "labels": {"labels": ["a"]},
            "kafka": {"bootstrap": "127.0.0.1:9092",
                      "frames": [{"topic": "t", "members": 1, "scale": {"max_members": 3, "up_after_s": 1}}]}}
    config = parse_config(data)
    sup = Supervisor(config, ModelInfo("m", 4, {}), SinkSpec("127.0.0.1:9092"))
    sup.lag.measure = FakeLag([5000, 5000])
    assert list(sup._desired(config)) == ["frames:t#0"]
    sup.lag.poll(0.0)
    assert sup.lag.poll(10.0)[0].after == 2
    desired = sup._desired(config)
    assert list(desired) == ["frames:t#0", "frames:t#1"]
    assert desired["frames:t#0"]["frames"] == desired["frames:t#1"]["frames"]
    assert "members" not in desired["frames:t#0"]["frames"] and "scale" not in desired["frames:t#0"]["frames"]


def test_lag_probe_measures_a_group_from_outside_it(kafka_bootstrap, kafka_topic):
    """The real broker: uncommitted records count, committed ones do not, the probe never becomes a
    member (a consumer of the group then gets every partition at once), and errors are raised."""

    topic = f"{kafka_topic}-frames"
    create_topics(kafka_bootstrap, {topic: 3})
    produce(kafka_bootstrap, topic, cameras_on_distinct_partitions(3, partitions=3), range(10), flush_each=True)
    probe = LagProbe(kafka_bootstrap)
    try:
        assert probe.measure(topic, kafka_topic) == GroupLag(3, 30)
        consumer = make_consumer(kafka_bootstrap, topic, kafka_topic, session_timeout_ms=2000)
        try:
            consumer.poll(timeout_ms=5000)  # joins: a group whose only member is this consumer
            assert len(consumer.assignment()) == 3
            consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, "", -1)})
            assert probe.measure(topic, kafka_topic) == GroupLag(3, 26)
            assert len(consumer.assignment()) == 3  # no rebalance: the probe did not join
        finally:
            consumer.close()
        with pytest.raises(LookupError, match="has no partitions"):
            probe.measure(f"{topic}-absent", kafka_topic)
    finally:
        probe.close()
    down = LagProbe(f"127.0.0.1:{free_port()}", timeout_s=1.0)
    with pytest.raises(Exception, match="bootstrap"):  # kafka-python's KafkaTimeoutError, after 1 s
        down.measure(topic, kafka_topic)
    down.close()


# -- end to end: real Ray, Serve and Tansu --------------------------------------------------------

def members_health(topic: str, most: int) -> dict:
    """What each running member of the topic reports about its offsets (for a failure's message)."""
    keys = ("records", "windows", "windows_scored", "pending", "commits", "commit_failures", "revocations",
            "outstanding", "idle_released", "last_error", "partitions", "committed", "poll_s_ago")
    out = {}
    for member in range(most):
        try:
            health = ray.get(ray.get_actor(f"xclip:frames:{topic}#{member}:0").health.remote(), timeout=5)
        except (ValueError, ray.exceptions.RayError) as e:
            out[member] = type(e).__name__
            continue
        out[member] = {k: health.get(k) for k in keys}
    return out


def test_members_follow_the_lag_up_and_back_without_losing_a_window(ray_session, slow_checkpoint, kafka_bootstrap,
                                                                    kafka_topic, caplog):
    """A backlog the model takes seconds to score (``slow_checkpoint``), then, for as long as the
    member added for the lag has read none, more frames whenever fewer than 48 records are left
    uncommitted: however fast the first member gets through the backlog (a quick CPU, a slow worker
    start), the added one joins with records still to read."""

    from xclip_stream.pipeline.kafka_clients import create_topics

    frames_topic, events_topic, count = f"{kafka_topic}-frames", f"{kafka_topic}-events", 32
    create_topics(kafka_bootstrap, {frames_topic: 4})
    cameras = cameras_on_distinct_partitions(4)
    produce(kafka_bootstrap, frames_topic, cameras, range(count), flush_each=True)  # a backlog of 128 records
    config = pipeline_config(slow_checkpoint, cameras=[], kafka={
        "bootstrap": kafka_bootstrap, "events_topic": events_topic, "session_timeout_ms": 3000,
        "frames": [{"topic": frames_topic, "group_id": kafka_topic, "members": 1,
                    "scale": {"max_members": 3, "lag_per_member": 20, "up_after_s": 1, "down_after_s": 2,
                              "interval_s": 0.5}}]})
    reader = TopicReader(kafka_bootstrap, events_topic)
    second_member_records, most = 0, count + 400  # at most 400 more frames a camera (~40 s)
    caplog.set_level(logging.INFO, "xclip_stream.actors.supervisor")
    with PipelineThread(config) as run:
        deadline = time.monotonic() + 240  # Ray and Serve start first: slow on a busy machine
        while time.monotonic() < deadline:
            events = reader.read_until(lambda _: True, timeout=0.3)
            try:  # the member added for the lag reads records of its own
                health = ray.get(ray.get_actor(f"xclip:frames:{frames_topic}#1:0").health.remote(), timeout=5)
                second_member_records = max(second_member_records, health["records"])
            except (ValueError, ray.exceptions.RayError):
                pass  # not started yet, or already retired
            if second_member_records == 0 and "members 1 -> 2 (lag " in caplog.text and count < most \
                    and 4 * count - sum(committed(kafka_bootstrap, kafka_topic).values()) < 48:
                produce(kafka_bootstrap, frames_topic, cameras, range(count, count + 4), flush_each=True)
                count += 4  # a window more a camera: a dozen left to score, not a growing backlog
            windows = list(range(0, count - 3, 4))
            scores = by_camera(events)
            if all({w["first_seq"] for w in scores.get(c, [])} >= set(windows) for c in cameras) \
                    and "members 2 -> 1" in caplog.text:
                break
        else:
            missing = {c: sorted(set(windows) - {w["first_seq"] for w in scores.get(c, [])}) for c in cameras}
            pytest.fail(f"windows missing {missing}, or the members did not come back to 1; committed "
                        f"{committed(kafka_bootstrap, kafka_topic)}; members {members_health(frames_topic, 3)}:\n"
                        f"{caplog.text}")
        deadline = time.monotonic() + 30  # idle cameras release their rings' last frames
        while time.monotonic() < deadline and sorted(committed(kafka_bootstrap, kafka_topic).values()) != [count] * 4:
            time.sleep(0.5)
        offsets = committed(kafka_bootstrap, kafka_topic)
        assert run.thread.is_alive()
    result = run.join()
    reader.close()
    assert "members 1 -> 2 (lag " in caplog.text and second_member_records > 0, caplog.text
    assert list(result) == [f"frames:{frames_topic}#0"]  # the added members were retired
    assert sorted(offsets.values()) == [count] * 4, offsets  # retired members committed what they delivered
    scores = by_camera(events)
    for camera in cameras:
        ids = {}
        for w in scores[camera]:  # repeats (re-read after a hand-over) are the same window, same event id
            assert ids.setdefault(w["first_seq"], w["event_id"]) == w["event_id"], (camera, w["first_seq"])
        assert sorted(ids) == windows, camera
    logging.getLogger(__name__).warning(
        "lag scaling: %s; %d frames a camera; %d repeated windows of %d",
        [line for line in caplog.text.splitlines() if " -> " in line], count,
        sum(len(scores[c]) for c in cameras) - len(windows) * len(cameras), len(windows) * len(cameras))
