"""The model replica under faults: one camera's bad window in a shared batch (real Ray Serve), a
forward pass that never returns (the health check fails, Serve replaces the replica), and a forward
pass that fails on one camera's windows in a running pipeline (Ray, Serve, Tansu end to end)."""

from __future__ import annotations

import functools
import os
import time

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from ray.exceptions import GetTimeoutError

from tests.pipeline_harness import PipelineThread, TopicReader, by_camera, pipeline_config
from xclip_stream.actors import runner
from xclip_stream.actors.replica import XCLIPReplica, deploy, replica_options
from xclip_stream.cli import run_summary
from xclip_stream.model.checkpoint import checkpoint_digest
from xclip_stream.pipeline.kafka_clients import create_topics
from xclip_stream.pipeline.kafka_io import encode_frame_message
from xclip_stream.pipeline.model_check import ModelMismatch
from xclip_stream.schemas.config import ModelConfig, ServeConfig

GOOD = ("a person walking", "a car")


def frames(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (4, 3, size, size), dtype=np.uint8)


def test_one_cameras_bad_windows_do_not_fail_the_others_in_the_same_batch(ray_session, tiny_checkpoint):
    from ray import serve

    handle = deploy(ModelConfig(path=str(tiny_checkpoint), precision="float32"),
                    ServeConfig(num_cpus=0.25, max_labels=5, max_batch_size=8, batch_wait_timeout_s=0.5))
    try:
        good = [handle.score.remote(frames(i), GOOD) for i in range(4)]  # camera A
        bad_shape = handle.score.remote(frames(9, size=48), GOOD)  # camera B: a wrong-size window
        too_many = handle.score.remote(frames(10), tuple("abcdef"))  # camera B: a label set over the cap
        scored = [r.result(timeout_s=120) for r in good]
        assert all(len(s.logits) == 2 and all(np.isfinite(s.logits)) for s in scored)
        # each answer names the checkpoint that gave it (events carry it across a model roll)
        assert {(s.model, s.checkpoint) for s in scored} == {(tiny_checkpoint.name, checkpoint_digest(tiny_checkpoint))}
        for response, reason in [(bad_shape, "got uint8 (4, 3, 48, 48)"),
                                 (too_many, "6 labels, more than serve.max_labels (5)")]:
            with pytest.raises(Exception) as e:
                response.result(timeout_s=120)
            cause = getattr(e.value, "cause", e.value)  # what the scoring loop looks at: no retry
            assert isinstance(cause, ModelMismatch) and reason in str(cause)
        info = handle.info.remote().result(timeout_s=60)
        assert info["batches"] < 6  # the good and the bad windows did share batches
    finally:
        serve.delete("xclip-stream", _blocking=True)


class StuckReplica(XCLIPReplica):
    """The real replica, whose forward pass hangs (a wedged device) until a release file appears."""

    def __init__(self, *args, release: str):
        super().__init__(*args)
        real = self.scorer.score_each

        def stuck(windows, labels):
            while not os.path.exists(release):
                time.sleep(0.05)
            return real(windows, labels)

        self.scorer.score_each = stuck


def test_a_replica_stuck_in_a_forward_pass_fails_its_health_check_and_is_replaced(ray_session, tiny_checkpoint,
                                                                                   tmp_path):
    from ray import serve

    release = tmp_path / "release"
    options = {**replica_options(ServeConfig(num_cpus=0.25)), "health_check_period_s": 1.0}
    app = serve.deployment(StuckReplica).options(**options).bind(
        ModelConfig(path=str(tiny_checkpoint), precision="float32").model_dump(), 4, 0.0, None, 1000, 1.0,
        release=str(release))
    handle = serve.run(app, name="stuck-test", route_prefix=None)
    try:
        stuck = handle.score.remote(frames(0), GOOD)
        with pytest.raises(Exception) as e:  # the replica fails its health check and Serve replaces it
            stuck.result(timeout_s=120)
        assert not isinstance(e.value, GetTimeoutError), "the stuck replica was not replaced"
        assert not isinstance(getattr(e.value, "cause", e.value), ModelMismatch)  # a system error: retried
        release.touch()
        assert len(handle.score.remote(frames(1), GOOD).result(timeout_s=120).logits) == 2  # the new replica scores
    finally:
        serve.delete("stuck-test", _blocking=True)


