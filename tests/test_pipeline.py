"""The streaming pipeline end to end: real Ray and Serve, a real Kafka-protocol broker (Tansu), a
real RTSP server (gst-rtsp-server), an MJPEG HTTP camera, files and a Kafka frame topic."""

from __future__ import annotations

import json
import time

import jsonschema
import numpy as np
import pytest
import ray

from tests.media import write_index_video
from tests.pipeline_harness import (
    PipelineThread,
    TopicReader,
    by_camera,
    driver_metric,
    free_port,
    pipeline_config,
    scrape_metric,
    wait_for_http,
    wait_for_metric,
)
from xclip_stream.pipeline.control_auth import sign
from xclip_stream.pipeline.kafka_io import encode_frame_message
from xclip_stream.pipeline.sinks import KafkaSink
from xclip_stream.schemas import export
from xclip_stream.services.mjpeg import MjpegCamera

FPS = 16


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """4 s at 16 fps whose frames encode their index."""
    return write_index_video(tmp_path_factory.mktemp("media") / "index.mp4", 64, fps=FPS)


def validators():
    return {name: jsonschema.Draft202012Validator(json.loads((export.SCHEMA_DIR / f"{name}.json").read_text()))
            for name in ("score_event", "activity_event", "stream_event")}


def validate(events):
    v = validators()
    for e in events:
        kind = e["event_type"].split(".")[1]
        v[{"window": "score_event", "activity": "activity_event", "stream": "stream_event"}[kind]].validate(e)


def produce_frames(bootstrap, topic, camera, n, fps=FPS, start_ms=1_700_000_000_000, first_seq=0):
    sink = KafkaSink(bootstrap, client_id="test-camera")
    for i in range(first_seq, first_seq + n):
        image = np.full((48, 64, 3), (i * 8) % 256, np.uint8)
        key, value, headers = encode_frame_message(camera, start_ms + round(i * 1000 / fps), i, image)
        sink.send(topic, key, value, headers)
    sink.flush()
    sink.close()


def expected_windows(kept_frames: int, num_frames: int = 4, hop: int = 4) -> int:
    return 0 if kept_frames < num_frames else (kept_frames - num_frames) // hop + 1


def test_four_kinds_of_source_at_once(ray_session, tiny_checkpoint, clip, rtsp_camera, kafka_bootstrap, kafka_topic):
    frames_topic, events_topic = f"{kafka_topic}-frames", f"{kafka_topic}-events"
    produce_frames(kafka_bootstrap, frames_topic, "kafka-cam", 48)  # 3 s at 16 fps
    with MjpegCamera(clip, fps=FPS) as mjpeg:
        config = pipeline_config(
            tiny_checkpoint,
            cameras=[
                {"id": "file-cam", "url": str(clip)},
                {"id": "rtsp-cam", "url": rtsp_camera.url, "rtsp_transport": "tcp"},
                {"id": "mjpeg-cam", "url": mjpeg.url},
            ],
            kafka={"bootstrap": kafka_bootstrap, "events_topic": events_topic,
                   "dead_letter_topic": f"{kafka_topic}-dlq", "session_timeout_ms": 3000,
                   "frames": [{"topic": frames_topic, "group_id": kafka_topic}]},
            max_windows=4,
        )
        reader = TopicReader(kafka_bootstrap, events_topic)
        with PipelineThread(config):
            events = reader.read_until(
                lambda ev: all(len(by_camera(ev).get(c, [])) >= 4 for c in
                               ("file-cam", "rtsp-cam", "mjpeg-cam", "kafka-cam")),
                timeout=240, what="4 windows from each camera")  # 120 s ran out beside the cluster test
        reader.close()
    validate(events)
    scores = by_camera(events)
    # The file: 8 fps sampling of 16 fps media keeps every other frame, 4-frame windows back to back.
    file_windows = scores["file-cam"]
    assert [w["window_index"] for w in file_windows] == [0, 1, 2, 3]
    for w in file_windows:
        assert w["media_start"] == pytest.approx(w["window_index"] * 8 / FPS, abs=1e-3)
        assert w["media_end"] - w["media_start"] == pytest.approx(6 / FPS, abs=1e-3)
        assert w["end_time"] - w["start_time"] == pytest.approx(6 / FPS, abs=1e-3)
        assert w["last_seq"] - w["first_seq"] == 6
    # Kafka frames: times are the capture times in the headers.
    kafka_windows = scores["kafka-cam"][:4]
    assert [w["first_seq"] for w in kafka_windows] == [0, 8, 16, 24]
    assert kafka_windows[0]["start_time"] == pytest.approx(1_700_000_000.0)
    for camera, windows in scores.items():  # per-camera order and consistent times
        assert [w["window_index"] for w in windows] == sorted(w["window_index"] for w in windows), camera
        assert all(a["start_time"] < b["start_time"] for a, b in zip(windows, windows[1:])), camera
        assert all(w["frame_count"] == 4 and w["top_label"] in w["scores"] for w in windows)
    live = scores["rtsp-cam"] + scores["mjpeg-cam"]
    assert all(w["end_time"] - w["start_time"] == pytest.approx(6 / FPS, abs=0.08) for w in live)


