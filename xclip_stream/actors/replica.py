"""The model as a Ray Serve deployment: windows from every stream are batched into one forward pass.

Streams call ``score(frames, labels)`` one window at a time; a ``Batcher`` gathers the calls
waiting when the last forward pass ends into the next one (up to ``max_batch_size``, waiting at most
``batch_wait_timeout_s`` for more), not Serve's ``@serve.batch``, whose batches stay small under load
(pipeline/batching.py says why). The forward pass runs in a worker thread so the replica's event
loop keeps answering health checks and taking calls in.

A batch mixes cameras, so one camera's bad window or label set must not fail the others': the
scorer refuses such a window alone and narrows a failed batch down to its culprit
(``BatchScorer.score_each``); the culprit's call raises ``ModelMismatch`` with the reason
(``NonFiniteScores`` when the model gave it NaN or inf logits). The
health check fails when the replica holds work but completes no batch for ``stall_timeout_s``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import ray
from pydantic import ValidationError
from ray import serve

from ..pipeline.batching import Batcher
from ..pipeline.scoring import BatchScorer, ReplicaScores, WindowRefused
from ..pipeline.stall import StallWatch
from ..schemas.config import ConfigError, ModelConfig, ServeAppArgs, ServeConfig, format_validation_error
from .metrics import ReplicaMetrics

log = logging.getLogger(__name__)

APP_NAME = "xclip-stream"
DEPLOYMENT_NAME = "XCLIPReplica"


class XCLIPReplica:
    def __init__(self, model: dict, max_batch_size: int, batch_wait_timeout_s: float,
                 torch_threads: int | None = None, max_labels: int = 1000, stall_timeout_s: float = 120.0):
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        config = ModelConfig.model_validate(model)
        self.scorer = BatchScorer.load(config.path, device=config.device, precision=config.precision,
                                       compile=config.compile, cuda_graphs=config.cuda_graphs,
                                       max_labels=max_labels)
        self.scorer.encoder.warm_up(max_batch_size)  # compile and capture now, not on live windows
        self.watch = StallWatch(stall_timeout_s)
        self.metrics = ReplicaMetrics()
        self.batcher = Batcher(self._score_batch, max_batch_size, batch_wait_timeout_s,
                               after_batch=self.watch.batch_done)

    async def score(self, frames: np.ndarray, labels: tuple[str, ...]) -> ReplicaScores:
        """One window (T, 3, S, S) uint8 against its label set -> logits, one per label, with this
        replica's checkpoint name and digest; raises ModelMismatch when the model cannot score this
        window, NonFiniteScores when its logits are NaN/inf."""
        self.watch.request_started()
        try:
            result = await self.batcher.submit((frames, tuple(labels)))
        finally:
            self.watch.request_finished()
        if isinstance(result, WindowRefused):
            raise result.error(result.reason)
        return ReplicaScores(result, self.scorer.name, self.scorer.digest)

    def _score_batch(self, calls: list[tuple[np.ndarray, tuple[str, ...]]]) -> list[list[float] | WindowRefused]:
        """One forward pass over the batch's windows (in the batcher's worker thread)."""
        began = time.perf_counter()
        scores = self.scorer.score_each([frames for frames, _ in calls], [labels for _, labels in calls])
        try:
            self.metrics.batch(self.scorer.name, len(calls), time.perf_counter() - began, self.scorer.cache_stats)
        except Exception as e:  # noqa: BLE001 - metrics must never fail a batch; said in the replica's log
            log.warning("batch metrics not recorded: %s: %s", type(e).__name__, e)
        return scores

    def info(self) -> dict:
        return {"device": str(self.scorer.device), "precision": self.scorer.precision,
                "cuda_graphs": self.scorer.encoder.cuda_graphs, "batches": self.watch.batches,
                "num_frames": self.scorer.num_frames, "model": self.scorer.name, "checkpoint": self.scorer.digest}

    def check_health(self) -> None:
        """Serve restarts a replica whose check raises: the weights must still be finite, and work
        must not wait on a forward pass that never ends."""
        weight = self.scorer.model.logit_scale
        if not bool(weight.isfinite().all()):
            raise RuntimeError("model weights are no longer finite")
        problem = self.watch.problem()
        if problem:
            raise RuntimeError(problem)


# What every deployment of the model sets, whoever deploys it (the pipeline, or a RayService).
_BASE_OPTIONS = {"name": DEPLOYMENT_NAME, "health_check_period_s": 5.0, "health_check_timeout_s": 30.0,
                 "logging_config": {"log_level": "WARNING", "enable_access_log": False}}


def replica_options(serve_config: ServeConfig) -> dict:
    """Deployment options from the configuration: one GPU per replica when the cluster has one
    (unless set), fractional CPUs otherwise, fixed replicas or autoscaling."""
    num_gpus = serve_config.num_gpus
    if num_gpus is None:
        num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    options: dict = {
        **_BASE_OPTIONS,
        "ray_actor_options": {"num_cpus": serve_config.num_cpus, "num_gpus": num_gpus},
        "max_ongoing_requests": max(serve_config.max_ongoing_requests, serve_config.max_batch_size),
    }
    if serve_config.autoscaling is not None:
        a = serve_config.autoscaling
        options["autoscaling_config"] = {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                                         "target_ongoing_requests": a.target_ongoing_requests}
    else:
        options["num_replicas"] = serve_config.replicas
    return options


def deploy(model: ModelConfig, serve_config: ServeConfig, replica: type[XCLIPReplica] = XCLIPReplica):
    """Start (or update) the model application; returns its deployment handle. ``replica``: a
    subclass for fault tests (a forward pass that fails on some inputs)."""
    app = _bind(serve.deployment(replica).options(**replica_options(serve_config)), model, serve_config)
    # No HTTP proxy: streams call the replicas through handles, and an idle proxy would be one more
    # listening port (and one per node) that nothing uses.
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING", "enable_access_log": False})
    return serve.run(app, name=APP_NAME, route_prefix=None)


def build_app(args: dict):
    """The model application as a RayService's serveConfigV2 names it
    (``import_path: xclip_stream.actors.replica:build_app``, ``args: {model: ..., serve: ...}``).
    Replicas, autoscaling and resources come from the config's ``deployments`` entry, which Serve
    applies over the options set here; a new ``args`` (a new checkpoint) rolls the replicas."""
    try:
        parsed = ServeAppArgs.model_validate(args)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "serveConfigV2 args")) from None
    return _bind(serve.deployment(XCLIPReplica).options(**_BASE_OPTIONS), parsed.model, parsed.serve)


def _bind(deployment, model: ModelConfig, s: ServeConfig):
    """The application: ``deployment`` with the replica's constructor arguments."""
    return deployment.bind(model.model_dump(), s.max_batch_size, s.batch_wait_timeout_s, s.torch_threads,
                           s.max_labels, s.stall_timeout_s)


def check_running() -> None:
    """Returns once the model application (deployed by someone else) is RUNNING; raises
    LookupError while it is missing or not yet running (for ``retry``)."""
    status = serve.status().applications.get(APP_NAME)
    if status is None or status.status != "RUNNING":
        raise LookupError(f"Serve application {APP_NAME!r} is "
                          f"{'not deployed' if status is None else status.status}")


def get_handle():
    """The model's handle from inside any actor of the cluster."""
    return serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=APP_NAME)
