"""Camera credentials named by the configuration (a file or an environment variable), never held in
it: validated at the edge, read at each connection, put only into the URL FFmpeg opens, and absent
from errors, logs, events and health. Against a real MJPEG camera that asks for HTTP Basic auth."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline_harness import PipelineThread, pipeline_config
from xclip_stream.pipeline.control import ControlPlane
from xclip_stream.pipeline.control_auth import sign
from xclip_stream.pipeline.credentials import SecretUnavailable, camera_url
from xclip_stream.pipeline.kafka_clients import KafkaAccessError, read_secret
from xclip_stream.pipeline.sources import SourceError, VideoSource
from xclip_stream.schemas.config import CameraCredentials, ConfigError, parse_config
from xclip_stream.services.mjpeg import MjpegCamera

# Characters that must be percent-encoded in user info, and a space, and non-ASCII.
PASSWORD = "s3cr@t:pa/ss%20wörd"
USER = "viewer one"


def config(cameras: list[dict], **extra) -> dict:
    return {"model": {"path": "m"}, "labels": {"labels": ["a"]}, "cameras": cameras, **extra}


def frames(i: int) -> np.ndarray:
    return np.full((48, 64, 3), (i * 8) % 256, np.uint8)


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "camera-password"
    path.write_text(PASSWORD + "\n")  # as `kubectl create secret --from-file` keeps an editor's newline
    return path


# -- validation at the edge --------------------------------------------------------------------------

def test_credentials_validated_with_their_path(password_file):
    good = parse_config(config([{"id": "c", "url": "rtsp://cam.example/live",
                                 "credentials": {"username": USER, "password_file": str(password_file)}}]))
    assert good.cameras[0].credentials == CameraCredentials(username=USER, password_file=str(password_file))
    dumped = repr(good.model_dump()) + good.model_dump_json()
    assert PASSWORD not in dumped and "s3cr" not in dumped  # the configuration never holds the secret
    parse_config(config([{"id": "c", "url": "https://cam.example/x.m3u8",
                          "credentials": {"username": "u", "password_env": "CAM_PASSWORD"}}]))
    cases = [
        ({"url": "rtsp://admin:pw@cam.example/live", "credentials": {"username": "u", "password_env": "P"}},
         "cameras.0: Value error, the URL already carries credentials"),
        ({"url": "rtsp://u:pa/ss@cam.example/live", "credentials": {"username": "u", "password_env": "P"}},
         "already carries credentials"),
        ({"url": "/data/x.mp4", "credentials": {"username": "u", "password_env": "P"}},
         "not to a file source"),
        ({"url": "device:///dev/video0", "credentials": {"username": "u", "password_env": "P"}},
         "not to a device source"),
        ({"url": "udp://239.0.0.1:1234", "credentials": {"username": "u", "password_env": "P"}},
         "not to a stream source"),
        ({"url": "rtsp://cam.example/", "credentials": {"username": "u", "password": "hunter2"}},
         "cameras.0.credentials: Value error, 'password' is not accepted"),
        ({"url": "rtsp://cam.example/", "credentials": {"username": "u"}}, "exactly one of password_file"),
        ({"url": "rtsp://cam.example/", "credentials": {"username": "u", "password_env": "P",
                                                         "password_file": "/x"}}, "exactly one of"),
        ({"url": "rtsp://cam.example/", "credentials": {"username": "u", "password_env": "NOT-A-NAME"}},
         "cameras.0.credentials.password_env"),
        ({"url": "rtsp://cam.example/", "credentials": {"username": "", "password_env": "P"}},
         "cameras.0.credentials.username"),
        ({"url": "rtsp://cam.example/", "credentials": {"username": "a\r\nb", "password_env": "P"}},
         "cameras.0.credentials.username"),
        ({"url": "rtsp://cam.example/", "credentials": {"username": "u", "password_env": "P", "pasword": 1}},
         "cameras.0.credentials.pasword"),
    ]
    for camera, expected in cases:
        with pytest.raises(ConfigError) as err:
            parse_config(config([{"id": "c", **camera}]))
        assert expected in str(err.value), (camera, str(err.value))
        assert "hunter2" not in str(err.value)


def test_control_topic_cannot_name_credentials(password_file):
    """A remote message must not choose which local file or variable the pipeline reads and sends to
    a camera's host (it could name the Kafka password or the Ray token)."""
    secret = b"0123456789abcdef-test-secret"
    base = parse_config(config([{"id": "c1", "url": "rtsp://cam.example/a"}], kafka={
        "bootstrap": "127.0.0.1:9092", "control_topic": "ctl"}, control={"secret_env": "XCLIP_TEST_SECRET"}))
    now = 1_800_000_000.0
    plane = ControlPlane(base, base.control, secret, resolver=lambda name: ["93.184.216.34"], clock=lambda: now)
    for credentials in ({"username": "u", "password_file": str(password_file)},
                        {"username": "u", "password_env": "RAY_AUTH_TOKEN"}):
        camera = {"id": "c2", "url": "rtsp://cam.example/b", "credentials": credentials}
        outcome = plane.handle(sign({"op": "add_camera", "camera": camera}, secret, ts=now))
        assert not outcome.applied and "'credentials' cannot be set through the control topic" in outcome.reason
    outcome = plane.handle(sign({"op": "add_camera", "camera": {"id": "c2", "url": "rtsp://cam.example/b"}},
                                secret, ts=now))
    assert outcome.applied  # the same camera without them is fine


