"""Command line: argument parsing only; the work is done by the package's modules."""

from __future__ import annotations

import argparse
import json
import os
import sys

PRECISIONS = ("float32", "bfloat16", "float16")


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1], got {text}")
    return value


def _group_kinds(text: str) -> tuple[str, ...]:
    from .training.data import GROUP_KINDS  # imported only when `train` parses its arguments

    kinds = () if text == "none" else tuple(k.strip() for k in text.split(","))
    if any(k not in GROUP_KINDS for k in kinds) or not text:
        raise argparse.ArgumentTypeError(f"must be 'none' or a comma list of {', '.join(GROUP_KINDS)}; got {text!r}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xclip-stream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    c = commands.add_parser(
        "classify",
        help="score the windows of a video file against text labels (one JSON line per window)",
        description="Decode VIDEO, cut it into windows of the model's frame count and print one JSON object "
        "per window with the score of every label. By default the whole video is one window sampled at "
        "segment centres (the paper's evaluation).",
    )
    c.add_argument("video", help="a video file PyAV can read")
    c.add_argument("--model", required=True,
                   help="X-CLIP checkpoint folder (Hugging Face layout), or 'demo' for the bundled demo model")
    c.add_argument("--labels", required=True, help='comma-separated labels, e.g. "walking,running,falling"')
    c.add_argument("--window-seconds", type=_positive_float, help="window length; T frames at segment centres")
    c.add_argument("--stride", type=_positive_int, help="instead: T frames every STRIDE-th frame per window")
    c.add_argument("--hop-seconds", type=_positive_float,
                   help="time between window starts (default: back-to-back windows)")
    c.add_argument("--batch-size", type=_positive_int, default=8, help="windows per model call (default 8)")
    c.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    c.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="compute precision (default float32, exact); bfloat16/float16 score on a copy of the "
                        "video side cast to that dtype, int8 (CPUs) on a copy with int8 Linear layers, as a "
                        "replica does")

    r = commands.add_parser(
        "run",
        help="run the streaming pipeline: cameras and Kafka frame topics in, label events out",
        description="Run the live pipeline from a YAML configuration (--config), or for the simple case from "
        "--source/--labels/--model. Events go to Kafka when --kafka-bootstrap is given, else to standard "
        "output as JSON lines. A file source ends at its end of file unless --loop is given.",
    )
    r.add_argument("--config", help="pipeline YAML; it is reloaded when it changes")
    r.add_argument("--source", action="append", default=[], metavar="[ID=]URI",
                   help="a camera: rtsp://, http(s):// (MJPEG/HLS), a file, /dev/videoN; repeatable")
    r.add_argument("--labels", help='comma-separated labels, e.g. "walking,running,falling"')
    r.add_argument("--model", help="X-CLIP checkpoint folder, or 'demo'")
    r.add_argument("--kafka-bootstrap", metavar="HOST:PORT", help="publish events to this Kafka cluster")
    r.add_argument("--events-topic", default="xclip.events", help="events topic (default xclip.events)")
    r.add_argument("--frames-topic", action="append", default=[], help="a Kafka topic of encoded frames")
    r.add_argument("--max-windows", type=_positive_int, help="each source stops after N windows")
    r.add_argument("--sample-fps", type=_positive_float, help="frames sampled per second (default 4)")
    r.add_argument("--loop", action="store_true", help="loop file sources, paced like live cameras")
    r.add_argument("--ray-address", help="join this Ray cluster (default: RAY_ADDRESS, else a local one)")
    r.add_argument("-v", "--verbose", action="store_true",
                   help="log at INFO level and forward the actors' logs (Ray prints them on stdout)")
    t = commands.add_parser(
        "train",
        help="train or fine-tune an X-CLIP on labelled clips; writes a Hugging Face checkpoint folder",
        description="Train X-CLIP with its video-text objective (every clip against every label's text). "
        "DATA is 'synthetic' (the generated colour/shape/motion actions, minus the 13 combinations kept "
        "unseen for the zero-shot test) or a folder with one sub-folder of video clips per label "
        "(folder name = label, '_' read as a space). Running again into the same OUT resumes.",
    )
    t.add_argument("out", help="output checkpoint folder (new, or a run to resume)")
    t.add_argument("--data", default="synthetic", help="'synthetic' or a folder of label sub-folders")
    t.add_argument("--init", default="tiny",
                   help="'tiny' (a new small model), a config.json, a checkpoint folder or 'demo' (fine-tune)")
    t.add_argument("--steps", type=_positive_int, default=3000, help="optimizer steps in all (default 3000)")
    t.add_argument("--batch-size", type=_positive_int, default=32, help="clips per step (default 32)")
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument("--text-lr-scale", type=float,
                   help="the text tower's learning rate relative to --lr (default: 0.1 for a new model, 1 when "
                   "fine-tuning)")
    t.add_argument("--text-frozen-steps", type=int,
                   help="steps the text tower stays frozen at the start (default: half the steps for a new "
                   "model, 0 when fine-tuning)")
    t.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (default 100)")
    t.add_argument("--stop-after", type=_positive_int, metavar="STEP",
                   help="stop (and save) at this step, the schedule still spanning --steps; rerun to go on")
    t.add_argument("--eval-every", type=_positive_int, default=250, help="steps between evaluations")
    t.add_argument("--held-out", type=_positive_int, default=2,
                   help="synthetic data: held-out clips per label for the periodic evaluation (default 2)")
    t.add_argument("--easy-until", type=float, default=0.3,
                   help="synthetic data: curriculum length as a fraction of the steps (default 0.3)")
    t.add_argument("--groups", default="motion,shape", type=_group_kinds,
                   help="synthetic data: half of each batch in groups of one scene done by actions that differ "
                   "only in their motion, or only in their shape: 'motion,shape' (default), 'motion', 'shape' "
                   "or 'none' (every clip drawn independently)")
    t.add_argument("--varied", type=_share, default=0.0,
                   help="synthetic data: share of clips drawn as real cameras see scenes: light from dark to "
                   "bright, low contrast, shaded objects, wider sizes, speeds and frame rates, exposure, blur, "
                   "noise, H.264 artefacts (default 0)")
    t.add_argument("--label-margin", type=float,
                   help="push apart label texts whose cosine exceeds this (default: 0.5 for a new model, off "
                   "when fine-tuning, where the checkpoint's text space is kept; 1 turns it off)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: all cores)")
    t.add_argument("--report", action="store_true",
                   help="synthetic data: write the evaluation report (eval.json) into OUT at the end")
    return parser


