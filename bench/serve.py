"""What Ray Serve costs a window: camera-like callers send windows through real Serve handles into one
replica, side by side with that replica's whole call (``BatchScorer.score``) made in this process.

    .venv/bin/python bench/serve.py [--model demo] [--callers 8] [--inflight 2] [--batch 8]
                                    [--seconds 10] [--rounds 2] [--precision auto] [--threads 2]

Each caller is a Ray actor holding one window (uint8, the model's frames and size) and a label set,
as a camera actor does; it keeps ``--inflight`` calls of ``score`` outstanding on its own deployment
handle (the pipeline's cameras keep two) for ``--seconds``. The replica is the pipeline's own
deployment (``actors.replica.deploy``): batches of up to ``--batch`` windows, ``--threads`` torch
threads. The reference is the same checkpoint and precision in this process, scoring full
batches of ``--batch`` windows with ``BatchScorer.score`` (numpy windows in, floats out), which is
what the replica runs per batch. The two alternate for ``--rounds``, so drift on a noisy machine
hits both.

Per round: windows/s through Serve and directly, their ratio, the batch size Serve formed (windows
per replica batch) and the direct call's windows/s at that size, the callers' p50/p99 latency, and
the overhead per window: 1/serve - 1/(direct at Serve's batch size), the time a window spends in
the handle, the router, the object transfer and the batcher beyond the forward pass. The ratio's
other part is batching: the replica's batches are as large as the calls waiting when one starts.
Errors are counted (any is a failure: exit 1). Prints a table and writes bench/results/serve.json
(or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import ray
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xclip_stream.actors.replica import APP_NAME, deploy, get_handle  # noqa: E402
from xclip_stream.actors.runner import init_ray  # noqa: E402
from xclip_stream.pipeline.scoring import BatchScorer  # noqa: E402
from xclip_stream.schemas.config import ModelConfig, ServeConfig  # noqa: E402

LABELS = ("a person walking", "a person running", "a car passing", "an empty street")


@ray.remote(num_cpus=0)
class Caller:
    """A camera's side of the call: one window, ``inflight`` calls outstanding."""

    def __init__(self, window: np.ndarray, labels: tuple[str, ...]):
        self.window, self.labels = window, labels
        self.handle = get_handle()

    async def run(self, seconds: float, inflight: int) -> dict:
        latencies: list[float] = []
        errors: list[str] = []
        end = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < end:
                began = time.perf_counter()
                try:
                    await self.handle.score.remote(self.window, self.labels)
                except Exception as e:  # noqa: BLE001 - counted and reported, never dropped
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                    continue
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(loop() for _ in range(inflight)))
        return {"latencies": latencies, "errors": errors}


