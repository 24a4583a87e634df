"""Fault suite: the live pipeline under the faults production brings, each one counted.

    .venv/bin/python bench/faults.py [--only NAME,...] [--before 20] [--after 30] [--drain 90] [--out FILE]

Each scenario builds a fresh rig: a Tansu broker, live cameras (one over RTSP when gst-rtsp-server
is installed, one HTTP MJPEG camera, one looped file), a Kafka frames topic that two cameras
publish to in real time (a partition each), and the real pipeline (Ray actors, a Serve replica of the demo model, events to Kafka).
The topic's cameras start publishing once the first event is out (the pipeline runs); the rig runs
``--before`` seconds, injects its fault, runs ``--after`` seconds once the fault is over, stops
publishing, gives the pipeline up to ``--drain`` seconds to commit the whole topic ("caught up"),
stops the pipeline, and reads the events topic back.

What is counted, per scenario, from the events a downstream consumer sees (bench/fault_accounting.py):
- windows: distinct windows with a score event (or a failure event); duplicates: score events
  seen more than once (same event_id, which is deterministic per window);
- cameras: lost = window indices missing inside one actor's run (a restarted actor numbers from 0
  again) that the camera did not report as dropped under backpressure; those of a run whose actor
  was lost (its successor reports ``restarted``) are counted apart, as lost_with_actor;
- the frames topic: lost = frames that no window covers, past the sampling step, up to the group's
  committed offset (what the pipeline declared done); frames after it are "unconsumed": the next
  member reads them again. A member restarted from the committed offset re-reads frames, so its
  windows may be cut at other boundaries: coverage, not indices, is what must hold. A ring emptied
  at a gap in the frames' capture times (the publisher held up by the broker) is "cut by a gap".
Windows in memory of a live camera's actor when it is killed are gone with it, as frames are while a
camera is unreachable; the camera reports a restart and a gap. Prints a table, writes JSON (default
bench/results/faults.json), exits 1 when any scenario lost anything, crashed, hung, had a camera
without a single window, or left the topic unfinished after the drain.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from decode import machine, write_json  # noqa: E402
from fault_accounting import (  # noqa: E402
    EVENTS_TOPIC,
    FRAMES_TOPIC,
    MAX_GAP_S,
    PUBLISH_FPS,
    SAMPLE_FPS,
    TOPIC_CAMERA,
    TOPIC_CAMERAS,
    TOPIC_PARTITIONS,
    account,
    committed_seqs,
    failed_because,
    wait_caught_up,
)
from soak import _children, _title  # noqa: E402

from xclip_stream import demo  # noqa: E402
from xclip_stream.schemas.config import parse_config  # noqa: E402

STARTUP_LIMIT_S = 180.0


# -- the rig ---------------------------------------------------------------------------------------
class Publisher:
    """Cameras publishing JPEG frames to the frames topic in real time, each to a partition of its
    own; it retries through outages so that every frame it numbered reaches the topic (a frame is
    numbered only once acknowledged)."""

    def __init__(self, bootstrap: str, stop: threading.Event, cameras: int = TOPIC_CAMERAS):
        self.bootstrap, self.stop = bootstrap, stop
        self.cameras = [f"{TOPIC_CAMERA}-{i + 1}" for i in range(cameras)]
        self.published = dict.fromkeys(self.cameras, 0)
        # seqs after which the camera's next frame came more than max_gap_seconds later (the broker
        # held it up): the pipeline empties a window ring at such a gap, by design
        self.gaps: dict[str, list[int]] = {c: [] for c in self.cameras}
        self._last_ms: dict[str, int] = {}
        self.thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def _run(self) -> None:
        from kafka import KafkaProducer

        from xclip_stream.pipeline.kafka_io import encode_frame_message
        from xclip_stream.training.synthetic import render_stream

        producer = None
        frames = render_stream([demo.demo_actions(5)[-1]], demo.SCENE_SECONDS, PUBLISH_FPS, demo.SIZE, seed=7)
        next_at = time.monotonic()
        for _, image in frames:
            if self.stop.is_set():
                break
            for i, camera in enumerate(self.cameras):
                partition = i * TOPIC_PARTITIONS // len(self.cameras)  # spread: a 2-member group splits them
                while not self.stop.is_set():
                    try:
                        producer = producer or KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
                        now_ms = time.time_ns() // 1_000_000
                        key, value, headers = encode_frame_message(camera, now_ms, self.published[camera], image)
                        producer.send(FRAMES_TOPIC, key=key, value=value, headers=headers,
                                      partition=partition).get(timeout=10)
                        if now_ms - self._last_ms.get(camera, now_ms) > MAX_GAP_S * 1000:
                            self.gaps[camera].append(self.published[camera] - 1)
                        self._last_ms[camera] = now_ms
                        self.published[camera] += 1
                        break
                    except Exception:  # noqa: BLE001 - the broker is down: a camera buffers and retries
                        with contextlib.suppress(Exception):
                            producer and producer.close(timeout=1)
                        producer = None
                        self.stop.wait(1.0)
            next_at = max(next_at + 1.0 / PUBLISH_FPS, time.monotonic() - 1.0)
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        if producer is not None:
            producer.close(timeout=5)


class Reader:
    """Every JSON event of the events topic, in order, from the beginning; survives broker outages."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.events: list[dict] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="reader", daemon=True)

    def _run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(EVENTS_TOPIC, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, group_id=None)
        quiet_since = None
        while True:
            try:
                batch = consumer.poll(timeout_ms=500)
            except Exception:  # noqa: BLE001 - broker outage: poll again
                batch = {}
                time.sleep(0.5)
            for records in batch.values():
                self.events.extend(json.loads(r.value) for r in records)
            if self.done.is_set():
                quiet_since = time.monotonic() if batch or quiet_since is None else quiet_since
                if time.monotonic() - quiet_since > 4.0:
                    break
        consumer.close()


