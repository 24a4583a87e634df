"""Prometheus metrics through Ray's metrics API, recorded by the actors: cameras, Kafka frames
members and model replicas (the driver's own, control among them, are on its HTTP server: web/).

Each actor records into ``ray.util.metrics``; the metrics agent of every Ray node exports them on
the node's metrics export port (what KubeRay's PodMonitor scrapes) under Ray's namespace: the
counter ``xclip_frames_decoded`` is scraped as ``ray_xclip_frames_decoded_total``, with Ray's own
labels (WorkerId, SessionName, NodeAddress, Component) beside ours (checked with Ray 2.60 under
``ray.init(include_dashboard=False)``). ``CATALOGUE`` lists every series as scraped; the Grafana
dashboard in k8s/ may use only those (tests/test_k8s.py).

Counters are fed from the snapshots the stages keep anyway (``health()``, delivery stats), as
differences since the previous snapshot, so the decode and scoring paths make no calls of their
own. An actor restarted in a new process starts again from zero there; Prometheus reads that as a
counter reset of another series (its WorkerId differs). Latencies are taken from the scoring loop's
record of the newest ones, as many as were scored since the previous snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

Spec = dict[str, tuple[str, str]]  # snapshot key -> (metric name without Ray's prefix, what it counts)

CAMERA_COUNTERS: Spec = {
    "frames_decoded": ("xclip_frames_decoded", "Frames decoded from a camera"),
    "frames_sampled": ("xclip_frames_sampled", "Frames kept by a camera's sampler"),
    "windows_emitted": ("xclip_windows_cut", "Windows cut from a camera's sampled frames"),
    "windows_scored": ("xclip_windows_scored", "A camera's windows scored by a model replica"),
    "windows_dropped": ("xclip_windows_dropped", "A live camera's windows dropped because inference was behind"),
    "windows_failed": ("xclip_windows_failed", "A camera's windows the model could not score (published as failed)"),
    "gaps": ("xclip_gaps", "Gaps in a camera's frames longer than max_gap_seconds"),
    "reconnects": ("xclip_reconnects", "Reconnections to a camera"),
}
CAMERA_GAUGES: Spec = {"pending": ("xclip_pending_windows", "A camera's windows cut and not yet scored")}
LATENCY = ("xclip_frame_to_event_latency_seconds", "From a window's last frame to its events")
LATENCY_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]

# A stream's output (camera actors: ``source`` is the camera; Kafka members: the frames topic).
DELIVERY_COUNTERS: Spec = {
    "events_published": ("xclip_events_published", "Events the sink acknowledged"),
    "event_send_failures": ("xclip_event_send_failures", "Failed sends of events (each is sent again)"),
}
DELIVERY_GAUGES: Spec = {"events_undelivered": ("xclip_events_undelivered", "Events submitted, not yet acknowledged")}

# Kafka frames members, labelled ``topic`` (their cameras come and go with the messages).
MEMBER_COUNTERS: Spec = {
    "records": ("xclip_kafka_records", "Frame records consumed"),
    "windows": ("xclip_kafka_windows_cut", "Windows cut from a frames topic's records"),
    "windows_scored": ("xclip_kafka_windows_scored", "A frames topic's windows scored by a model replica"),
    "windows_failed": ("xclip_kafka_windows_failed", "A frames topic's windows the model could not score"),
    "commit_failures": ("xclip_kafka_commit_failures", "Offset commits that failed (retried)"),
}
MEMBER_GAUGES: Spec = {"pending": ("xclip_kafka_pending_windows", "A member's windows cut and not yet scored")}
DEAD_LETTERS = ("xclip_kafka_dead_letters", "Records sent to the dead-letter topic, by reason")
CONSUMER_LAG = ("xclip_kafka_consumer_lag_records", "Records of a partition past its member's committed offset")
MEMBER_LATENCY = ("xclip_kafka_frame_to_event_latency_seconds", "From a window's last frame to its events")

# Model replicas.
BATCH_SIZE = ("xclip_replica_batch_size", "Windows per forward pass")
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128]
BATCH_TIME = ("xclip_replica_batch_seconds", "Time of one batch: preprocessing, forward pass, scores")
BATCH_TIME_BUCKETS_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
REPLICA_COUNTERS: Spec = {
    "label_cache_hits": ("xclip_label_cache_hits", "Label sets whose text features were cached"),
    "label_cache_misses": ("xclip_label_cache_misses", "Label sets encoded by the text model"),
}


def _scraped() -> dict[str, str]:
    """Every series as Prometheus scrapes it (Ray's ``ray_`` prefix, ``_total`` on counters) -> its kind."""
    names: dict[str, str] = {}
    for spec in (CAMERA_COUNTERS, DELIVERY_COUNTERS, MEMBER_COUNTERS, REPLICA_COUNTERS):
        names.update({f"ray_{name}_total": "counter" for name, _ in spec.values()})
    names[f"ray_{DEAD_LETTERS[0]}_total"] = "counter"
    for spec in (CAMERA_GAUGES, DELIVERY_GAUGES, MEMBER_GAUGES):
        names.update({f"ray_{name}": "gauge" for name, _ in spec.values()})
    names[f"ray_{CONSUMER_LAG[0]}"] = "gauge"
    for name, _ in (LATENCY, MEMBER_LATENCY, BATCH_SIZE, BATCH_TIME):
        names[f"ray_{name}"] = "histogram"
    return names


CATALOGUE = _scraped()


def ray_metrics():
    """Ray's metric classes (imported when first used: the module loads without a Ray worker)."""
    from ray.util.metrics import Counter, Gauge, Histogram

    return Counter, Gauge, Histogram


class Totals:
    """Counters and gauges fed from snapshots of running totals, per series (one tag value each)."""

    def __init__(self, counter, gauge, tag: str, counters: Spec, gauges: Spec | None = None):
        self.tag = tag
        self.counters = {key: counter(name, description=text, tag_keys=(tag,)) for key, (name, text) in counters.items()}
        self.gauges = {key: gauge(name, description=text, tag_keys=(tag,))
                       for key, (name, text) in (gauges or {}).items()}
        self._last: dict[str, dict[str, int]] = {}  # tag value -> the counters' totals at its last snapshot

    def record(self, value: str, snapshot: dict) -> dict[str, int]:
        """Add what ``snapshot`` counted since the last one; returns the rises."""
        tags, last, rises = {self.tag: value}, self._last.setdefault(value, {}), {}
        for key, counter in self.counters.items():
            total = int(snapshot.get(key) or 0)
            rises[key] = total - last.get(key, 0)
            if rises[key] > 0:
                counter.inc(rises[key], tags)
            last[key] = total
        for key, gauge in self.gauges.items():
            gauge.set(float(snapshot.get(key) or 0), tags)
        return rises

    def forget(self, value: str) -> None:
        """A series whose source left this process: its next snapshot here starts from zero."""
        self._last.pop(value, None)


def _observe_latencies(histogram, tags: dict, scored: int, latencies_ms: list) -> None:
    """The newest ``scored`` latencies (health keeps the last 50) into ``histogram``."""
    if scored > 0:
        for ms in (latencies_ms or [])[-scored:]:
            histogram.observe(ms / 1000.0, tags)


class CameraMetrics:
    """One process's camera metrics, labelled ``camera``; ``record`` once a second per camera."""

    def __init__(self, classes: tuple[Callable, Callable, Callable] | None = None):
        counter, gauge, histogram = classes or ray_metrics()
        self.stream = Totals(counter, gauge, "camera", CAMERA_COUNTERS, CAMERA_GAUGES)
        self.output = Totals(counter, gauge, "source", DELIVERY_COUNTERS, DELIVERY_GAUGES)
        self.latency = histogram(LATENCY[0], description=LATENCY[1], boundaries=LATENCY_BUCKETS_S,
                                 tag_keys=("camera",))

    def record(self, camera: str, health: dict) -> None:
        """Add what ``health`` (a ``CameraStream.health()`` snapshot) counted since the last one."""
        rises = self.stream.record(camera, health)
        self.output.record(camera, health)
        _observe_latencies(self.latency, {"camera": camera}, rises["windows_scored"], health.get("latency_ms"))

    def forget(self, camera: str) -> None:
        """A camera that left this process: its next snapshot here (a new run) starts from zero."""
        self.stream.forget(camera)
        self.output.forget(camera)


class MemberMetrics:
    """A Kafka frames member's metrics, labelled ``topic``; ``record`` once a second."""

    def __init__(self, topic: str, classes: tuple[Callable, Callable, Callable] | None = None):
        counter, gauge, histogram = classes or ray_metrics()
        self.topic = topic
        self.stream = Totals(counter, gauge, "topic", MEMBER_COUNTERS, MEMBER_GAUGES)
        self.output = Totals(counter, gauge, "source", DELIVERY_COUNTERS, DELIVERY_GAUGES)
        self.dead_letters = counter(DEAD_LETTERS[0], description=DEAD_LETTERS[1], tag_keys=("topic", "reason"))
        self.lag = gauge(CONSUMER_LAG[0], description=CONSUMER_LAG[1], tag_keys=("topic", "partition"))
        self.latency = histogram(MEMBER_LATENCY[0], description=MEMBER_LATENCY[1], boundaries=LATENCY_BUCKETS_S,
                                 tag_keys=("topic",))
        self._reasons: dict[str, int] = {}
        self._partitions: set[int] = set()  # those whose lag this member reported last

    def record(self, health: dict) -> None:
        """``health``: a ``KafkaFramesActor.health()`` snapshot, with ``dead_letter_reasons`` and
        ``lag`` ({partition: records}) of the partitions the member holds now."""
        rises = self.stream.record(self.topic, health)
        self.output.record(self.topic, health)
        for reason, total in (health.get("dead_letter_reasons") or {}).items():
            if total > self._reasons.get(reason, 0):
                self.dead_letters.inc(total - self._reasons.get(reason, 0), {"topic": self.topic, "reason": reason})
            self._reasons[reason] = total
        lags = {int(p): n for p, n in (health.get("lag") or {}).items()}
        for partition in self._partitions - set(lags):  # handed over: its new member reports it now
            self.lag.set(0, {"topic": self.topic, "partition": str(partition)})
        for partition, records in lags.items():
            self.lag.set(float(records), {"topic": self.topic, "partition": str(partition)})
        self._partitions = set(lags)
        _observe_latencies(self.latency, {"topic": self.topic}, rises["windows_scored"], health.get("latency_ms"))


class ReplicaMetrics:
    """A model replica's batches (recorded as each ends) and label-cache totals, labelled ``model``
    (the checkpoint's name: during a roll, old and new replicas apart)."""

    def __init__(self, classes: tuple[Callable, Callable, Callable] | None = None):
        counter, gauge, histogram = classes or ray_metrics()
        self.size = histogram(BATCH_SIZE[0], description=BATCH_SIZE[1], boundaries=BATCH_SIZE_BUCKETS,
                              tag_keys=("model",))
        self.time = histogram(BATCH_TIME[0], description=BATCH_TIME[1], boundaries=BATCH_TIME_BUCKETS_S,
                              tag_keys=("model",))
        self.cache = Totals(counter, gauge, "model", REPLICA_COUNTERS)

    def batch(self, model: str, windows: int, seconds: float, cache: dict) -> None:
        self.size.observe(windows, {"model": model})
        self.time.observe(seconds, {"model": model})
        self.cache.record(model, cache)