def test_rtsp_camera_restart_reports_gap_and_resumes(ray_session, tiny_checkpoint, rtsp_camera, kafka_bootstrap,
                                                      kafka_topic):
    events_topic = f"{kafka_topic}-events"
    config = pipeline_config(tiny_checkpoint, cameras=[{"id": "door", "url": rtsp_camera.url}],
                             kafka={"bootstrap": kafka_bootstrap, "events_topic": events_topic},
                             http={"port": free_port()})
    url = f"http://127.0.0.1:{config['http']['port']}"
    reader = TopicReader(kafka_bootstrap, events_topic)
    with PipelineThread(config):
        reader.read_until(lambda ev: len(by_camera(ev).get("door", [])) >= 2, what="windows before the outage")
        # issue 18: the driver's probes and metrics
        wait_for_http(url + "/readyz", lambda status, body: status == 200 and json.loads(body)["sources"]
                      == {"camera:door": "connected"}, what="ready with the camera connected")
        assert wait_for_http(url + "/healthz", lambda status, _: status == 200)
        wait_for_http(url + "/metrics", lambda _, body: driver_metric(body, "xclip_pipeline_ready") == 1 and
                      driver_metric(body, "xclip_sources", kind="camera", state="connected") == 1)
        # issue 18: the camera's counters on Ray's metrics endpoint move as frames flow
        decoded = wait_for_metric("xclip_frames_decoded_total", "door", above=0)
        assert wait_for_metric("xclip_windows_scored_total", "door", above=0) >= 1
        rtsp_camera.stop()
        stopped_at = time.monotonic()
        # the camera is down: degraded, still ready (its actor keeps trying; a new driver would not help)
        wait_for_http(url + "/readyz", lambda status, body: status == 200 and json.loads(body)["degraded"]
                      and json.loads(body)["degraded"][0].startswith("camera:door: "), what="degraded")
        time.sleep(max(0.0, 3.0 - (time.monotonic() - stopped_at)))
        outage_end = time.time()
        rtsp_camera.start()
        events = reader.read_until(
            lambda ev: any(w["start_time"] > outage_end for w in by_camera(ev).get("door", [])),
            timeout=90, what="windows after the camera came back")
        assert wait_for_metric("xclip_frames_decoded_total", "door", above=decoded) > decoded
        assert wait_for_metric("xclip_reconnects_total", "door", above=0) >= 1
        assert "door" in scrape_metric("xclip_frame_to_event_latency_seconds_count")
        assert wait_for_metric("xclip_events_published_total", "door", above=0, label="source") >= 2
        model = tiny_checkpoint.name
        assert wait_for_metric("xclip_replica_batch_size_count", model, above=0, label="model") >= 1
        assert wait_for_metric("xclip_label_cache_hits_total", model, above=0, label="model") >= 1
    reader.close()
    validate(events)
    states = [e["state"] for e in events if e["event_type"].startswith("xclip.stream.")]
    assert "disconnected" in states and "connected" in states[states.index("disconnected"):]
    gaps = [e for e in events if e["event_type"] == "xclip.stream.gap"]
    assert gaps and gaps[0]["gap_end"] - gaps[0]["gap_start"] >= 2.5
    windows = by_camera(events)["door"]
    assert all(a["start_time"] < b["start_time"] for a, b in zip(windows, windows[1:]))
    # No window spans the outage.
    assert not any(w["start_time"] < gaps[0]["gap_start"] < w["end_time"] for w in windows)


