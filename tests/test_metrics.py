"""Issue 18, part 1: health snapshots of cameras, Kafka members and replicas become Prometheus
counters, gauges and histograms. Ray's metric classes are the boundary here (recording stand-ins); a
running pipeline's metrics endpoint is scraped in tests/test_pipeline.py (the RTSP camera restart,
the dead-letter run)."""

from __future__ import annotations

from xclip_stream.actors.metrics import (
    CAMERA_COUNTERS,
    CATALOGUE,
    CameraMetrics,
    MemberMetrics,
    ReplicaMetrics,
)


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


STANDINS = (Recorded, Recorded, Recorded)


def snapshot(decoded: int, scored: int, latencies_ms: list[float], pending: int = 0) -> dict:
    return {"frames_decoded": decoded, "frames_sampled": decoded // 2, "windows_emitted": scored + pending,
            "windows_scored": scored, "windows_dropped": 0, "windows_failed": 0, "gaps": 0, "reconnects": 0,
            "pending": pending, "latency_ms": latencies_ms, "events_published": scored, "event_send_failures": 0,
            "events_undelivered": pending}


def test_counters_grow_by_what_each_snapshot_adds_and_latencies_are_observed_once():
    metrics = CameraMetrics(STANDINS)
    counters = metrics.stream.counters
    assert {c.name for c in counters.values()} == {name for name, _ in CAMERA_COUNTERS.values()}
    assert all(c.name.startswith("xclip_") for c in counters.values())
    metrics.record("cam-1", snapshot(10, 2, [300.0, 400.0], pending=1))
    metrics.record("cam-1", snapshot(25, 3, [300.0, 400.0, 500.0]))
    metrics.record("cam-2", snapshot(4, 0, []))
    decoded = counters["frames_decoded"].calls
    assert decoded == [("inc", 10, {"camera": "cam-1"}), ("inc", 15, {"camera": "cam-1"}),
                       ("inc", 4, {"camera": "cam-2"})]
    assert counters["windows_dropped"].calls == []  # nothing counted, nothing added
    assert metrics.output.counters["events_published"].calls == [("inc", 2, {"source": "cam-1"}),
                                                                  ("inc", 1, {"source": "cam-1"})]
    assert metrics.stream.gauges["pending"].calls[:2] == [("set", 1.0, {"camera": "cam-1"}), ("set", 0.0, {"camera": "cam-1"})]
    # each scored window's latency once: two, then the one new one
    assert [v for _, v, _ in metrics.latency.calls] == [0.3, 0.4, 0.5]


def test_a_camera_run_again_in_the_process_starts_from_zero():
    metrics = CameraMetrics(STANDINS)
    metrics.record("cam-1", snapshot(10, 1, [100.0]))
    metrics.forget("cam-1")
    metrics.record("cam-1", snapshot(3, 1, [200.0]))
    assert [v for _, v, _ in metrics.stream.counters["frames_decoded"].calls] == [10, 3]
    assert [v for _, v, _ in metrics.latency.calls] == [0.1, 0.2]


def member(records: int, reasons: dict, lag: dict, scored: int = 0) -> dict:
    return {"records": records, "windows": scored, "windows_scored": scored, "windows_failed": 0,
            "commit_failures": 0, "pending": 0, "dead_letter_reasons": reasons, "lag": lag,
            "latency_ms": [100.0] * scored, "events_published": scored, "event_send_failures": 0,
            "events_undelivered": 0}


def test_a_member_counts_dead_letters_by_reason_and_reports_the_lag_of_the_partitions_it_holds():
    metrics = MemberMetrics("frames", STANDINS)
    metrics.record(member(10, {"corrupt_image": 2}, {0: 5, 1: 7}, scored=1))
    metrics.record(member(30, {"corrupt_image": 3, "key_mismatch": 1}, {1: 2}, scored=3))
    assert [(v, t["reason"]) for _, v, t in metrics.dead_letters.calls] == [
        (2, "corrupt_image"), (1, "corrupt_image"), (1, "key_mismatch")]
    assert [v for _, v, _ in metrics.stream.counters["records"].calls] == [10, 20]
    lag = [(t["partition"], v) for _, v, t in metrics.lag.calls]
    # partition 0 went to another member: reported as 0 here, so a sum over members stays right
    assert lag == [("0", 5.0), ("1", 7.0), ("0", 0), ("1", 2.0)]
    assert len(metrics.latency.calls) == 3 and all(t == {"topic": "frames"} for _, _, t in metrics.latency.calls)


def test_a_replica_records_each_batch_and_the_label_cache():
    metrics = ReplicaMetrics(STANDINS)
    metrics.batch("demo", 4, 0.2, {"label_cache_hits": 0, "label_cache_misses": 1})
    metrics.batch("demo", 8, 0.3, {"label_cache_hits": 5, "label_cache_misses": 1})
    assert [v for _, v, _ in metrics.size.calls] == [4, 8] and [v for _, v, _ in metrics.time.calls] == [0.2, 0.3]
    assert metrics.cache.counters["label_cache_hits"].calls == [("inc", 5, {"model": "demo"})]
    assert metrics.cache.counters["label_cache_misses"].calls == [("inc", 1, {"model": "demo"})]


def test_the_catalogue_names_every_series_as_scraped():
    names = set(CATALOGUE)
    assert "ray_xclip_frames_decoded_total" in names and "ray_xclip_pending_windows" in names
    assert "ray_xclip_kafka_dead_letters_total" in names and "ray_xclip_replica_batch_size" in names
    assert all(n.startswith("ray_xclip_") for n in names)
    assert all(n.endswith("_total") == (kind == "counter") for n, kind in CATALOGUE.items())
