"""Kafka faults end to end (real Ray, Serve, Tansu): a consumer group of two frame members through
rebalances and a member that dies and rejoins, a broker that is down when the pipeline starts, and
a camera whose events cannot be delivered."""

from __future__ import annotations

import logging
import time

import pytest
import ray

from tests.frames_topic import cameras_on_distinct_partitions, committed, produce, windows_up_to
from tests.media import write_index_video
from tests.pipeline_harness import PipelineThread, TopicReader, by_camera, pipeline_config
from xclip_stream.pipeline.kafka_clients import create_topics
from xclip_stream.services.s3 import S3Emulator
from xclip_stream.services.tansu import TansuBroker, free_port


def test_two_members_through_rebalances_lose_no_window(ray_session, tiny_checkpoint, kafka_bootstrap, kafka_topic):
    frames_topic, events_topic = f"{kafka_topic}-frames", f"{kafka_topic}-events"
    create_topics(kafka_bootstrap, {frames_topic: 4})
    cameras = cameras_on_distinct_partitions(4)
    produce(kafka_bootstrap, frames_topic, cameras, range(0, 32))
    config = pipeline_config(tiny_checkpoint, cameras=[], kafka={
        "bootstrap": kafka_bootstrap, "events_topic": events_topic, "session_timeout_ms": 3000,
        "frames": [{"topic": frames_topic, "group_id": kafka_topic, "members": 2}]})
    reader = TopicReader(kafka_bootstrap, events_topic)
    member = f"xclip:frames:{frames_topic}#1"
    with PipelineThread(config):
        # Two members joining one after the other: the first rebalance comes mid-stream.
        reader.read_until(windows_up_to(28, cameras), timeout=120, what="the first 32 frames' windows")
        ray.kill(ray.get_actor(f"{member}:0"))  # a member dies; the other takes its partitions over
        produce(kafka_bootstrap, frames_topic, cameras, range(32, 64))
        reader.read_until(windows_up_to(60, cameras), timeout=120, what="windows after a member died")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the supervisor restarts it, and it rejoins the group
            try:
                ray.get_actor(f"{member}:1")
                break
            except ValueError:
                time.sleep(0.5)
        else:
            pytest.fail("the dead member was not restarted")
        time.sleep(3)  # its join (about half the session timeout) and the rebalance that follows
        produce(kafka_bootstrap, frames_topic, cameras, range(64, 94))  # frames 92 and 93 make no window
        events = reader.read_until(windows_up_to(88, cameras), timeout=120, what="windows after it rejoined")
        # Idle cameras release the frames left in their rings: the group commits to the end
        # (slower when the machine is busy: the wait ends as soon as it has).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sorted(committed(kafka_bootstrap, kafka_topic).values()) != [94] * 4:
            time.sleep(1)
        offsets = committed(kafka_bootstrap, kafka_topic)
    reader.close()
    assert sorted(offsets.values()) == [94] * 4, offsets
    scores = by_camera(events)
    for camera in cameras:
        windows = scores[camera]
        # Every window of every frame was scored; repeats (re-read after a hand-over) are the same
        # window with the same event id, never a shifted one.
        assert sorted({w["first_seq"] for w in windows}) == list(range(0, 92, 4)), camera
        ids = {}
        for w in windows:
            assert ids.setdefault(w["first_seq"], w["event_id"]) == w["event_id"], (camera, w["first_seq"])
    repeats = sum(len(scores[c]) for c in cameras) - 23 * len(cameras)
    logging.getLogger(__name__).warning("two members: %d repeated windows of %d", repeats, 23 * len(cameras))


