"""Issue 18, part 2: the driver's HTTP server. Readiness and liveness from the supervisor's health
(pure), and a real uvicorn server answering over a socket; a running pipeline's endpoints are
checked in tests/test_pipeline.py (the RTSP camera restart, the control topic)."""

from __future__ import annotations

import json
import socket

import pytest

from xclip_stream.schemas.config import ConfigError, HttpConfig, parse_config
from xclip_stream.web.prometheus import DRIVER_CATALOGUE, exposition
from xclip_stream.web.server import HttpServer
from xclip_stream.web.status import Status, running_status

from .pipeline_harness import driver_metric, http_get

HEALTHY = {
    "camera:door": {"state": "connected", "restarts": 0, "sink_failing": False},
    "frames:topic#0": {"source": "topic#0", "restarts": 2, "sink_failing": False},
    "scaling:topic": {"state": "scaling", "members": 1},
}


def test_ready_when_the_model_runs_every_source_started_and_no_sink_fails():
    status = running_status(HEALTHY, None, {"applied": 3, "refused": 1, "events_failed": 0}, now=100.0)
    assert status.ready and status.problems == () and status.degraded == ()
    assert status.sources == {"camera:door": {"kind": "camera", "state": "connected", "restarts": 0},
                              "frames:topic#0": {"kind": "frames", "state": "running", "restarts": 2}}


def test_not_ready_says_why_and_an_unreachable_camera_is_degraded_not_unready():
    health = {**HEALTHY,
              "camera:door": {"state": "disconnected", "restarts": 0, "last_error": "connection refused"},
              "camera:yard": {"state": "pending", "pending_s": 12.5, "restarts": 0},
              "frames:topic#0": {"restarts": 0, "sink_failing": True, "sink_error": "KafkaTimeoutError: no broker"}}
    status = running_status(health, "Serve application 'xclip-stream' is DEPLOYING")
    assert not status.ready
    assert status.problems == ("model: Serve application 'xclip-stream' is DEPLOYING",
                               "camera:yard: pending for 12.5 s",
                               "frames:topic#0: its events cannot be delivered (KafkaTimeoutError: no broker)")
    assert status.degraded == ("camera:door: disconnected (connection refused)",)
    assert running_status({"camera:door": health["camera:door"]}, None).ready  # degraded alone: still ready


def test_alive_while_starting_and_running_until_the_loop_stalls():
    assert Status.starting("Ray").alive(now=1e9, stale_after_s=30) == (True, "starting: Ray")
    status = running_status(HEALTHY, None, now=100.0)
    assert status.alive(now=120.0, stale_after_s=30)[0]
    alive, detail = status.alive(now=140.0, stale_after_s=30)
    assert not alive and "40 s" in detail


def test_driver_metrics_are_catalogued_typed_and_counted():
    text = running_status(HEALTHY, None, {"applied": 3, "refused": 1, "events_failed": 0}).metrics_text()
    assert driver_metric(text, "xclip_pipeline_ready") == 1
    assert driver_metric(text, "xclip_control_messages_total", outcome="applied") == 3
    assert driver_metric(text, "xclip_control_messages_total", outcome="refused") == 1
    assert driver_metric(text, "xclip_sources", kind="camera", state="connected") == 1
    assert driver_metric(text, "xclip_source_restarts_total", source="frames:topic#0") == 2
    for name, (kind, _) in DRIVER_CATALOGUE.items():
        assert f"# TYPE {name} {kind}" in text
    with pytest.raises(KeyError, match="not in DRIVER_CATALOGUE"):
        exposition([("xclip_unknown", {}, 1.0)])
    assert 'source="a\\"b\\\\c"' in exposition([("xclip_source_restarts_total", {"source": 'a"b\\c'}, 1.0)])


def test_the_http_section_is_optional_and_listens_on_loopback_by_default():
    base = {"model": {"path": "demo"}, "cameras": [{"id": "c", "url": "/tmp/c.mp4"}], "labels": {"labels": ["a"]}}
    assert parse_config(base, "test").http is None  # no section, no listener
    http = parse_config({**base, "http": {}}, "test").http
    assert (http.host, http.port) == ("127.0.0.1", 8090)
    with pytest.raises(ConfigError, match="http.port"):
        parse_config({**base, "http": {"port": 70000}}, "test")


