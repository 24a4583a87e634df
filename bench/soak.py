"""Soak: the live pipeline for minutes on end, every process's memory and open files sampled.

    .venv/bin/python bench/soak.py [--minutes 10] [--warmup 2] [--interval 5] [--out FILE]

Runs what ``make demo`` runs (the demo model; live cameras: one over RTSP when gst-rtsp-server is
installed, one HTTP MJPEG camera, the rest looped files paced in real time) plus a Kafka topic of
JPEG frames fed by a publisher at 8 fps, through the real pipeline (Ray actors, a Serve replica,
Tansu). Every ``--interval`` seconds it reads the resident memory (RSS) and open file descriptors
of every process of the run from /proc: this one, Ray's (GCS, raylet, workers, the replica), the
broker and the camera servers. Growth compares the median of the first minute after warm-up
(counted from the first event read back) with the median of the last minute, per process alive
through both and in all.

It reads the events topic back and counts, per source, windows scored against score events seen
(lost = scored without an event, must be 0) and events seen more than once (same event_id).
Prints a table, writes JSON (default bench/results/soak.json), and exits 1 when memory or file
descriptors of any long-lived process grew by more than ``--max-growth`` (5%) or an event was lost.
The broker's own memory is shown but not judged: its memory storage holds every record published.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from decode import machine, write_json  # noqa: E402

from xclip_stream import demo  # noqa: E402
from xclip_stream.schemas.config import parse_config  # noqa: E402

FRAMES_TOPIC, EVENTS_TOPIC = "xclip.soak.frames", "xclip.soak.events"
FRAMES_CAMERA, FRAMES_FPS = "topic-cam-1", 8
STARTUP_LIMIT_S = 180.0
# The test broker keeps every record in memory (Tansu's memory storage): its growth is the data the
# run published, not a leak of the pipeline's, so it is reported beside the verdict, not in it.
STORES = ("tansu",)


# -- /proc sampling ------------------------------------------------------------------------------
def _children(root: int) -> set[int]:
    """``root`` and every process descending from it (from /proc/*/stat parent ids)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def _title(pid: int) -> str:
    """What the process is: Ray workers retitle themselves ``ray::CameraActor.run`` and the like."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return "?"
    first = args[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split()[0]
    name = Path(first).name
    if name.startswith("python") and len(args) > 1:
        script = next((a.decode(errors="replace") for a in args[1:] if a and not a.startswith(b"-")), "")
        return f"{name} {Path(script).name}"[:60]
    return name[:60]


def sample(root: int) -> dict[int, dict]:
    """pid -> {title, rss_mb, fds} for the process tree under ``root``."""
    out = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in _children(root):
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * page / 2**20
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:  # gone meanwhile
            continue
        out[pid] = {"title": _title(pid), "rss_mb": rss, "fds": fds}
    return out


def growth(samples: list[tuple[float, dict[int, dict]]], start: float, minute: float = 60.0,
           stores: tuple[str, ...] = STORES) -> dict:
    """Median RSS/fds in the first minute after ``start`` against the last minute's, per process
    present in both, and for the sum over the pipeline's processes (``stores``, whose memory is the
    data they hold, are shown but not summed). Runs shorter than three minutes compare their first
    and last thirds instead, so the two spans never overlap."""
    minute = min(minute, (samples[-1][0] - start) / 3) if samples else minute
    early = [s for t, s in samples if start <= t < start + minute]
    late = [s for t, s in samples if t >= samples[-1][0] - minute]
    if not early or not late:
        raise ValueError("not enough samples after warm-up: run for longer")
    rows = []
    for pid in set(early[0]) & set(late[-1]):
        row = {"pid": pid, "title": late[-1][pid]["title"], "store": late[-1][pid]["title"] in stores}
        for key in ("rss_mb", "fds"):
            before = statistics.median(s[pid][key] for s in early if pid in s)
            after = statistics.median(s[pid][key] for s in late if pid in s)
            row[key] = (before, after, (after - before) / before if before else 0.0)
        rows.append(row)
    total = {}
    for key in ("rss_mb", "fds"):
        before = statistics.median(sum(p[key] for p in s.values() if p["title"] not in stores) for s in early)
        after = statistics.median(sum(p[key] for p in s.values() if p["title"] not in stores) for s in late)
        total[key] = (before, after, (after - before) / before if before else 0.0)
    return {"processes": sorted(rows, key=lambda r: -r["rss_mb"][1]), "total": total}


# -- load: a frames topic and the events read back ----------------------------------------------
def publish_frames(bootstrap: str, stop: threading.Event, counts: Counter) -> None:
    """A camera that publishes JPEG frames to the frames topic in real time, scenes of one action."""
    from kafka import KafkaProducer

    from xclip_stream.pipeline.kafka_io import encode_frame_message
    from xclip_stream.training.synthetic import render_stream

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    action = demo.demo_actions(5)[-1]
    frames = render_stream([action], demo.SCENE_SECONDS, FRAMES_FPS, demo.SIZE, seed=7)
    next_at = time.monotonic()
    for seq, (_, image) in enumerate(frames):
        if stop.is_set():
            break
        key, value, headers = encode_frame_message(FRAMES_CAMERA, time.time_ns() // 1_000_000, seq, image)
        producer.send(FRAMES_TOPIC, key=key, value=value, headers=headers)
        counts["frames_published"] += 1
        next_at += 1.0 / FRAMES_FPS
        stop.wait(max(0.0, next_at - time.monotonic()))
    producer.flush()
    producer.close()


def read_events(bootstrap: str, stop: threading.Event, seen: dict[str, Counter]) -> None:
    """Score events by camera and event id, until ``stop`` and a quiet second after it."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(EVENTS_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    quiet_since = None
    while True:
        batch = consumer.poll(timeout_ms=500)
        for records in batch.values():
            for record in records:
                event = json.loads(record.value)
                if event.get("event_type") == "xclip.window.scores":
                    seen[event["camera_id"]][event["event_id"]] += 1
        if stop.is_set():
            quiet_since = quiet_since or time.monotonic()
            if batch:
                quiet_since = time.monotonic()
            if time.monotonic() - quiet_since > 3.0:
                break
    consumer.close()


# -- the run ---------------------------------------------------------------------------------------
def soak(minutes: float, warmup: float, interval: float, cameras: int = 4) -> dict:
    from xclip_stream.actors.runner import run_pipeline
    from xclip_stream.services.rtsp_server import rtsp_available

    stop, done = threading.Event(), threading.Event()
    samples: list[tuple[float, dict]] = []
    seen: dict[str, Counter] = defaultdict(Counter)
    counts: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="xclip-soak-") as tmp:
        work = Path(tmp)
        planned = demo.plan_cameras(cameras - 1, work, rtsp_available())
        with demo.broker(None, work) as bootstrap, demo.serve_cameras(planned) as urls:
            data = demo.pipeline_config(planned, urls, bootstrap, EVENTS_TOPIC, "demo").model_dump(
                mode="json", exclude_none=True)
            data["kafka"]["frames"] = [{"topic": FRAMES_TOPIC}]
            config = parse_config(data, "soak")
            threads = [threading.Thread(target=publish_frames, args=(bootstrap, stop, counts), daemon=True),
                       threading.Thread(target=read_events, args=(bootstrap, done, seen), daemon=True)]
            for t in threads:
                t.start()
            result: dict = {}

            def run():
                with open(os.devnull, "w") as unused:
                    result.update(run_pipeline(config, unused, stop=stop))

            pipeline = threading.Thread(target=run, daemon=True)
            pipeline.start()
            begin = time.monotonic()  # the clock starts at the first event (start-up takes 15-40 s)
            while not seen and pipeline.is_alive() and time.monotonic() - begin < STARTUP_LIMIT_S:
                time.sleep(0.5)
            begin = time.monotonic()
            while time.monotonic() - begin < (warmup + minutes) * 60 and pipeline.is_alive():
                samples.append((time.monotonic() - begin, sample(os.getpid())))
                time.sleep(interval)
            stop.set()
            pipeline.join(timeout=180)
            done.set()
            for t in threads:
                t.join(timeout=30)
    return {"samples": samples, "finished": result, "seen": seen, "counts": counts,
            "growth": growth(samples, warmup * 60)}


def accounting(finished: dict, seen: dict[str, Counter]) -> list[dict]:
    """Per source: windows cut/scored/dropped, score events seen, lost, duplicates."""
    rows = []
    for key, health in sorted(finished.items()):
        if key.startswith("camera:"):
            ids = [seen.get(key.removeprefix("camera:"), Counter())]
        else:  # a frames topic: its cameras are the ids seen that no camera source has
            ids = [c for cam, c in seen.items() if f"camera:{cam}" not in finished]
        events = sum(len(c) for c in ids)
        scored = health.get("windows_scored", 0)
        rows.append({"source": key, "windows_cut": health.get("windows_emitted", health.get("windows", 0)),
                     "windows_scored": scored, "windows_dropped": health.get("windows_dropped", 0),
                     "score_events": events, "lost": max(0, scored - events),
                     "duplicates": sum(n - 1 for c in ids for n in c.values() if n > 1)})
    return rows


def report(g: dict, rows: list[dict], max_growth: float) -> tuple[float, int, bool]:
    """Print the tables; (worst growth of a pipeline process or of their sum, events lost, verdict)."""
    print(f"{'process':<40} {'RSS MB first -> last':>22} {'growth':>7} {'fds':>9} {'growth':>7}")
    for row in [*g["processes"], {"title": "pipeline processes (all but the broker)", **g["total"]}]:
        (r0, r1, rg), (f0, f1, fg) = row["rss_mb"], row["fds"]
        print(f"{row['title'][:40]:<40} {r0:>10.0f} -> {r1:>8.0f} {rg:>+7.1%} {f0:>4.0f}->{f1:<4.0f} {fg:>+7.1%}")
    print(f"\n{'source':<34} {'cut':>6} {'scored':>7} {'dropped':>8} {'events':>7} {'lost':>5} {'dupes':>6}")
    for r in rows:
        print(f"{r['source']:<34} {r['windows_cut']:>6} {r['windows_scored']:>7} {r['windows_dropped']:>8} "
              f"{r['score_events']:>7} {r['lost']:>5} {r['duplicates']:>6}")
    worst = max([max(p["rss_mb"][2], p["fds"][2]) for p in g["processes"] if not p["store"]]
                + [g["total"]["rss_mb"][2], g["total"]["fds"][2]])
    lost = sum(r["lost"] for r in rows)
    verdict = worst <= max_growth and lost == 0
    print(f"\nworst growth {worst:+.1%} (limit {max_growth:.0%}), lost {lost}: {'PASS' if verdict else 'FAIL'}")
    return worst, lost, verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measured minutes after warm-up (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes before the first measured one (default 2)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--cameras", type=int, default=4, help="live cameras besides the frames topic (default 4)")
    parser.add_argument("--max-growth", type=float, default=0.05, help="allowed growth (default 0.05 = 5%%)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    parser.add_argument("--again", type=Path, metavar="JSON",
                        help="judge a saved run again (its samples and counts) instead of running")
    args = parser.parse_args(argv)
    if args.again:
        saved = json.loads(args.again.read_text())
        samples = [(t, {int(p): v for p, v in s.items()}) for t, s in saved["timeline"]]
        start = float(saved["args"]["warmup"]) * 60
        return 0 if report(growth(samples, start), saved["sources"], args.max_growth)[2] else 1
    run = soak(args.minutes, args.warmup, args.interval, args.cameras + 1)
    g, rows = run["growth"], accounting(run["finished"], run["seen"])
    print(f"soak: {args.minutes:g} min measured after {args.warmup:g} min warm-up, {len(run['samples'])} samples, "
          f"{run['counts']['frames_published']} frames published to {FRAMES_TOPIC}")
    worst, lost, verdict = report(g, rows, args.max_growth)
    write_json(args.out, {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                          "growth": g, "sources": rows, "worst_growth": worst, "lost": lost,
                          "frames_published": run["counts"]["frames_published"],
                          "timeline": [(t, {str(p): v for p, v in s.items()}) for t, s in run["samples"]]})
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
