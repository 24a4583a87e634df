"""The control topic against a real Tansu broker (no Ray): state kept across a restart, changes made
while the pipeline was down applied at the next start, refusals published as events."""

from __future__ import annotations

import time

import pytest

from tests.pipeline_harness import TopicReader
from xclip_stream.actors.runner import open_control_topic
from xclip_stream.pipeline.control_auth import sign
from xclip_stream.pipeline.sinks import KafkaSink
from xclip_stream.schemas.config import ConfigError, parse_config

SECRET = "control-topic-test-secret-0123456789"


def config_for(bootstrap: str, topic: str, **control):
    return parse_config({
        "model": {"path": "m"}, "labels": {"labels": ["a", "b"]}, "label_sets": {"night": {"labels": ["c"]}},
        "cameras": [{"id": "c1", "url": "/data/x.mp4"}],
        "kafka": {"bootstrap": bootstrap, "control_topic": f"{topic}-control", "events_topic": f"{topic}-events"},
        "control": {"secret_env": "XCLIP_TEST_CONTROL_SECRET", **control},
    })


def poll_until(control, done, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out; counts {control.counts}"
        control.poll(timeout_ms=200)
    return control.plane.config


def test_changes_survive_a_restart_and_changes_made_while_down_apply_at_start(kafka_bootstrap, kafka_topic,
                                                                             monkeypatch):
    monkeypatch.setenv("XCLIP_TEST_CONTROL_SECRET", SECRET)
    config = config_for(kafka_bootstrap, kafka_topic)
    topic = config.kafka.control_topic
    operator = KafkaSink(kafka_bootstrap, client_id="test-operator")

    def send(value: bytes):
        operator.send(topic, "op", value, []).get(timeout=10)

    control = open_control_topic(config)
    try:
        assert [c.id for c in control.start().cameras] == ["c1"]
        add = sign({"op": "add_camera", "camera": {"id": "c2", "url": "rtsp://user:hunter2@10.0.0.7/s"}},
                   SECRET.encode())
        send(add)
        config_1 = poll_until(control, lambda: control.counts["applied"] == 1)
        assert [c.id for c in config_1.cameras] == ["c1", "c2"]
    finally:
        control.close()

    # The pipeline is down: one valid change, one unsigned, a tombstone and a replayed copy arrive meanwhile.
    send(sign({"op": "set_labels", "id": "c2", "labels": "night"}, SECRET.encode()))
    send(b'{"op": "remove_camera", "id": "c1"}')
    operator.send(topic, "op", None, []).get(timeout=10)
    send(add)  # the replay memory was saved with the state: a copy is refused after the restart too
    operator.close()

    restarted = open_control_topic(config)
    try:
        start = restarted.start()
        assert [c.id for c in start.cameras] == ["c1", "c2"]  # the change made before the restart is back
        final = poll_until(restarted, lambda: sum(restarted.counts.values()) == 4)
        assert restarted.counts == {"applied": 1, "refused": 3, "events_failed": 0}  # the add is not read twice
        assert [c.id for c in final.cameras] == ["c1", "c2"]
        assert final.label_set(final.cameras[1].labels).labels == ["c"]
        restarted.sink.flush(timeout=10)
    finally:
        restarted.close()

    reader = TopicReader(kafka_bootstrap, config.kafka.events_topic)
    try:
        events = reader.read_until(lambda ev: len(ev) >= 5, timeout=30)
    finally:
        reader.close()
    refused = [e for e in events if e["event_type"] == "xclip.control.refused"]
    applied = [e for e in events if e["event_type"] == "xclip.control.applied"]
    assert sorted(e["op"] for e in applied) == ["add_camera", "set_labels"]
    refused.sort(key=lambda e: e["offset"])  # the events topic's partitions interleave them
    assert [e["offset"] for e in refused] == [2, 3, 4] and all(e["topic"] == topic for e in refused)
    assert [r for e, r in zip(refused, ["unsigned", "tombstone", "replayed"]) if r not in e["reason"]] == []
    assert not any("hunter2" in str(e) for e in events)


def test_the_live_pages_label_changes_are_checked_then_applied_through_the_topic(kafka_bootstrap, kafka_topic,
                                                                                  monkeypatch):
    """Issue 18: ``forward`` (the page's form) writes only authentic, fresh, new set_labels messages
    to the control topic; there they are applied and reported like any other record."""
    from xclip_stream.pipeline.control import Refused
    from xclip_stream.pipeline.control_auth import AuthError

    monkeypatch.setenv("XCLIP_TEST_CONTROL_SECRET", SECRET)
    control = open_control_topic(config_for(kafka_bootstrap, kafka_topic))
    try:
        control.start()
        relabel = sign({"op": "set_labels", "id": "c1", "labels": "night"}, SECRET.encode())
        with pytest.raises(AuthError, match="bad signature"):
            control.forward(sign({"op": "set_labels", "id": "c1", "labels": "night"}, b"not-the-secret-at-all"))
        with pytest.raises(Refused, match="labels only, not remove_camera"):
            control.forward(sign({"op": "remove_camera", "id": "c1"}, SECRET.encode()))
        assert control.forward(relabel) == "c1"
        with pytest.raises(AuthError, match="replayed"):
            control.forward(relabel)
        config = poll_until(control, lambda: control.counts["applied"] == 1)
        assert config.cameras[0].labels == "night" and control.counts["refused"] == 0  # nothing else was written
    finally:
        control.close()


def test_a_control_topic_without_its_secret_refuses_to_start(kafka_bootstrap, kafka_topic, monkeypatch):
    monkeypatch.delenv("XCLIP_TEST_CONTROL_SECRET", raising=False)
    with pytest.raises(ConfigError, match="XCLIP_TEST_CONTROL_SECRET is missing"):
        open_control_topic(config_for(kafka_bootstrap, kafka_topic))


def test_state_snapshots_are_signed_and_the_newest_wins():
    from xclip_stream.pipeline.control_topic import _total, open_state, sign_state

    state = {"instance": "i", "offsets": {"0": 7}, "overlay": {"cameras": {}, "labels": {}}}
    assert open_state(sign_state(state, SECRET.encode()), SECRET.encode()) == state
    forged = sign_state({**state, "overlay": {"cameras": {"x": {"id": "x", "url": "/etc/passwd"}}, "labels": {}}},
                        b"an-attackers-own-secret")
    assert open_state(forged, SECRET.encode()) is None
    for junk in (None, b"", b"[]", b"{\"state\": 1}", b"\xff"):
        assert open_state(junk, SECRET.encode()) is None
    assert _total({"offsets": {"0": 9}}) > _total(state)  # a replayed older snapshot loses