def test_malformed_frames_go_to_the_dead_letter_topic(ray_session, tiny_checkpoint, kafka_bootstrap, kafka_topic):
    frames_topic, events_topic, dlq = (f"{kafka_topic}-{s}" for s in ("frames", "events", "dlq"))
    produce_frames(kafka_bootstrap, frames_topic, "cam-a", 16)
    key, value, headers = encode_frame_message("cam-a", 1_700_000_001_000, 99, np.zeros((48, 64, 3), np.uint8))
    bad = [
        ("corrupt_image", key, value[:20] + bytes(200) + value[220:], headers),
        ("corrupt_image", key, value[: len(value) // 2], headers),  # truncated
        ("missing_header", key, value, [h for h in headers if h[0] != "seq"]),
        ("key_mismatch", b"cam-b", value, headers),
        ("unsupported_format", key, b"not an image at all", headers),
    ]
    sink = KafkaSink(kafka_bootstrap)
    for _, k, v, h in bad:
        sink.send(frames_topic, k, v, h)
    sink.flush()
    sink.close()
    produce_frames(kafka_bootstrap, frames_topic, "cam-a", 16, first_seq=16)
    config = pipeline_config(tiny_checkpoint, cameras=[], kafka={
        "bootstrap": kafka_bootstrap, "events_topic": events_topic, "dead_letter_topic": dlq,
        "session_timeout_ms": 3000, "frames": [{"topic": frames_topic, "group_id": kafka_topic}]})
    events_reader, dlq_reader = TopicReader(kafka_bootstrap, events_topic), TopicReader(kafka_bootstrap, dlq)
    with PipelineThread(config):
        # 32 good frames at 16 fps sampled at 8 fps: 16 kept, 4 windows.
        events_reader.read_until(lambda ev: len(by_camera(ev).get("cam-a", [])) >= 4, what="good windows")
        dlq_reader.read_until(lambda _: len(dlq_reader.records) >= len(bad), what="dead letters")
        # issue 18: the member's metrics, by reason and by partition
        where = {"topic": frames_topic}
        wait_for_metric("xclip_kafka_dead_letters_total", "unsupported_format", 0, label="reason", where=where)
        assert wait_for_metric("xclip_kafka_dead_letters_total", "corrupt_image", 1, label="reason",
                               where=where) == 2
        consumed = 32 + len(bad)
        assert wait_for_metric("xclip_kafka_records_total", frames_topic, consumed - 1, label="topic") == consumed
        assert wait_for_metric("xclip_kafka_windows_scored_total", frames_topic, 3, label="topic") == 4
        deadline, lags = time.monotonic() + 45, {}
        while not lags and time.monotonic() < deadline:  # the first lag comes with the first commit
            lags = scrape_metric("xclip_kafka_consumer_lag_records", "partition", where)
            time.sleep(1.0)
        assert lags and set(lags) <= {"0", "1", "2", "3"} and all(v >= 0 for v in lags.values())
    windows = by_camera(events_reader.values())["cam-a"]
    assert [w["first_seq"] for w in windows] == [0, 8, 16, 24]  # nothing lost around the bad records
    reasons = sorted(dict(r.headers)["dlq_reason"].decode() for r in dlq_reader.records)
    assert reasons == sorted(reason for reason, *_ in bad)
    assert sorted(r.value for r in dlq_reader.records) == sorted(v for *_, v, _ in bad)  # unchanged payloads
    for record in dlq_reader.records:
        h = dict(record.headers)
        assert h["dlq_topic"].decode() == frames_topic and int(h["dlq_partition"]) in range(4)
        assert h["dlq_detail"] and "dlq_offset" in h  # a human-readable message, and where it was
    events_reader.close()
    dlq_reader.close()


def test_killed_replica_loses_no_window(ray_session, tiny_checkpoint, clip, kafka_bootstrap, kafka_topic):
    events_topic = f"{kafka_topic}-events"
    config = pipeline_config(tiny_checkpoint, cameras=[{"id": "lobby", "url": str(clip), "realtime": True}],
                             kafka={"bootstrap": kafka_bootstrap, "events_topic": events_topic})
    config["serve"]["replicas"] = 2
    reader = TopicReader(kafka_bootstrap, events_topic)
    run = PipelineThread(config).__enter__()
    reader.read_until(lambda ev: len(by_camera(ev).get("lobby", [])) >= 1, what="the first window")
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "XCLIPReplica" in a["name"]]
    assert len(replicas) == 2
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=False)
    result = run.join(timeout=120)  # the file ends by itself
    events = reader.read_until(lambda ev: len(by_camera(ev).get("lobby", [])) >= expected_windows(32),
                               timeout=30, what="every window of the file")
    reader.close()
    assert [w["window_index"] for w in by_camera(events)["lobby"]] == list(range(expected_windows(32)))
    assert result["camera:lobby"]["windows_scored"] == expected_windows(32)


