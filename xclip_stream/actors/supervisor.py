"""The supervisor: starts the actors a configuration asks for, restarts those that die, and
reconciles them with a changed configuration. It runs in the driver and owns every actor it starts.

A worker whose ``run()`` returns has finished (a file reached its end); one whose actor died
(crash, node loss, killed) is started again with exponential backoff, and counted.

Actors ask Ray for what ``placement`` says (custom resources, SPREAD). One that no node has room
for stays pending until the autoscaler adds a node (or forever, if no node type offers the
resource): it is reported as ``pending`` in health and by a warning after ``PENDING_REPORT_S``, and
stopping it does not wait for a run that never began.

A frames topic with ``scale`` gets as many members as its group's lag asks for (``LagFollower``,
measured here in the driver without joining the group): a member added is ``frames:{topic}#{n}``,
one taken away is the highest-numbered, stopped as a removed source is (it drains, commits what is
done and leaves the group, so the others take its partitions over from the committed offsets).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import ray
from ray.exceptions import RayActorError, RayTaskError

from ..pipeline.consumer_lag import LagProbe
from ..pipeline.member_scaling import LagFollower
from ..pipeline.scoring import ModelInfo
from ..schemas.config import PipelineConfig, PlacementConfig
from .camera_hosts import CameraHosts, Host, actor_options
from .kafka_frames import KafkaFramesActor
from .output import SinkSpec

log = logging.getLogger(__name__)

MAX_RESTART_DELAY_S = 30.0
PENDING_REPORT_S = 30.0  # an actor not started after this long is reported (once per start)


@dataclass
class Worker:
    key: str
    spec: dict  # what started it: compared on reconfiguration
    actor: object = None
    ref: object = None
    restarts: int = 0
    restart_at: float | None = None
    lost_at: float | None = None  # wall clock: when its last actor was found dead
    ready: object = None  # until the actor is placed and constructed: its __ray_ready__ ref
    launched_at: float = 0.0
    pending_reported: bool = False
    host: Host | None = None  # a camera's: the actor it runs in, maybe shared with other cameras

    @property
    def args(self) -> tuple:
        """What its actor's calls are given before their own arguments: a camera's id (actors hold several)."""
        return (self.spec["camera"]["id"],) if self.host is not None else ()


class Supervisor:
    def __init__(self, config: PipelineConfig, model: ModelInfo, sink: SinkSpec, max_windows: int | None = None):
        self.config = config
        self.model = model
        self.sink = sink
        self.max_windows = max_windows
        self.workers: dict[str, Worker] = {}
        self.finished: dict[str, dict] = {}
        self.stopping = False
        self._lines: list[str] = []  # output of workers that have ended, not yet taken
        self.pending_report_s = PENDING_REPORT_S
        self.probe: LagProbe | None = None  # made when a topic scales with its lag
        self.lag = LagFollower(config.kafka.frames if config.kafka else [], self._measure)
        self.hosts = CameraHosts(model, sink, max_windows, config.serve.request_timeout_s)

    # -- desired state --------------------------------------------------------------------------
    def _desired(self, config: PipelineConfig) -> dict[str, dict]:
        specs = {}
        placement = config.placement.model_dump()  # in each spec: a changed placement restarts the actors
        for c in config.cameras:
            specs[f"camera:{c.id}"] = {
                "kind": "camera", "camera": c.model_dump(exclude={"labels"}), "labels": config.label_set(c.labels).model_dump(),
                "options": config.stream_options(c.options).model_dump(), "placement": placement,
            }
        if config.kafka:
            for f in config.kafka.frames:
                # The count is not in the spec: adding or removing members leaves the others running.
                frames = f.model_dump(exclude={"labels", "members", "scale"})
                for member in range(self.lag.members(f.topic)):
                    specs[f"frames:{f.topic}#{member}"] = {
                        "kind": "frames", "frames": frames, "member": member,
                        "labels": config.label_set(f.labels).model_dump(),
                        "options": config.stream_options(f.options).model_dump(),
                        "session_timeout_ms": config.kafka.session_timeout_ms, "placement": placement,
                    }
        return specs

    def start(self) -> None:
        for key, spec in self._desired(self.config).items():
            self._launch(Worker(key, spec))

    def _launch(self, worker: Worker) -> None:
        spec = worker.spec
        if spec["kind"] == "camera":
            worker.host = self.hosts.place(spec["camera"]["id"], worker.restarts, spec["placement"])
            worker.actor, worker.ready = worker.host.actor, worker.host.ready
            worker.ref = worker.actor.run.remote(spec["camera"], spec["labels"], spec["options"],
                                                 restarts=worker.restarts, lost_at=worker.lost_at)
        else:
            # Named (per start, as a dying actor may still hold its name) so operators can find it.
            options = actor_options(PlacementConfig.model_validate(spec["placement"]),
                                    f"xclip:{worker.key}:{worker.restarts}")
            worker.actor = KafkaFramesActor.options(**options).remote(
                spec["frames"], spec["labels"], spec["options"], self.model, self.sink, spec["session_timeout_ms"],
                spec["member"], request_timeout_s=self.config.serve.request_timeout_s)
            worker.ready = worker.actor.__ray_ready__.remote()
            worker.ref = worker.actor.run.remote()  # a restarted member re-reads from the committed offsets
        worker.launched_at = time.monotonic()
        worker.pending_reported = False
        worker.restart_at = None
        self.workers[worker.key] = worker
        log.info("started %s", worker.key)

    # -- watching -------------------------------------------------------------------------------
    def poll(self, timeout: float = 0.5) -> None:
        """Reap finished workers, schedule restarts of dead ones, start those due, report pending ones."""
        self._check_placed()
        running = {w.ref: w for w in self.workers.values() if w.ref is not None}
        if running:
            ready, _ = ray.wait(list(running), num_returns=len(running), timeout=timeout)
            for ref in ready:
                self._reap(running[ref])
        else:
            time.sleep(timeout)
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.ref is None and worker.restart_at is not None and now >= worker.restart_at:
                worker.restarts += 1
                self._launch(worker)
        if not self.stopping:
            self._follow_lag(now)

    def _follow_lag(self, now: float) -> None:
        """Members of the scaled topics that the lag asks for: added or taken away (see apply)."""
        changes = self.lag.poll(now)
        for c in changes:
            log.info("frames topic %s: members %d -> %d (lag %d records, %d partitions)",
                     c.topic, c.before, c.after, c.lag, c.partitions)
        if changes:
            self.apply(self.config)

    def _measure(self, topic: str, group_id: str):
        if self.probe is None:
            kafka = self.config.kafka
            self.probe = LagProbe(kafka.bootstrap, kafka.security)
        return self.probe.measure(topic, group_id)

    def _check_placed(self) -> None:
        """Mark the actors that have started; warn once about each still pending after a while."""
        waiting: dict = {}  # ready ref -> its workers (cameras sharing an actor share its ref)
        for w in self.workers.values():
            if w.ready is not None and w.ref is not None:
                waiting.setdefault(w.ready, []).append(w)
        if not waiting:
            return
        ready, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=0)
        for ref in ready:
            for worker in waiting.pop(ref):
                worker.ready = None  # started, or failed: run() reports which
        now = time.monotonic()
        for worker in (w for workers in waiting.values() for w in workers):
            if not worker.pending_reported and now - worker.launched_at >= self.pending_report_s:
                worker.pending_reported = True
                log.warning("%s not started after %.0f s: its actor is slow to start, or no node has room for "
                            "it (it asks for 0.1 CPU%s; Ray's autoscaler adds a node if a node type offers "
                            "that, else it stays pending)",
                            worker.key, now - worker.launched_at,
                            _asks(worker.spec["placement"], worker.host.capacity if worker.host else 1))

    def _pending(self, worker: Worker) -> bool:
        self._check_placed()
        return worker.ready is not None

    def _reap(self, worker: Worker) -> None:
        try:
            result = ray.get(worker.ref)
        except (RayActorError, RayTaskError) as e:
            worker.ref = None
            worker.lost_at = time.time()
            # a task error leaves the actor alive: end it before replacing it (a camera's shared
            # actor goes on with its other cameras; it has already let this one go)
            self._release(worker, dead=isinstance(e, RayActorError))
            if self.stopping:
                del self.workers[worker.key]
                return
            delay = min(MAX_RESTART_DELAY_S, 2.0 ** worker.restarts)
            worker.restart_at = time.monotonic() + delay
            log.error("%s died; restarting in %.0f s: %s", worker.key, delay, e)
            return
        self.finished[worker.key] = result
        self._end(worker)
        log.info("%s finished", worker.key)

    def _end(self, worker: Worker) -> None:
        """Collect a drained worker's last output and end its actor."""
        self._lines.extend(self._take_output(worker, last=True))
        self.workers.pop(worker.key, None)
        self._release(worker)

    def _release(self, worker: Worker, dead: bool = False) -> None:
        """End the worker's actor, or (a camera in a shared actor) only its part of it."""
        if worker.host is not None:
            self.hosts.release(worker.host, worker.spec["camera"]["id"], dead)
        else:
            ray.kill(worker.actor)

    def _drop_pending(self, worker: Worker) -> None:
        """End an actor that never started: it has no output to collect nor work to drain."""
        self.workers.pop(worker.key, None)
        self._release(worker)
        log.info("stopped %s before it started", worker.key)

    @property
    def done(self) -> bool:
        return not self.workers

    def take_output(self) -> list[str]:
        """JSON lines collected by the actors (stdout mode), in per-actor order."""
        lines, self._lines = self._lines, []
        for worker in list(self.workers.values()):
            if worker.ref is not None and worker.ready is None:
                lines.extend(self._take_output(worker))
        return lines

    def _take_output(self, worker: Worker, last: bool = False) -> list[str]:
        forget = last and worker.host is not None  # a camera's last call lets its actor forget it
        if self.sink.bootstrap and not forget:
            return []
        try:
            return ray.get(worker.actor.take_output.remote(*worker.args, **({"last": True} if forget else {})),
                           timeout=30)
        except (RayActorError, RayTaskError, ray.exceptions.GetTimeoutError):
            return []

    def health(self) -> dict[str, dict]:
        out = {}
        self._check_placed()
        now = time.monotonic()
        for w in self.workers.values():
            if w.ref is not None and w.ready is not None:  # asking it would wait until it is placed
                out[w.key] = {"state": "pending", "pending_s": round(now - w.launched_at, 1),
                              "placement": w.spec["placement"], "restarts": w.restarts}
        refs = {w.key: w.actor.health.remote(*w.args) for w in self.workers.values()
                if w.ref is not None and w.key not in out}
        for key, ref in refs.items():
            worker = self.workers[key]
            try:
                out[key] = {**ray.get(ref, timeout=10), "restarts": worker.restarts,
                            **({"actor": worker.host.name} if worker.host else {})}
            except Exception as e:  # noqa: BLE001 - a dying actor has no health to report
                out[key] = {"state": "unreachable", "error": type(e).__name__}
        for topic, scaling in self.lag.health(now).items():
            running = sum(1 for w in self.workers.values()
                          if w.spec["kind"] == "frames" and w.spec["frames"]["topic"] == topic)
            out[f"scaling:{topic}"] = {"state": "scaling", "members": running, **scaling}
        return out

    def thumbnails(self, width: int, timeout: float = 2.0) -> dict[str, bytes]:
        """Each running camera's latest sampled frame as a JPEG ``width`` wide (for the live page,
        asked only while someone watches it); what does not answer within ``timeout`` is left out."""
        refs = {}
        for w in self.workers.values():
            if w.ref is None or w.ready is not None:  # not running, or not placed yet
                continue
            if w.spec["kind"] == "camera":
                refs[w.actor.thumbnail.remote(*w.args, width)] = w.spec["camera"]["id"]
            else:
                refs[w.actor.thumbnails.remote(width)] = None  # a Kafka member: all its cameras
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout) if refs else ([], [])
        out: dict[str, bytes] = {}
        for ref in ready:
            try:
                value = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a dying actor: no thumbnail this time
                log.debug("no thumbnail from %s: %s", refs[ref] or "a frames member", type(e).__name__)
                continue
            if refs[ref] is None:
                out.update(value)
            elif value:
                out[refs[ref]] = value
        return out

    # -- reconfiguration ------------------------------------------------------------------------
    def apply(self, config: PipelineConfig) -> None:
        """Reconcile with a new configuration: start new sources, stop removed ones, relabel in
        place when only the labels changed, restart when anything else about a source changed."""
        self.lag.configure(config.kafka.frames if config.kafka else [])
        if self.probe is not None and (config.kafka is None or (config.kafka.bootstrap, config.kafka.security)
                                       != (self.probe.bootstrap, self.probe.security)):
            self.probe.close()  # measured with the old connection settings: made again when needed
            self.probe = None
        desired = self._desired(config)
        for key in list(self.workers):
            if key not in desired:
                self._retire(key)
        for key, spec in desired.items():
            worker = self.workers.get(key)
            if worker is None:
                if key not in self.finished:
                    self._launch(Worker(key, spec))
                continue
            if spec == worker.spec:
                continue
            if {k: v for k, v in spec.items() if k != "labels"} == {
                k: v for k, v in worker.spec.items() if k != "labels"
            }:
                worker.actor.relabel.remote(*worker.args, spec["labels"])
                worker.spec = spec
                log.info("relabelled %s", key)
            else:
                self._retire(key)
                self._launch(Worker(key, spec))
        self.config = config

    def _retire(self, key: str, timeout: float = 60.0) -> None:
        worker = self.workers[key]
        if worker.ref is None:
            del self.workers[key]
            return
        if self._pending(worker):
            self._drop_pending(worker)
            return
        worker.actor.stop.remote(*worker.args)
        try:
            ray.get(worker.ref, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - it is going away either way
            log.warning("%s did not stop cleanly: %s", key, e)
        self._end(worker)
        log.info("stopped %s", key)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every source, wait for each to drain and flush, then end the actors."""
        self.stopping = True
        starting = list({w.ready for w in self.workers.values() if w.ref is not None and w.ready is not None})
        if starting:  # give those being constructed a moment; those no node has room for never start
            ray.wait(starting, num_returns=len(starting), timeout=min(5.0, timeout / 4))
        self._check_placed()
        for w in [w for w in self.workers.values() if w.ref is not None and w.ready is not None]:
            self._drop_pending(w)
        for w in self.workers.values():
            if w.ref is not None:
                w.actor.stop.remote(*w.args)
        deadline = time.monotonic() + timeout
        for w in list(self.workers.values()):
            if w.ref is None:
                continue
            try:
                self.finished[w.key] = ray.get(w.ref, timeout=max(1.0, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001
                log.warning("%s did not drain in time: %s", w.key, e)
            self._end(w)
        self.workers.clear()
        if self.probe is not None:
            self.probe.close()
            self.probe = None


def _asks(placement: dict, slots: int) -> str:
    parts = [f", {name} {amount * slots:g}" for name, amount in placement["resources"].items()]
    return "".join(parts) + (", spread" if placement["spread"] else "")