def test_broker_down_at_start_is_waited_for(ray_session, tiny_checkpoint, tmp_path, caplog):
    clip = write_index_video(tmp_path / "clip.mp4", 32, fps=16)
    port = free_port()
    config = pipeline_config(tiny_checkpoint, cameras=[{"id": "porch", "url": str(clip)}],
                             kafka={"bootstrap": f"127.0.0.1:{port}", "events_topic": "ev"})
    with caplog.at_level(logging.WARNING, "xclip_stream.pipeline.backoff"):
        run = PipelineThread(config).__enter__()
        try:
            time.sleep(8)  # more than one attempt (5 s each) fails
            assert run.thread.is_alive() and run.error is None
            with TansuBroker(port=port, log_path=tmp_path / "broker.log") as broker:
                reader = TopicReader(broker.bootstrap, "ev")
                events = reader.read_until(lambda ev: len(by_camera(ev).get("porch", [])) >= 4, timeout=120)
                result = run.join(timeout=120)  # the file ends by itself
                reader.close()
        finally:
            run.stop.set()
            run.thread.join(60)
    assert [w["window_index"] for w in by_camera(events)["porch"]] == [0, 1, 2, 3]
    assert result["camera:porch"]["events_undelivered"] == 0
    waits = [r for r in caplog.records if r.name == "xclip_stream.pipeline.backoff"]
    assert waits and all(f"kafka 127.0.0.1:{port} unreachable, retrying in" in r.getMessage() for r in waits)
    assert not any(r.exc_info for r in waits)


def test_camera_does_not_finish_while_its_events_are_undelivered(ray_session, tiny_checkpoint, tmp_path):
    clip = write_index_video(tmp_path / "clip.mp4", 64, fps=16)  # 4 s, 8 windows
    with TansuBroker(log_path=tmp_path / "broker.log") as broker:
        create_topics(broker.bootstrap, {"ev": 4})
        config = pipeline_config(tiny_checkpoint, cameras=[{"id": "porch", "url": str(clip), "realtime": True}],
                                 kafka={"bootstrap": broker.bootstrap, "events_topic": "ev"})
        reader = TopicReader(broker.bootstrap, "ev")
        run = PipelineThread(config).__enter__()
        try:
            reader.read_until(lambda ev: len(by_camera(ev).get("porch", [])) >= 1, timeout=120)
            reader.close()
            broker.pause()  # from here on nothing is acknowledged
            time.sleep(8)  # the 4 s file has ended: the camera would have finished by now
            assert run.thread.is_alive(), "the pipeline finished with events unacknowledged"
            run.stop.set()
            result = run.join(timeout=120)
        finally:
            broker.resume()
            run.stop.set()
            run.thread.join(60)
    health = result["camera:porch"]
    assert health["events_undelivered"] > 0, health


def test_stopped_frame_member_ends_open_incidents_and_commits(ray_session, tiny_checkpoint, kafka_bootstrap,
                                                              kafka_topic):
    frames_topic, events_topic = f"{kafka_topic}-frames", f"{kafka_topic}-events"
    produce(kafka_bootstrap, frames_topic, ["cam-s"], range(16))  # 4 windows
    config = pipeline_config(tiny_checkpoint, cameras=[], kafka={
        "bootstrap": kafka_bootstrap, "events_topic": events_topic, "session_timeout_ms": 3000,
        # No idle release before the stop (a long gap), and incidents that only a flush can end.
        "frames": [{"topic": frames_topic, "group_id": kafka_topic, "options": {"max_gap_seconds": 600}}]})
    config["labels"]["default_thresholds"] = {"on": 0.0, "off": 0.0, "min_on_windows": 1}
    reader = TopicReader(kafka_bootstrap, events_topic)
    with PipelineThread(config) as run:
        reader.read_until(lambda ev: len(by_camera(ev).get("cam-s", [])) >= 4, what="the 4 windows")
        time.sleep(1.5)  # one commit interval
        assert not [e for e in reader.values() if e["event_type"] == "xclip.activity.end"]
    events = reader.read_until(lambda ev: any(e["event_type"] == "xclip.activity.end" for e in ev), timeout=30,
                               what="incidents ended on stop")
    reader.close()
    started = {e["incident_id"] for e in events if e["event_type"] == "xclip.activity.start"}
    ended = {e["incident_id"] for e in events if e["event_type"] == "xclip.activity.end"}
    assert started and started == ended
    assert 16 in committed(kafka_bootstrap, kafka_topic).values()  # its partition, committed to the end
    assert run.result[f"frames:{frames_topic}#0"]["events_undelivered"] == 0