def test_consumer_restart_resumes_from_committed_offset(ray_session, tiny_checkpoint, kafka_bootstrap,
                                                        kafka_topic):
    frames_topic, events_topic = f"{kafka_topic}-frames", f"{kafka_topic}-events"
    kafka = {"bootstrap": kafka_bootstrap, "events_topic": events_topic, "session_timeout_ms": 3000,
             "frames": [{"topic": frames_topic, "group_id": kafka_topic}]}
    config = pipeline_config(tiny_checkpoint, cameras=[], kafka=kafka)
    reader = TopicReader(kafka_bootstrap, events_topic)
    produce_frames(kafka_bootstrap, frames_topic, "cam-r", 32)  # 4 windows
    with PipelineThread(config):
        reader.read_until(lambda ev: len(by_camera(ev).get("cam-r", [])) >= 4, what="first run's windows")
        time.sleep(1.5)  # one commit interval
    first_run = len(by_camera(reader.values())["cam-r"])
    produce_frames(kafka_bootstrap, frames_topic, "cam-r", 32, first_seq=32)
    with PipelineThread(config):
        events = reader.read_until(lambda ev: any(w["first_seq"] >= 56 for w in by_camera(ev).get("cam-r", [])),
                                   what="second run's windows")
    reader.close()
    second = by_camera(events)["cam-r"][first_run:]
    # The second run starts where the first one's committed work ended: no window is re-scored from
    # the start of the topic, and none is skipped.
    assert second[0]["first_seq"] >= 24
    firsts = sorted({w["first_seq"] for w in by_camera(events)["cam-r"]})
    assert firsts == list(range(0, 64, 8))


