"""Cluster bench: the gpu overlay's configuration run for real on a multi-node Ray cluster.

    .venv/bin/python bench/cluster.py [--only core,load_rise,streams_node_lost,model_roll,...] [--flow 20]
                                      [--ray-client] [--out FILE]

Each scenario renders ``k8s/overlays/gpu``, starts a local autoscaling Ray cluster whose node types
are the RayService's worker groups (bench/local_rayservice.py: head with 0 CPUs, ``streams`` nodes
offering 8 ``xclip_stream`` slots, ``replicas`` nodes offering ``xclip_replica`` and a GPU), deploys
its serveConfigV2 as KubeRay does, and runs the driver (``xclip-stream run``, ``serve.deploy:
false``) with the ConfigMap's pipeline.yaml rewritten for this machine (LOCAL_CHANGES) against the
bench rig of bench/faults.py: a Tansu broker, live cameras (RTSP when gst-rtsp-server is installed,
HTTP MJPEG, a looped file) and a frames topic two cameras publish to. Windows are counted from the
events topic as in bench/fault_accounting.py.

- core: cameras start; the autoscaler adds a stream node for the actors' slots (none at start);
  windows flow, scored by the replica on a replica node; nothing lost.
- load_rise: then cameras added through the signed control topic, beyond one stream node's 8 slots
  and one replica's target of ongoing requests: the autoscaler adds a stream node, Serve wants a
  second replica, which waits for the replica node the autoscaler adds for it; the cameras are
  removed again, Serve drops the replica and the idle nodes go.
- streams_node_lost: then the stream node holding the most actors loses its raylet (SIGTERM, as a
  pod's preStop ``ray stop``): its cameras and members come back on another node; measured.
- model_roll: then serveConfigV2 submitted again with ``args.model`` naming a second checkpoint (the
  demo model with another logit scale): Serve replaces the replica; events name the checkpoint that
  scored each window, and no window may be scored twice with different results.

Steps joined with "+" run one after another on one cluster (``model_roll+streams_node_lost``: the
test in make test). Prints a table, writes JSON (default bench/results/cluster.json), exits 1 when
a scenario lost a window, failed, had one checkpoint score a window two ways, or a camera stayed
silent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
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
    TOPIC_PARTITIONS,
    account,
    committed_seqs,
    wait_caught_up,
)
from faults import Publisher, Reader, Rig  # noqa: E402
from local_rayservice import (  # noqa: E402
    LOCAL_CHANGES,
    Driver,
    LocalRayService,
    load_shipped,
    local_pipeline,
    local_serve_config,
)

STARTUP_LIMIT_S = 240.0
PIPELINE_ACTORS = ("CameraActor", "KafkaFramesActor")


class Watch:
    """Samples the cluster while a scenario waits: node counts by type, the model's replicas by
    Serve's state (RUNNING, STARTING: wanted but not placed or not ready, STOPPING) and the ongoing
    requests Serve's autoscaler decides on, with the seconds since the scenario began at which each
    count was first seen. ``timeline`` holds a point whenever a count changes, ``load`` every sample."""

    def __init__(self, service: LocalRayService):
        self.service, self.began = service, time.monotonic()
        self.timeline: list[dict] = []
        self.load: list[tuple[float, float]] = []  # (seconds, ongoing requests)
        self.firsts: dict[str, float] = {}

    def sample(self) -> dict:
        nodes = Counter(self.service.nodes().values())
        try:
            serve = self.service.serve_state()
        except Exception as e:  # noqa: BLE001 - Serve not up yet, or its controller busy: a gap in the record
            serve = {"status": f"unknown ({type(e).__name__})", "replicas": {}, "ongoing": None}
        at = round(time.monotonic() - self.began, 1)
        replicas = serve["replicas"]
        point = {"t": at, **{k: nodes.get(k, 0) for k in ("head", "streams", "replicas")},
                 "serve_running": replicas.get("RUNNING", 0),
                 "serve_starting": replicas.get("STARTING", 0) + replicas.get("PENDING_MIGRATION", 0),
                 "serve_stopping": replicas.get("STOPPING", 0), "serve_status": serve["status"]}
        if serve["ongoing"] is not None:
            self.load.append((at, serve["ongoing"]))
        if not self.timeline or {k: v for k, v in point.items() if k != "t"} != {
                k: v for k, v in self.timeline[-1].items() if k != "t"}:
            self.timeline.append(point)
        for key in ("streams", "replicas", "serve_running", "serve_starting"):
            self.firsts.setdefault(f"{key}>={point[key]}", at)
        return point

    def wait(self, seconds: float, until=None, every: float = 1.0) -> bool:
        """Sample for ``seconds``, or until ``until()`` holds (True then)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sample()
            if until is not None and until():
                return True
            time.sleep(every)
        return False

    def at(self) -> float:
        return round(time.monotonic() - self.began, 1)