def through_serve(callers: list, seconds: float, inflight: int, replica) -> dict:
    batches_before = replica.info.remote().result()["batches"]
    began = time.perf_counter()
    results = ray.get([c.run.remote(seconds, inflight) for c in callers])
    elapsed = time.perf_counter() - began
    batches = replica.info.remote().result()["batches"] - batches_before
    latencies = sorted(t for r in results for t in r["latencies"])
    errors = [e for r in results for e in r["errors"]]
    return {"windows": len(latencies), "seconds": elapsed, "errors": errors,
            "mean_batch": len(latencies) / batches if batches else None,
            "p50_ms": 1e3 * latencies[len(latencies) // 2] if latencies else None,
            "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None}


def direct(scorer: BatchScorer, window: np.ndarray, batch: int, seconds: float) -> dict:
    windows, labels = [window] * batch, [LABELS] * batch
    scorer.score(windows, labels)  # label features cached, as on a warm replica
    calls, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds or calls < 2:
        scorer.score(windows, labels)
        calls += 1
    return {"windows": calls * batch, "seconds": time.perf_counter() - began}


def row(round_: int, args, serve_run: dict, direct_run: dict, at_formed: dict) -> dict:
    """``at_formed``: the direct call at the batch size Serve formed, which parts the cost of smaller
    batches from the transport's (``overhead_ms_per_window``)."""
    serve_rate = serve_run["windows"] / serve_run["seconds"]
    direct_rate = direct_run["windows"] / direct_run["seconds"]
    formed_rate = at_formed["windows"] / at_formed["seconds"]
    return {"round": round_, "callers": args.callers, "inflight": args.inflight, "batch": args.batch,
            "serve_windows_per_s": round(serve_rate, 2), "direct_windows_per_s": round(direct_rate, 2),
            "serve_over_direct": round(serve_rate / direct_rate, 3),
            "mean_serve_batch": round(serve_run["mean_batch"], 2) if serve_run["mean_batch"] else None,
            "direct_at_serve_batch_windows_per_s": round(formed_rate, 2),
            "p50_ms": round(serve_run["p50_ms"], 2) if serve_run["p50_ms"] is not None else None,
            "p99_ms": round(serve_run["p99_ms"], 2) if serve_run["p99_ms"] is not None else None,
            "overhead_ms_per_window": round(1e3 * (1 / serve_rate - 1 / formed_rate), 3) if serve_rate else None,
            "windows": serve_run["windows"], "errors": len(serve_run["errors"]),
            "first_errors": serve_run["errors"][:3]}


HEADER = (f"{'round':>5} {'callers':>7} {'B':>3} {'serve w/s':>10} {'direct w/s':>10} {'ratio':>6} "
          f"{'batch':>6} {'direct@batch':>12} {'p50 ms':>8} {'p99 ms':>8} {'overhead ms/w':>13} {'errors':>6}")


def format_row(r: dict) -> str:
    return (f"{r['round']:>5} {r['callers']:>7} {r['batch']:>3} {r['serve_windows_per_s']:>10.1f} "
            f"{r['direct_windows_per_s']:>10.1f} {r['serve_over_direct']:>5.2f}x {r['mean_serve_batch'] or 0:>6.2f} "
            f"{r['direct_at_serve_batch_windows_per_s']:>12.1f} "
            f"{r['p50_ms'] or 0:>8.1f} {r['p99_ms'] or 0:>8.1f} {r['overhead_ms_per_window'] or 0:>13.3f} "
            f"{r['errors']:>6}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="checkpoint folder, or demo")
    parser.add_argument("--callers", type=int, default=8, help="camera-like caller actors")
    parser.add_argument("--inflight", type=int, default=2, help="calls each caller keeps outstanding")
    parser.add_argument("--batch", type=int, default=8, help="the replica's max_batch_size, and the direct batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="per side per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, on both sides")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "serve.json"))
    args = parser.parse_args(argv)
    if min(args.callers, args.inflight, args.batch, args.rounds, args.threads) < 1 or args.seconds <= 0:
        parser.error("--callers, --inflight, --batch, --rounds and --threads must be >= 1, --seconds > 0")

    torch.set_num_threads(args.threads)
    model = ModelConfig(path=args.model, device="cpu" if not torch.cuda.is_available() else None,
                        precision=args.precision)
    scorer = BatchScorer.load(model.path, device=model.device, precision=model.precision)
    scorer.encoder.warm_up(args.batch)
    window = np.random.default_rng(0).integers(
        0, 256, (scorer.num_frames, 3, scorer.image_size, scorer.image_size), dtype=np.uint8)
    started = init_ray()
    rows = []
    try:
        replica = deploy(model, ServeConfig(
            replicas=1, num_cpus=1, num_gpus=1 if scorer.device.type == "cuda" else 0, max_batch_size=args.batch,
            torch_threads=args.threads, max_ongoing_requests=max(32, args.callers * args.inflight)))
        callers = [Caller.remote(window, LABELS) for _ in range(args.callers)]
        through_serve(callers, min(2.0, args.seconds), args.inflight, replica)  # warm: handles, routes, batches
        info = replica.info.remote().result()
        print(f"{args.model} on {info['device']} ({info['precision']}), {platform.machine()}, torch threads "
              f"{args.threads}; {args.callers} callers x {args.inflight} in flight; replica batches up to {args.batch}")
        print(HEADER, flush=True)
        for r in range(args.rounds):
            d = direct(scorer, window, args.batch, args.seconds)
            s = through_serve(callers, args.seconds, args.inflight, replica)
            formed = max(1, round(s["mean_batch"] or 1))
            rows.append(row(r, args, s, d, direct(scorer, window, formed, args.seconds / 2)))
            print(format_row(rows[-1]), flush=True)
    finally:
        from ray import serve

        serve.delete(APP_NAME)
        if started:
            serve.shutdown()
            ray.shutdown()
    summary = {k: statistics.median(r[k] for r in rows) for k in
               ("serve_windows_per_s", "direct_windows_per_s", "serve_over_direct", "overhead_ms_per_window")}
    print("median: " + ", ".join(f"{k} {v:g}" for k, v in summary.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "device": info["device"], "precision": info["precision"],
                               "torch": torch.__version__, "args": vars(args), "rows": rows, "median": summary},
                              indent=2) + "\n")
    print(f"wrote {out}")
    errors = sum(r["errors"] for r in rows)
    if errors:
        print(f"FAIL: {errors} calls failed, first: {rows[0]['first_errors'] or rows[-1]['first_errors']}",
              file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