# -- reading the secret ------------------------------------------------------------------------------

def test_camera_url_reads_the_secret_at_each_call(password_file, monkeypatch):
    creds = CameraCredentials(username=USER, password_file=str(password_file))
    url = camera_url("rtsp://cam.example:554/live?x=1", creds, "c")
    assert url == "rtsp://viewer%20one:s3cr%40t%3Apa%2Fss%2520w%C3%B6rd@cam.example:554/live?x=1"
    password_file.write_text("rotated\n")
    assert camera_url("rtsp://cam.example/live", creds, "c") == "rtsp://viewer%20one:rotated@cam.example/live"
    assert camera_url("rtsp://cam.example/live", None, "c") == "rtsp://cam.example/live"
    monkeypatch.setenv("XCLIP_TEST_CAM_PW", "from-env")
    env = CameraCredentials(username="u", password_env="XCLIP_TEST_CAM_PW")
    assert camera_url("http://cam.example/", env, "c") == "http://u:from-env@cam.example/"
    for creds, expected in (
        (CameraCredentials(username="u", password_file=str(password_file.parent / "missing")),
         "camera 'c' credentials.password_file: cannot read"),
        (CameraCredentials(username="u", password_env="XCLIP_TEST_UNSET_PW"),
         "camera 'c' credentials.password_env: environment variable XCLIP_TEST_UNSET_PW is not set"),
    ):
        with pytest.raises(SecretUnavailable, match=expected):
            camera_url("rtsp://cam.example/", creds, "c")
    password_file.write_text("\n")
    with pytest.raises(SecretUnavailable, match="is empty"):
        camera_url("rtsp://cam.example/", CameraCredentials(username="u", password_file=str(password_file)), "c")


def test_kafka_secrets_read_through_the_same_helper(tmp_path):
    """One reader for every secret the configuration names; Kafka's errors keep their setting's path."""
    with pytest.raises(KafkaAccessError, match=r"^kafka\.security\.password_file: cannot read "):
        read_secret(str(tmp_path / "missing"), None, "password")
    (tmp_path / "pw").write_text("kafka-pw\n")
    assert read_secret(str(tmp_path / "pw"), None, "password") == "kafka-pw"


# -- a real camera that asks for them ----------------------------------------------------------------

def take(source: VideoSource, n: int, timeout: float = 20.0) -> int:
    count, deadline = 0, time.monotonic() + timeout
    for _ in source.frames():
        count += 1
        if count >= n or time.monotonic() > deadline:
            break
    source.stop()
    return count


