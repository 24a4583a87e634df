"""Issue 18, part 1: camera health snapshots become Prometheus counters, gauges and a latency
histogram. Ray's metric classes are the boundary here (recording stand-ins); a running pipeline's
metrics endpoint is scraped in tests/test_pipeline.py (the RTSP camera restart)."""

from __future__ import annotations

from xclip_stream.actors.metrics import CAMERA_COUNTERS, CameraMetrics


class Recorded:
    """Stands in for one of Ray's metric classes: keeps every call."""

    def __init__(self, name, description="", tag_keys=(), boundaries=None):
        self.name, self.tag_keys, self.calls = name, tag_keys, []

    def inc(self, value, tags):
        self.calls.append(("inc", value, tags))

    def set(self, value, tags):
        self.calls.append(("set", value, tags))

    def observe(self, value, tags):
        self.calls.append(("observe", value, tags))


def snapshot(decoded: int, scored: int, latencies_ms: list[float], pending: int = 0) -> dict:
    return {"frames_decoded": decoded, "frames_sampled": decoded // 2, "windows_emitted": scored + pending,
            "windows_scored": scored, "windows_dropped": 0, "windows_failed": 0, "gaps": 0, "reconnects": 0,
            "pending": pending, "latency_ms": latencies_ms}


def test_counters_grow_by_what_each_snapshot_adds_and_latencies_are_observed_once():
    metrics = CameraMetrics((Recorded, Recorded, Recorded))
    assert {c.name for c in metrics.counters.values()} == {name for name, _ in CAMERA_COUNTERS.values()}
    assert all(c.name.startswith("xclip_") for c in metrics.counters.values())
    metrics.record("cam-1", snapshot(10, 2, [300.0, 400.0], pending=1))
    metrics.record("cam-1", snapshot(25, 3, [300.0, 400.0, 500.0]))
    metrics.record("cam-2", snapshot(4, 0, []))
    decoded = metrics.counters["frames_decoded"].calls
    assert decoded == [("inc", 10, {"camera": "cam-1"}), ("inc", 15, {"camera": "cam-1"}),
                       ("inc", 4, {"camera": "cam-2"})]
    assert metrics.counters["windows_dropped"].calls == []  # nothing counted, nothing added
    assert metrics.gauges["pending"].calls[:2] == [("set", 1.0, {"camera": "cam-1"}), ("set", 0.0, {"camera": "cam-1"})]
    # each scored window's latency once: two, then the one new one
    assert [v for _, v, _ in metrics.latency.calls] == [0.3, 0.4, 0.5]


def test_a_camera_run_again_in_the_process_starts_from_zero():
    metrics = CameraMetrics((Recorded, Recorded, Recorded))
    metrics.record("cam-1", snapshot(10, 1, [100.0]))
    metrics.forget("cam-1")
    metrics.record("cam-1", snapshot(3, 1, [200.0]))
    assert [v for _, v, _ in metrics.counters["frames_decoded"].calls] == [10, 3]
    assert [v for _, v, _ in metrics.latency.calls] == [0.1, 0.2]
