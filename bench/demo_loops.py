"""Which windows of the demo's cameras does a checkpoint name right? Offline, in seconds, before a
model is published (issue 19: a model better on the synthetic report named one demo scene wrongly).

Each demo camera loops ten 3-s scenes of one action (``xclip_stream.demo``). This renders each
camera's loop as the demo writes it (an H.264 file; the MJPEG camera's JPEG changed no window),
windows it as the demo's pipeline does (sampled to ``SAMPLE_FPS``, the model's frame count, hop
``HOP``; from the loop's first frame, where a live run starts anywhere) and scores every window
among all 120 captions. A window that spans a scene cut sees the object jump to another place and
size, so a still object can look moving there: those windows are counted apart.

    .venv/bin/python bench/demo_loops.py [--models demo,PATH,...] [--cameras 4]

Prints a table and writes bench/results/demo-loops.json.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from decode import machine, write_json  # noqa: E402


@functools.cache  # one render per camera and frame count, however many models
def camera_windows(camera: int, count: int, num_frames: int, work: Path) -> tuple[str, list, list[bool]]:
    """(caption, windows of (T, H, W, 3) uint8, whether each spans a scene cut) of demo camera
    ``camera`` (0-based, of ``count``) over one loop, cut by the pipeline's own sampler and window
    ring, the loop wrapping as the camera's does."""
    import av
    import numpy as np

    from xclip_stream.demo import FPS, HOP, SAMPLE_FPS, SCENE_SECONDS, demo_actions, write_camera_video
    from xclip_stream.pipeline.windows import RateSampler, WindowBuffer

    action = demo_actions(count)[camera]
    path = write_camera_video(work / f"camera-{camera}.mp4", action, seed=camera)
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])
    sampler, ring = RateSampler(SAMPLE_FPS), WindowBuffer(f"camera-{camera}", num_frames, HOP)
    loop, per_scene = len(frames), round(SCENE_SECONDS * FPS)
    wanted = round(loop * SAMPLE_FPS / FPS / HOP)  # a window begun at every hop of the loop
    windows, crosses = [], []
    for seq in range(2 * loop):
        if sampler.keep(seq / FPS) and (window := ring.push(seq, seq / FPS, frames[seq % loop])):
            windows.append(window.frames)
            first, last = window.frame_seqs[0] % loop, window.frame_seqs[-1] % loop
            crosses.append(first // per_scene != last // per_scene)
            if len(windows) == wanted:
                break
    return action.caption, windows, crosses


def score(model_name: str, count: int, work: Path) -> list[dict]:
    import torch

    from xclip_stream.model import XCLIPModel
    from xclip_stream.model.processor import XCLIPProcessor
    from xclip_stream.pipeline.scoring import resolve_model_path
    from xclip_stream.training.synthetic import all_actions
    from xclip_stream.training.train import predict

    folder = resolve_model_path(model_name)
    model, processor = XCLIPModel.from_pretrained(folder).eval(), XCLIPProcessor.from_pretrained(folder)
    captions = [a.caption for a in all_actions()]
    rows = []
    for camera in range(count):
        truth, windows, crosses = camera_windows(camera, count, model.config.vision_config.num_frames, work)
        with torch.inference_mode():
            named = [captions[i] for i in predict(model, processor, captions, windows)]
        wrong = {i: name for i, name in enumerate(named) if name != truth}
        rows.append({"model": model_name, "camera": camera, "truth": truth, "windows": len(windows),
                     "right": len(windows) - len(wrong),
                     "within_scene": sum(not c for c in crosses),
                     "within_scene_right": sum(not c and i not in wrong for i, c in enumerate(crosses)),
                     "wrong": {str(i): {"named": n, "spans_cut": crosses[i]} for i, n in wrong.items()}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="demo", help="comma-separated checkpoints ('demo' or folders)")
    parser.add_argument("--cameras", type=int, default=4, help="the demo's cameras (default 4)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "demo-loops.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xclip-demo-loops-") as work:
        rows = [row for name in args.models.split(",") for row in score(name, args.cameras, Path(work))]
    print(f"{'model':<32} {'camera':>6}  {'truth':<30} {'right':>7} {'within a scene':>15}")
    for r in rows:
        print(f"{r['model'][-32:]:<32} {r['camera']:>6}  {r['truth']:<30} {r['right']:>3}/{r['windows']:<3} "
              f"{r['within_scene_right']:>7}/{r['within_scene']:<3}")
    write_json(args.out, {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
