"""Run a pipeline from a validated configuration: Ray, the model deployment, the supervisor, and
the control plane (a reloaded configuration file and/or a Kafka control topic), until the sources
end, ``max_windows`` is reached, or the process is asked to stop (SIGINT/SIGTERM)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TextIO

import ray
from ray import serve

from ..pipeline.backoff import Stopped, retry
from ..pipeline.control import apply_control, parse_control
from ..pipeline.scoring import ModelInfo
from ..schemas.config import ConfigError, PipelineConfig, load_config
from .output import SinkSpec
from .replica import APP_NAME, deploy
from .supervisor import Supervisor

log = logging.getLogger(__name__)

HEALTH_LOG_INTERVAL_S = 60.0
KAFKA_ATTEMPT_S = 5.0  # one attempt to reach the broker at start; failed attempts are retried
RAY_ENV = {  # local clusters: loopback only, no token files, no usage reporting
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S": "1",
}


def init_ray(address: str | None = None, log_to_driver: bool = False) -> bool:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local cluster. True if we started it.

    Actor logs stay in Ray's session log folder unless ``log_to_driver``: Ray forwards them to the
    driver's standard output, which in stdout mode carries the events."""
    if ray.is_initialized():
        return False
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    address = address or os.environ.get("RAY_ADDRESS")
    ray.init(address=address, include_dashboard=False, log_to_driver=log_to_driver, logging_level=logging.WARNING,
             configure_logging=False, runtime_env={"env_vars": {k: os.environ[k] for k in RAY_ENV}})
    return address is None


class ConfigWatcher:
    """Reloads the configuration file when it changes; a bad edit is logged and ignored."""

    def __init__(self, path: Path):
        self.path = path
        self.mtime = path.stat().st_mtime_ns

    def changed(self) -> PipelineConfig | None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            return None
        if mtime == self.mtime:
            return None
        self.mtime = mtime
        try:
            return load_config(self.path)
        except ConfigError as e:
            log.error("configuration change refused, keeping the running one:\n%s", e)
            return None


class ControlTopic:
    """Reads control messages (see pipeline.control) from a Kafka topic, from its end: changes made
    before this run started are already in the configuration it was given. No consumer group: every
    running pipeline sees every message, and there is no group join to wait for."""

    def __init__(self, bootstrap: str, topic: str):
        from kafka import KafkaConsumer, TopicPartition

        from ..services.tansu import create_topics

        create_topics(bootstrap, {topic: 1})
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        partitions = self.consumer.partitions_for_topic(topic) or {0}
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(assigned)
        self.consumer.seek_to_end()
        for tp in assigned:
            self.consumer.position(tp)  # resolve "end" now, before any message can be missed

    def poll(self) -> list[dict]:
        messages = []
        for records in self.consumer.poll(timeout_ms=50).values():
            for record in records:
                try:
                    messages.append(parse_control(record.value))
                except ConfigError as e:
                    log.error("control message at offset %d refused: %s", record.offset, e)
        return messages

    def close(self) -> None:
        self.consumer.close()


def run_pipeline(
    config: PipelineConfig,
    out: TextIO,
    config_path: Path | None = None,
    stop: threading.Event | None = None,
    ray_address: str | None = None,
    log_to_driver: bool = False,
) -> dict:
    """Run until done; returns the final health of every source. Events go to Kafka, or to ``out``."""
    stop = stop or threading.Event()
    started_ray = init_ray(ray_address, log_to_driver)
    previous = _install_signal_handlers(stop)
    supervisor = None
    control = None
    deployed = False
    try:
        model = ModelInfo.read(config.model.path)
        if config.kafka:
            from ..services.tansu import create_topics

            # A broker still booting (or down) delays the start, one log line per attempt.
            bootstrap, unreachable = config.kafka.bootstrap, kafka_unreachable_errors()
            retry(lambda: create_topics(bootstrap, {config.kafka.events_topic: 4, config.kafka.dead_letter_topic: 1},
                                        timeout=KAFKA_ATTEMPT_S), f"kafka {bootstrap}", stop, unreachable)
            if config.kafka.control_topic:
                control = retry(lambda: ControlTopic(bootstrap, config.kafka.control_topic), f"kafka {bootstrap}",
                                stop, unreachable)
        deployed = True  # from here on, a half-made deployment is removed too
        deploy(config.model, config.serve)
        sink = SinkSpec(config.kafka.bootstrap if config.kafka else None,
                        config.kafka.events_topic if config.kafka else "",
                        config.kafka.dead_letter_topic if config.kafka else "")
        supervisor = Supervisor(config, model, sink, config.max_windows)
        supervisor.start()
        watcher = ConfigWatcher(config_path) if config_path else None
        next_health = time.monotonic() + HEALTH_LOG_INTERVAL_S
        while not stop.is_set() and not supervisor.done:
            supervisor.poll(0.5)
            if time.monotonic() >= next_health and log.isEnabledFor(logging.INFO):
                for key, health in supervisor.health().items():
                    log.info("health %s: %s", key, {k: v for k, v in health.items() if k != "latency_ms"})
                next_health = time.monotonic() + HEALTH_LOG_INTERVAL_S
            _write(out, supervisor.take_output())
            new = watcher.changed() if watcher else None
            for message in control.poll() if control else []:
                try:
                    new = apply_control(new or supervisor.config, message)
                except ConfigError as e:
                    log.error("control message refused: %s", e)
            if new is not None:
                supervisor.apply(new)
        supervisor.stop()
        _write(out, supervisor.take_output())
        return supervisor.finished
    except Stopped:
        log.warning("stopped before the pipeline started")
        return {}
    finally:
        _restore_signal_handlers(previous)
        if control:
            control.close()
        if supervisor and supervisor.workers:
            supervisor.stop(timeout=10)
        # An actor handle or object ref freed after ray.shutdown() (say, by the cycle collector, on
        # any thread) reaches a core worker that is gone, and Ray then ends the whole process with
        # status 1 (seen once in ~10 demo runs): free them all while Ray is up.
        supervisor = None
        gc.collect()
        if deployed:
            serve.delete(APP_NAME, _blocking=True)
        if started_ray:
            serve.shutdown()
            gc.collect()
            ray.shutdown()


def kafka_unreachable_errors() -> tuple[type[BaseException], ...]:
    """What a client raises while the broker cannot be reached (retried at start; others are raised)."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MetadataEmptyBrokerList

    return (KafkaConnectionError, KafkaTimeoutError, MetadataEmptyBrokerList, OSError)


def _write(out: TextIO, lines: list[str]) -> None:
    for line in lines:
        out.write(line + "\n")
    if lines:
        out.flush()


def _install_signal_handlers(stop: threading.Event):
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
    return previous


def _restore_signal_handlers(previous) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)

