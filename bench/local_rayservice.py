"""The gpu overlay's RayService, run on one machine: a Ray cluster of several nodes whose node types
are the RayService's worker groups, its serveConfigV2 deployed the way KubeRay deploys it, and the
driver (``xclip-stream run``, ``serve.deploy: false``) started against it.

Node types come from the rendered RayService through Ray's own KubeRay translation
(``_derive_autoscaling_config_from_ray_cr``, what the in-tree autoscaler runs in the head pod), and
Ray's autoscaler launches and removes fake nodes of those types (``ray.cluster_utils.AutoscalingCluster``,
provider ``fake_multinode``): the same autoscaler, the same resource demands, processes instead of pods.
A fake node's ``GPU`` is a declared count (the replica runs on CPU here; on a lent GPU machine it
would find the real one).

What is changed for one machine is listed by ``LOCAL_CHANGES`` and returned with each rewrite: the
shipped structure (app args, deployments and autoscaling_config, placement slots, members) is not.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from soak import _children  # noqa: E402 - /proc parent ids

from tests.k8s_checks import render  # noqa: E402 - kubectl kustomize, as the manifest tests render it

OVERLAY = REPO / "k8s" / "overlays" / "gpu"
HEAD_TYPE = "ray.head.default"  # the fake provider's name for the head's node type
NODE_OBJECT_STORE = 200 * 1024**2  # bytes per node: every node's store shares this machine's /dev/shm

# What differs from the rendered manifests, and why (each rewrite below returns its lines).
LOCAL_CHANGES = {
    "nodes": [
        "provider fake_multinode (nodes are processes of this machine), not kuberay",
        "head node type named ray.head.default (the fake provider's name), as rendered otherwise (CPU 0)",
        "streams min_workers 0 (min 1 rendered): the first stream node is the autoscaler's answer to the cameras",
        "max_workers capped (streams 3, replicas 2): one 2-core machine",
        "the pods' memory limits dropped (Ray would count them as this machine's memory); "
        "object store 200 MiB per node",
    ],
    "serve": ["proxy_location Disabled: one machine's port 8000 for every node (route_prefix is null: "
              "the driver calls the handle)",
              "autoscaling_config target_ongoing_requests 8, upscale_delay_s 5, downscale_delay_s 15 "
              "(shipped 32, 10, 300): this machine's 5 to 13 streams, 2 windows in flight each, must make "
              "Serve want a second replica, and a minute's run see it go"],
    "pipeline": [
        "kafka.bootstrap: the local Tansu broker; kafka.security dropped (PLAINTEXT; TLS/SASL are tested "
        "through proxies in tests/test_kafka_security.py)",
        "topic names: the bench's accounting topics (bench/fault_accounting.py); group_id and members kept",
        "control.secret_file: a file of this run (not the mounted Secret)",
        "cameras: local RTSP/MJPEG/file cameras instead of the example 'lobby' camera (no credentials)",
    ],
}
LOCAL_MAX_WORKERS = {"streams": 3, "replicas": 2}
LOCAL_AUTOSCALING = {"target_ongoing_requests": 8, "upscale_delay_s": 5, "downscale_delay_s": 15}


@dataclass
class Shipped:
    """What the gpu overlay renders to, the parts this run uses."""

    service: dict  # the RayService
    serve: dict  # its serveConfigV2, parsed
    pipeline: dict  # the ConfigMap's pipeline.yaml, parsed


def load_shipped(overlay: Path = OVERLAY) -> Shipped:
    docs = render(overlay)
    service = next(d for d in docs if d["kind"] == "RayService")
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "xclip-stream-pipeline")
    return Shipped(service, yaml.safe_load(service["spec"]["serveConfigV2"]),
                   yaml.safe_load(config_map["data"]["pipeline.yaml"]))


# -- the rewrites ----------------------------------------------------------------------------------
def autoscaling_config(service: dict, gcs_address: str, idle_timeout_s: float | None = None) -> dict:
    """The autoscaler's config for the RayService's cluster, as KubeRay's autoscaler derives it, with
    the ``nodes`` changes of LOCAL_CHANGES. ``idle_timeout_s``: instead of autoscalerOptions'."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    cr = {"metadata": {"name": service["metadata"]["name"], "namespace": "default"},
          "spec": service["spec"]["rayClusterConfig"]}
    config = _derive_autoscaling_config_from_ray_cr(cr)
    types = config["available_node_types"]
    types[HEAD_TYPE] = types.pop(config["head_node_type"])
    config["head_node_type"] = HEAD_TYPE
    config["provider"] = {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                          "disable_node_updaters": True, "disable_launch_config_check": True}
    types["streams"]["min_workers"] = 0
    for name, cap in LOCAL_MAX_WORKERS.items():
        types[name]["max_workers"] = min(types[name]["max_workers"], cap)
    for node_type in types.values():
        node_type["resources"].pop("memory", None)
        node_type["resources"]["object_store_memory"] = NODE_OBJECT_STORE
    config["max_workers"] = sum(t["max_workers"] for t in types.values())
    if idle_timeout_s is not None:
        config["idle_timeout_minutes"] = idle_timeout_s / 60.0
    return config


