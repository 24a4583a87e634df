"""Ray off the network: a cluster the pipeline starts listens on loopback only, even when ``ray``
was imported before xclip_stream (Ray reads its listen setting at import); asked to listen on the
network, it refuses every call without the cluster's token. Each case starts real Ray in a
subprocess and looks at the sockets its processes listen on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xclip_stream.actors.ray_env import is_loopback
from xclip_stream.schemas.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[1]

# Imports ray first (the worst case), starts the cluster through init_ray, reports every listening
# socket of the driver and its child processes, and calls the GCS with and without the token.
PROBE = r"""
import json, sys
import ray  # first: it puts its bundled psutil on the path
import grpc, psutil
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
from xclip_stream.actors.runner import init_ray
from xclip_stream.schemas.config import RayConfig

config = RayConfig.model_validate_json(sys.argv[1])
token = open(config.token_file).read().strip() if config.token_file else None
init_ray(config=config)
try:
    task = ray.get(ray.remote(lambda: "ran").options(num_cpus=0).remote(), timeout=60)  # the cluster works
    me = psutil.Process()
    listening = set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            listening |= {(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                          if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    gcs = ray.get_runtime_context().gcs_address
    stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(grpc.insecure_channel(gcs))
    calls = {}
    for name, metadata in (("no_token", []), ("token", [("authorization", f"Bearer {token}")] if token else [])):
        try:
            stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=15)
            calls[name] = "OK"
        except grpc.RpcError as e:
            calls[name] = e.code().name
    print("RESULT " + json.dumps({"listening": sorted(listening), "gcs": gcs, "calls": calls, "task": task}))
finally:
    ray.shutdown()
"""


def _start(config: dict, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path))  # a token Ray might write stays in tmp_path
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(config)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_a_local_cluster_listens_on_loopback_only(tmp_path: Path):
    result = _start({}, tmp_path)
    names = {name for name, _, _ in result["listening"]}
    assert {"gcs_server", "raylet"} <= names, result["listening"]
    exposed = [entry for entry in result["listening"] if not is_loopback(entry[1])]
    assert not exposed, f"Ray processes listening beyond loopback: {exposed}"
    assert is_loopback(result["gcs"].rpartition(":")[0])
    assert result["task"] == "ran"


def test_a_network_cluster_requires_its_token(tmp_path: Path):
    token = tmp_path / "ray-token"
    token.write_text("0123456789abcdef" * 4 + "\n")
    token.chmod(0o600)
    result = _start({"listen": "all", "token_file": str(token)}, tmp_path)
    gcs_listeners = [ip for name, ip, _ in result["listening"] if name == "gcs_server"]
    assert gcs_listeners and not all(is_loopback(ip) for ip in gcs_listeners), result["listening"]
    assert result["calls"] == {"no_token": "UNAUTHENTICATED", "token": "OK"}
    assert result["task"] == "ran"  # our own workers got the token
    assert not (tmp_path / ".ray" / "auth_token").exists()  # the given token was used, none generated


@pytest.mark.parametrize("ray, expected", [
    ({"listen": "loopback", "token_file": "/t"}, "listen: all only"),
    ({"listen": "everywhere"}, "ray.listen"),
])
def test_ray_section_is_validated(ray: dict, expected: str):
    config = {"model": {"path": "demo"}, "labels": {"labels": ["a"]}, "cameras": [{"id": "c", "url": "x.mp4"}],
              "ray": ray}
    with pytest.raises(ConfigError, match=expected):
        parse_config(config)


@pytest.mark.parametrize("address, loopback", [("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
                                               ("0.0.0.0", False), ("::", False), ("192.0.2.2", False)])
def test_is_loopback(address: str, loopback: bool):
    assert is_loopback(address) is loopback
