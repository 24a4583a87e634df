"""Offline checks of k8s/'s monitoring, in the style of k8s_checks (each returns a list of problems,
one line each): the PodMonitors select pods that have the ports they scrape; the driver's HTTP server
listens where its probes, its PodMonitor and its NetworkPolicy look; the Grafana dashboard asks only
for metrics the code exports (a renamed metric is caught) and shows every one of them.
"""

from __future__ import annotations

import json
import re

import yaml

from . import k8s_checks

DATASOURCE = "${datasource}"  # every panel's data source: the dashboard's variable
DASHBOARD_FILE = "xclip-stream.json"  # its key in the dashboard's ConfigMap
METRIC = re.compile(r"\b(?:ray_)?xclip_[a-z0-9_]+")
HISTOGRAM_SERIES = re.compile(r"_(?:bucket|sum|count)$")
# Before liveness may restart the driver: it joins the Ray cluster over Ray Client before its HTTP
# server answers, which can take a while on a fresh cluster.
DRIVER_START_S = 120


def catalogue() -> dict[str, str]:
    """Every metric as Prometheus scrapes it -> its kind: the actors' (through Ray) and the driver's."""
    from xclip_stream.actors.metrics import CATALOGUE
    from xclip_stream.web.prometheus import DRIVER_CATALOGUE

    return {**CATALOGUE, **{name: kind for name, (kind, _) in DRIVER_CATALOGUE.items()}}


# --- PodMonitors ---------------------------------------------------------------------------------------

def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels, matchExpressions) against a pod's labels, as the apiserver reads it."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for req in selector.get("matchExpressions") or []:
        key, values = req["key"], req.get("values") or []
        matched = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
                   "Exists": key in labels, "DoesNotExist": key not in labels}.get(req["operator"], False)
        if not matched:
            return False
    return True


def workload_pod_templates(docs: list[dict]) -> list[tuple[str, dict]]:
    """Every pod template of the rendered manifests: the RayService's groups and the Deployments'."""
    found = []
    for doc in docs:
        name = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] == "RayService":
            found += [(f"{name} {where}", template) for where, template in k8s_checks.pod_templates(doc)]
        elif doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            found.append((name, doc["spec"]["template"]))
    return found


def container_ports(template: dict) -> dict[str, int]:
    """Named container ports of a pod template -> their numbers."""
    return {p["name"]: p["containerPort"] for c in template.get("spec", {}).get("containers", [])
            for p in c.get("ports", []) if "name" in p}


def pod_monitor_errors(monitor: dict, templates: list[tuple[str, dict]]) -> list[str]:
    """A PodMonitor must select some pod template (else it scrapes nothing, silently), and each pod it
    selects must have a container port named as each endpoint's ``port``: Prometheus finds its
    targets by that name, and a pod without it is simply not scraped."""
    name = f"PodMonitor {monitor['metadata']['name']}"
    spec = monitor.get("spec", {})
    chosen = [(where, t) for where, t in templates
              if selects(spec.get("selector") or {}, t.get("metadata", {}).get("labels", {}))]
    if not chosen:
        return [f"{name}: its selector matches no pod template in k8s/"]
    errors = []
    for i, endpoint in enumerate(spec.get("podMetricsEndpoints", [])):
        port = endpoint.get("port")
        if not port:
            errors.append(f"{name}: podMetricsEndpoints.{i} names no port (k8s/ scrapes named ports)")
            continue
        errors += [f"{name}: {where} has no container port named {port!r}"
                   for where, t in chosen if port not in container_ports(t)]
    return errors


# --- the driver's HTTP server ---------------------------------------------------------------------------

def _gives_up_after(probe: dict) -> int:
    """Seconds before a probe's failures count (Kubernetes' defaults: period 10 s, 3 failures)."""
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


