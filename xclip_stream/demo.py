"""`make demo`: the live pipeline end to end on the bundled demo model, with a live view of its events.

It starts an embedded Kafka broker (Tansu), plays synthetic cameras as live streams (one through a
real RTSP server when gst-rtsp-server is installed, one as an HTTP MJPEG camera, the others as
video files paced in real time), runs the pipeline (Ray actors, a Ray Serve replica of the demo
X-CLIP) publishing to Kafka, and reads the events back from Kafka to show, per camera, what the
model sees next to what the camera really shows. It ends after ``--seconds`` or on Ctrl-C, and
shuts everything down. Ray and broker logs go to a file, so the terminal shows only the view.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import secrets
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .pipeline.clips import write_video
from .training.data import trained_combinations
from .training.synthetic import Action, all_actions, render_stream
from .viewer import LiveView, ViewCamera

FPS, SIZE, SCENE_SECONDS, SCENES_PER_LOOP = 8, 128, 3.0, 10
SAMPLE_FPS, HOP = 4.0, 4  # 8-frame windows of 1.75 s, one a second
EVENTS_TOPIC = "xclip.demo.events"
STARTUP_LIMIT_S = 180.0
DEMO_HTTP_PORT = 8090  # the pipeline's HTTP server (another free one when taken)
SECRET_ENV = "XCLIP_DEMO_CONTROL_SECRET"  # the control secret (a random one per run when unset)


@dataclass(frozen=True)
class DemoCamera:
    id: str
    action: Action
    transport: str  # "rtsp", "mjpeg" or "file"
    video: Path


def demo_actions(count: int, seed: int = 0) -> list[Action]:
    """``count`` trained combinations with distinct motions where possible: the demo's cameras."""
    pool = trained_combinations()
    random.Random(seed).shuffle(pool)
    picked: list[Action] = []
    for action in pool:
        if len(picked) == count:
            break
        if all(action.motion != p.motion for p in picked) or len(picked) >= 8:
            picked.append(action)
    return picked


def write_camera_video(path: Path, action: Action, seed: int) -> Path:
    """A live synthetic camera showing ``action`` again and again, a new scene every 3 s."""
    frames = render_stream([action], SCENE_SECONDS, FPS, SIZE, seed)
    count = round(SCENE_SECONDS * FPS) * SCENES_PER_LOOP
    return write_video(path, (frame for _, frame in itertools.islice(frames, count)), fps=FPS)


def plan_cameras(count: int, work: Path, rtsp: bool) -> list[DemoCamera]:
    transports = (["rtsp"] if rtsp else []) + ["mjpeg"] + ["file"] * count
    cameras = []
    for i, (action, transport) in enumerate(zip(demo_actions(count), transports)):
        name = f"{transport}-cam-{i + 1}"
        cameras.append(DemoCamera(name, action, transport, write_camera_video(work / f"{name}.mp4", action, seed=i)))
    return cameras


@contextlib.contextmanager
def serve_cameras(cameras: list[DemoCamera]) -> Iterator[dict[str, str]]:
    """Start the RTSP and MJPEG servers; yields camera id -> URL (files are read directly)."""
    from .services.mjpeg import MjpegCamera
    from .services.rtsp_server import RtspCamera

    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for camera in cameras:
            if camera.transport == "rtsp":
                urls[camera.id] = stack.enter_context(RtspCamera(camera.video)).url
            elif camera.transport == "mjpeg":
                urls[camera.id] = stack.enter_context(MjpegCamera(camera.video, fps=FPS)).url
            else:
                urls[camera.id] = str(camera.video)
        yield urls


def pipeline_config(cameras: list[DemoCamera], urls: dict[str, str], bootstrap: str, topic: str, model: str,
                    http_port: int | None = None, secret_file: Path | None = None):
    """The demo's pipeline; with ``http_port``, the live page and a signed control topic (its secret
    in ``secret_file``) whose label sets the page's form can give a camera."""
    from .schemas.config import parse_config

    captions = [a.caption for a in all_actions()]
    control = {"kafka": {"bootstrap": bootstrap, "events_topic": topic, "control_topic": f"{topic}.control"},
               "control": {"secret_file": str(secret_file)}, "http": {"port": http_port},
               "label_sets": {shape: {"labels": [c for c in captions if f" {shape} " in c]}
                              for shape in ("circle", "square", "triangle")}}
    return parse_config({
        "model": {"path": model},
        "serve": {"replicas": 1, "num_cpus": 0.5, "max_batch_size": 8},
        "labels": {"labels": captions},
        "defaults": {"sample_fps": SAMPLE_FPS, "hop": HOP},
        "kafka": {"bootstrap": bootstrap, "events_topic": topic},
        "cameras": [{"id": c.id, "url": urls[c.id], "loop": c.transport == "file"} for c in cameras],
        **(control if http_port is not None else {}),
    }, "demo")