def local_serve_config(serve: dict, model: dict | None = None, autoscaling: dict | None = None,
                       serve_args: dict | None = None) -> dict:
    """serveConfigV2 with the ``serve`` changes of LOCAL_CHANGES; ``model``: the application's
    ``args.model`` instead of the shipped one (a checkpoint rolled through the config);
    ``autoscaling``: instead of LOCAL_AUTOSCALING; ``serve_args``: changes to ``args.serve``."""
    data = copy.deepcopy(serve)
    data["proxy_location"] = "Disabled"
    for app in data["applications"]:
        for deployment in app.get("deployments", []):
            if "autoscaling_config" in deployment:
                deployment["autoscaling_config"].update(LOCAL_AUTOSCALING if autoscaling is None else autoscaling)
        if model is not None:
            app["args"]["model"] = model
        if serve_args:
            app["args"]["serve"] = {**app["args"].get("serve", {}), **serve_args}
    return data


def local_pipeline(pipeline: dict, bootstrap: str, cameras: dict[str, dict], secret_file: Path,
                   topics: dict[str, str]) -> dict:
    """``pipeline.yaml`` for this machine. ``cameras``: id -> camera entry (url, loop); ``topics``:
    events_topic / dead_letter_topic / control_topic / frames -> the name to use instead."""
    data = copy.deepcopy(pipeline)
    kafka = data["kafka"]
    kafka["bootstrap"] = bootstrap
    kafka.pop("security", None)
    for key in ("events_topic", "dead_letter_topic", "control_topic"):
        kafka[key] = topics.get(key, kafka[key])
    if len(kafka["frames"]) != 1:
        raise ValueError(f"expected one frames topic in the shipped pipeline.yaml, found {len(kafka['frames'])}")
    kafka["frames"][0]["topic"] = topics.get("frames", kafka["frames"][0]["topic"])
    data["control"]["secret_file"] = str(secret_file)
    data["cameras"] = [{"id": cid, **entry} for cid, entry in cameras.items()]
    return data


# -- the cluster -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_cli() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else shutil.which("ray") or "ray"


def _descendants(root: int) -> set[int]:
    return _children(root) - {root}