@dataclass
class Rig:
    work: Path
    members: int = 1
    durable: bool = False
    broker: object = None
    cameras: dict = field(default_factory=dict)  # id -> server object (or the file path)
    stop: threading.Event = field(default_factory=threading.Event)
    result: dict = field(default_factory=dict)
    error: str = ""

    def config(self, urls: dict[str, str]):
        data = demo.pipeline_config(self._planned, urls, self.broker.bootstrap, EVENTS_TOPIC, "demo").model_dump(
            mode="json", exclude_none=True)
        data["kafka"]["frames"] = [{"topic": FRAMES_TOPIC, "members": self.members}]
        data["defaults"]["sample_fps"] = SAMPLE_FPS
        return parse_config(data, "faults")

    @contextlib.contextmanager
    def services(self, broker_first: bool = True):
        from xclip_stream.services.mjpeg import MjpegCamera
        from xclip_stream.services.rtsp_server import RtspCamera, rtsp_available
        from xclip_stream.services.tansu import TansuBroker

        self._planned = demo.plan_cameras(3 if rtsp_available() else 2, self.work, rtsp_available())[:3]
        with contextlib.ExitStack() as stack:
            storage = {}
            if self.durable:  # topics, records and committed offsets survive a broker restart
                from xclip_stream.services.s3 import S3Emulator

                s3 = stack.enter_context(S3Emulator())
                storage = {"storage": s3.storage, "env": s3.tansu_env()}
            self.broker = TansuBroker(log_path=self.work / "tansu.log", **storage)
            if broker_first:
                stack.enter_context(self.broker)
            else:
                stack.callback(self.broker.stop)
            urls = {}
            for c in self._planned:
                if c.transport == "rtsp":
                    server = stack.enter_context(RtspCamera(c.video))
                elif c.transport == "mjpeg":
                    server = stack.enter_context(MjpegCamera(c.video, fps=demo.FPS))
                else:
                    server = c.video
                self.cameras[c.id] = server
                urls[c.id] = getattr(server, "url", str(server))
            yield urls

    def run_pipeline(self, config) -> threading.Thread:
        from xclip_stream.actors.runner import run_pipeline

        def run():
            try:
                with open(os.devnull, "w") as unused:
                    self.result.update(run_pipeline(config, unused, stop=self.stop))
            except BaseException as e:  # noqa: BLE001 - reported in the table
                self.error = f"{type(e).__name__}: {e}"
                traceback.print_exc()

        thread = threading.Thread(target=run, name="pipeline", daemon=True)
        thread.start()
        return thread


# -- faults ----------------------------------------------------------------------------------------
def _pids(pattern: str) -> list[int]:
    return [pid for pid in _children(os.getpid()) if re.search(pattern, _title(pid))]


def _ray_actor(pattern: str):
    import ray

    for entry in ray.util.list_named_actors(all_namespaces=True):
        if re.search(pattern, entry["name"]):
            return ray.get_actor(entry["name"], namespace=entry["namespace"])
    raise LookupError(f"no running actor named like {pattern!r}")


