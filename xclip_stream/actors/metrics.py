"""Prometheus metrics through Ray's metrics API (issue 18, part 1: the cameras' so far).

Each actor records into ``ray.util.metrics``; the metrics agent of every Ray node exports them on
the node's metrics export port (what KubeRay's PodMonitor scrapes) under Ray's namespace: the
counter ``xclip_frames_decoded`` is scraped as ``ray_xclip_frames_decoded_total``, with Ray's own
labels (WorkerId, SessionName, NodeAddress, Component) beside ours (checked with Ray 2.60 under
``ray.init(include_dashboard=False)``).

Counters are fed from the snapshots the stages keep anyway (``health()``), as differences since
the previous snapshot, so the decode and scoring paths make no calls of their own. A camera
restarted in a new process starts again from zero there; Prometheus reads that as a counter reset
of another series (its WorkerId differs). Latencies are taken from the scoring loop's record of the
newest ones, as many as were scored since the previous snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

# health() key -> (metric name without Ray's prefix, what it counts)
CAMERA_COUNTERS = {
    "frames_decoded": ("xclip_frames_decoded", "Frames decoded from a camera"),
    "frames_sampled": ("xclip_frames_sampled", "Frames kept by a camera's sampler"),
    "windows_emitted": ("xclip_windows_cut", "Windows cut from a camera's sampled frames"),
    "windows_scored": ("xclip_windows_scored", "A camera's windows scored by a model replica"),
    "windows_dropped": ("xclip_windows_dropped", "A live camera's windows dropped because inference was behind"),
    "windows_failed": ("xclip_windows_failed", "A camera's windows the model could not score (published as failed)"),
    "gaps": ("xclip_gaps", "Gaps in a camera's frames longer than max_gap_seconds"),
    "reconnects": ("xclip_reconnects", "Reconnections to a camera"),
}
CAMERA_GAUGES = {"pending": ("xclip_pending_windows", "A camera's windows cut and not yet scored")}
LATENCY = ("xclip_frame_to_event_latency_seconds", "From a window's last frame to its events")
LATENCY_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def ray_metrics():
    """Ray's metric classes (imported when first used: the module loads without a Ray worker)."""
    from ray.util.metrics import Counter, Gauge, Histogram

    return Counter, Gauge, Histogram


class CameraMetrics:
    """One process's camera metrics, labelled ``camera``; ``record`` once a second per camera."""

    def __init__(self, classes: tuple[Callable, Callable, Callable] | None = None):
        counter, gauge, histogram = classes or ray_metrics()
        tags = ("camera",)
        self.counters = {key: counter(name, description=text, tag_keys=tags)
                         for key, (name, text) in CAMERA_COUNTERS.items()}
        self.gauges = {key: gauge(name, description=text, tag_keys=tags) for key, (name, text) in CAMERA_GAUGES.items()}
        self.latency = histogram(LATENCY[0], description=LATENCY[1], boundaries=LATENCY_BUCKETS_S, tag_keys=tags)
        self._last: dict[str, dict[str, int]] = {}  # camera -> the counters' values at its last snapshot

    def record(self, camera: str, health: dict) -> None:
        """Add what ``health`` (a ``CameraStream.health()`` snapshot) counted since the last one."""
        tags = {"camera": camera}
        last = self._last.setdefault(camera, {})
        previous_scored = last.get("windows_scored", 0)
        for key, counter in self.counters.items():
            value = int(health.get(key) or 0)
            if value > last.get(key, 0):
                counter.inc(value - last.get(key, 0), tags)
            last[key] = value
        for key, gauge in self.gauges.items():
            gauge.set(float(health.get(key) or 0), tags)
        scored_since = int(health.get("windows_scored") or 0) - previous_scored
        if scored_since > 0:  # the newest latencies are those windows' (health keeps the last 50)
            for ms in (health.get("latency_ms") or [])[-scored_since:]:
                self.latency.observe(ms / 1000.0, tags)

    def forget(self, camera: str) -> None:
        """A camera that left this process: its next snapshot here (a new run) starts from zero."""
        self._last.pop(camera, None)