def test_the_server_answers_probes_and_metrics_from_the_published_status():
    server = HttpServer(HttpConfig(port=0)).start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        status, body = http_get(server.url + "/healthz")
        assert status == 200 and json.loads(body)["alive"]
        status, body = http_get(server.url + "/readyz")
        assert status == 503 and json.loads(body)["problems"] == ["starting: the pipeline's start"]
        server.publish(running_status(HEALTHY, None))
        status, body = http_get(server.url + "/readyz")
        assert status == 200 and json.loads(body)["sources"] == {"camera:door": "connected", "frames:topic#0": "running"}
        status, body = http_get(server.url + "/metrics")
        assert status == 200 and driver_metric(body, "xclip_pipeline_ready") == 1
        server.publish(running_status(HEALTHY, None, now=0.0))  # a loop that stopped turning long ago
        status, body = http_get(server.url + "/healthz")
        assert status == 503 and "has not turned" in json.loads(body)["detail"]
        assert http_get(server.url + "/docs")[0] == 404  # no API explorer on a production endpoint
    finally:
        server.stop()


def test_a_taken_port_is_a_clear_error_naming_the_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"http: cannot listen on 127.0.0.1:{port}"):
            HttpServer(HttpConfig(port=port)).start()


def http_post(url: str, body: bytes) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_page_its_files_state_stream_and_thumbnails():
    import urllib.request

    server = HttpServer(HttpConfig(port=0)).start()
    try:
        with urllib.request.urlopen(server.url + "/", timeout=10) as response:
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp  # nothing inline, nothing remote
            assert b'<script src="/static/app.js">' in response.read()
        assert http_get(server.url + "/static/app.js")[0] == 200
        assert http_get(server.url + "/static/..%2Fserver.py")[0] == 404  # a fixed set of files
        server.live.add({"event_type": "xclip.window.scores", "camera_id": "door", "window_index": 3, "end_time": 1.0,
                         "top_label": "a person", "top_score": 0.9, "scores": {"a person": 0.9, "a car": 0.1}})
        status, body = http_get(server.url + "/api/state")
        state = json.loads(body)
        assert status == 200 and state["cameras"][0]["top"] == [["a person", 0.9], ["a car", 0.1]]
        assert state["status"]["phase"].startswith("starting")
        assert http_get(server.url + "/api/cameras/door/frame.jpg")[0] == 404
        server.live.set_thumbnails({"door": b"\xff\xd8jpeg"})
        with urllib.request.urlopen(server.url + "/api/cameras/door/frame.jpg", timeout=10) as response:
            assert response.headers["Content-Type"] == "image/jpeg" and response.read() == b"\xff\xd8jpeg"
        with urllib.request.urlopen(server.url + "/api/stream", timeout=10) as stream:  # server-sent events
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            line = stream.readline()
            assert line.startswith(b"data: ") and json.loads(line[6:])["cameras"][0]["thumbnail"] == 1
            assert server.viewers == 1  # what makes the driver ask the cameras for thumbnails
    finally:
        server.stop()


def test_the_label_form_posts_only_through_the_control_topics_checks():
    from xclip_stream.pipeline.control_auth import AuthError

    server = HttpServer(HttpConfig(port=0)).start()
    forwarded = []

    def forward(body: bytes) -> str:
        if b"forged" in body:
            raise AuthError("bad signature (wrong secret, or the message was altered)")
        forwarded.append(body)
        return "door"

    try:
        status, answer = http_post(server.url + "/api/control", b"{}")
        assert status == 409 and "read-only" in answer["error"]  # no control topic, no changes
        server.forward = forward
        assert http_post(server.url + "/api/control", b'{"forged": 1}') == (
            403, {"error": "bad signature (wrong secret, or the message was altered)"})
        assert http_post(server.url + "/api/control", b"x" * 70_000)[0] == 413
        assert http_post(server.url + "/api/control", b'{"ok": 1}') == (202, {"submitted": True, "camera": "door"})
        assert forwarded == [b'{"ok": 1}']
    finally:
        server.stop()
