"""Helpers for the end-to-end pipeline tests: a Ray session, a pipeline run in a thread, and a
reader of the events topic. Everything is real: Ray, Serve, Tansu, PyAV, the RTSP server."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import defaultdict
from pathlib import Path

from kafka import KafkaConsumer

from xclip_stream.actors.replica import APP_NAME, deploy
from xclip_stream.actors.runner import run_pipeline
from xclip_stream.pipeline.kafka_clients import client_config
from xclip_stream.schemas.config import KafkaSecurity, PipelineConfig, parse_config

LABELS = ["a person walking", "a person running", "a car"]


def pipeline_config(checkpoint: Path, cameras: list[dict], kafka: dict | None = None, **extra) -> dict:
    config = {
        "model": {"path": str(checkpoint)},
        "serve": {"replicas": 1, "num_cpus": 0.25, "max_batch_size": 8},
        "labels": {"labels": LABELS},
        "defaults": {"sample_fps": 8, "max_gap_seconds": 1.0},
        "cameras": cameras,
    }
    if kafka is not None:
        config["kafka"] = kafka
    config.update(extra)
    return config


# What each Ray cluster of this worker has deployed for the tests: node id -> (model and serve
# settings, Serve's last deploy time of the application)
_SHARED_APPS: dict[str, tuple[str, float]] = {}


def shared_model_app(config: PipelineConfig) -> str:
    """Deploys the model application for ``config`` unless this cluster already runs it with the same
    model and serve settings, deployed here (a test that deployed or deleted it since is seen by
    Serve's deploy time); returns the cluster's address. A pipeline run with ``serve.deploy: false``
    then only calls it, as under a RayService: a replica's start (seconds idle, tens of seconds
    beside another pipeline) is paid once per module and settings, not once per test."""
    import ray
    from ray import serve

    key = config.model.model_dump_json() + config.serve.model_dump_json()
    node = ray.get_runtime_context().get_node_id()
    status = serve.status().applications.get(APP_NAME) if node in _SHARED_APPS else None
    if status is None or status.status != "RUNNING" or _SHARED_APPS[node] != (key, status.last_deployed_time_s):
        deploy(config.model, config.serve)  # returns once the application is running
        _SHARED_APPS[node] = (key, serve.status().applications[APP_NAME].last_deployed_time_s)
    return ray.get_runtime_context().gcs_address


class PipelineThread:
    """``run_pipeline`` in a background thread, stoppable like SIGTERM would stop it. With
    ``shared_model`` (the default) the model application is deployed once for the tests of a Ray
    session (``shared_model_app``) and the pipeline joins it; ``False`` keeps the pipeline's own
    deploy and delete, for tests of those."""

    def __init__(self, config: dict, shared_model: bool = True):
        self.config = parse_config(config)
        self.shared_model = shared_model and self.config.serve.deploy
        self.ray_address: str | None = None
        self.stop = threading.Event()
        self.out = io.StringIO()
        self.result: dict | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.result = run_pipeline(self.config, self.out, stop=self.stop, ray_address=self.ray_address)
        except BaseException as e:  # noqa: BLE001 - re-raised in join()
            self.error = e

    def __enter__(self):
        if self.shared_model:
            self.ray_address = shared_model_app(self.config)
            serve = self.config.serve.model_copy(update={"deploy": False})
            self.config = self.config.model_copy(update={"serve": serve})
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()

    def join(self, timeout: float = 120) -> dict:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the pipeline did not shut down"
        if self.error:
            raise self.error
        return self.result

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


class TopicReader:
    """Reads a topic from the beginning and keeps every record (value as JSON when it parses)."""

    def __init__(self, bootstrap: str, topic: str, security: KafkaSecurity | None = None):
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                      enable_auto_commit=False, group_id=None, consumer_timeout_ms=200,
                                      **client_config(security))
        self.records = []

    # 180 s: seconds on an idle machine, but beside the multi-node cluster test (the other pytest
    # worker) a pipeline got no window for 90 s and its actors took over 30 s to start
    def read_until(self, done, timeout: float = 180.0, what: str = "events") -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=300).values():
                self.records.extend(records)
            if done(self.values()):
                return self.values()
        raise AssertionError(f"timed out waiting for {what}; got {len(self.records)} records: "
                             f"{[v.get('event_type') for v in self.values()][-20:]}")

    def values(self) -> list[dict]:
        """The JSON records (a dead-letter topic holds raw frames, which are skipped here)."""
        out = []
        for r in self.records:
            try:
                out.append(json.loads(r.value))
            except ValueError:
                continue
        return out

    def close(self):
        self.consumer.close()


def by_camera(events: list[dict], event_type: str = "xclip.window.scores") -> dict[str, list[dict]]:
    out = defaultdict(list)
    for e in events:
        if e["event_type"] == event_type:
            out[e["camera_id"]].append(e)
    return out


def scrape_metric(name: str, label: str = "camera", where: dict[str, str] | None = None) -> dict[str, float]:
    """``label`` value -> the sum of Prometheus metric ``name`` over its series (those whose labels
    include ``where``), scraped from the metrics endpoint of this process's Ray node (Ray puts
    ``ray_`` before our names)."""
    import re
    import urllib.request

    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(f"ray_{name}{{"):
            labels, value = line.rsplit(" ", 1)
            match = re.search(f'[{{,]{label}="([^"]*)"', labels)
            if match and all(f'{k}="{v}"' in labels for k, v in (where or {}).items()):
                values[match.group(1)] = values.get(match.group(1), 0.0) + float(value)
    return values


def wait_for_metric(name: str, key: str, above: float, timeout: float = 45.0, label: str = "camera",
                    where: dict[str, str] | None = None) -> float:
    """Scrape until the metric for ``key`` exceeds ``above`` (Ray exports every few seconds)."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = scrape_metric(name, label, where).get(key)
        if value is not None and value > above:
            return value
        time.sleep(1.0)
    raise AssertionError(f"ray_{name} for {key!r} stayed at {value} (waited for more than {above})")


def free_port() -> int:
    """A port free on loopback now (for a pipeline's ``http`` section, whose port the test must know)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, error statuses included."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def driver_metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the driver's ``/metrics`` sample ``name`` with exactly ``labels``, or None."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    wanted = f"{name}{{{inner}}}" if inner else name
    for line in text.splitlines():
        if line.rsplit(" ", 1)[0] == wanted:
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for_http(url: str, check, timeout: float = 30.0, what: str = "") -> tuple[int, str]:
    """GET ``url`` until ``check(status, body)`` holds (the driver refreshes its status every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = http_get(url)
        if check(status, body):
            return status, body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}: {what or 'condition'} not met; last answer {status}: {body[:500]}")
        time.sleep(0.5)
