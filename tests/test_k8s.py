"""k8s/ and docker/ checked offline: every overlay renders, every resource passes its schema (CRDs,
built-in kinds, serveConfigV2, the pipeline's own configuration), the pieces agree with each other
and with the code, and a broken manifest is caught. No cluster runs here (see README)."""

from __future__ import annotations

import copy
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xclip_stream.schemas.config import ConfigError, ModelConfig, parse_config

from . import k8s_checks as k8s
from . import k8s_monitoring as mon

ROOT = k8s.ROOT
OVERLAYS = sorted(p.parent for p in (ROOT / "k8s" / "overlays").glob("*/kustomization.yaml"))
SECRET_ROOT = "/var/run/secrets/xclip-stream/"


@pytest.fixture(scope="module", params=[p.name for p in OVERLAYS])
def rendered(request) -> list[dict]:
    return k8s.render(ROOT / "k8s" / "overlays" / request.param)


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pipeline_config(docs: list[dict]) -> dict:
    return yaml.safe_load(one(docs, "ConfigMap", "xclip-stream-pipeline")["data"]["pipeline.yaml"])


def serve_config(docs: list[dict]) -> dict:
    return yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"])


def all_errors(docs: list[dict]) -> list[str]:
    """Every check of every rendered resource."""
    errors = []
    for doc in docs:
        group = doc["apiVersion"].rpartition("/")[0]
        if "." in group and not group.endswith(".k8s.io"):  # a custom resource: ray.io, keda.sh
            errors += k8s.crd_errors(doc)
            if doc["kind"] == "RayService":
                errors += k8s.kuberay_errors(doc)
                errors += k8s.serve_config_errors(doc["spec"]["serveConfigV2"])
                for where, template in k8s.pod_templates(doc):
                    errors += k8s.pod_template_errors(where, template)
        else:
            errors += k8s.builtin_errors(doc)
            if doc["kind"] == "Deployment":
                errors += k8s.resources_errors(doc["spec"]["template"])
        if doc["kind"] == "ConfigMap" and "pipeline.yaml" in doc.get("data", {}):
            try:
                parse_config(yaml.safe_load(doc["data"]["pipeline.yaml"]), "ConfigMap pipeline.yaml")
            except ConfigError as e:
                errors.append(str(e))
    errors += mon.manifest_errors(docs)  # PodMonitors, the driver's probes and port, the dashboard
    services = [d for d in docs if d["kind"] == "RayService"]
    if services and any(d["kind"] == "ConfigMap" and d["metadata"]["name"] == "xclip-stream-pipeline" for d in docs):
        errors += k8s.actor_placement_errors(services[0], pipeline_config(docs))
    return errors


# --- the manifests as they are ---------------------------------------------------------------------

def test_overlays_exist():
    assert {p.name for p in OVERLAYS} >= {"cpu", "gpu"}


def test_every_resource_passes_its_schema(rendered):
    assert {d["kind"] for d in rendered} >= {"RayService", "Deployment", "ConfigMap", "PodDisruptionBudget",
                                             "NetworkPolicy", "PodMonitor"}
    assert all_errors(rendered) == []