def placement(service: LocalRayService) -> dict[str, list[str]]:
    """Node type -> the pipeline's actors and Serve replicas on it ("Class name")."""
    out: dict[str, list[str]] = {}
    for a in service.actors():
        if a["class"] in PIPELINE_ACTORS or "XCLIPReplica" in a["class"]:
            out.setdefault(a["node"], []).append(f"{a['class']} {a['name']}".strip())
    return {k: sorted(v) for k, v in out.items()}


def _cameras(rig: Rig, urls: dict[str, str]) -> dict[str, dict]:
    files = {c.id for c in rig._planned if c.transport == "file"}
    return {cid: {"url": urls[cid], **({"loop": True} if cid in files else {})} for cid in urls}


def _send_control(bootstrap: str, topic: str, secret: bytes, messages: list[dict]) -> None:
    from kafka import KafkaProducer

    from xclip_stream.pipeline.control_auth import sign

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for message in messages:
            producer.send(topic, value=sign(message, secret)).get(timeout=10)
    finally:
        producer.close(timeout=5)


def _raylet_of(node_id: str) -> int:
    """The raylet of a fake node: the fake provider starts it with the node's id in its environment."""
    mark = f"RAY_OVERRIDE_NODE_ID_FOR_TESTING={node_id}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    first = f.read().split(b"\0")[0]
                if first.endswith(b"/raylet"):
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        if mark in f.read().split(b"\0"):
                            return int(entry)
            except OSError:
                continue
    raise LookupError(f"no raylet process for node {node_id}")


# -- scenario steps after the core's steady state ----------------------------------------------------
def _first(watch: Watch, after: float, holds) -> float | None:
    """Seconds from ``after`` to the first timeline point at or after it where ``holds(point)``."""
    for point in watch.timeline:
        if point["t"] >= after and holds(point):
            return round(point["t"] - after, 1)
    return None