def train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .training.data import FolderData, SyntheticData, trained_combinations
    from .training.report import format_report, write_report
    from .training.train import TrainSettings, init_num_frames
    from .training.train import train as run_training

    if args.threads:
        torch.set_num_threads(args.threads)
    num_frames = init_num_frames(args.init)
    if args.data == "synthetic":
        data = SyntheticData(trained_combinations(), num_frames=num_frames,
                             held_out_per_label=args.held_out, seed=args.seed, easy_until=args.easy_until,
                             groups=args.groups, varied=args.varied)
    elif args.report:
        raise ValueError("--report evaluates the synthetic actions; it needs --data synthetic")
    else:
        data = FolderData(args.data, num_frames=num_frames, seed=args.seed)
    new_model = args.init == "tiny" or Path(args.init).is_file()
    text_lr_scale = args.text_lr_scale if args.text_lr_scale is not None else (0.1 if new_model else 1.0)
    text_frozen = args.text_frozen_steps if args.text_frozen_steps is not None else (
        args.steps // 2 if new_model else 0)
    margin = args.label_margin if args.label_margin is not None else (0.5 if new_model else 1.0)
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             text_lr_scale=text_lr_scale, text_frozen_steps=text_frozen,
                             warmup=args.warmup, stop_after=args.stop_after, eval_every=args.eval_every,
                             seed=args.seed, label_margin=margin if margin < 1 else None)
    print(f"xclip-stream train: {len(data.labels)} labels, {settings.steps} steps of {settings.batch_size} clips "
          f"-> {args.out}", file=sys.stderr)
    history = run_training(args.out, data, init=args.init, settings=settings,
                           log=lambda m: print(m, file=sys.stderr))
    losses = history["loss"]
    if losses:
        head, tail = losses[: min(50, len(losses))], losses[-min(50, len(losses)):]
        print(f"xclip-stream train: loss {sum(head) / len(head):.3f} (first steps) -> "
              f"{sum(tail) / len(tail):.3f} (last steps)", file=sys.stderr)
    if args.report:
        print(format_report(write_report(args.out)), file=sys.stderr)
    return 0