def test_live_source_faster_than_inference_drops_and_stays_bounded(ray_session, slow_checkpoint, clip):
    # 32 fps sampled in full with a hop of 1: 32 windows/s, about 3x what the slow model scores in
    # float32 on one thread of these CPUs (~100 ms a window; bf16 would be ~60 ms, so the test pins
    # float32 and does not depend on what ``auto`` picks). The camera must drop its oldest windows,
    # report it, and not fall behind.
    with MjpegCamera(clip, fps=32) as mjpeg:
        config = pipeline_config(slow_checkpoint, cameras=[{"id": "fast", "url": mjpeg.url,
                                                            "options": {"sample_fps": 32, "hop": 1,
                                                                        "max_pending_windows": 2}}])
        config["serve"].update(max_batch_size=1, batch_wait_timeout_s=0.0, num_cpus=0.25)
        config["model"]["precision"] = "float32"
        with PipelineThread(config) as run:
            deadline = time.monotonic() + 90  # startup is seconds on an idle machine, more under load
            while time.monotonic() < deadline and (run.out.getvalue().count('"xclip.window.scores"') < 20
                                                   or '"xclip.stream.dropped"' not in run.out.getvalue()):
                time.sleep(0.5)
            time.sleep(3)  # a few seconds of steady state after the first drop
            run.stop.set()
            run.join()
    lines = run.lines()
    windows = [e for e in lines if e["event_type"] == "xclip.window.scores"]
    dropped = [e for e in lines if e["event_type"] == "xclip.stream.dropped"]
    health = run.result["camera:fast"]
    assert health["windows_dropped"] > 0 and dropped, health
    assert health["pending"] <= 2
    latencies = sorted(w["latency_ms"] for w in windows[len(windows) // 2:])
    assert latencies[-1] < 3000, latencies[-5:]  # bounded: no growing backlog


def test_cameras_added_relabelled_and_removed_while_running(ray_session, tiny_checkpoint, clip, rtsp_camera,
                                                             kafka_bootstrap, kafka_topic, monkeypatch):
    events_topic, control_topic = f"{kafka_topic}-events", f"{kafka_topic}-control"
    from xclip_stream.pipeline.kafka_clients import create_topics

    create_topics(kafka_bootstrap, {control_topic: 1})
    config = pipeline_config(tiny_checkpoint, cameras=[{"id": "gate", "url": str(clip), "loop": True}],
                             kafka={"bootstrap": kafka_bootstrap, "events_topic": events_topic,
                                    "control_topic": control_topic},
                             label_sets={"vehicles": {"labels": ["a car", "a truck"]}},
                             control={"secret_env": "XCLIP_TEST_CONTROL_SECRET",
                                      "source_policy": {"hosts": ["127.0.0.1/32"]}},
                             http={"port": free_port()})
    secret = "pipeline-control-test-secret"
    monkeypatch.setenv("XCLIP_TEST_CONTROL_SECRET", secret)
    reader = TopicReader(kafka_bootstrap, events_topic)
    control = KafkaSink(kafka_bootstrap, client_id="test-operator")

    def send(message):
        control.send(control_topic, "op", sign(message, secret.encode()), []).get(timeout=10)

    with PipelineThread(config):
        reader.read_until(lambda ev: len(by_camera(ev).get("gate", [])) >= 1, what="the first camera")
        send({"op": "add_camera", "camera": {"id": "yard", "url": rtsp_camera.url}})  # files: config only
        reader.read_until(lambda ev: len(by_camera(ev).get("yard", [])) >= 1, what="the added camera")
        send({"op": "set_labels", "id": "gate", "labels": "vehicles"})
        reader.read_until(lambda ev: any(set(w["scores"]) == {"a car", "a truck"}
                                         for w in by_camera(ev).get("gate", [])), what="the new labels")
        send({"op": "remove_camera", "id": "yard"})
        send({"op": "set_labels", "id": "nobody", "labels": ["x"]})  # refused, nothing else changes
        control.send(control_topic, "op", json.dumps({"op": "remove_camera", "id": "gate"}).encode(), [])  # unsigned
        time.sleep(3)
        removed_at = len(reader.values())
        reader.read_until(lambda ev: len(ev) > removed_at + 4, what="more events")
        later = reader.values()[removed_at + 2:]  # allow the last in-flight windows of "yard"
        # issue 18: the control plane's counts on the driver's /metrics
        wait_for_http(f"http://127.0.0.1:{config['http']['port']}/metrics", lambda _, body: (
            driver_metric(body, "xclip_control_messages_total", outcome="applied"),
            driver_metric(body, "xclip_control_messages_total", outcome="refused")) == (3, 2), what="3 applied, 2 refused")
    control.close()
    reader.close()
    removed = next(e for e in reader.values() if e["event_type"] == "xclip.control.applied"
                   and e["op"] == "remove_camera")
    assert not [e for e in reader.values() if e["camera_id"] == "yard" and e["event_type"] == "xclip.window.scores"
                and e["start_time"] > removed["time"] + 1.0]  # a live camera: nothing framed after its removal
    assert any(e["camera_id"] == "gate" for e in later)  # the unsigned removal was refused
    control_events = sorted((e for e in reader.values() if e["event_type"].startswith("xclip.control.")),
                            key=lambda e: e["offset"])  # the events topic's partitions interleave them
    outcomes = [(e["event_type"], e["op"]) for e in control_events]
    assert outcomes == [("xclip.control.applied", "add_camera"), ("xclip.control.applied", "set_labels"),
                        ("xclip.control.applied", "remove_camera"), ("xclip.control.refused", "set_labels"),
                        ("xclip.control.refused", "")]
    gate = by_camera(reader.values())["gate"]
    assert [w["window_index"] for w in gate] == list(range(len(gate)))  # relabelled in place, no restart


def test_supervisor_restarts_the_cameras_of_a_shared_actor_that_dies(ray_session, tiny_checkpoint, clip):
    """Two cameras share one actor (``cameras_per_process: 2``); the actor is killed: both run again
    in one new actor, and each says so once."""
    config = pipeline_config(tiny_checkpoint, cameras=[{"id": "hall", "url": str(clip), "loop": True},
                                                       {"id": "lobby", "url": str(clip), "loop": True}])
    config["placement"] = {"cameras_per_process": 2}
    with PipelineThread(config) as run:
        deadline = time.monotonic() + 60
        while {e["camera_id"] for e in run.lines() if e["event_type"] == "xclip.window.scores"} != {"hall", "lobby"}:
            assert time.monotonic() < deadline, "no window from both cameras before the crash"
            time.sleep(0.2)
        assert sorted(ray.get(ray.get_actor("xclip:cameras:1").cameras.remote())) == ["hall", "lobby"]
        ray.kill(ray.get_actor("xclip:cameras:1"))
        crashed_at = time.time()
        deadline = time.monotonic() + 60
        while {e["camera_id"] for e in run.lines() if e["event_type"] == "xclip.window.scores"
               and e["start_time"] > crashed_at} != {"hall", "lobby"}:
            assert time.monotonic() < deadline, "not both cameras scored after the restart"
            time.sleep(0.2)
        assert sorted(ray.get(ray.get_actor("xclip:cameras:2").cameras.remote())) == ["hall", "lobby"]
        # each says so: the gap runs from the loss to its first frame (the dead one's windows are gone)
        restarted = [e for e in run.lines() if e["event_type"] == "xclip.stream.restarted"]
        assert sorted(e["camera_id"] for e in restarted) == ["hall", "lobby"], restarted
        for e in restarted:
            assert "restart 1 " in e["reason"] and crashed_at - 1 <= e["gap_start"] < e["gap_end"], restarted
