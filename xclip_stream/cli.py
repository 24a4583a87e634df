"""Command line: argument parsing only; the work is done by the package's modules."""

from __future__ import annotations

import argparse
import json
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
    c.add_argument("--model", required=True, help="X-CLIP checkpoint folder (Hugging Face layout)")
    c.add_argument("--labels", required=True, help='comma-separated labels, e.g. "walking,running,falling"')
    c.add_argument("--window-seconds", type=_positive_float, help="window length; T frames at segment centres")
    c.add_argument("--stride", type=_positive_int, help="instead: T frames every STRIDE-th frame per window")
    c.add_argument("--hop-seconds", type=_positive_float,
                   help="time between window starts (default: back-to-back windows)")
    c.add_argument("--batch-size", type=_positive_int, default=8, help="windows per model call (default 8)")
    c.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    c.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="compute precision; bfloat16/float16 run under autocast over float32 weights")
    return parser


def classify(args: argparse.Namespace) -> int:
    import torch

    from .model import XCLIPModel
    from .model.processor import XCLIPProcessor
    from .pipeline.classify import WindowClassifier, classify_file
    from .pipeline.clips import WindowSampling

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = XCLIPModel.from_pretrained(args.model, device=device)
    processor = XCLIPProcessor.from_pretrained(args.model)
    sampling = WindowSampling(
        num_frames=model.config.vision_config.num_frames,
        window_seconds=args.window_seconds,
        hop_seconds=args.hop_seconds,
        stride=args.stride,
    )
    autocast = None if args.precision == "float32" else getattr(torch, args.precision)
    classifier = WindowClassifier(model, processor, args.labels, autocast_dtype=autocast)
    for result in classify_file(args.video, classifier, sampling, batch_size=args.batch_size):
        print(json.dumps(result.to_json_dict()), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"classify": classify}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError) as e:
        print(f"xclip-stream {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