def _mentioning(text: str) -> set[int]:
    """Processes whose command line contains ``text`` (this cluster's temp dir: ours only)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.add(int(entry))
            except OSError:
                continue
    return found - {os.getpid()}


def _make_autoscaling_cluster_class():
    """``ray.cluster_utils.AutoscalingCluster`` with a base config of our own (the wheel lacks the
    example it reads) and started and stopped as this run's processes: its own start() and
    shutdown() run ``ray stop --force``, which ends every Ray of the user on the machine."""
    from ray.cluster_utils import AutoscalingCluster

    class LocalAutoscalingCluster(AutoscalingCluster):
        def __init__(self, config: dict, work: Path, port: int):
            self._base = config
            super().__init__(head_resources={}, worker_node_types={})
            self.work, self.port = work, port
            self.address = f"127.0.0.1:{port}"
            self.client_port = _free_port()  # Ray Client server (ray://), as the head pod's 10001
            self.temp_dir = Path(tempfile.mkdtemp(prefix="xcr-", dir="/tmp"))  # short: Ray's socket paths
            self.head = None

        def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **kwargs):
            return copy.deepcopy(self._base)

        def start(self, _system_config=None, override_env=None):
            from xclip_stream.services.process import OwnedProcess

            config_path = self.work / "autoscaling.yaml"
            config_path.write_text(yaml.safe_dump(self._config))
            head = self._config["available_node_types"][HEAD_TYPE]["resources"]
            cmd = [_ray_cli(), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                   f"--ray-client-server-port={self.client_port}", f"--dashboard-agent-listen-port={_free_port()}",
                   "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
                   f"--num-cpus={head.get('CPU', 0)}", f"--object-store-memory={NODE_OBJECT_STORE}",
                   f"--autoscaling-config={config_path}"]
            env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                   "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                   "RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                   **(override_env or {})}
            self.head = OwnedProcess("ray-head", self.work / "ray-head.log")
            saved = os.environ.pop("RAY_ADDRESS", None)
            try:
                self.head.start(cmd, env=env)
            finally:
                if saved is not None:
                    os.environ["RAY_ADDRESS"] = saved
            log = self.work / "ray-head.log"  # its banner comes once every head process runs
            if not self.head.wait_until(lambda: "Ray runtime started" in log.read_text(errors="replace"), 90, 0.5):
                raise RuntimeError(f"the Ray head did not start; {log}:\n{log.read_text(errors='replace')[-3000:]}")

        def shutdown(self):
            """SIGTERM every process of this cluster (the head's tree, and anything naming its temp
            dir), SIGKILL those left after a few seconds."""
            if self.head is None:
                return
            ours = (_descendants(self.head.pid) if self.head.running else set()) | _mentioning(str(self.temp_dir))
            self.head.stop(grace_s=0.1)
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
                for pid in ours:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + wait
                while wait and time.monotonic() < deadline and any(_alive(p) for p in ours):
                    time.sleep(0.2)
                ours = {p for p in ours if _alive(p)} | _mentioning(str(self.temp_dir))
            self.head = None
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    return LocalAutoscalingCluster


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


class LocalRayService:
    """The cluster started, this process connected to it (to deploy and to watch), and stopped."""

    def __init__(self, shipped: Shipped, work: Path, idle_timeout_s: float | None = None):
        port = _free_port()
        self.config = autoscaling_config(shipped.service, f"127.0.0.1:{port}", idle_timeout_s)
        self.cluster = _make_autoscaling_cluster_class()(self.config, work, port)
        self.address = self.cluster.address
        self.client_address = f"ray://127.0.0.1:{self.cluster.client_port}"  # the driver Deployment's form

    def __enter__(self) -> LocalRayService:
        import ray

        from xclip_stream.actors import ray_env
        from xclip_stream.schemas.config import RayConfig

        ray_env.apply(RayConfig())  # loopback, also when Ray was imported first (pytest): 127.0.0.1 stays so
        if ray.is_initialized():  # a test process that ran a pipeline before: this one joins the new cluster
            ray.shutdown()
        try:
            self.cluster.start()
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
        except BaseException:
            self.cluster.shutdown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        import ray

        try:
            ray.shutdown()
        finally:
            self.cluster.shutdown()

    def deploy(self, serve_config: dict) -> None:
        """Submit serveConfigV2 as KubeRay does (its dashboard call ends in the same controller call):
        Ray's ServeDeploySchema, Serve started with the config's proxy and HTTP options, the
        applications applied by the controller, which imports ``import_path`` on the cluster and
        applies ``deployments`` over what the builder returns. Returns without waiting."""
        from ray.serve._private.api import serve_start
        from ray.serve.schema import ServeDeploySchema

        schema = ServeDeploySchema.model_validate(serve_config)
        client = serve_start(proxy_location=schema.proxy_location, http_options=schema.http_options.model_dump())
        client.deploy_apps(schema)

    def serve_state(self, app: str = "xclip-stream", deployment: str = "XCLIPReplica") -> dict:
        """The model deployment as Serve sees it: its status, replicas by state, and the ongoing
        requests its autoscaler decides on (summed over the handles' reports)."""
        from ray import serve
        from ray.serve._private.common import DeploymentID
        from ray.serve.context import _get_global_client

        status = serve.status().applications.get(app)
        overview = status.deployments.get(deployment) if status else None
        if overview is None:
            return {"status": "absent", "replicas": {}, "ongoing": 0.0}
        controller = _get_global_client()._controller
        ongoing = ray_get(controller._get_total_num_requests_for_deployment_for_testing.remote(
            DeploymentID(name=deployment, app_name=app)))
        return {"status": str(overview.status.value), "replicas": {str(getattr(k, "value", k)): v
                for k, v in overview.replica_states.items() if v}, "ongoing": round(float(ongoing), 1)}

    # -- what runs where ----------------------------------------------------------------------------
    def nodes(self) -> dict[str, str]:
        """Alive node id -> its node type, known by the slot it offers."""
        import ray

        out = {}
        for node in ray.nodes():
            if node["Alive"]:
                out[node["NodeID"]] = node_type(node["Resources"])
        return out

    def actors(self) -> list[dict]:
        """Every alive actor: class, name, node type."""
        from ray._private.state import actors

        types = self.nodes()
        return [{"class": a["ActorClassName"], "name": a.get("Name", ""),
                 "node": types.get(a["Address"]["NodeID"], "?"), "node_id": a["Address"]["NodeID"]}
                for a in actors(actor_state_name="ALIVE").values()]


def ray_get(ref, timeout: float = 10.0):
    import ray

    return ray.get(ref, timeout=timeout)


def node_type(resources: dict) -> str:
    if "xclip_stream" in resources:
        return "streams"
    if "xclip_replica" in resources:
        return "replicas"
    return "head" if "node:__internal_head__" in resources else "other"


class Driver:
    """``xclip-stream run --config FILE`` joining the cluster (RAY_ADDRESS), as the driver Deployment runs it."""

    def __init__(self, work: Path, pipeline: dict, address: str):
        self.config_path = work / "pipeline.yaml"
        self.config_path.write_text(yaml.safe_dump(pipeline))
        self.log_path = work / "driver.log"
        self.address = address
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Driver:
        cli = Path(sys.executable).parent / "xclip-stream"
        cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "xclip_stream.cli"]
        env = {**os.environ, "RAY_ADDRESS": self.address,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*cmd, "run", "--config", str(self.config_path), "-v"], env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return self

    def stop(self, drain_s: float = 60.0) -> int | None:
        """SIGTERM (the driver drains its streams and exits), SIGKILL after ``drain_s``; its exit
        status, None if it had to be killed."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(drain_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def __exit__(self, *exc) -> None:
        self.stop(drain_s=10.0)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""