@contextlib.contextmanager
def broker(bootstrap: str | None, work: Path) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from .services.tansu import TansuBroker

    with TansuBroker(log_path=work / "tansu.log") as tansu:
        yield tansu.bootstrap


@contextlib.contextmanager
def quiet_output(log: Path) -> Iterator[TextIO]:
    """Yields the terminal (the original stdout); fds 1 and 2 go to ``log`` meanwhile, because Ray
    and its workers write notices there that would tear the live view."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    view = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield view
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        view.close()


def _stop_later(first_window: threading.Event, seconds: float, stop: threading.Event) -> None:
    """Stop ``seconds`` after the first scored window (start-up takes 15-40 s on a small machine),
    or after STARTUP_LIMIT_S if none ever comes."""
    if first_window.wait(STARTUP_LIMIT_S):
        stop.wait(seconds)
    stop.set()


def run_demo(seconds: float, cameras: int = 4, bootstrap: str | None = None, topic: str = EVENTS_TOPIC,
             model: str = "demo", summary_path: Path | None = None, plain: bool | None = None,
             log: Path | None = None, http_port: int | None = DEMO_HTTP_PORT) -> dict:
    from .actors.runner import run_pipeline
    from .services.rtsp_server import rtsp_available
    from .web.server import available_port

    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="xclip-demo-") as tmp:
        work = Path(tmp)
        log = log or Path(tempfile.gettempdir()) / "xclip-demo.log"
        log.write_text("")
        print(f"xclip-stream demo: preparing {cameras} synthetic cameras; logs in {log}", file=sys.stderr)
        planned = plan_cameras(cameras, work, rtsp_available())
        if http_port is not None:
            http_port = available_port("127.0.0.1", http_port)
            secret = os.environ.get(SECRET_ENV) or secrets.token_urlsafe(18)  # this run's only, on loopback
            secret_file = work / "control-secret"
            secret_file.touch(mode=0o600)
            secret_file.write_text(secret)
            print(f"xclip-stream demo: live page at http://127.0.0.1:{http_port} (health and metrics: /healthz, "
                  f"/readyz, /metrics); its label form's control secret: {secret}", file=sys.stderr)
        with broker(bootstrap, work) as servers, serve_cameras(planned) as urls, quiet_output(log) as terminal:
            config = pipeline_config(planned, urls, servers, topic, model, http_port,
                                     work / "control-secret" if http_port is not None else None)
            view = LiveView(servers, topic, [ViewCamera(c.id, c.transport, c.action.caption) for c in planned],
                            terminal, seconds=seconds, plain=plain, stop=stop)
            view.start()
            threading.Thread(target=_stop_later, args=(view.first_window, seconds, stop), daemon=True).start()
            try:
                with open(os.devnull, "w") as unused:  # events go to Kafka; the view reads them back
                    run_pipeline(config, unused, stop=stop)
            finally:
                stop.set()
                summary = view.finish()
    summary["log"] = str(log)
    if summary_path:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xclip_stream.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long to run once the first window is scored (default 60)")
    parser.add_argument("--cameras", type=int, default=4, choices=range(1, 9), help="synthetic cameras (default 4)")
    parser.add_argument("--kafka-bootstrap", help="use this Kafka cluster instead of starting Tansu")
    parser.add_argument("--events-topic", default=EVENTS_TOPIC)
    parser.add_argument("--model", default="demo", help="checkpoint folder (default: the bundled demo model)")
    parser.add_argument("--summary", type=Path, help="write the per-camera accuracy summary here (JSON)")
    parser.add_argument("--plain", action="store_true", help="one line per event instead of a redrawn table")
    parser.add_argument("--log", type=Path, help="Ray's and the services' output (default: TMPDIR/xclip-demo.log)")
    parser.add_argument("--http-port", type=int, default=DEMO_HTTP_PORT,
                        help=f"the pipeline's HTTP server on loopback (default {DEMO_HTTP_PORT}; 0: any free port)")
    args = parser.parse_args(argv)
    try:
        summary = run_demo(args.seconds, args.cameras, args.kafka_bootstrap, args.events_topic, args.model,
                           args.summary, plain=True if args.plain else None, log=args.log, http_port=args.http_port)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"xclip-stream demo: error: {e}", file=sys.stderr)
        return 2
    if not summary["windows"]:
        print(f"xclip-stream demo: no window was scored; see {summary['log']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
