"""The evaluation report of a model trained on the synthetic actions (the demo checkpoint's card).

Clips are freshly generated with seeds training never draws; every clip is classified among all
120 captions, trained and unseen alike, as the demo labels them. Two styles: the training
generator's (``synthetic.py``), and the held-out renderer's (``heldout.py``), which training never
sees: other backgrounds, lighting and drawing of the same captions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..model import XCLIPModel
from ..model.processor import XCLIPProcessor
from .data import SyntheticData, trained_combinations, unseen_combinations
from .heldout import render_heldout
from .synthetic import MOTIONS, Action, all_actions
from .train import predict

REPORT_JSON = "eval.json"
HELDOUT_SIZE = 128  # pixels of the held-out style's clips (the processor scales them to the model's)


def _scores(predicted: Sequence[Action], truth: Sequence[Action]) -> dict[str, float]:
    n = max(1, len(truth))
    return {
        "top1": sum(p == t for p, t in zip(predicted, truth)) / n,
        "color": sum(p.color == t.color for p, t in zip(predicted, truth)) / n,
        "shape": sum(p.shape == t.shape for p, t in zip(predicted, truth)) / n,
        "motion": sum(p.motion == t.motion for p, t in zip(predicted, truth)) / n,
        "clips": len(truth),
    }


def _score_clips(model: XCLIPModel, processor: XCLIPProcessor, clips: Sequence, truth: Sequence[Action]) -> dict:
    """Scores of ``clips`` (Clip or frames) classified among all 120 captions, with motion by true motion."""
    labels = all_actions()
    predicted = [labels[i] for i in predict(model, processor, [a.caption for a in labels], clips)]
    scores = _scores(predicted, truth)
    scores["motion_by_motion"] = {
        m: _scores([p for p, t in zip(predicted, truth) if t.motion == m], [t for t in truth if t.motion == m])["motion"]
        for m in MOTIONS if any(t.motion == m for t in truth)}
    return scores


def evaluate_synthetic(model: XCLIPModel, processor: XCLIPProcessor, per_label: int = 10, seed: int = 1,
                       heldout_per_label: int | None = None) -> dict:
    """Top-1 (and per-factor) accuracy over all captions on held-out clips of the trained
    combinations and of the unseen ones, plus top-1 of the unseen among themselves; and the same
    on the held-out style (``heldout_per_label`` clips per caption, default ``per_label``; 0: not)."""
    unseen, seen = unseen_combinations(), trained_combinations()
    num_frames = model.config.vision_config.num_frames
    report: dict = {"labels": len(all_actions()), "chance_top1": 1 / len(all_actions()), "seed": seed}
    for name, actions in (("seen", seen), ("unseen", unseen)):
        data = SyntheticData(actions, num_frames, held_out_per_label=per_label, seed=seed)
        clips = data.held_out()
        report[name] = _score_clips(model, processor, clips, [actions[c.label] for c in clips])
        if name == "unseen":
            among = predict(model, processor, [a.caption for a in unseen], clips)
            report[name]["top1_among_unseen"] = sum(i == c.label for i, c in zip(among, clips)) / len(clips)
            report[name]["chance_among_unseen"] = 1 / len(unseen)
    report["unseen_combinations"] = [a.caption for a in unseen]
    heldout_per_label = per_label if heldout_per_label is None else heldout_per_label
    if heldout_per_label > 0:
        report["heldout_style"] = evaluate_heldout_style(model, processor, heldout_per_label, seed)
    return report


def evaluate_heldout_style(model: XCLIPModel, processor: XCLIPProcessor, per_label: int, seed: int) -> dict:
    """Scores over all 120 captions of ``heldout.py`` clips (``HELDOUT_SIZE`` pixels), trained and unseen
    combinations, in the order of ``all_actions``."""
    num_frames = model.config.vision_config.num_frames
    report: dict = {"size": HELDOUT_SIZE}
    for name, actions in (("seen", trained_combinations()), ("unseen", unseen_combinations())):
        truth = [a for a in actions for _ in range(per_label)]
        clips = [render_heldout(a, num_frames, HELDOUT_SIZE, seed=seed * 1_000_003 + i)
                 for i, a in enumerate(truth)]
        report[name] = _score_clips(model, processor, clips, truth)
    return report


def format_report(report: dict) -> str:
    seen, unseen = report["seen"], report["unseen"]
    rows = [
        "| clips | n | top-1 of 120 | colour | shape | motion |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    style = report.get("heldout_style")
    named = [("training style: held-out clips, trained combinations", seen),
             ("training style: unseen combinations (zero-shot)", unseen)]
    if style:
        named += [("held-out style: trained combinations", style["seen"]),
                  ("held-out style: unseen combinations (zero-shot)", style["unseen"])]
    for name, r in named:
        rows.append(f"| {name} | {r['clips']} | {r['top1']:.3f} | {r['color']:.3f} | {r['shape']:.3f} | "
                    f"{r['motion']:.3f} |")
    rows.append("")
    rows.append("Motion named right, by true motion (held-out clips of trained combinations): " + ", ".join(
        f"{m} {v:.2f}" for m, v in seen["motion_by_motion"].items()) + ".")
    if style:
        rows.append("")
        rows.append("The same on the held-out style: " + ", ".join(
            f"{m} {v:.2f}" for m, v in style["seen"]["motion_by_motion"].items()) + ".")
    rows.append("")
    rows.append(f"Unseen combinations classified among the {len(report['unseen_combinations'])} unseen captions: "
                f"top-1 {unseen['top1_among_unseen']:.3f} (chance {unseen['chance_among_unseen']:.3f}); "
                f"chance over all {report['labels']} captions is {report['chance_top1']:.4f}.")
    return "\n".join(rows)


def write_report(folder: str | Path, per_label: int = 10, seed: int = 1) -> dict:
    folder = Path(folder)
    model = XCLIPModel.from_pretrained(folder).eval()
    processor = XCLIPProcessor.from_pretrained(folder)
    report = evaluate_synthetic(model, processor, per_label, seed)
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    return report


CHECKPOINT_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json",
                    "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json")


def publish(run: str | Path, dest: str | Path, command: str, per_label: int = 10, seed: int = 1) -> dict:
    """Copy a finished run's checkpoint (not its optimizer state) to ``dest`` with its evaluation
    (eval.json) and a model card (README.md) naming the exact command that trained it."""
    import shutil

    import torch

    from .train import STATE_FILE

    run, dest = Path(run), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, dest / name)
    report = write_report(dest, per_label, seed)
    state = torch.load(run / STATE_FILE, weights_only=True)
    losses = state["loss"].tolist()
    evals = state["eval"].tolist()
    size_mb = sum(p.stat().st_size for p in dest.iterdir() if p.name in CHECKPOINT_FILES) / 2**20
    curve = ", ".join(f"{int(step)}: {acc:.2f}" for step, acc in evals)
    card = f"""# demo-xclip: the X-CLIP that `--model demo` loads