def load_rise(ctx: dict, watch: Watch, extra: int = 8, hold_s: float = 40.0, scale_s: float = 150.0,
              idle_s: float = 150.0, both_s: float = 20.0, until: str = "running", options: dict | None = None) -> dict:
    """``extra`` cameras added through the control topic (more actors than one stream node's slots,
    more windows in flight than one replica's target; ``options``: their stream options, such as a
    shorter hop for more windows a second each): held ``hold_s``, or up to ``scale_s`` until
    a second stream node runs, Serve runs a second replica on a second replica node (``until``
    "running"; "node": until that replica's node is added) and every added camera has had a window
    scored, and ``both_s`` more; removed; then up to ``idle_s`` for the second replica and the idle
    nodes to go (``shrunk``: they went). Seconds from the add (or the removal) to each change."""
    if until not in ("running", "node"):
        raise ValueError(f"until must be running or node, not {until!r}")
    mjpeg = next(url for cid, url in ctx["urls"].items() if cid.startswith("mjpeg"))
    ids = [f"added-cam-{i + 1}" for i in range(extra)]
    before = watch.sample()
    began, seen = watch.at(), len(ctx["reader"].events)
    camera = {"url": mjpeg, **({"options": options} if options else {})}
    _send_control(ctx["bootstrap"], ctx["control_topic"], ctx["secret"],
                  [{"op": "add_camera", "camera": {"id": cid, **camera}} for cid in ids])

    def grown() -> bool:
        now = watch.timeline[-1]
        replica = now["serve_running"] > before["serve_running"] if until == "running" \
            else now["replicas"] > before["replicas"]
        scored = {e.get("camera_id") for e in ctx["reader"].events[seen:] if e.get("event_type") == "xclip.window.scores"}
        return now["streams"] > before["streams"] and replica and scored >= set(ids)  # every added camera scored

    watch.wait(scale_s, grown)
    watch.wait(max(both_s, hold_s - (watch.at() - began)))  # both replicas take windows a while
    running = placement(ctx["service"])
    _send_control(ctx["bootstrap"], ctx["control_topic"], ctx["secret"],
                  [{"op": "remove_camera", "id": cid} for cid in ids])
    removed_at = watch.at()

    def shrunk() -> bool:
        now = watch.timeline[-1]
        return all(now[k] <= before[k] for k in ("streams", "replicas", "serve_running", "serve_starting"))

    gone = watch.wait(idle_s, shrunk)
    return {"added": ids, "before": before, "placement_with_added": running, "shrunk": gone,
            "load_with_added_max": max((v for t, v in watch.load if began <= t <= removed_at), default=None),
            "stream_node_added_s": _first(watch, began, lambda p: p["streams"] > before["streams"]),
            "replica_wanted_s": _first(watch, began, lambda p: p["serve_running"] + p["serve_starting"]
                                       > before["serve_running"]),
            "replica_node_added_s": _first(watch, began, lambda p: p["replicas"] > before["replicas"]),
            "replica_running_s": _first(watch, began, lambda p: p["serve_running"] > before["serve_running"]),
            "removed_at": removed_at,
            # from the removal; negative: Serve found one replica enough while the cameras still ran
            "replica_removed_s": _after_peak(watch, began, removed_at, "serve_running", lambda p: p["serve_running"]
                                             + p["serve_starting"] + p["serve_stopping"] <= before["serve_running"]),
            "replica_node_removed_s": _after_peak(watch, began, removed_at, "replicas",
                                                  lambda p: p["replicas"] <= before["replicas"]),
            "stream_node_removed_s": _first(watch, removed_at, lambda p: p["streams"] <= before["streams"])}


def _after_peak(watch: Watch, began: float, origin: float, key: str, holds) -> float | None:
    """Seconds from ``origin`` to the first point where ``holds``, after ``key`` last grew past its
    value at ``began`` (so a scale-down before ``origin`` is reported, as a negative number)."""
    base = next((p[key] for p in reversed(watch.timeline) if p["t"] <= began), 0)
    peaks = [p["t"] for p in watch.timeline if p["t"] >= began and p[key] > base]
    if not peaks:
        return None
    down = _first(watch, peaks[0], holds)
    return None if down is None else round(down + peaks[0] - origin, 1)


def streams_node_lost(ctx: dict, watch: Watch, limit_s: float = 120.0) -> dict:
    """The stream node with the most pipeline actors loses its raylet; seconds until every pipeline
    actor runs again (on another node), and each lost camera's ``restarted`` report (the gap, from
    the loss found to its new actor's first frame)."""
    service = ctx["service"]
    actors = [a for a in service.actors() if a["class"] in PIPELINE_ACTORS]
    victim = Counter(a["node_id"] for a in actors).most_common(1)[0][0]
    lost = sorted(a["name"] for a in actors if a["node_id"] == victim)
    pid = _raylet_of(victim)
    began = watch.at()
    os.kill(pid, signal.SIGTERM)

    def back() -> bool:
        now = [a for a in service.actors() if a["class"] in PIPELINE_ACTORS]
        return len(now) >= len(actors) and all(a["node_id"] != victim for a in now)

    recovered = watch.wait(limit_s, back)
    recovered_s = round(watch.at() - began, 1) if recovered else None
    cameras = {name.split(":")[2] for name in lost if name.startswith("xclip:camera:")}

    def reports() -> dict[str, float]:
        return {e["camera_id"]: round(e["gap_end"] - e["gap_start"], 1) for e in ctx["reader"].events
                if e.get("event_type") == "xclip.stream.restarted" and e.get("camera_id") in cameras}

    watch.wait(30.0, lambda: set(reports()) >= cameras)  # sent with each new actor's first frame
    return {"node_lost": victim[:12], "actors_on_it": lost, "recovered_s": recovered_s,
            "restarted_gap_s": reports(), "placement_after": placement(service)}