def broker_paused(rig: Rig, seconds: float = 10.0) -> str:
    os.kill(rig.broker.pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(rig.broker.pid, signal.SIGCONT)
    return f"broker SIGSTOPped for {seconds:g} s"


def broker_restarted(rig: Rig, down: float = 5.0) -> str:
    """A crash and restart of a durable broker (Tansu ignores SIGTERM while clients are connected)."""
    rig.broker.kill()
    time.sleep(down)
    rig.broker.start()
    return f"durable broker SIGKILLed, restarted {down:g} s later"


def rtsp_gone(rig: Rig, seconds: float = 30.0) -> str:
    server = next((s for cid, s in rig.cameras.items() if cid.startswith("rtsp")), None)
    if server is None:
        raise LookupError("no RTSP camera (gst-rtsp-server is not installed)")
    server.stop()
    time.sleep(seconds)
    server.start()
    return f"RTSP server down for {seconds:g} s"


def replica_killed(rig: Rig) -> str:
    import ray

    ray.kill(_ray_actor(r"XCLIPReplica"), no_restart=True)
    return "the Serve replica killed (Serve starts another)"


def _camera_actor(camera_prefix: str):
    """The actor holding a camera: its own (``xclip:camera:{id}:{n}``) or one it shares (``xclip:cameras:{n}``)."""
    import ray

    for entry in ray.util.list_named_actors(all_namespaces=True):
        actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
        if entry["name"].startswith(f"xclip:camera:{camera_prefix}") or (
                entry["name"].startswith("xclip:cameras:")
                and any(c.startswith(camera_prefix) for c in ray.get(actor.cameras.remote(), timeout=10))):
            return actor, entry["name"]
    raise LookupError(f"no running actor holds a camera named like {camera_prefix!r}")


def camera_killed(rig: Rig) -> str:
    import ray

    actor, name = _camera_actor("mjpeg")
    cameras = ray.get(actor.cameras.remote(), timeout=10)
    ray.kill(actor, no_restart=True)
    return f"the MJPEG camera's actor killed, with the cameras it held ({', '.join(sorted(cameras))}; " \
           "the supervisor restarts them)"


def member_killed(rig: Rig) -> str:
    import ray

    ray.kill(_ray_actor(r"^xclip:frames:"), no_restart=True)
    return "the Kafka frames member killed mid-batch (it restarts from the committed offsets)"


def member_leaves_rejoins(rig: Rig) -> str:
    member_killed(rig)
    return ("one of the group's two members killed mid-batch: the other takes its partitions over, and it "
            "rejoins from the committed offsets")


def slow_model(rig: Rig, seconds: float = 60.0, duty: float = 0.9) -> str:
    """The replica stopped for 90% of every second: scoring about 10x slower, for a minute."""
    pids = _pids(r"^ray::ServeReplica")
    if not pids:
        raise LookupError("no Serve replica process")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(duty)
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        time.sleep(1.0 - duty)
    return f"replica {duty:.0%} stopped for {seconds:g} s"


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Callable[[Rig], str] | None
    members: int = 1
    broker_down_at_start: float = 0.0  # seconds the broker starts after the pipeline
    durable: bool = False  # the broker stores in S3 (a local emulator), so a restart keeps the data


SCENARIOS = [
    Scenario("baseline", None),
    Scenario("broker_paused_10s", broker_paused),
    Scenario("broker_restarted", broker_restarted, durable=True),
    Scenario("broker_down_at_start", None, broker_down_at_start=10.0),
    Scenario("rtsp_gone_30s", rtsp_gone),
    Scenario("replica_killed", replica_killed),
    Scenario("camera_actor_killed", camera_killed),
    Scenario("kafka_member_killed", member_killed),
    Scenario("group_member_leaves_rejoins", member_leaves_rejoins, members=2),
    Scenario("slow_model_60s", slow_model),
]


# -- running ---------------------------------------------------------------------------------------
def run_scenario(scenario: Scenario, before: float, after: float, drain: float = 90.0) -> dict:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"xclip-fault-{scenario.name}-") as tmp:
        rig = Rig(Path(tmp), members=scenario.members, durable=scenario.durable)
        with rig.services(broker_first=not scenario.broker_down_at_start) as urls:
            publisher = reader = None
            note, caught_up_s = "", None
            publishing = threading.Event()  # set: the topic's cameras stop publishing
            pipeline = rig.run_pipeline(rig.config(urls))
            try:
                if scenario.broker_down_at_start:
                    time.sleep(scenario.broker_down_at_start)
                    rig.broker.start()
                    note = f"broker started {scenario.broker_down_at_start:g} s after the pipeline"
                from xclip_stream.pipeline.kafka_clients import create_topics

                create_topics(rig.broker.bootstrap, {FRAMES_TOPIC: TOPIC_PARTITIONS})
                publisher, reader = Publisher(rig.broker.bootstrap, publishing), Reader(rig.broker.bootstrap)
                reader.thread.start()
                deadline = time.monotonic() + STARTUP_LIMIT_S
                while not reader.events and pipeline.is_alive() and time.monotonic() < deadline:
                    time.sleep(0.5)
                if not reader.events:
                    raise RuntimeError(f"no event within {STARTUP_LIMIT_S:g} s ({rig.error or 'no error'})")
                # The topic's cameras start once the pipeline runs: the fault meets a steady state,
                # not a backlog built while Ray and Serve started.
                publisher.thread.start()
                time.sleep(before)
                if scenario.inject is not None:
                    note = scenario.inject(rig)
                time.sleep(after)
                publishing.set()
                publisher.thread.join(timeout=30)
                caught_up_s = wait_caught_up(rig.broker.bootstrap, publisher.cameras, drain)
            except Exception as e:  # noqa: BLE001 - the scenario fails, the suite goes on
                rig.error = rig.error or f"{type(e).__name__}: {e}"
            finally:
                publishing.set()
                rig.stop.set()
                pipeline.join(timeout=180)
                if reader is not None:
                    reader.done.set()
                    reader.thread.join(timeout=60)
                if publisher is not None:
                    publisher.thread.join(timeout=30)
                committed, partitions = committed_seqs(rig.broker.bootstrap, publisher.cameras) if publisher else ({}, {})
    cameras = account(reader.events if reader else [], publisher.published if publisher else {},
                      publisher.gaps if publisher else {}, committed, list(rig.cameras))
    lost = sum(r["lost"] for r in cameras.values())
    return {"scenario": scenario.name, "fault": note, "cameras": cameras, "error": rig.error,
            "publishing_gaps": publisher.gaps if publisher else {}, "partitions": partitions,
            "caught_up_s": caught_up_s, "pipeline_hung": pipeline.is_alive(),
            "windows": sum(r["windows"] for r in cameras.values()),
            "score_events": sum(r["score_events"] for r in cameras.values()),
            "duplicates": sum(r["duplicates"] for r in cameras.values()), "lost": lost,
            "unconsumed": sum(r.get("unconsumed", 0) for r in cameras.values()),
            "lost_with_actor": sum(r.get("lost_with_actor", 0) for r in cameras.values()),
            "silent": sorted(c for c, r in cameras.items() if not r["windows"]),
            "finished": {k: {kk: vv for kk, vv in v.items() if kk != "latency_ms"} for k, v in rig.result.items()},
            "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated scenario names (default: all)")
    parser.add_argument("--before", type=float, default=20.0, help="seconds of flow before the fault (default 20)")
    parser.add_argument("--after", type=float, default=30.0, help="seconds of flow after it (default 30)")
    parser.add_argument("--drain", type=float, default=90.0,
                        help="after publishing stops, seconds the pipeline gets to commit the whole topic (default 90)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "faults.json")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else [s.name for s in SCENARIOS]
    unknown = set(names) - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; known: {', '.join(s.name for s in SCENARIOS)}")
    results = []
    for scenario in (s for s in SCENARIOS if s.name in names):
        print(f"faults: {scenario.name} ...", file=sys.stderr, flush=True)
        results.append(run_scenario(scenario, args.before, args.after, args.drain))
    print(f"\n{'scenario':<28} {'windows':>8} {'events':>7} {'dupes':>6} {'lost':>5} {'unconsumed':>10} "
          f"{'caught up':>9}  fault / error")
    for r in results:
        caught = "never" if r["caught_up_s"] is None else f"{r['caught_up_s']:g} s"
        silent = f"; no window from {', '.join(r['silent'])}" if r["silent"] else ""
        print(f"{r['scenario']:<28} {r['windows']:>8} {r['score_events']:>7} {r['duplicates']:>6} {r['lost']:>5} "
              f"{r['unconsumed']:>10} {caught:>9}  {r['error'] or r['fault']}{silent}")
    failed = [r["scenario"] for r in results if failed_because(r)]
    write_json(args.out, {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                          "scenarios": results, "failed": failed})
    print(f"\n{len(results) - len(failed)} of {len(results)} scenarios survived with nothing lost"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