def test_rayservice_shape(rendered):
    service = one(rendered, "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no actors on the head
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"streams", "replicas"}
    app = serve_config(rendered)["applications"][0]
    deployment = app["deployments"][0]
    assert set(deployment["autoscaling_config"]) >= {"min_replicas", "max_replicas", "target_ongoing_requests"}
    # replicas go to the replica group only: they ask for a resource only its pods offer
    assert deployment["ray_actor_options"]["resources"] == {"xclip_replica": 1}
    offered = {name: k8s.offered_resources(g, name) for name, g in groups.items()}
    assert offered["replicas"].get("xclip_replica", 0) >= 1 and "xclip_replica" not in offered["streams"]
    # camera actors and Kafka members go to the stream group only: they ask for its slots
    slots = parse_config(pipeline_config(rendered)).placement.resources
    assert slots and all(offered["streams"].get(name, 0) >= amount for name, amount in slots.items())
    assert not set(slots) & (set(offered["replicas"]) | set(k8s.offered_resources(cluster["headGroupSpec"], "head")))
    assert k8s.actor_placement_errors(service, pipeline_config(rendered)) == []
    # stream pods host no Serve proxy: their readiness must not wait for one
    stream_probe = groups["streams"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert stream_probe["httpGet"]["port"] != 8000
    # the import path the RayService deploys exists and builds the application from its args
    module, _, attr = app["import_path"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_gpu_overlay_puts_replicas_on_gpus():
    docs = k8s.render(ROOT / "k8s" / "overlays" / "gpu")
    groups = {g["groupName"]: g for g in one(docs, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    replica_pod = groups["replicas"]["template"]["spec"]
    assert replica_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert replica_pod["containers"][0]["image"].endswith("-cuda")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in replica_pod["tolerations"]
    stream_pod = groups["streams"]["template"]["spec"]
    assert "nvidia.com/gpu" not in stream_pod["containers"][0]["resources"]["limits"]
    options = serve_config(docs)["applications"][0]["deployments"][0]["ray_actor_options"]
    assert options["num_gpus"] == 1


def test_driver_and_model_application_agree(rendered):
    """The driver reads the model (frame count, tokenizer) and the label limit itself: they must be
    those of the application it calls, which it must not deploy or delete."""
    config = pipeline_config(rendered)
    args = serve_config(rendered)["applications"][0]["args"]
    assert config["serve"]["deploy"] is False
    assert ModelConfig.model_validate(config["model"]) == ModelConfig.model_validate(args["model"])
    assert config["serve"].get("max_labels", 1000) == args["serve"].get("max_labels", 1000)
    driver = one(rendered, "Deployment", "xclip-stream-driver")
    assert driver["spec"]["replicas"] == 1 and driver["spec"]["strategy"]["type"] == "Recreate"
    env = {e["name"]: e for e in driver["spec"]["template"]["spec"]["containers"][0]["env"]}
    service = one(rendered, "RayService")["metadata"]["name"]
    assert env["RAY_ADDRESS"]["value"] == f"ray://{service}-head-svc:10001"


def test_secrets_are_mounted_never_in_the_configmap(rendered):
    """Every secret file the pipeline configuration names lies in a Secret mounted where it is read:
    the driver (Kafka, control topic); the stream workers, whose actors make Kafka clients and open
    the cameras (Kafka, camera passwords), and which are the only pods those actors can land on
    (their placement slots). The ConfigMap holds no credential; every Secret referenced is one the
    README tells operators to create."""
    config = pipeline_config(rendered)
    text = one(rendered, "ConfigMap", "xclip-stream-pipeline")["data"]["pipeline.yaml"]
    assert not re.search(r"://[^/\s@]+:[^/\s@]+@", text), "a URL with credentials in the ConfigMap"
    kafka_files = [config["kafka"]["security"][k] for k in ("ca_file", "password_file", "cert_file", "key_file")
                   if config["kafka"]["security"].get(k)]
    camera_files = [c["credentials"]["password_file"] for c in config["cameras"] if "credentials" in c]
    assert camera_files, "pipeline.yaml's example camera shows credentials from a Secret"
    assert set(k8s.actor_secret_files(config)) == set(kafka_files + camera_files)
    driver = one(rendered, "Deployment", "xclip-stream-driver")["spec"]["template"]["spec"]
    groups = {g["groupName"]: g for g in one(rendered, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    for pod, needed in ((driver, kafka_files + [config["control"]["secret_file"]]),
                        (groups["streams"]["template"]["spec"], kafka_files + camera_files)):
        mounts = k8s.secret_mounts(pod)
        for path in needed:
            assert path.startswith(SECRET_ROOT) and any(path.startswith(m) for m in mounts), path
    # the driver never opens a camera: camera passwords are not mounted there
    assert not any(f.startswith(m) for f in camera_files for m in k8s.secret_mounts(driver))
    referenced = set()
    for doc in rendered:
        text = yaml.safe_dump(doc)
        referenced |= set(re.findall(r"secretName: (\S+)", text))
        referenced |= {ref["name"] for ref in _find(doc, "secretKeyRef")}
    readme = (ROOT / "README.md").read_text()
    created = set(re.findall(r"kubectl create secret generic (\S+)", readme))
    assert referenced and referenced <= created, f"not in the README: {sorted(referenced - created)}"


def _find(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            else:
                yield from _find(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _find(item, key)


def test_ray_version_is_the_tested_one(rendered):
    import ray

    assert one(rendered, "RayService")["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert f"ARG RAY_VERSION={ray.__version__}\n" in text, dockerfile


def test_network_policy_keeps_ray_inside(rendered):
    ray_policy = one(rendered, "NetworkPolicy", "xclip-stream-ray")
    assert ray_policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "ray"
    for rule in ray_policy["spec"]["ingress"]:
        for peer in rule["from"]:
            assert "ipBlock" not in peer  # only pods and namespaces of this cluster
    ray_pods = [t for _, t in k8s.pod_templates(one(rendered, "RayService"))]
    assert all(t["metadata"]["labels"]["app.kubernetes.io/component"] == "ray" for t in ray_pods)


def test_dockerfiles_lint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    files = [str(ROOT / "docker" / name) for name in ("Dockerfile", "Dockerfile.cuda")]
    out = subprocess.run([str(hadolint), *files], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in files:
        text = Path(name).read_text()
        assert text.count("\nFROM ") >= 2 and "\nUSER 1000\n" in text  # multi-stage, non-root
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "xclip_stream" not in ignored  # the package, demo model included, goes into the image


# --- broken manifests are caught ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_docs() -> list[dict]:
    return k8s.render(ROOT / "k8s" / "overlays" / "cpu")


# The resource a broken case changes when it names only a kind of which there are several.
MAIN = {"Deployment": "xclip-stream-driver", "ConfigMap": "xclip-stream-pipeline",
        "PodDisruptionBudget": "xclip-stream-head", "NetworkPolicy": "xclip-stream-driver"}


def broken(docs: list[dict], target: str | tuple[str, str], change) -> list[str]:
    """Every error once ``change`` has been applied to ``target``: a kind, or (kind, name)."""
    kind, name = target if isinstance(target, tuple) else (target, MAIN.get(target))
    docs = copy.deepcopy(docs)
    change(one(docs, kind, name))
    return all_errors(docs)


def _group(service: dict, name: str) -> dict:
    return next(g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == name)


def _serve(change):
    def apply(service):
        data = yaml.safe_load(service["spec"]["serveConfigV2"])
        change(data["applications"][0])
        service["spec"]["serveConfigV2"] = yaml.safe_dump(data)
    return apply


def _pipeline(change):
    def apply(config_map):
        data = yaml.safe_load(config_map["data"]["pipeline.yaml"])
        change(data)
        config_map["data"]["pipeline.yaml"] = yaml.safe_dump(data)
    return apply


BROKEN = {
    "worker group field typo": ("RayService", lambda s: _group(s, "streams").update(maxReplica=3), "maxReplica"),
    "worker group wrong type": ("RayService", lambda s: _group(s, "streams").update(minReplicas="1"), "minReplicas"),
    "worker group min > max": ("RayService", lambda s: _group(s, "streams").update(minReplicas=9), "minReplicas 9"),
    "rayClusterConfig typo": ("RayService", lambda s: s["spec"]["rayClusterConfig"].update(enableInTreeAutoscale=True),
                              "enableInTreeAutoscale"),
    "auth mode not in the enum": ("RayService", lambda s: s["spec"]["rayClusterConfig"]["authOptions"].update(
        mode="tokens"), "tokens"),
    "pod template typo": ("RayService", lambda s: _group(s, "replicas")["template"]["spec"]["containers"][0].update(
        imagePullPolcy="Always"), "imagePullPolcy"),
    "container without limits": ("RayService", lambda s: _group(s, "streams")["template"]["spec"]["containers"][0][
        "resources"].pop("limits"), "limits"),
    "serve autoscaling min > max": ("RayService", _serve(lambda a: a["deployments"][0]["autoscaling_config"].update(
        min_replicas=9)), "max_replicas"),
    "serve autoscaling key typo": ("RayService", _serve(lambda a: a["deployments"][0]["autoscaling_config"].update(
        target_ongoing_request=4)), "target_ongoing_request"),
    "serve deployment key typo": ("RayService", _serve(lambda a: a["deployments"][0].update(max_ongoing_request=4)),
                                  "max_ongoing_request"),
    "serve wrong type": ("RayService", _serve(lambda a: a["deployments"][0].update(max_ongoing_requests="many")),
                         "max_ongoing_requests"),
    "model args typo": ("RayService", _serve(lambda a: a["args"]["model"].update(pathh="demo")), "pathh"),
    "scaling in the model args": ("RayService", _serve(lambda a: a["args"]["serve"].update(num_gpus=1)), "num_gpus"),
    "application renamed": ("RayService", _serve(lambda a: a.update(name="other")), "xclip-stream"),
    "pipeline config typo": ("ConfigMap", _pipeline(lambda c: c["defaults"].update(sample_fpss=4)), "sample_fpss"),
    "password in the pipeline config": ("ConfigMap", _pipeline(lambda c: c["kafka"]["security"].update(
        password="hunter2")), "secrets do not belong"),
    "camera password in the pipeline config": ("ConfigMap", _pipeline(lambda c: c["cameras"][0]["credentials"].update(
        password="hunter2")), "secrets do not belong"),
    "camera credentials and a URL with its own": ("ConfigMap", _pipeline(lambda c: c["cameras"][0].update(
        url="rtsp://viewer:x@cam.example/s")), "already carries credentials"),
    "stream slots removed": ("RayService", lambda s: _group(s, "streams")["rayStartParams"].pop("resources"),
                             "no worker group offers xclip_stream"),
    "stream slots malformed": ("RayService", lambda s: _group(s, "streams")["rayStartParams"].update(
        resources='{"xclip_stream": 8}'), "autoscaler cannot parse"),
    "placement slot misspelt": ("ConfigMap", _pipeline(lambda c: c["placement"].update(
        resources={"xclip_streams": 1})), "no worker group offers xclip_streams"),
    "camera slots on the replica pods": ("RayService", lambda s: _group(s, "replicas")["rayStartParams"].update(
        resources='"{\\"xclip_replica\\": 2, \\"xclip_stream\\": 8}"'),
        "workerGroupSpecs.replicas: camera and Kafka-member actors can run here"),
    "camera secret not mounted on the stream pods": ("RayService", lambda s: _group(s, "streams")["template"]["spec"][
        "containers"][0]["volumeMounts"].pop(), "/cameras/lobby is not mounted"),
    "no placement: actors may land on replica pods": ("ConfigMap", _pipeline(lambda c: c.pop("placement")),
                                                      "workerGroupSpecs.replicas: camera and Kafka-member"),
    "deployment field typo": ("Deployment", lambda d: d["spec"].update(replica=1), "replica"),
    "deployment wrong type": ("Deployment", lambda d: d["spec"].update(replicas="one"), "replicas"),
    "budget field typo": ("PodDisruptionBudget", lambda d: d["spec"].update(maxUnavailabe=1), "maxUnavailabe"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_manifest_fails(base_docs, case):
    target, change, expected = BROKEN[case]
    errors = broken(base_docs, target, change)
    assert errors, f"{case}: not caught"
    assert any(expected in e for e in errors), errors


SCALED_OBJECT = {
    "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "example"},
    "spec": {"scaleTargetRef": {"name": "some-deployment"}, "minReplicaCount": 1, "maxReplicaCount": 4,
             "triggers": [{"type": "kafka", "metadata": {"bootstrapServers": "kafka:9092",
                                                         "consumerGroup": "g", "topic": "t", "lagThreshold": "10"}}]},
}


def test_scaled_object_checks():
    """k8s/ has no ScaledObject (nothing it deploys has a /scale that should follow lag: see the
    README), but one added later is checked like the rest: schema, and the CEL rule min <= max."""
    assert k8s.crd_errors(SCALED_OBJECT) == []
    wrong = copy.deepcopy(SCALED_OBJECT)
    wrong["spec"]["minReplicaCount"] = 9
    assert any("minReplicaCount must be less than or equal" in e for e in k8s.crd_errors(wrong))
    typo = copy.deepcopy(SCALED_OBJECT)
    typo["spec"]["maxReplicaCounts"] = 4
    assert any("maxReplicaCounts" in e for e in k8s.crd_errors(typo))
    unknown = {**SCALED_OBJECT, "kind": "ScaledJob"}
    assert any("no CRD" in e for e in k8s.crd_errors(unknown))


def test_broken_overlay_fails_to_render(tmp_path):
    """The gpu patch tests the base's worker group order first: a moved group stops the render."""
    for part in ("base", "grafana"):  # the base takes the dashboard from ../grafana
        (tmp_path / part).mkdir()
        for path in (ROOT / "k8s" / part).iterdir():
            (tmp_path / part / path.name).write_text(path.read_text())
    base = tmp_path / "base"
    service = base / "rayservice.yaml"
    service.write_text(service.read_text().replace("groupName: replicas", "groupName: models"))
    overlay = tmp_path / "overlays" / "gpu"
    overlay.mkdir(parents=True)
    for path in (ROOT / "k8s" / "overlays" / "gpu").iterdir():
        (overlay / path.name).write_text(path.read_text())
    with pytest.raises(AssertionError, match="workerGroupSpecs/1/groupName failed"):
        k8s.render(overlay)


# --- the code the manifests rely on --------------------------------------------------------------------

def test_build_app_takes_validated_args():
    """serveConfigV2's import path builds the model deployment under the names the driver calls;
    bad args fail with their path, and scaling options are refused there (they belong to Serve's
    deployments entry, which would otherwise silently win)."""
    from xclip_stream.actors.replica import DEPLOYMENT_NAME, build_app

    app = build_app({"model": {"path": "demo"}, "serve": {"max_batch_size": 4}})
    assert app._bound_deployment.name == DEPLOYMENT_NAME
    with pytest.raises(ConfigError, match=r"model\.pathh"):
        build_app({"model": {"path": "demo", "pathh": "x"}})
    with pytest.raises(ConfigError, match=r"serve\.num_gpus"):
        build_app({"model": {"path": "demo"}, "serve": {"num_gpus": 1}})


def test_external_model_needs_a_cluster_to_join(monkeypatch):
    """serve.deploy: false without a cluster address is refused before anything starts."""
    import io

    from xclip_stream.actors.runner import run_pipeline

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = parse_config({"model": {"path": "demo"}, "serve": {"deploy": False}, "labels": {"labels": ["a"]},
                           "cameras": [{"id": "c", "url": "/dev/null"}]})
    with pytest.raises(ConfigError, match="RAY_ADDRESS"):
        run_pipeline(config, io.StringIO())