def perturbed_checkpoint(dest: Path, logit_scale_step: float = 0.7) -> Path:
    """A second checkpoint: the demo model with its logit scale raised (every window's logits and
    scores change, the windows it takes do not), in ``dest``."""
    import shutil

    from safetensors.torch import load_file, save_file

    from xclip_stream.pipeline.scoring import DEMO_CHECKPOINT

    shutil.copytree(DEMO_CHECKPOINT, dest)
    state = load_file(str(dest / "model.safetensors"))
    state["logit_scale"] = state["logit_scale"] + logit_scale_step
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def scored_twice(events: list[dict]) -> dict:
    """Score events sharing an event_id (one window published twice). ``differing``: the same
    checkpoint gave different logits or top labels (a window scored twice with different results);
    ``across_checkpoints``: a window published by one checkpoint and again by another (re-read
    after a member died, with a roll in between: at-least-once across the roll, told apart by the
    events' ``checkpoint``). Each with its camera and what differs."""
    by_id: dict[str, list[dict]] = {}
    for e in events:
        if e.get("event_type") == "xclip.window.scores":
            by_id.setdefault(e["event_id"], []).append(e)
    twice = {i: evs for i, evs in by_id.items() if len(evs) > 1}
    differing, across = [], []
    for i, evs in sorted(twice.items()):
        detail = {"event_id": i, "camera": evs[0]["camera_id"], "checkpoints": [e.get("checkpoint") for e in evs],
                  "top_labels": [e["top_label"] for e in evs],
                  "max_logit_diff": round(max(abs(e["logits"][k] - evs[0]["logits"][k]) for e in evs
                                              for k in e["logits"]), 6)}
        for checkpoint in {e.get("checkpoint") for e in evs}:
            same = [e for e in evs if e.get("checkpoint") == checkpoint]
            if any(e["top_label"] != same[0]["top_label"] or abs(e["logits"][k] - same[0]["logits"][k]) > 1e-3
                   for e in same for k in e["logits"]):
                differing.append(detail)
                break
        else:
            if len({e.get("checkpoint") for e in evs}) > 1:
                across.append(detail)
    return {"event_ids_seen_twice": len(twice), "differing": differing[:10], "differing_count": len(differing),
            "across_checkpoints": across[:10], "across_checkpoints_count": len(across)}


