"""What reduced precision costs on trained weights: the demo model's logits in bf16, fp16, int8 and
float8 against float32, on held-out synthetic clips, scored as a replica scores them.

    .venv/bin/python bench/precision.py [--model demo] [--per-label 10] [--device auto] [--dtypes ...]

Random weights cannot show it (their logits sit near zero, so rounding is most of each logit; see
bench/model.py); a trained model's can. Each held-out clip of the demo world (trained combinations
and unseen ones) is resized and cropped as a stream does it, then scored against all 120 captions
by a ``BatchScorer`` per dtype (float8 emulated where the device lacks FP8 tensor cores: the same
e4m3 rounding, slowly). Per split and dtype: the relative error of the logits against
float32's (||x - x32|| / ||x32|| over all clips), how often the top label is float32's, and top-1
accuracy. Prints a table and writes bench/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xclip_stream.pipeline.scoring import BatchScorer, has_float8, pick_device  # noqa: E402
from xclip_stream.training.data import SyntheticData, trained_combinations, unseen_combinations  # noqa: E402
from xclip_stream.training.synthetic import all_actions  # noqa: E402

BATCH = 32


def score(scorer: BatchScorer, windows: list[np.ndarray], labels: tuple[str, ...]) -> torch.Tensor:
    rows = []
    for i in range(0, len(windows), BATCH):
        chunk = windows[i:i + BATCH]
        rows += scorer.score(chunk, [labels] * len(chunk))
    return torch.tensor(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="checkpoint folder of the demo world, or demo")
    parser.add_argument("--per-label", type=int, default=10, help="held-out clips per caption (default 10, as the model card)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--dtypes", default=None,
                        help="comma list (default: bfloat16, float16 and float8 on a GPU, bfloat16, int8 and "
                             "float8 on a CPU)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "precision.json"))
    args = parser.parse_args(argv)
    device = pick_device(None if args.device == "auto" else args.device)
    cpu = device.type == "cpu"
    fp8 = cpu or has_float8(device)  # a CPU emulates it
    dtypes = args.dtypes.split(",") if args.dtypes else ["bfloat16", "int8" if cpu else "float16"] + ["float8"] * fp8
    # Eager on both sides: this measures rounding, not compile's kernels (bench/model.py has those).
    scorers = {name: BatchScorer.load(args.model, device=str(device), precision=name, compile=False, emulate=cpu)
               for name in ["float32", *dtypes]}
    exact = scorers["float32"]
    labels = tuple(a.caption for a in all_actions())
    video_processor = exact.processor.video_processor
    rows = []
    for split, actions in (("seen", trained_combinations()), ("unseen", unseen_combinations())):
        clips = SyntheticData(actions, exact.num_frames, held_out_per_label=args.per_label, seed=1).held_out()
        windows = [video_processor.resize_and_crop(c.frames, exact=False).numpy() for c in clips]
        truth = torch.tensor([labels.index(actions[c.label].caption) for c in clips])
        want = score(exact, windows, labels)
        for name, scorer in scorers.items():
            got = want if scorer is exact else score(scorer, windows, labels)
            rows.append({
                "split": split, "dtype": name, "clips": len(clips),
                "rel_error_vs_float32": float(f"{((got - want).norm() / want.norm()).item():.2e}"),
                "top1_agrees_with_float32": round((got.argmax(1) == want.argmax(1)).float().mean().item(), 4),
                "top1_accuracy": round((got.argmax(1) == truth).float().mean().item(), 4),
            })
    print(f"\n{args.model} on {device}, {len(labels)} captions, held-out clips, {args.per_label} per caption:")
    print(f"{'split':<8}{'dtype':<10}{'clips':>6}{'rel err':>10}{'top-1 = float32':>17}{'top-1 acc':>11}")
    for r in rows:
        print(f"{r['split']:<8}{r['dtype']:<10}{r['clips']:>6}{r['rel_error_vs_float32']:>10.1e}"
              f"{r['top1_agrees_with_float32']:>17.3f}{r['top1_accuracy']:>11.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "device": str(device), "torch": torch.__version__,
                               "per_label": args.per_label, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
