"""The whole pipeline (real Ray and Serve) against Kafka behind TLS and SASL: frames consumed,
events and dead letters published, the control topic read, all through stunnel and the SASL
proxy; and a refused password stops the start with a clear error before anything is deployed."""

from __future__ import annotations

import io
import threading

import numpy as np

from tests.kafka_security_fixtures import TlsFiles
from tests.pipeline_harness import PipelineThread, TopicReader, by_camera, pipeline_config
from xclip_stream.actors.runner import run_pipeline
from xclip_stream.pipeline.control_auth import sign
from xclip_stream.pipeline.kafka_clients import KafkaAccessError
from xclip_stream.pipeline.kafka_io import encode_frame_message
from xclip_stream.pipeline.sinks import KafkaSink
from xclip_stream.schemas.config import KafkaSecurity, parse_config

FPS = 16


def _security(tls_files: TlsFiles, password_file) -> dict:
    return {"protocol": "SASL_SSL", "ca_file": str(tls_files.ca), "sasl_mechanism": "SCRAM-SHA-256",
            "username": "alice", "password_file": str(password_file)}


def test_pipeline_over_sasl_ssl(ray_session, tiny_checkpoint, sasl_ssl_bootstrap, tls_files, user_password_files,
                                kafka_topic, tmp_path):
    bootstrap = sasl_ssl_bootstrap
    security = _security(tls_files, user_password_files["alice"])
    frames, events, dlq, control = (f"{kafka_topic}-{s}" for s in ("frames", "events", "dlq", "control"))
    secret = b"sasl-ssl-control-secret"
    (tmp_path / "control-secret").write_bytes(secret)
    with KafkaSink(bootstrap, client_id="test-camera", security=KafkaSecurity(**security)) as sink:
        for i in range(16):  # 1 s at 16 fps, sampled at 8 fps: 8 kept frames, 2 windows
            key, value, headers = encode_frame_message("cam-s", 1_700_000_000_000 + i * 1000 // FPS, i,
                                                       np.full((48, 64, 3), i * 8, np.uint8))
            sink.send(frames, key, value, headers)
        sink.send(frames, b"cam-s", b"not an image", headers)
        sink.send(control, "control", sign({"op": "remove_camera", "id": "no-such-camera"}, secret), [])
        sink.flush(timeout=30)
    config = pipeline_config(tiny_checkpoint, cameras=[], kafka={
        "bootstrap": bootstrap, "security": security, "events_topic": events, "dead_letter_topic": dlq,
        "control_topic": control, "session_timeout_ms": 3000,
        "frames": [{"topic": frames, "group_id": kafka_topic}]},
        control={"secret_file": str(tmp_path / "control-secret")})
    readers = [TopicReader(bootstrap, topic, KafkaSecurity(**security)) for topic in (events, dlq)]
    with PipelineThread(config):
        scored = readers[0].read_until(lambda ev: len(by_camera(ev).get("cam-s", [])) >= 2, what="2 windows")
        readers[1].read_until(lambda _: len(readers[1].records) >= 1, what="the dead letter")
        # the control consumer and its events producer go through SASL_SSL too: the record is read,
        # authenticated, and refused (no such camera) with an event
        refused = readers[0].read_until(
            lambda ev: any(e["event_type"] == "xclip.control.refused" for e in ev), what="the control refusal")
    assert [w["first_seq"] for w in by_camera(scored)["cam-s"]] == [0, 8]
    assert any("no-such-camera" in e.get("reason", "") for e in refused if e["event_type"] == "xclip.control.refused")
    assert readers[1].records[0].value == b"not an image"
    for reader in readers:
        reader.close()


def test_a_refused_password_stops_the_start(ray_session, tiny_checkpoint, sasl_ssl_bootstrap, tls_files, tmp_path):
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password")
    config = parse_config(pipeline_config(tiny_checkpoint, cameras=[{"id": "c", "url": "/nonexistent.mp4"}], kafka={
        "bootstrap": sasl_ssl_bootstrap, "security": _security(tls_files, wrong), "connect_timeout_s": 10}))
    outcome: dict = {}

    def run():
        try:
            run_pipeline(config, io.StringIO(), stop=threading.Event())
        except KafkaAccessError as e:
            outcome["error"] = str(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "run_pipeline hung on a refused password"
    assert "SASL authentication failed for user 'alice' (SCRAM-SHA-256)" in outcome.get("error", "")
    assert "not-the-password" not in outcome["error"]