def model_roll(ctx: dict, watch: Watch, limit_s: float = 180.0) -> dict:
    """A new checkpoint rolled through serveConfigV2 as KubeRay applies a changed one (the whole
    config submitted again, ``args.model`` changed; the pipeline config keeps its model). Seconds
    from the submission to the first window scored by the new checkpoint, to Serve's application
    RUNNING again, and to the last window the old one scored."""
    service, reader = ctx["service"], ctx["reader"]
    new = perturbed_checkpoint(ctx["work"] / "demo-xclip-v2")
    from xclip_stream.model.checkpoint import checkpoint_digest
    from xclip_stream.pipeline.scoring import DEMO_CHECKPOINT

    old_digest, new_digest = checkpoint_digest(DEMO_CHECKPOINT), checkpoint_digest(new)
    seen = len(reader.events)
    began = watch.at()
    service.deploy(local_serve_config(ctx["shipped"].serve, model={"path": str(new), "precision": "auto"},
                                      autoscaling=ctx["autoscaling"], serve_args=ctx["serve_args"]))
    submitted = time.monotonic()

    def by(digest: str) -> list[dict]:
        return [e for e in reader.events[seen:] if e.get("event_type") == "xclip.window.scores"
                and e.get("checkpoint") == digest]

    first_new = None

    def rolled() -> bool:
        nonlocal first_new
        if first_new is None and by(new_digest):
            first_new = round(time.monotonic() - submitted, 1)
        point = watch.timeline[-1]
        return first_new is not None and point["serve_status"] == "HEALTHY" and not point["serve_starting"] \
            and not point["serve_stopping"] and point["t"] > began

    done = watch.wait(limit_s, rolled)
    serve_done = _first(watch, began + 0.1, lambda p: p["serve_status"] == "HEALTHY" and not p["serve_starting"]
                        and not p["serve_stopping"]) if done else None
    watch.wait(5.0)
    after = [e for e in reader.events[seen:] if e.get("event_type") == "xclip.window.scores"]
    old_after = [e for e in after if e.get("checkpoint") == old_digest]
    return {"checkpoints": {"old": old_digest, "new": new_digest}, "first_new_window_s": first_new,
            "serve_healthy_again_s": serve_done,
            "old_windows_after_submit": len(old_after), "new_windows": len(by(new_digest)),
            "unnamed_windows_after_submit": sum(1 for e in after if not e.get("checkpoint")),
            "failed_after_submit": sum(1 for e in reader.events[seen:] if e.get("event_type") == "xclip.window.failed"),
            "models_after": sorted({e.get("model", "") for e in after}),
            "pipeline_actors_after": sorted(a["name"] for a in ctx["service"].actors()
                                            if a["class"] in PIPELINE_ACTORS)}


STEPS = {"core": None, "load_rise": load_rise, "streams_node_lost": streams_node_lost,
         "model_roll": model_roll}