def run_config(args: argparse.Namespace):
    """The pipeline configuration from --config, or from the simple-case flags."""
    from .schemas.config import ConfigError, load_config, parse_config

    simple = [f for f in ("labels", "model", "kafka_bootstrap", "sample_fps", "max_windows") if getattr(args, f)]
    if args.config:
        if args.source or args.frames_topic or simple:
            raise ConfigError("--config cannot be combined with --source/--labels/--model/... flags")
        return load_config(args.config)
    if not (args.source or args.frames_topic):
        raise ConfigError("give --config FILE, or at least one --source URI (or --frames-topic)")
    if not args.labels or not args.model:
        raise ConfigError("--labels and --model are required without --config")
    cameras = []
    for i, item in enumerate(args.source):
        name, sep, uri = item.partition("=")
        if not sep or "://" in name or "/" in name:
            name, uri = f"cam-{i}", item
        cameras.append({"id": name, "url": uri, "loop": args.loop})
    data: dict = {
        "model": {"path": args.model},
        "labels": {"labels": [label.strip() for label in args.labels.split(",") if label.strip()]},
        "cameras": cameras,
    }
    if args.sample_fps:
        data["defaults"] = {"sample_fps": args.sample_fps}
    if args.max_windows:
        data["max_windows"] = args.max_windows
    if args.kafka_bootstrap:
        data["kafka"] = {"bootstrap": args.kafka_bootstrap, "events_topic": args.events_topic,
                         "frames": [{"topic": t} for t in args.frames_topic]}
    elif args.frames_topic:
        raise ConfigError("--frames-topic needs --kafka-bootstrap")
    return parse_config(data, "command line")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from .actors.runner import run_pipeline

    config = run_config(args)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    # Standard output carries the events only. Ray writes notices to file descriptor 1 (some from
    # C++, some at exit), so fd 1 becomes stderr for the rest of the process and the events go to
    # a private duplicate of the original stdout.
    sys.stdout.flush()
    events_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        finished = run_pipeline(config, events_out, Path(args.config) if args.config else None,
                                ray_address=args.ray_address, log_to_driver=args.verbose)
    finally:
        events_out.close()
    return run_summary(finished)


def run_summary(finished: dict[str, dict]) -> int:
    """Print each source's final health; the exit status: 1 when any window could not be scored
    (each has its xclip.window.failed event, but a script reads the status)."""
    for key, health in sorted(finished.items()):
        keep = {k: v for k, v in (health or {}).items() if k != "latency_ms"}
        print(f"xclip-stream run: {key}: {json.dumps(keep)}", file=sys.stderr)
    failed = sum(int((health or {}).get("windows_failed", 0)) for health in finished.values())
    undelivered = sum(int((health or {}).get("events_undelivered", 0)) for health in finished.values())
    if failed:
        print(f"xclip-stream run: error: {failed} window(s) could not be scored (see the xclip.window.failed "
              "events)", file=sys.stderr)
    if undelivered:
        print(f"xclip-stream run: error: {undelivered} events were never acknowledged by the sink",
              file=sys.stderr)
    if failed or undelivered:
        return 1
    return 0


def classify(args: argparse.Namespace) -> int:
    from .pipeline.classify import WindowClassifier, classify_file
    from .pipeline.clips import WindowSampling
    from .pipeline.scoring import BatchScorer

    scorer = BatchScorer.load(args.model, device=args.device, precision=args.precision)
    sampling = WindowSampling(
        num_frames=scorer.num_frames,
        window_seconds=args.window_seconds,
        hop_seconds=args.hop_seconds,
        stride=args.stride,
    )
    classifier = WindowClassifier(scorer, args.labels)
    for result in classify_file(args.video, classifier, sampling, batch_size=args.batch_size):
        print(json.dumps(result.to_json_dict()), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"classify": classify, "run": run, "train": train}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, ConnectionError) as e:  # ConnectionError: Kafka refused us (no secrets)
        print(f"xclip-stream {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
