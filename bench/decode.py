"""Decode benchmark: our video source against bare PyAV on the same files, side by side, no Ray.

    .venv/bin/python bench/decode.py [--seconds 10] [--repeats 5] [--out bench/results/decode.json]

Camera-like media (textured background, moving shapes, sensor noise) in six encodings: 640x480 at
15 fps and 1280x720 at 30 fps, each as H.264 with x264's default B-frames, H.264 with none (most IP
cameras send none) and MJPEG (what cheap cameras send over HTTP). For each, best of ``--repeats``
runs, all rows interleaved:

- ``bare decode``: PyAV decodes every frame, no conversion (a floor nobody can use as is);
- ``bare decode+RGB``: every frame decoded and converted with ``frame.to_ndarray(format="rgb24")``:
  a user's loop, the baseline;
- ``bare decode+RGB, one context``: the same loop converting through one swscale context kept for
  the stream, as our source does: the tuned baseline, so that what our sampling saves is shown
  apart from what the kept context saves (column ``x tuned``);
- ``ours, every frame``: ``VideoSource.frames()`` delivering every frame as RGB (target: within
  10% of ``bare decode+RGB``);
- ``ours, fps/4``: sampled at a quarter of the frame rate, as a pipeline with ``sample_fps`` there
  does (target: at least 2x faster than ``bare decode+RGB``);
- ``ours, fps/4, no skip``: the same sampling with every frame decoded anyway (the source not told
  the interval): what skipping non-reference frames (H.264) or unkept frames (MJPEG) adds to
  converting only the kept frames.

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xclip_stream.pipeline.rgb import RGBConverter  # noqa: E402
from xclip_stream.pipeline.sources import VideoSource  # noqa: E402
from xclip_stream.pipeline.windows import RateSampler  # noqa: E402

ENCODINGS = ("B-frames", "no B-frames", "MJPEG")
MEDIA = [(640, 480, 15, encoding) for encoding in ENCODINGS] + [(1280, 720, 30, encoding) for encoding in ENCODINGS]


def write_media(path: Path, seconds: float, width: int = 640, height: int = 480, fps: int = 15,
                encoding: str = "B-frames", gop_seconds: float = 2.0) -> Path:
    """A camera-like clip: textured background, two moving shapes, sensor noise. H.264 with one
    keyframe every ``gop_seconds`` and x264's default B-frames or none, or MJPEG (about 0.15 bytes
    a pixel, as cameras send)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    background = ((np.sin(xx / 23.0) + np.cos(yy / 17.0)) * 40 + 110).astype(np.uint8)
    gop = max(1, round(gop_seconds * fps))
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0" + ("" if encoding == "B-frames" else ":bframes=0")
    bw, bh = width // 8, height // 6
    with av.open(str(path), "w") as out:
        if encoding == "MJPEG":
            stream = out.add_stream("mjpeg", rate=fps)
            stream.bit_rate = int(width * height * fps * 1.2)
            stream.pix_fmt = "yuvj420p"
        else:
            stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23",
                                                                   "x264-params": params})
            stream.pix_fmt = "yuv420p"
        stream.width, stream.height = width, height
        for i in range(round(seconds * fps)):
            frame = np.repeat(background[:, :, None], 3, axis=2)
            x = int((i * width / 70) % (width - bw))
            frame[height // 2 - bh // 2:height // 2 + bh // 2, x:x + bw] = (220, 60, 60)
            y = int(abs((i * height / 70) % (2 * (height - bh)) - (height - bh)))
            frame[y:y + bh, 5 * width // 8:5 * width // 8 + bw] = (60, 200, 90)
            frame = np.clip(frame + rng.integers(-6, 7, frame.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def bare(path: Path, convert: Callable[[av.VideoFrame], np.ndarray] | None) -> tuple[int, int]:
    """(frames decoded, frames delivered) by a plain PyAV loop over every frame."""
    n = 0
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            if convert is not None:
                convert(frame)
            n += 1
    return n, n


def to_ndarray(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def bare_one_context(path: Path) -> tuple[int, int]:
    return bare(path, RGBConverter())


def ours(path: Path, sample_fps: float | None, skip: bool = True) -> tuple[int, int]:
    """(frames decoded, frames delivered as RGB) by our source with our sampler."""
    sampler = RateSampler(sample_fps)
    source = VideoSource("bench", str(path))
    delivered = sum(1 for _ in source.frames(sampler.keep, sample_interval=sampler.interval if skip else 0.0))
    return source.stats.frames_decoded, delivered


def measure(paths: list[tuple[str, Path, int]], repeats: int) -> list[dict]:
    """Best-of-``repeats`` rows for every (media, path), all runs interleaved."""
    rows: dict[tuple[str, str], dict] = {}
    for _ in range(repeats):
        for media, path, fps in paths:
            runs: list[tuple[str, Callable[[], tuple[int, int]]]] = [
                ("bare decode", partial(bare, path, None)),
                ("bare decode+RGB", partial(bare, path, to_ndarray)),
                ("bare decode+RGB, one context", partial(bare_one_context, path)),
                ("ours, every frame", partial(ours, path, None)),
                ("ours, fps/4", partial(ours, path, fps / 4)),
                ("ours, fps/4, no skip", partial(ours, path, fps / 4, skip=False)),
            ]
            for name, run in runs:
                start = time.perf_counter()
                decoded, delivered = run()
                seconds = time.perf_counter() - start
                row = rows.setdefault((media, name), {"media": media, "path": name, "seconds": float("inf")})
                if seconds < row["seconds"]:
                    row.update(seconds=seconds, decoded=decoded, delivered=delivered)
    out = list(rows.values())
    for row in out:
        base = rows[(row["media"], "bare decode+RGB")]["seconds"]
        tuned = rows[(row["media"], "bare decode+RGB, one context")]["seconds"]
        row["speed_vs_decode_rgb"] = round(base / row["seconds"], 3)
        row["speed_vs_tuned"] = round(tuned / row["seconds"], 3)
    for row in out:
        row["seconds"] = round(row["seconds"], 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip (default 10)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "decode.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="xclip-bench-decode-") as tmp:
        paths = []
        for width, height, fps, encoding in MEDIA:
            media = f"{width}x{height} {fps} fps, {encoding}"
            suffix = ".avi" if encoding == "MJPEG" else ".mp4"
            path = write_media(Path(tmp) / f"{width}x{height}-{fps}-{ENCODINGS.index(encoding)}{suffix}",
                               args.seconds, width, height, fps, encoding)
            paths.append((media, path, fps))
        rows = measure(paths, args.repeats)

    print(f"\nDecode, {args.seconds:g} s clips, best of {args.repeats}, {os.cpu_count()} CPUs "
          f"(x = speed against bare decode+RGB of every frame; x tuned: against the same loop with one context):")
    print(f"{'media':<32}{'path':<31}{'seconds':>9}{'decoded':>9}{'delivered':>10}{'x':>7}{'x tuned':>9}")
    for r in rows:
        print(f"{r['media']:<32}{r['path']:<31}{r['seconds']:>9.3f}{r['decoded']:>9}{r['delivered']:>10}"
              f"{r['speed_vs_decode_rgb']:>7.2f}{r['speed_vs_tuned']:>9.2f}")
    write_json(args.out, {"machine": machine(), "seconds": args.seconds, "repeats": args.repeats, "rows": rows})
    return 0


def machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "pyav": av.__version__}


def write_json(out: str | Path, report: dict) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