class PoisonedEncoder:
    """The real video encoder, but a batch holding an all-white window fails as a wedged device
    does (an error raised from the forward pass, after the start-up checks passed)."""

    def __init__(self, real):
        self.real = real

    def __call__(self, frames):  # (B, T, 3, S, S) uint8
        if bool((frames.flatten(1).amin(dim=1) >= 250).any()):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.real(frames)

    def __getattr__(self, name):
        return getattr(self.real, name)


class PoisonedReplica(XCLIPReplica):
    def __init__(self, *args):
        super().__init__(*args)  # warmed up on the real encoder
        self.scorer.encoder = PoisonedEncoder(self.scorer.encoder)


def test_a_window_the_model_fails_on_at_run_time_is_published_counted_and_its_offsets_committed(
        ray_session, tiny_checkpoint, kafka_bootstrap, kafka_topic, monkeypatch):
    """One topic, two cameras on two partitions; the model fails on every window of cam-bad (white
    frames) in batches it shares with cam-ok. Each of cam-bad's windows becomes one
    ``xclip.window.failed`` event, cam-ok's all score, the failures are counted (run exits 1), and
    both partitions are committed to their end while the pipeline runs: no frame lost or stuck."""
    frames_topic, events_topic = f"{kafka_topic}-frames", f"{kafka_topic}-events"
    fps, n = 16, 32  # 2 s per camera: sampled at 8 fps, four 4-frame windows each
    create_topics(kafka_bootstrap, {frames_topic: 2})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(n):
        for partition, camera, grey in [(0, "cam-ok", (i * 8) % 250), (1, "cam-bad", 255)]:
            key, value, headers = encode_frame_message(camera, 1_700_000_000_000 + i * 1000 // fps, i,
                                                       np.full((48, 64, 3), grey, np.uint8))
            producer.send(frames_topic, key=key, value=value, headers=headers, partition=partition)
    producer.flush()
    producer.close()

    monkeypatch.setattr(runner, "deploy", functools.partial(deploy, replica=PoisonedReplica))
    config = pipeline_config(tiny_checkpoint, cameras=[], kafka={
        "bootstrap": kafka_bootstrap, "events_topic": events_topic, "session_timeout_ms": 3000,
        "frames": [{"topic": frames_topic, "group_id": kafka_topic}]})
    events = TopicReader(kafka_bootstrap, events_topic)
    probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=kafka_topic, enable_auto_commit=False)
    partitions = [TopicPartition(frames_topic, p) for p in (0, 1)]
    try:
        with PipelineThread(config, shared_model=False) as run:  # its own (poisoned) deploy
            events.read_until(lambda ev: len(by_camera(ev).get("cam-ok", [])) >= 4
                              and len(by_camera(ev, "xclip.window.failed").get("cam-bad", [])) >= 4,
                              what="cam-ok's scores and cam-bad's failures")
            deadline = time.monotonic() + 30
            while [probe.committed(tp) for tp in partitions] != [n, n] and time.monotonic() < deadline:
                time.sleep(0.5)  # committed each second, once every window's events are acknowledged
            committed = [probe.committed(tp) for tp in partitions]
        result = run.result
        events.read_until(lambda _: True)
    finally:
        probe.close()
        events.close()

    assert committed == [n, n], "the failed camera's frames were lost or are stuck uncommitted"
    values = events.values()
    failed = by_camera(values, "xclip.window.failed")
    assert set(failed) == {"cam-bad"} and set(by_camera(values)) == {"cam-ok"}
    assert [e["window_index"] for e in failed["cam-bad"]] == [0, 1, 2, 3]
    assert [(e["first_seq"], e["last_seq"]) for e in failed["cam-bad"]] == [(0, 6), (8, 14), (16, 22), (24, 30)]
    for e in failed["cam-bad"]:
        assert e["attempts"] == 1  # refused by the replica's isolation: the same window would fail again
        assert e["reason"].startswith("ModelMismatch: RuntimeError: CUDA error: an illegal memory access")
    assert [e["first_seq"] for e in by_camera(values)["cam-ok"]] == [0, 8, 16, 24]
    assert len({e["event_id"] for e in values}) == len(values)  # each published once
    health = next(v for k, v in result.items() if frames_topic in k)
    assert (health["records"], health["windows"], health["windows_scored"], health["windows_failed"]) == (64, 8, 4, 4)
    assert (health["dead_letters"], health["outstanding"], health["events_undelivered"]) == (0, 0, 0)
    assert run_summary(result) == 1  # `xclip-stream run` exits 1
