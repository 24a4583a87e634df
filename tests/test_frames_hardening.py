"""A real frames-topic member (Ray, Serve, Tansu) under hostile input: 100 malformed records among good
frames, an oversized record, more cameras than it may hold, and idle cameras evicted."""

from __future__ import annotations

import random
import time

import numpy as np

from tests.pipeline_harness import PipelineThread, TopicReader, by_camera, pipeline_config
from tests.test_frame_fuzz import REASONS, must_refuse
from xclip_stream.pipeline.kafka_clients import create_topics
from xclip_stream.pipeline.kafka_io import encode_frame_message
from xclip_stream.pipeline.sinks import KafkaSink

FPS = 16


def good_frames(camera: str, first: int, n: int) -> list[tuple[bytes, bytes, list]]:
    return [encode_frame_message(camera, 1_700_000_000_000 + round(i * 1000 / FPS), i,
                                 np.full((48, 64, 3), (i * 8) % 256, np.uint8)) for i in range(first, first + n)]


def ended(events: list[dict]) -> set[str]:
    return {e["camera_id"] for e in events if e["event_type"] == "xclip.activity.end"}


def test_hostile_records_are_dead_lettered_and_cameras_stay_bounded(ray_session, tiny_checkpoint, kafka_bootstrap,
                                                                    kafka_topic):
    frames_topic, events_topic, dlq = (f"{kafka_topic}-{s}" for s in ("frames", "events", "dlq"))
    fuzz = [r for r in must_refuse(random.Random(11)) if r[0] != "huge_value"]
    bad = random.Random(3).sample(fuzz, 97)
    # over the 64 KiB limit and over the member's whole fetch (fetch_sizes: 4 MiB): read whole all the same
    big = [("oversized", b"cam-a", b"\xff\xd8" + bytes(5 * 2**20), good_frames("cam-a", 99, 1)[0][2])] * 3
    create_topics(kafka_bootstrap, {frames_topic: 1})  # one partition: the cameras arrive in this order
    sink = KafkaSink(kafka_bootstrap, max_request_size=8 * 2**20)  # the fuzz has 1 MiB header values
    # a's frames are contiguous and b's follow, so neither can go idle before c arrives (unless the
    # 103 bad records took camera_idle_s to consume); then c is one camera too many.
    for key, value, headers in good_frames("cam-a", 0, 32) + good_frames("cam-b", 0, 8):
        sink.send(frames_topic, key, value, headers)
    for _, key, value, headers in bad + big:
        sink.send(frames_topic, key, value or b"", headers or [])
    for key, value, headers in good_frames("cam-c", 0, 8):
        sink.send(frames_topic, key, value, headers)
    sink.flush()

    labels = {"labels": ["a", "b"], "default_thresholds": {"on": 0.0, "off": 0.0, "min_on_windows": 1}}  # every label turns on
    limits = {"max_message_bytes": 65536, "dead_letter_max_bytes": 4096}
    config = pipeline_config(tiny_checkpoint, cameras=[], labels=labels, kafka={
        "bootstrap": kafka_bootstrap, "events_topic": events_topic, "dead_letter_topic": dlq,
        "session_timeout_ms": 3000,
        "frames": [{"topic": frames_topic, "group_id": kafka_topic, "limits": limits, "max_cameras": 2,
                    "camera_idle_s": 8.0}]})
    events, letters = TopicReader(kafka_bootstrap, events_topic), TopicReader(kafka_bootstrap, dlq)
    expected_letters = len(bad) + len(big) + 8
    with PipelineThread(config) as run:
        # the pipeline's start is in this wait: Serve once took 59 s beside the cluster test
        letters.read_until(lambda _: len(letters.records) >= expected_letters, timeout=180, what="dead letters")
        events.read_until(lambda ev: len(by_camera(ev).get("cam-a", [])) >= 4, what="cam-a's windows")
        # a and b go quiet: their incidents end (after max_gap_seconds of waiting for frames), and
        # after camera_idle_s they are evicted, which makes room for c
        events.read_until(lambda ev: ended(ev) >= {"cam-a", "cam-b"}, timeout=45,
                          what="incidents ended when a and b went quiet")
        time.sleep(8.0 + 2.0)  # camera_idle_s since their last frames, and a sweep
        for key, value, headers in good_frames("cam-c", 8, 8):
            sink.send(frames_topic, key, value, headers)
        sink.flush()
        events.read_until(lambda ev: len(by_camera(ev).get("cam-c", [])) >= 1, what="cam-c's windows")
        time.sleep(1.5)  # a commit interval
    result = run.result
    sink.close()
    letters.read_until(lambda _: True)
    events.close()
    letters.close()

    assert [w["first_seq"] for w in by_camera(events.values())["cam-a"]] == [0, 8, 16, 24]  # nothing lost
    reasons = [dict(r.headers)["dlq_reason"].decode() for r in letters.records]
    assert len(reasons) == expected_letters
    assert set(reasons) <= REASONS | {"camera_limit"} and reasons.count("camera_limit") == 8
    assert reasons.count("message_too_large") >= 3
    for record in letters.records:
        h = dict(record.headers)
        assert h["dlq_detail"] and "dlq_offset" in h
        if h["dlq_reason"] == b"message_too_large":
            assert h["dlq_truncated"] == b"value" and len(record.value) == 4096
    health = next(v for k, v in result.items() if frames_topic in k)
    assert health["cameras_refused"] == 8 and health["cameras_evicted"] >= 2
    # Nothing is held at shutdown: a window's frames stop holding their offsets once it is cut and
    # published (hop = the model's 4 frames), quiet cameras' rings were released, refused records at once.
    assert health["outstanding"] == 0