def test_mjpeg_camera_with_basic_auth(password_file, caplog):
    caplog.set_level(logging.DEBUG)
    creds = CameraCredentials(username=USER, password_file=str(password_file))
    with MjpegCamera(frames, fps=20, auth=(USER, PASSWORD)) as cam:
        without = VideoSource("c", cam.url, reconnect=False)
        with pytest.raises(SourceError, match="401 Unauthorized"):
            take(without, 1)
        assert take(VideoSource("c", cam.url, credentials=creds), 5) == 5

        password_file.write_text("not-the-password\n")
        wrong = VideoSource("c", cam.url, credentials=creds, reconnect=False)
        with pytest.raises(SourceError) as err:
            take(wrong, 1)
        message = str(err.value)
        assert "401 Unauthorized" in message and f"camera 'c' ({cam.url})" in message
        assert "not-the-password" not in message and "***" in message  # FFmpeg quoted the URL it was given

        # A live camera keeps reconnecting, and reads the file again each time: a rotated Secret
        # is used from the next connection.
        states = []
        live = VideoSource("c", cam.url, credentials=creds, on_status=lambda s, r: states.append((s, r)))
        got = []

        def rotate_once_refused():
            while not [s for s in states if s[0] == "disconnected"]:
                time.sleep(0.05)
            password_file.write_text(PASSWORD + "\n")

        rotator = threading.Thread(target=rotate_once_refused)
        rotator.start()
        got.append(take(live, 3))
        rotator.join()
        assert got == [3] and live.stats.reconnects >= 1
        assert live.stats.last_error and "401" in live.stats.last_error
        texts = [r for _, r in states] + [live.stats.last_error, caplog.text]
    for text in texts:
        for secret in ("not-the-password", PASSWORD, "s3cr%40t", "pa%2Fss"):
            assert secret not in text


def test_pipeline_camera_with_credentials_from_a_file(ray_session, tiny_checkpoint, password_file, tmp_path,
                                                      caplog):
    """Through the whole pipeline (real Ray, Serve, the camera actor): one camera with the right
    password scores windows, one with a wrong password reports a redacted refusal; the password
    is in no event, no health, no driver log line and no Ray worker log."""
    import ray

    caplog.set_level(logging.DEBUG)
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("wrong-password-9f3a\n")
    with MjpegCamera(frames, fps=16, auth=(USER, PASSWORD)) as cam:
        cameras = [
            {"id": "door", "url": cam.url, "credentials": {"username": USER, "password_file": str(password_file)}},
            {"id": "yard", "url": cam.url, "credentials": {"username": USER, "password_file": str(wrong_file)}},
        ]
        with PipelineThread(pipeline_config(tiny_checkpoint, cameras)) as run:
            deadline = time.monotonic() + 90
            while True:
                lines = run.lines()
                scored = [e for e in lines if e["event_type"] == "xclip.window.scores" and e["camera_id"] == "door"]
                refused = [e for e in lines if e["event_type"] == "xclip.stream.disconnected"
                           and e["camera_id"] == "yard"
                           and "401" in (e.get("reason") or "")]
                if len(scored) >= 2 and refused:
                    break
                assert time.monotonic() < deadline, "no scored window or no refusal"
                time.sleep(0.3)
        health = run.result
        output = run.out.getvalue()
    assert "Unauthorized" in refused[0]["reason"]
    assert health["camera:door"]["windows_scored"] >= 2
    session_dir = ray._private.worker._global_node.get_session_dir_path()
    worker_logs = "".join(p.read_text(errors="replace") for p in Path(session_dir, "logs").glob("worker-*"))
    assert "camera yard" in worker_logs and "401" in worker_logs  # the actor's own log lines are here
    for text in (output, repr(health), caplog.text, worker_logs):
        for secret in (PASSWORD, "s3cr%40t", "wrong-password-9f3a"):
            assert secret not in text
