"""The live view reads events back from a real broker, counts windows that name the truth, skips
records that are not events, and draws either lines or a redrawn table."""

from __future__ import annotations

import io
import json

from kafka import KafkaProducer

from xclip_stream.viewer import LiveView, ViewCamera


def score(camera: str, index: int, label: str) -> bytes:
    return json.dumps({"event_type": "xclip.window.scores", "camera_id": camera, "window_index": index,
                       "top_label": label, "top_score": 0.9, "latency_ms": 120.0}).encode()


def publish(bootstrap: str, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for value in (
        json.dumps({"event_type": "xclip.stream.connected", "camera_id": "a", "reason": ""}).encode(),
        score("a", 0, "a red circle growing"),
        b"\x00not json",
        score("a", 1, "a red circle growing"),
        json.dumps({"event_type": "xclip.activity.start", "camera_id": "a", "label": "a red circle growing"}).encode(),
        score("b", 0, "a blue square moving up"),
        score("c", 0, "anything"),
    ):
        producer.send(topic, value)
    producer.flush()
    producer.close()


def run_view(bootstrap: str, topic: str, plain: bool) -> tuple[dict, str]:
    out = io.StringIO()
    cameras = [ViewCamera("a", "rtsp", "a red circle growing"), ViewCamera("b", "file", "a blue square moving down")]
    view = LiveView(bootstrap, topic, cameras, out, seconds=5, plain=plain).start()
    assert view.first_window.wait(30)
    return view.finish(), out.getvalue()


def test_plain_view_counts_windows_naming_the_truth(kafka_bootstrap, kafka_topic):
    publish(kafka_bootstrap, kafka_topic)
    summary, text = run_view(kafka_bootstrap, kafka_topic, plain=True)
    assert summary["cameras"]["a"] == {"truth": "a red circle growing", "windows": 2, "correct": 2, "accuracy": 1.0}
    assert summary["cameras"]["b"]["correct"] == 0 and summary["cameras"]["b"]["windows"] == 1
    assert summary["cameras"]["c"]["truth"] is None  # an unknown camera is shown, never counted correct
    assert (summary["windows"], summary["correct"]) == (4, 2)
    assert "MISS (truth: a blue square moving down)" in text and "stream connected" in text
    assert "start  a  'a red circle growing'" in text
    assert "4 windows scored, top label = true activity in 2 (50.0%)" in text


def test_table_view_redraws_in_place(kafka_bootstrap, kafka_topic):
    publish(kafka_bootstrap, kafka_topic)
    summary, text = run_view(kafka_bootstrap, kafka_topic, plain=False)
    assert summary["windows"] == 4
    frames = text.split("\033[H\033[J")
    assert len(frames) >= 2  # at least one redraw while reading and the final one
    last = frames[-1]
    assert "true activity" in last and "2/2" in last and "0/1" in last and "+a red circle growing" in last
