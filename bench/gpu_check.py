"""GPU correctness of the replica's fast path, run by bench/gpu.sh before any timing.

    python bench/gpu_check.py [--model demo]

1. CUDA graphs replay what the eager encoder computes: two bf16 ``BatchScorer``s, with and without
   graphs, score the same windows in batches of uneven sizes (padded into the graphs' buckets, each
   bucket replayed with new frames) and mixed label sets; their logits must agree to 1e-3 of a logit.
2. reduced precision against float32 on trained weights (the demo checkpoint), which random weights
   cannot show (their logits sit near zero): the relative error of the logits, fp16 bound 1e-2, bf16
   (3 fewer mantissa bits) bounded at 3e-2 (measured 0.9-1.2e-2 on an H200).
3. the replica's default (compiled, CUDA graphs, warmed up to batch 8 as a replica starts) against
   the eager bf16 encoder: the same logits up to bf16 rounding (2e-2 relative: two roundings), and
   no compile after the warm-up (each call under a second).
Needs only torch, numpy, tokenizers and safetensors. Exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xclip_stream.pipeline.scoring import BatchScorer  # noqa: E402

LABEL_SETS = [
    ("a red circle moving left", "a blue square growing", "a green triangle blinking"),
    ("a white star moving up", "a yellow circle shrinking"),
]


def logits(scorer: BatchScorer, windows: list[np.ndarray]) -> torch.Tensor:
    labels = [LABEL_SETS[i % 2] for i in range(len(windows))]
    rows = scorer.score(windows, labels)
    return torch.tensor([row + [0.0] * (3 - len(row)) for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="demo", help="checkpoint folder, or demo")
    parser.add_argument("--max-error", type=float, default=1e-2, help="fp16's bound (bf16's is 3x)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 1
    # Uncompiled, so that graphs and eager run the same kernels and must agree exactly; the compiled
    # path's accuracy is bounded by bench/model.py's rows against the float32 reference.
    graphs = BatchScorer.load(args.model, device="cuda", precision="bfloat16", compile=False)
    eager = BatchScorer.load(args.model, device="cuda", precision="bfloat16", compile=False, cuda_graphs=False)
    half = BatchScorer.load(args.model, device="cuda", precision="float16", compile=False)
    exact = BatchScorer.load(args.model, device="cuda", precision="float32", compile=False, cuda_graphs=False)
    assert graphs.encoder.cuda_graphs and not eager.encoder.cuda_graphs
    size = graphs.encoder.model.config.vision_config.image_size
    rng = np.random.default_rng(0)
    failures = []
    pooled: dict[str, list[torch.Tensor]] = {"float32": [], "bf16": [], "fp16": []}
    for batch in (3, 5, 3, 1, 8, 2):
        windows = list(rng.integers(0, 256, (batch, graphs.num_frames, 3, size, size), dtype=np.uint8))
        got, want = logits(graphs, windows), logits(eager, windows)
        graph_diff = float((got - want).abs().max())
        print(f"B={batch}: CUDA graphs vs eager, max |logit difference| {graph_diff:.1e}")
        if graph_diff > 1e-3:
            failures.append(f"B={batch}: CUDA graph logits differ from eager by {graph_diff:.1e}")
        for name, scorer in (("float32", exact), ("bf16", graphs), ("fp16", half)):
            pooled[name].append(got if scorer is graphs else logits(scorer, windows))
    truth = torch.cat(pooled.pop("float32"))
    for (name, rows), bound in zip(pooled.items(), (3 * args.max_error, args.max_error)):
        error = float((torch.cat(rows) - truth).norm() / truth.norm())
        print(f"{name} against float32 over all {len(truth)} windows: relative error {error:.1e} "
              f"(logits spread {float(truth.std()):.2f})")
        if error > bound:
            failures.append(f"{name} relative error {error:.1e} > {bound:g}")
    print(f"buckets captured: {sorted(graphs.encoder._graphs)}")
    replica = BatchScorer.load(args.model, device="cuda", precision="bfloat16")  # compile: auto
    t0 = time.perf_counter()
    replica.encoder.warm_up(8)
    print(f"replica default: compiled {replica.encoder.compiled}, graphs {sorted(replica.encoder._graphs)}, "
          f"warm-up {time.perf_counter() - t0:.1f} s")
    for batch in (3, 8, 1):
        windows = list(rng.integers(0, 256, (batch, graphs.num_frames, 3, size, size), dtype=np.uint8))
        t0 = time.perf_counter()
        got = logits(replica, windows)
        seconds = time.perf_counter() - t0
        want = logits(eager, windows)
        error = float((got - want).norm() / want.norm())
        print(f"B={batch}: compiled + graphs vs eager bf16, relative error {error:.1e}, call {seconds * 1e3:.1f} ms")
        if error > 2 * args.max_error or not replica.encoder.compiled or seconds > 1.0:
            failures.append(f"B={batch}: the replica's compiled path: error {error:.1e}, {seconds:.2f} s, "
                            f"compiled {replica.encoder.compiled}")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
