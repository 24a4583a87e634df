"""Does an open live page slow scoring? The same live pipeline (bench/pipeline.py's cameras and
model), measured with no page open and with ``--viewers`` pages open, alternately, ``--repeats``
times: windows scored per second, frame-to-event latency, dropped windows and the camera
processes' CPU (which encode the thumbnails). A viewer does what the browser does, in a process
of its own: it reads ``/api/stream`` and fetches each camera's frame whenever its thumbnail changes.

    .venv/bin/python bench/page.py [--streams 4] [--seconds 30] [--viewers 2] [--repeats 2]

Prints a table and writes bench/results/page.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
# The pipeline's modules (torch, Ray) are imported in main() only: a viewer process is a light
# HTTP client, like a browser, and must not spend seconds of CPU importing them.


def viewer(url: str) -> None:
    """One page (``--viewer URL``, until killed): the event stream, every new thumbnail fetched;
    prints its counts as a JSON line after each update."""
    shown: dict[str, int] = {}
    seen = {"updates": 0, "stream_bytes": 0, "frames": 0, "frame_bytes": 0}
    with urllib.request.urlopen(url + "/api/stream", timeout=30) as stream:
        for line in stream:
            if not line.startswith(b"data: "):
                continue
            seen["updates"] += 1
            seen["stream_bytes"] += len(line)
            for camera in json.loads(line[6:])["cameras"]:
                if camera["thumbnail"] is not None and shown.get(camera["id"]) != camera["thumbnail"]:
                    shown[camera["id"]] = camera["thumbnail"]
                    with urllib.request.urlopen(f"{url}/api/cameras/{camera['id']}/frame.jpg", timeout=10) as r:
                        seen["frames"] += 1
                        seen["frame_bytes"] += len(r.read())
            print(json.dumps(seen), flush=True)


def open_pages(url: str, count: int, stop: threading.Event, seen: dict) -> None:
    """``count`` viewer processes until ``stop``; their last counts added into ``seen``."""
    procs = [subprocess.Popen([sys.executable, __file__, "--viewer", url], stdout=subprocess.PIPE, text=True)
             for _ in range(count)]
    stop.wait()
    for proc in procs:
        proc.kill()
        lines = proc.communicate()[0].splitlines()
        for key, value in (json.loads(lines[-1]) if lines else {}).items():
            seen[key] += value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small", help="base32 | small | a checkpoint folder")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--viewers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "page.json"))
    parser.add_argument("--viewer", help=argparse.SUPPRESS)  # internal: be one page of URL
    args = parser.parse_args()
    if args.viewer:
        viewer(args.viewer)
        return 0
    from decode import machine, write_json, write_media
    from pipeline import FPS, H, W, live_run, write_model

    from xclip_stream.actors.runner import init_ray
    from xclip_stream.web.server import available_port

    tmp = Path(tempfile.mkdtemp(prefix="xclip-bench-page-"))
    media = write_media(tmp / "camera-640x480-15fps.mp4", 20, W, H, FPS)
    model = Path(args.model) if Path(args.model).is_dir() else write_model(tmp / args.model, args.model)
    init_ray()
    rows = []
    for repeat in range(args.repeats):
        for viewers in (0, args.viewers):  # alternated: the machine drifts
            port = available_port("127.0.0.1", 0)
            seen = {"updates": 0, "stream_bytes": 0, "frames": 0, "frame_bytes": 0}

            def during(stop, port=port, seen=seen, viewers=viewers):
                open_pages(f"http://127.0.0.1:{port}", viewers, stop, seen)

            result = live_run(media, model, args.streams, args.seconds, 4.0, 1, None, 1,
                              extra={"http": {"port": port}}, during=during)
            rows.append({"repeat": repeat, "viewers": viewers, **result, **seen})
            print(f"  repeat {repeat}, {viewers} viewers: {rows[-1]}", flush=True)

    def mean(viewers: int, key: str) -> float:
        return statistics.fmean(r[key] for r in rows if r["viewers"] == viewers)

    print(f"\nOpen pages against none ({args.streams} live {W}x{H} cameras, model {args.model}, "
          f"{args.seconds:g} s each, {args.repeats} alternated repeats):")
    print(f"{'viewers':>8}{'windows/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'dropped':>9}{'CPU %/cam':>10}"
          f"{'updates/s/page':>15}{'KB/s/page':>10}")
    summary = {}
    for viewers in (0, args.viewers):
        summary[viewers] = {k: round(mean(viewers, k), 2) for k in (
            "windows_per_s", "latency_p50_ms", "latency_p99_ms", "dropped_windows", "camera_cpu_pct_per_camera")}
        per_s = [(r["updates"], r["stream_bytes"] + r["frame_bytes"], r["measured_s"]) for r in rows if r["viewers"] == viewers]
        pages = max(1, viewers)  # per page: the counts are summed over the viewers
        updates = statistics.fmean(u / s / pages for u, _, s in per_s)
        kb = statistics.fmean(b / s / 1024 / pages for _, b, s in per_s)
        s = summary[viewers]
        print(f"{viewers:>8}{s['windows_per_s']:>11.2f}{s['latency_p50_ms']:>9.1f}{s['latency_p99_ms']:>9.1f}"
              f"{s['dropped_windows']:>9.1f}{s['camera_cpu_pct_per_camera']:>10.1f}{updates:>15.1f}{kb:>10.1f}")
    ratio = summary[args.viewers]["windows_per_s"] / summary[0]["windows_per_s"]
    print(f"\nwindows/s with {args.viewers} pages open / none: {ratio:.3f}")
    write_json(args.out, {"machine": machine(), "streams": args.streams, "model": args.model,
                          "viewers": args.viewers, "runs": rows, "summary": summary, "windows_per_s_ratio": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