def topic_holes(bootstrap: str, events: list[dict], cameras: list[str]) -> dict[str, list[dict]]:
    """Where a topic camera's windows leave frames out (what the accounting counts as lost): each
    hole's seqs and the longest pause between consecutive frames inside it, from the frames' own
    capture times in the partition (a pause of max_gap_seconds or more empties a window ring)."""
    from kafka import KafkaConsumer, TopicPartition

    step = round(PUBLISH_FPS / SAMPLE_FPS)
    out: dict[str, list[dict]] = {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        for i, camera in enumerate(cameras):
            spans = sorted({(e["first_seq"], e["last_seq"]) for e in events if e.get("camera_id") == camera
                            and e.get("event_type") == "xclip.window.scores"})
            holes, end = [], None
            for first, last in spans:
                if end is not None and first > end + step:
                    holes.append((end, first))
                end = last if end is None else max(end, last)
            if not holes:
                continue
            tp = TopicPartition(FRAMES_TOPIC, i * TOPIC_PARTITIONS // len(cameras))
            consumer.assign([tp])
            consumer.seek(tp, 0)
            times, quiet_since = {}, time.monotonic()
            while time.monotonic() - quiet_since < 2.0:
                records = consumer.poll(timeout_ms=500).get(tp, [])
                for r in records:
                    h = dict(r.headers)
                    times[int(h["seq"])] = int(h["capture_time_ms"]) / 1000.0
                quiet_since = time.monotonic() if records else quiet_since
            out[camera] = [_explain(a, b, times, step) for a, b in holes]
    finally:
        consumer.close()
    return out


def _explain(after: int, following: int, times: dict[int, float], step: int) -> dict:
    """One hole: ``sampled_out`` when every frame in it came less than one sampling interval after
    the window's last frame (RateSampler keeps one frame per interval on the frames' own clock: a
    burst after a stalled publisher is thinned, by design); ``gap`` when it spans a pause long
    enough for the kept frames to be max_gap_seconds apart (the ring is emptied, by design; the
    publisher's own gap record only sees pauses between consecutive frames); else unexplained."""
    interval, inside = 1.0 / SAMPLE_FPS, range(after + 1, following)
    known = all(k in times for k in (after, following, *inside))
    pause = max((times[k + 1] - times[k] for k in range(after, following) if k in times and k + 1 in times),
                default=0.0)
    sampled_out = known and all(times[k] - times[after] < interval * 1.01 for k in inside)
    gap = known and pause > MAX_GAP_S - interval
    return {"after_seq": after, "next_seq": following, "frames": following - after - step, "at": times.get(after),
            "longest_pause_s": round(pause, 2),
            "why": "sampled_out" if sampled_out else "gap" if gap else "unexplained"}


def unexplained_topic_frames(holes: dict[str, list[dict]]) -> int:
    return sum(h["frames"] for camera in holes.values() for h in camera if h["why"] == "unexplained")


# -- one scenario ----------------------------------------------------------------------------------
def run_scenario(name: str, flow_s: float = 20.0, drain_s: float = 60.0, idle_timeout_s: float | None = None,
                 work: Path | None = None, ray_client: bool = False, autoscaling: dict | None = None,
                 step_args: dict[str, dict] | None = None, serve_args: dict | None = None) -> dict:
    """The core scenario, then the steps of ``name`` ("a+b": a then b; "core": none), then the drain
    and the accounting.
    ``ray_client``: the driver joins through the head's Ray Client server (``ray://``, as the driver
    Deployment does) instead of the GCS address. ``autoscaling``: Serve's, instead of
    LOCAL_AUTOSCALING; ``step_args``: a step's keyword arguments (``{"load_rise": {"extra": 4}}``);
    ``serve_args``: changes to the application's ``args.serve`` (the replica's batching)."""
    started = time.monotonic()
    result: dict = {"scenario": name, "error": "", "local_changes": LOCAL_CHANGES}
    shipped = load_shipped()
    with contextlib.ExitStack() as stack:
        work = work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"xclip-cluster-{name}-")))
        rig = Rig(work)
        urls = stack.enter_context(rig.services())
        bootstrap = rig.broker.bootstrap
        service = stack.enter_context(LocalRayService(shipped, work, idle_timeout_s))
        watch = Watch(service)
        result["head_up_s"], result["watch_began_unix"] = watch.at(), round(time.time() - watch.at(), 1)
        result["nodes_at_start"] = watch.sample()
        service.deploy(local_serve_config(shipped.serve, autoscaling=autoscaling, serve_args=serve_args))
        from xclip_stream.pipeline.kafka_clients import create_topics

        create_topics(bootstrap, {FRAMES_TOPIC: TOPIC_PARTITIONS})
        secret = secrets.token_hex(32).encode()
        (work / "control-secret").write_bytes(secret)
        pipeline = local_pipeline(shipped.pipeline, bootstrap, _cameras(rig, urls), work / "control-secret",
                                  {"events_topic": EVENTS_TOPIC, "frames": FRAMES_TOPIC})
        if "load_rise" in name.split("+"):  # the added cameras are this machine's: loopback must be allowed
            pipeline["control"]["source_policy"]["hosts"] = ["127.0.0.1/32"]
        publishing = threading.Event()
        publisher, reader = Publisher(bootstrap, publishing), Reader(bootstrap)
        result["driver_address"] = service.client_address if ray_client else service.address
        driver = stack.enter_context(Driver(work, pipeline, result["driver_address"]))
        reader.thread.start()
        try:
            def scored() -> bool:
                return any(e.get("event_type") == "xclip.window.scores" for e in reader.events[-50:])

            if not watch.wait(STARTUP_LIMIT_S, lambda: scored() or driver.proc.poll() is not None):
                raise RuntimeError(f"no window scored within {STARTUP_LIMIT_S:g} s")
            if driver.proc.poll() is not None:
                raise RuntimeError(f"the driver exited with {driver.proc.returncode}")
            result["first_window_s"] = watch.at()
            publisher.thread.start()
            watch.wait(flow_s)
            # every pipeline actor placed (a loaded machine constructs the last ones after the first window)
            actors = len(pipeline["cameras"]) + sum(f.get("members", 1) for f in pipeline["kafka"]["frames"])
            watch.wait(STARTUP_LIMIT_S, lambda: sum(a["class"] in PIPELINE_ACTORS for a in service.actors()) >= actors)
            result["placement"] = placement(service)
            ctx = {"service": service, "bootstrap": bootstrap, "urls": urls, "secret": secret,
                   "control_topic": pipeline["kafka"]["control_topic"], "reader": reader, "work": work,
                   "shipped": shipped, "autoscaling": autoscaling, "serve_args": serve_args}
            for step in name.split("+"):
                if STEPS[step] is not None:
                    result[step] = STEPS[step](ctx, watch, **(step_args or {}).get(step, {}))
                    watch.wait(flow_s / 2)
            publishing.set()
            publisher.thread.join(timeout=30)
            result["caught_up_s"] = wait_caught_up(bootstrap, publisher.cameras, drain_s)
        except Exception as e:  # noqa: BLE001 - reported in the table and the JSON
            result["error"] = f"{type(e).__name__}: {e}"
        finally:
            publishing.set()
            result["driver_exit"] = driver.stop(drain_s)
            result["driver_log_tail"] = driver.log_tail(2000)
            reader.done.set()
            reader.thread.join(timeout=60)
            if publisher.thread.ident is not None:
                publisher.thread.join(timeout=30)
            committed, partitions = committed_seqs(bootstrap, publisher.cameras)
            result["topic_holes"] = topic_holes(bootstrap, reader.events, publisher.cameras)
        result["timeline"], result["firsts"], result["load"] = watch.timeline, watch.firsts, watch.load
    cameras = account(reader.events, publisher.published, publisher.gaps, committed, list(rig.cameras))
    result.update({"cameras": cameras, "partitions": partitions,
                   "windows": sum(r["windows"] for r in cameras.values()),
                   "duplicates": sum(r["duplicates"] for r in cameras.values()),
                   "lost": sum(r["lost"] for r in cameras.values()),
                   "lost_with_actor": sum(r.get("lost_with_actor", 0) for r in cameras.values()),
                   # the accounting's step-based "lost" for topic cameras, less the holes the sampler
                   # or a pause explain (topic_holes); live cameras' lost as counted
                   "lost_unexplained": sum(r["lost"] for c, r in cameras.items() if "published" not in r)
                   + unexplained_topic_frames(result.get("topic_holes", {})),
                   "silent": sorted(c for c, r in cameras.items() if not r["windows"]),
                   "scored_twice": scored_twice(reader.events),
                   "seconds": round(time.monotonic() - started, 1)})
    return result