def test_a_producer_that_stalls_mid_window_loses_no_window(ray_session, tiny_checkpoint, kafka_bootstrap, kafka_topic):
    """Frames stop mid-window for longer than ``max_gap_seconds``: the member counts the camera idle
    and its partition is committed past the frames in the ring. Then frames come again with no gap
    in their capture times (a stalled producer, not a stopped camera): the frames kept in the ring
    still make their windows, and no frame is left out."""
    frames_topic, events_topic = f"{kafka_topic}-frames", f"{kafka_topic}-events"
    produce(kafka_bootstrap, frames_topic, ["cam-p"], range(6))  # window 0-3; frames 4 and 5 wait
    config = pipeline_config(tiny_checkpoint, cameras=[], kafka={
        "bootstrap": kafka_bootstrap, "events_topic": events_topic, "session_timeout_ms": 3000,
        "frames": [{"topic": frames_topic, "group_id": kafka_topic}]})  # max_gap_seconds 1
    reader = TopicReader(kafka_bootstrap, events_topic)
    with PipelineThread(config) as run:
        reader.read_until(lambda ev: len(by_camera(ev).get("cam-p", [])) >= 1, timeout=120, what="the first window")
        deadline = time.monotonic() + 30
        while 6 not in committed(kafka_bootstrap, kafka_topic).values():  # released as idle
            assert time.monotonic() < deadline, "frames 4 and 5 were never released as idle"
            time.sleep(0.5)
        produce(kafka_bootstrap, frames_topic, ["cam-p"], range(6, 16))  # 125 ms after frame 5, as before
        events = reader.read_until(lambda ev: len(by_camera(ev).get("cam-p", [])) >= 4, timeout=30,
                                   what="the windows across the stall")
    reader.close()
    assert sorted({w["first_seq"] for w in by_camera(events)["cam-p"]}) == [0, 4, 8, 12]
    assert run.result[f"frames:{frames_topic}#0"]["idle_released"] >= 1


def test_broker_paused_then_restarted_mid_stream_loses_no_window(ray_session, tiny_checkpoint, tmp_path):
    """A durable (s3://) broker: paused 10 s while windows are being published, later killed and
    started again once the stream is idle (Tansu keeps what it acknowledged across such a restart;
    it may lose a few acknowledged records when killed mid-produce, which is the broker's own bug)."""
    with S3Emulator() as s3, TansuBroker(log_path=tmp_path / "broker.log", storage=s3.storage,
                                         env=s3.tansu_env()) as broker:
        bootstrap = broker.bootstrap
        create_topics(bootstrap, {"frames": 4})
        produce(bootstrap, "frames", ["cam-p"], range(32))
        config = pipeline_config(tiny_checkpoint, cameras=[], kafka={
            "bootstrap": bootstrap, "events_topic": "ev", "session_timeout_ms": 3000,
            "frames": [{"topic": "frames", "group_id": "g"}]})
        with PipelineThread(config) as run:
            reader = TopicReader(bootstrap, "ev")
            reader.read_until(lambda ev: len(by_camera(ev).get("cam-p", [])) >= 1, timeout=120, what="a window")
            reader.close()
            broker.pause()
            try:
                time.sleep(10)
            finally:
                broker.resume()
            produce(bootstrap, "frames", ["cam-p"], range(32, 64))
            reader = TopicReader(bootstrap, "ev")
            reader.read_until(windows_up_to(60, ["cam-p"]), timeout=120, what="windows after the pause")
            reader.close()
            time.sleep(2)  # idle: nothing in flight when the broker is killed
            broker.kill()
            broker.start()
            produce(bootstrap, "frames", ["cam-p"], range(64, 96))
            reader = TopicReader(bootstrap, "ev")
            events = reader.read_until(windows_up_to(92, ["cam-p"]), timeout=120, what="windows after the restart")
            reader.close()
        health = run.result["frames:frames#0"]
    windows = by_camera(events)["cam-p"]
    assert sorted({w["first_seq"] for w in windows}) == list(range(0, 96, 4))
    ids = {}
    for w in windows:
        assert ids.setdefault(w["first_seq"], w["event_id"]) == w["event_id"], w["first_seq"]
    assert health["events_undelivered"] == 0, health
