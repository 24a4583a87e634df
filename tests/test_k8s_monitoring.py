"""k8s/'s monitoring checked offline, beside tests/test_k8s.py (whose schema test runs these checks on
every overlay too): the PodMonitors scrape named ports that the Ray pods and the driver have, the
driver's HTTP server is where its probes, PodMonitor and NetworkPolicy look, the Grafana dashboard
shows every catalogued metric and nothing else, and a broken piece is caught."""

from __future__ import annotations

import json

import pytest

from xclip_stream.schemas.config import parse_config

from . import k8s_checks as k8s
from . import k8s_monitoring as mon
from .test_k8s import OVERLAYS, ROOT, _pipeline, broken, one, pipeline_config

DASHBOARD = ROOT / "k8s" / "grafana" / mon.DASHBOARD_FILE


@pytest.fixture(scope="module", params=[p.name for p in OVERLAYS])
def rendered(request) -> list[dict]:
    return k8s.render(ROOT / "k8s" / "overlays" / request.param)


def test_pod_monitors_scrape_every_ray_pod_and_the_driver(rendered):
    monitors = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "PodMonitor"}
    assert set(monitors) == {"xclip-stream-ray", "xclip-stream-driver"}
    templates = mon.workload_pod_templates(rendered)
    for monitor in monitors.values():
        assert k8s.crd_errors(monitor) == [] and mon.pod_monitor_errors(monitor, templates) == []
        assert [(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [
            ("metrics" if monitor is monitors["xclip-stream-ray"] else "http", "/metrics")]

    def chosen(name):
        return [w for w, t in templates if mon.selects(monitors[name]["spec"]["selector"], t["metadata"]["labels"])]

    ray_pods = [w for w, _ in templates if w.startswith("RayService")]
    assert chosen("xclip-stream-ray") == ray_pods and len(ray_pods) == 3  # head, streams, replicas
    assert chosen("xclip-stream-driver") == ["Deployment xclip-stream-driver"]
    # Ray's metrics port, the same on every Ray pod, is the one Prometheus may reach
    ports = {mon.container_ports(t)["metrics"] for w, t in templates if w in ray_pods}
    open_to_monitoring = [p["port"] for rule in one(rendered, "NetworkPolicy", "xclip-stream-ray")["spec"]["ingress"]
                          for peer in rule["from"] if "namespaceSelector" in peer
                          and peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring"
                          for p in rule["ports"]]
    assert ports == {8080} and open_to_monitoring == [8080]


def test_driver_serves_its_probes_and_metrics(rendered):
    config = pipeline_config(rendered)
    http = parse_config(config).http
    assert http is not None and http.host == "0.0.0.0"
    driver = one(rendered, "Deployment", "xclip-stream-driver")
    container = driver["spec"]["template"]["spec"]["containers"][0]
    assert mon.container_ports(driver["spec"]["template"]) == {"http": http.port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    policy = one(rendered, "NetworkPolicy", "xclip-stream-driver")
    assert policy["spec"]["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"protocol": "TCP", "port": http.port}]}]
    assert mon.driver_http_errors(driver, config, policy) == []


def test_dashboard_shows_every_catalogued_metric(rendered):
    text = DASHBOARD.read_text()
    dashboard = json.loads(text)
    assert text == json.dumps(dashboard, indent=2) + "\n"  # as committed: pretty-printed, indent 2
    assert dashboard["uid"] == "xclip-stream" and dashboard["schemaVersion"] >= 39
    assert mon.dashboard_errors(dashboard) == []
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    camera = variables["camera"]
    assert camera["query"]["query"] == "label_values(ray_xclip_frames_decoded_total, camera)"
    assert camera["multi"] and camera["includeAll"]
    assert {p["type"] for p in mon.dashboard_panels(dashboard)} == {"row", "timeseries", "stat"}
    # shipped as the ConfigMap the Grafana chart's sidecar loads, holding the same JSON
    config_map = one(rendered, "ConfigMap", "xclip-stream-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"][mon.DASHBOARD_FILE]) == dashboard


# --- broken pieces are caught -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_docs() -> list[dict]:
    return k8s.render(ROOT / "k8s" / "overlays" / "cpu")


def _dashboard(change):
    def apply(config_map):
        data = json.loads(config_map["data"][mon.DASHBOARD_FILE])
        change(data)
        config_map["data"][mon.DASHBOARD_FILE] = json.dumps(data)
    return apply


def _panel(dashboard: dict, title: str) -> dict:
    return next(p for p in mon.dashboard_panels(dashboard) if p.get("title") == title)


def _driver(change):
    return lambda d: change(d["spec"]["template"]["spec"]["containers"][0])


def _drop_panel(title):
    return lambda d: d["panels"].remove(_panel(d, title))


RAY_MONITOR, DRIVER_MONITOR = ("PodMonitor", "xclip-stream-ray"), ("PodMonitor", "xclip-stream-driver")
DASHBOARD_MAP = ("ConfigMap", "xclip-stream-grafana-dashboard")
BROKEN = {
    "pod monitor port misnamed": (RAY_MONITOR, lambda m: m["spec"]["podMetricsEndpoints"][0].update(port="metric"),
                                  "has no container port named 'metric'"),
    "pod monitor selects nothing": (DRIVER_MONITOR, lambda m: m["spec"]["selector"]["matchLabels"].update({
        "app.kubernetes.io/component": "drivers"}), "matches no pod template"),
    "pod monitor field typo": (RAY_MONITOR, lambda m: m["spec"].update(podMetricEndpoints=[]), "podMetricEndpoints"),
    "pod monitor bad interval": (RAY_MONITOR, lambda m: m["spec"]["podMetricsEndpoints"][0].update(interval="15"),
                                 "podMetricsEndpoints.0.interval"),
    "worker without a metrics port": ("RayService", lambda s: s["spec"]["rayClusterConfig"]["workerGroupSpecs"][0][
        "template"]["spec"]["containers"][0].pop("ports"), "workerGroupSpecs.streams.template has no container port"),
    "driver server on loopback": ("ConfigMap", _pipeline(lambda c: c["http"].update(host="127.0.0.1")), "http.host"),
    "driver server on another port": ("ConfigMap", _pipeline(lambda c: c["http"].update(port=8091)),
                                      "http.port is 8091"),
    "driver without http section": ("ConfigMap", _pipeline(lambda c: c.pop("http")), "no http section"),
    "readiness on /healthz": ("Deployment", _driver(lambda c: c["readinessProbe"]["httpGet"].update(path="/healthz")),
                              "readinessProbe"),
    "liveness kills a starting driver": ("Deployment", _driver(lambda c: c.pop("startupProbe")),
                                         "may restart the driver 60 s"),
    "monitoring shut out of the driver": ("NetworkPolicy", lambda p: p["spec"].update(ingress=[]),
                                          "namespace monitoring"),
    "dashboard metric misnamed": (DASHBOARD_MAP, _dashboard(lambda d: _panel(d, "Frames /s")["targets"][0].update(
        expr="rate(ray_xclip_frames_decode_total[5m])")), "ray_xclip_frames_decode_total is in neither"),
    "dashboard histogram without _bucket": (DASHBOARD_MAP, _dashboard(lambda d: _panel(d, "Batch time")["targets"][0]
                                            .update(expr="ray_xclip_replica_batch_seconds")), "is a histogram"),
    "dashboard metric on no panel": (DASHBOARD_MAP, _dashboard(_drop_panel("Commit failures")),
                                     "ray_xclip_kafka_commit_failures_total: catalogued, but on no panel"),
    "dashboard panel on another source": (DASHBOARD_MAP, _dashboard(lambda d: _panel(d, "Consumer lag").update(
        datasource={"type": "prometheus", "uid": "prom"})), "'Consumer lag': its datasource"),
    "dashboard panel ids repeated": (DASHBOARD_MAP, _dashboard(lambda d: _panel(d, "Batch size").update(
        id=_panel(d, "Batch time")["id"])), "duplicate ids"),
    "dashboard not JSON": (DASHBOARD_MAP, lambda m: m["data"].update({mon.DASHBOARD_FILE: "{"}), "is not JSON"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_monitoring_fails(base_docs, case):
    target, change, expected = BROKEN[case]
    errors = broken(base_docs, target, change)
    assert errors, f"{case}: not caught"
    assert any(expected in e for e in errors), errors