def failed(r: dict) -> bool:
    return bool(r["error"] or r["lost_unexplained"] or r["silent"] or r.get("caught_up_s") is None or r.get("driver_exit") != 0
                or r["scored_twice"]["differing_count"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated scenarios (default: all of {', '.join(STEPS)})")
    parser.add_argument("--flow", type=float, default=20.0, help="seconds of flow before and after each step")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to commit the whole frames topic")
    parser.add_argument("--idle-timeout", type=float, default=20.0,
                        help="seconds an idle node lives (the RayService says 120; shorter here, to see one go)")
    parser.add_argument("--ray-client", action="store_true",
                        help="the driver joins through ray://127.0.0.1:PORT (the head's Ray Client server)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cluster.json")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(STEPS)
    unknown = {step for name in names for step in name.split("+")} - set(STEPS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; known: {', '.join(STEPS)}")
    results = []
    for name in names:
        print(f"cluster: {name} ...", file=sys.stderr, flush=True)
        results.append(run_scenario(name, args.flow, args.drain, args.idle_timeout, ray_client=args.ray_client))
    print(f"\n{'scenario':<20} {'windows':>8} {'dupes':>6} {'lost*':>5} {'1st window':>10} {'caught up':>9}  "
          "step / error   (*: unexplained; see topic_holes)")
    for r in results:
        caught = "never" if r.get("caught_up_s") is None else f"{r['caught_up_s']:g} s"
        step = {s: r[s] for s in r["scenario"].split("+") if s in r}
        print(f"{r['scenario']:<20} {r['windows']:>8} {r['duplicates']:>6} {r['lost_unexplained']:>5} "
              f"{r.get('first_window_s', '-'):>10} {caught:>9}  {r['error'] or step}")
    bad = [r["scenario"] for r in results if failed(r)]
    write_json(args.out, {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                          "scenarios": results, "failed": bad})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
