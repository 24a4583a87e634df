"""Do activity incidents flap? The demo cameras' incidents against the truth, under candidate
activity thresholds, side by side on the same windows.

Runs the demo (its cameras, model and pipeline, a Tansu broker of its own) for ``--seconds``, reads
every scored window back from the events topic, and replays each camera's window scores through
``ActivityTracker`` under each candidate (replaying is deterministic, so every candidate sees the
very same windows). Each demo camera shows one action all the time, so the ideal is one incident
per camera, of its true caption, opened at its first windows and never closed; every other
incident is a false one (a misclassified window or two opening and closing an incident).

    .venv/bin/python bench/incidents.py [--seconds 120] [--cameras 4] [--events FILE]

``--events FILE`` replays a saved run (the JSON lines this writes) instead of running one.
Prints a table and writes bench/results/incidents.json and incidents-events.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from decode import machine, write_json  # noqa: E402

from xclip_stream.pipeline.activity import ActivityTracker  # noqa: E402
from xclip_stream.schemas.activity import LabelThresholds  # noqa: E402
from xclip_stream.schemas.config import Thresholds  # noqa: E402

# (on, off, min_on_windows, min_off_windows)
CANDIDATES = [(0.6, 0.4, 1, 2), (0.6, 0.4, 2, 2), (0.6, 0.4, 3, 2), (0.6, 0.4, 3, 3), (0.7, 0.4, 2, 2),
              (0.6, 0.4, 2, 3), (0.5, 0.3, 2, 2), (0.5, 0.3, 2, 3), (0.5, 0.3, 3, 2), (0.5, 0.3, 3, 3),
              (0.4, 0.25, 3, 3), (0.5, 0.3, 4, 3)]


def record(seconds: float, cameras: int, out: Path, model: str = "demo") -> tuple[list[dict], dict[str, str]]:
    """Run the demo; every event of its topic, and camera -> its true caption."""
    from kafka import KafkaConsumer

    from xclip_stream.demo import run_demo
    from xclip_stream.services.tansu import TansuBroker

    work = Path(tempfile.mkdtemp(prefix="xclip-bench-incidents-"))
    with TansuBroker(log_path=work / "tansu.log") as tansu:
        summary = run_demo(seconds, cameras, tansu.bootstrap, "xclip.bench.events", model=model,
                           summary_path=work / "summary.json", plain=True, log=work / "demo.log", http_port=None)
        consumer = KafkaConsumer("xclip.bench.events", bootstrap_servers=tansu.bootstrap, group_id=None,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        events, quiet_since = [], time.monotonic()
        while time.monotonic() - quiet_since < 5:
            for records in consumer.poll(timeout_ms=500).values():
                events += [json.loads(r.value) for r in records]
                quiet_since = time.monotonic()
        consumer.close()
    truth = {camera: c["truth"] for camera, c in summary["cameras"].items()}
    out.write_text(json.dumps({"truth": truth}) + "\n" + "".join(json.dumps(e) + "\n" for e in events))
    return events, truth


def replay(events: list[dict], truth: dict[str, str], on: float, off: float, min_on: int, min_off: int) -> dict:
    """Incidents of every camera's windows under one setting, scored against the truth."""
    thresholds = LabelThresholds(on, off, min_on, min_off)
    totals = {"cameras": len(truth), "windows": 0, "true_incidents": 0, "false_incidents": 0,
              "false_windows": 0, "covered_windows": 0, "first_true_window": []}
    for camera, label in truth.items():
        windows = sorted((e for e in events if e.get("event_type") == "xclip.window.scores"
                          and e["camera_id"] == camera), key=lambda e: e["window_index"])
        tracker, open_labels, first_true = ActivityTracker(camera, {}, thresholds), set(), None
        for i, w in enumerate(windows):
            for event in tracker.update(w["scores"], w["start_time"], w["end_time"]):
                if event.type == "start":
                    open_labels.add(event.label)
                    if event.label == label:
                        totals["true_incidents"] += 1
                        first_true = i if first_true is None else first_true
                    else:
                        totals["false_incidents"] += 1
                elif event.type == "end":
                    open_labels.discard(event.label)
            totals["covered_windows"] += label in open_labels
            totals["false_windows"] += bool(open_labels - {label})
        totals["windows"] += len(windows)
        totals["first_true_window"].append(first_true)
    minutes = totals["windows"] / 60  # the demo cuts one window a second per camera
    totals["false_per_camera_hour"] = round(60 * totals["false_incidents"] / minutes, 1) if minutes else None
    totals["true_coverage"] = round(totals["covered_windows"] / totals["windows"], 3) if totals["windows"] else None
    return {"on": on, "off": off, "min_on_windows": min_on, "min_off_windows": min_off, **totals}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--events", type=Path, help="replay this saved run instead of running the demo")
    parser.add_argument("--model", default="demo", help="checkpoint the demo runs (default: the bundled demo model)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "incidents.json"))
    args = parser.parse_args()
    saved = Path(args.out).with_name("incidents-events.jsonl")
    if args.events:
        lines = [json.loads(line) for line in args.events.read_text().splitlines() if line.strip()]
        truth, events = lines[0]["truth"], lines[1:]
    else:
        saved.parent.mkdir(parents=True, exist_ok=True)
        events, truth = record(args.seconds, args.cameras, saved, args.model)
    rows = [replay(events, truth, *candidate) for candidate in CANDIDATES]
    default = Thresholds()
    print(f"\nIncidents of {len(truth)} demo cameras ({rows[0]['windows']} windows; ideal: {len(truth)} true, 0 false; "
          f"defaults now on={default.on} off={default.off} min_on={default.min_on_windows} "
          f"min_off={default.min_off_windows}):")
    print(f"{'on':>5}{'off':>5}{'min_on':>7}{'min_off':>8}{'true':>6}{'false':>7}{'false/cam-h':>12}"
          f"{'true coverage':>14}{'false-open windows':>19}  first true window per camera")
    for r in rows:
        print(f"{r['on']:>5}{r['off']:>5}{r['min_on_windows']:>7}{r['min_off_windows']:>8}{r['true_incidents']:>6}"
              f"{r['false_incidents']:>7}{r['false_per_camera_hour']:>12}{r['true_coverage']:>14.3f}"
              f"{r['false_windows']:>19}  {r['first_true_window']}")
    write_json(args.out, {"machine": machine(), "model": None if args.events else args.model, "truth": truth,
                          "rows": rows, "events": str(args.events or saved)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
