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
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import ray
from ray import serve

from ..pipeline.backoff import Stopped, retry
from ..pipeline.control import ControlPlane
from ..pipeline.control_auth import AuthError, read_secret
from ..pipeline.control_topic import ControlTopic, make_control_consumer
from ..pipeline.kafka_clients import KafkaUnreachable, check_access, client_config, create_topics
from ..pipeline.model_check import LabelChecker
from ..pipeline.scoring import ModelInfo, resolve_model_path
from ..schemas.config import ConfigError, PipelineConfig, RayConfig, load_config
from ..web.feed import EventFeed
from ..web.server import HttpServer
from ..web.status import Status, running_status
from . import ray_env
from .output import SinkSpec
from .replica import APP_NAME, check_running, deploy
from .supervisor import Supervisor

log = logging.getLogger(__name__)

HEALTH_LOG_INTERVAL_S = 60.0
STATUS_INTERVAL_S = 2.0  # how often the HTTP server's status (readiness, driver metrics) is refreshed
THUMBNAIL_INTERVAL_S = 2.0  # how often the cameras' thumbnails are asked for, while a page is open
THUMBNAIL_WIDTH = 320
KAFKA_ATTEMPT_S = 5.0  # one attempt to reach the broker at start; failed attempts are retried


def init_ray(address: str | None = None, log_to_driver: bool = False, config: RayConfig | None = None) -> bool:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local cluster. True if we started it.

    A local cluster listens on loopback only unless ``config.listen`` is ``all``, which turns token
    authentication on (see ray_env); joining a cluster starts no listener of ours. Actor logs stay
    in Ray's session log folder unless ``log_to_driver``: Ray forwards them to the driver's
    standard output, which in stdout mode carries the events."""
    if ray.is_initialized():
        return False
    config = config or RayConfig()
    address = address or os.environ.get("RAY_ADDRESS")
    worker_env = ray_env.apply(config) if address is None else ray_env.joining()
    node_ip = {"_node_ip_address": config.node_ip} if address is None and config.node_ip else {}
    ray.init(address=address, include_dashboard=False, log_to_driver=log_to_driver, logging_level=logging.WARNING,
             configure_logging=False, runtime_env={"env_vars": worker_env}, **node_ip)
    return address is None


class ConfigWatcher:
    """Reloads the configuration file when it changes; a bad edit (or one ``check`` refuses: label
    sets the model cannot score) is logged and ignored. With a control topic, the reloaded file is
    the base its changes are re-applied on (ControlPlane.reload)."""

    def __init__(self, path: Path, check: Callable[[PipelineConfig], None] | None = None):
        self.path = path
        self.check = check
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
            config = load_config(self.path)
            if self.check is not None:
                self.check(config)
            return config
        except ConfigError as e:
            log.error("configuration change refused, keeping the running one:\n%s", e)
            return None


def open_control_topic(config: PipelineConfig, check: Callable[[PipelineConfig], None] | None = None
                       ) -> ControlTopic:
    """The control topic of ``config`` (kafka.control_topic set), ready to ``start``. Refuses to start
    (ConfigError) when its secret cannot be read: an unauthenticated control topic is an open door."""
    from ..pipeline.sinks import KafkaSink

    assert config.kafka and config.kafka.control_topic and config.control
    settings, topic, security = config.control, config.kafka.control_topic, config.kafka.security
    try:
        secret = read_secret(settings.secret_file, settings.secret_env)
    except AuthError as e:
        raise ConfigError(f"control topic {topic}: {e}") from None
    state_topic = settings.state_topic or f"{topic}.state"
    create_topics(config.kafka.bootstrap, {topic: 1, state_topic: 1}, security)
    consumer = make_control_consumer(config.kafka.bootstrap, **client_config(security))
    sink = KafkaSink(config.kafka.bootstrap, client_id="xclip-stream-control", security=security)
    plane = ControlPlane(config, settings, secret, check=check)
    return ControlTopic(consumer, sink, plane, secret, topic, state_topic, settings.instance,
                        config.kafka.events_topic)


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
    if not config.serve.deploy and not (ray_address or os.environ.get("RAY_ADDRESS")):
        raise ConfigError("serve.deploy: false joins a cluster whose model application is deployed by someone "
                          "else (a RayService): give --ray-address or RAY_ADDRESS")
    # A model that cannot work, or a Kafka cluster that refuses us (TLS, SASL), is a clear error
    # before Ray, the replicas or any camera start (exit 2), in bounded time. A broker that does not
    # answer yet (down, still booting) delays the start instead, one log line per attempt.
    model = ModelInfo.read(config.model.path)
    labels = LabelChecker.load(resolve_model_path(config.model.path), config.serve.max_labels)
    labels.check_config(config)
    server = HttpServer(config.http).start() if config.http else None  # probes answer from here on
    publish = server.publish if server else lambda _: None
    previous = _install_signal_handlers(stop)
    started_ray = deployed = False
    supervisor = None
    control = None
    feed = None
    try:
        kafka = config.kafka
        if kafka:
            where = f"kafka {kafka.bootstrap}"
            publish(Status.starting(f"reaching {where}"))
            retry(lambda: check_access(kafka.bootstrap, kafka.security, kafka.connect_timeout_s), where, stop,
                  (KafkaUnreachable,))
        publish(Status.starting("Ray"))
        started_ray = init_ray(ray_address, log_to_driver, config.ray)
        # ray.init replaced SIGTERM's handler with one that exits at once (no drain): ours again
        _install_signal_handlers(stop)
        if kafka:
            unreachable = kafka_unreachable_errors()
            retry(lambda: create_topics(kafka.bootstrap, {kafka.events_topic: 4, kafka.dead_letter_topic: 1},
                                        kafka.security, timeout=KAFKA_ATTEMPT_S), where, stop, unreachable)
            if kafka.control_topic:
                control = retry(lambda: open_control_topic(config, labels.check_config), where, stop, unreachable)
                config = control.start()  # the control topic's changes, kept across restarts
            if server:
                feed = EventFeed(kafka.bootstrap, kafka.events_topic, kafka.security, server.live).start()
                server.forward = control.forward if control else None
        publish(Status.starting(f"the model application {APP_NAME}"))
        if config.serve.deploy:
            deployed = True  # from here on, a half-made deployment is removed too
            deploy(config.model, config.serve)
        else:  # a RayService deploys the model (k8s/): wait for it, neither deploy nor delete it
            retry(check_running, f"Serve application {APP_NAME}", stop, (LookupError,))
        sink = SinkSpec(config.kafka.bootstrap if config.kafka else None,
                        config.kafka.events_topic if config.kafka else "",
                        config.kafka.dead_letter_topic if config.kafka else "",
                        config.kafka.security if config.kafka else None)
        supervisor = Supervisor(config, model, sink, config.max_windows)
        supervisor.start()
        watcher = ConfigWatcher(config_path, labels.check_config) if config_path else None
        health_logged, status_at, thumbnails_at = time.monotonic(), 0.0, 0.0
        while not stop.is_set() and not supervisor.done:
            supervisor.poll(0.5)
            now = time.monotonic()
            log_due = now - health_logged >= HEALTH_LOG_INTERVAL_S and log.isEnabledFor(logging.INFO)
            status_due = server is not None and now - status_at >= STATUS_INTERVAL_S
            if log_due or status_due:
                health = supervisor.health()
                if status_due:
                    server.publish(running_status(health, model_problem(), control.counts if control else None))
                    server.live.set_config(supervisor.config)
                    status_at = now
                if log_due:
                    for key, h in health.items():
                        log.info("health %s: %s", key, {k: v for k, v in h.items() if k != "latency_ms"})
                    health_logged = now
            if server and server.viewers and now - thumbnails_at >= THUMBNAIL_INTERVAL_S:
                server.live.set_thumbnails(supervisor.thumbnails(THUMBNAIL_WIDTH, timeout=1.0))
                thumbnails_at = now
            _write(out, supervisor.take_output(), server)
            new = watcher.changed() if watcher else None
            if control:
                # The file is the base and the control topic's changes an overlay on it: they win.
                new = control.plane.reload(new) if new is not None else None
                new = control.poll() or new
            if new is not None:
                supervisor.apply(new)
        publish(Status(phase="stopping", updated=time.monotonic(), problems=("stopping",)))
        supervisor.stop()
        _write(out, supervisor.take_output(), server)
        return supervisor.finished
    except Stopped:
        log.warning("stopped before the pipeline started")
        return {}
    finally:
        _restore_signal_handlers(previous)
        if feed:
            feed.stop()
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
        if server:
            server.stop()


def model_problem() -> str | None:
    """Why the model application does not run (None when it does), for /readyz."""
    try:
        check_running()
    except LookupError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - the controller did not answer: not ready, said why
        return f"its status could not be read: {type(e).__name__}: {e}"
    return None


def kafka_unreachable_errors() -> tuple[type[BaseException], ...]:
    """What a client raises while the broker cannot be reached (retried at start; others are raised)."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MetadataEmptyBrokerList

    return (KafkaConnectionError, KafkaTimeoutError, MetadataEmptyBrokerList, OSError)


def _write(out: TextIO, lines: list[str], server: HttpServer | None = None) -> None:
    """Events of stdout mode: to ``out``, and to the live page's state."""
    for line in lines:
        out.write(line + "\n")
        if server:
            server.live.add_json(line)
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