A small X-CLIP ({size_mb:.1f} MB of files) trained by this project, on a CPU, on its own synthetic action
videos: a coloured circle, square or triangle moving left, right, up or down, growing, shrinking,
blinking or standing still, over textured backgrounds with noise and a still distractor
(`xclip_stream/training/synthetic.py`); in the stages with `--varied`, lit from dark to bright and
unevenly, with soft clutter and surface edges, and seen through a simulated camera (exposure, white
balance, blur, noise, H.264; `xclip_stream/training/augment.py`).
It knows only these scenes and captions of the form
"a {{color}} {{shape}} {{motion}}"; it is a demo model, not a general video model.

Trained with (from the repository root; `make demo-model` runs the same):

```
{command.replace(" && ", chr(10))}
```

The 13 colour/shape/motion combinations listed under `unseen_combinations` in `eval.json` were
never shown in training (zero-shot test). Held-out top-1 during training (the last run, {len(losses)} steps;
fixed held-out clips, among the {len(state["labels"])} trained captions), by step: {curve}. Mean loss over its first / last 100 steps:
{sum(losses[:100]) / max(1, len(losses[:100])):.3f} / {sum(losses[-100:]) / max(1, len(losses[-100:])):.3f}.

## Evaluation

Fresh clips (seed {seed}, seeds training never draws), each classified among all 120 captions
(`python -m xclip_stream.training.report`, written to `eval.json`). The training style is the
generator's own dim scenes (`synthetic.py`, as before issue 19); the held-out style is a second
renderer that training never sees (`xclip_stream/training/heldout.py`: rooms from dark to bright,
a global light level, anti-aliased shaded and outlined shapes, blur, noise and flicker):

{format_report(report)}
"""
    (dest / "README.md").write_text(card)
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xclip_stream.training.report",
                                     description="Evaluate a synthetic-action checkpoint; with --publish, "
                                     "copy a training run into a checkpoint folder with its model card.")
    parser.add_argument("folder", help="checkpoint folder (or, with --publish, the training run)")
    parser.add_argument("--publish", metavar="DEST", help="write the published checkpoint here")
    parser.add_argument("--command", default="", help="the exact training command, for the model card")
    parser.add_argument("--per-label", type=int, default=10, help="held-out clips per caption (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.publish:
        report = publish(args.folder, args.publish, args.command, args.per_label, args.seed)
    else:
        report = write_report(args.folder, args.per_label, args.seed)
    print(format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