def driver_http_errors(driver: dict, config: dict, policy: dict) -> list[str]:
    """pipeline.yaml's ``http`` section against the driver Deployment and its NetworkPolicy: the server
    listens on every address (the kubelet's probes and Prometheus come to the pod IP) on the port the
    container names ``http``; liveness asks /healthz, readiness /readyz, and liveness waits for the
    driver's start; namespace ``monitoring`` may reach that port."""
    from pydantic import ValidationError

    from xclip_stream.schemas.config import HttpConfig

    if not config.get("http"):
        return ["pipeline.yaml: no http section: the driver would answer no probe and serve no metrics"]
    try:
        http = HttpConfig.model_validate(config["http"])
    except ValidationError:
        return []  # the configuration's own check reports it
    errors = []
    if http.host != "0.0.0.0":
        errors.append(f"pipeline.yaml http.host: {http.host!r}: the probes and Prometheus reach the pod IP, "
                      "so the driver must listen on 0.0.0.0")
    container = driver["spec"]["template"]["spec"]["containers"][0]
    port = container_ports(driver["spec"]["template"]).get("http")
    if port != http.port:
        errors.append(f"driver container port http: {port}, but pipeline.yaml http.port is {http.port}")
    for kind, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (container.get(kind) or {}).get("httpGet") or {}
        if (get.get("path"), get.get("port")) != (path, "http") and (kind in container or kind != "startupProbe"):
            errors.append(f"driver {kind}: httpGet {get.get('path')} on port {get.get('port')}, "
                          f"expected {path} on port http")
    start = sum(_gives_up_after(container[kind]) for kind in ("startupProbe", "livenessProbe") if kind in container)
    if start < DRIVER_START_S:
        errors.append(f"driver livenessProbe: may restart the driver {start} s after it starts, before "
                      f"{DRIVER_START_S} s (startupProbe or initialDelaySeconds)")
    from_monitoring = [
        rule for rule in policy["spec"].get("ingress") or []
        if any((peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
               == "monitoring" for peer in rule.get("from", []))
        and any(p.get("port") in (http.port, "http") for p in rule.get("ports") or [{"port": http.port}])]
    if not from_monitoring:
        errors.append(f"NetworkPolicy {policy['metadata']['name']}: namespace monitoring (Prometheus) cannot "
                      f"reach the driver's port {http.port}")
    return errors


# --- the Grafana dashboard -------------------------------------------------------------------------------

def dashboard_panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in dashboard.get("panels", []):
        found += [panel] + (panel.get("panels") or [])
    return found


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            found.append((f"variable {var.get('name')}", query.get("query", "") if isinstance(query, dict) else query))
    for panel in dashboard_panels(dashboard):
        found += [(f"panel {panel.get('title')!r}", t.get("expr", "")) for t in panel.get("targets", [])]
    return found


def dashboard_errors(dashboard: dict) -> list[str]:
    """Panels with unique ids, each on the ``datasource`` variable with at least one query; every
    query names catalogued metrics only (a histogram by its _bucket, _sum or _count series: the bare
    name is not scraped), and every catalogued metric is on some panel."""
    kinds, errors, used = catalogue(), [], set()
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    source = variables.get("datasource") or {}
    if (source.get("type"), source.get("query")) != ("datasource", "prometheus"):
        errors.append("templating: no variable `datasource` of type datasource (prometheus)")
    panels = dashboard_panels(dashboard)
    ids = [p.get("id") for p in panels]
    repeated = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if repeated:
        errors.append(f"panels: duplicate ids {repeated}")
    for thing in [v for v in variables.values() if v.get("type") == "query"] + \
            [p for p in panels if p.get("type") != "row"]:
        where = f"variable {thing['name']}" if "name" in thing else f"panel {thing.get('title')!r}"
        if (thing.get("datasource") or {}).get("uid") != DATASOURCE:
            errors.append(f"{where}: its datasource is not the variable {DATASOURCE}")
        if "name" not in thing and not thing.get("targets"):
            errors.append(f"{where}: no query")
        for target in thing.get("targets", []):
            if (target.get("datasource") or {"uid": DATASOURCE}).get("uid") != DATASOURCE:
                errors.append(f"{where}: query {target.get('refId')} is not on the variable {DATASOURCE}")
    for where, expr in dashboard_queries(dashboard):
        names = METRIC.findall(expr or "")
        if not names:
            errors.append(f"{where}: {expr!r} names no xclip metric")
        for name in names:
            base = HISTOGRAM_SERIES.sub("", name)
            if base != name and kinds.get(base) == "histogram":
                used.add(base)
            elif kinds.get(name) == "histogram":
                errors.append(f"{where}: {name} is a histogram, scraped only as {name}_bucket, _sum and _count")
            elif name in kinds:
                used.add(name)
            else:
                errors.append(f"{where}: {name} is in neither CATALOGUE (actors/metrics.py) nor "
                              "DRIVER_CATALOGUE (web/prometheus.py)")
    errors += [f"{name}: catalogued, but on no panel of the dashboard" for name in sorted(set(kinds) - used)]
    return errors


# --- all of it, on rendered manifests ------------------------------------------------------------------

def manifest_errors(docs: list[dict]) -> list[str]:
    """The checks above on whatever the rendered manifests hold."""
    errors = []
    templates = workload_pod_templates(docs)
    for doc in docs:
        if doc["kind"] == "PodMonitor":
            errors += pod_monitor_errors(doc, templates)
        if doc["kind"] == "ConfigMap" and DASHBOARD_FILE in doc.get("data", {}):
            try:
                errors += dashboard_errors(json.loads(doc["data"][DASHBOARD_FILE]))
            except json.JSONDecodeError as e:
                errors.append(f"ConfigMap {doc['metadata']['name']}: {DASHBOARD_FILE} is not JSON ({e})")
    named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    driver = named.get(("Deployment", "xclip-stream-driver"))
    config_map = named.get(("ConfigMap", "xclip-stream-pipeline"))
    policy = named.get(("NetworkPolicy", "xclip-stream-driver"))
    if driver and config_map and policy:
        errors += driver_http_errors(driver, yaml.safe_load(config_map["data"]["pipeline.yaml"]) or {}, policy)
    return errors
