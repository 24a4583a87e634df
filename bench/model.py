"""Model benchmark: our X-CLIP against transformers' XCLIPModel, same random weights and inputs, one process.

    .venv/bin/python bench/model.py [--configs base32,base16] [--batch-sizes 1,8,32,64]
                                    [--dtypes float32,bfloat16,int8] [--labels 16] [--device auto]

transformers builds each configuration with its random init and saves it; our classes load that
folder, so both sides hold the same weights. Inputs are random uint8 frames already on the device.
Our side runs as a replica does: ``BatchScorer``'s video encoder (normalisation on the device, bf16
weights, torch.compile and CUDA graphs on a GPU), then its ``score`` against label
features cached once (labels change rarely, windows every hop): ``classify``. The reference gets the
same frames normalised and runs its full ``forward`` with the labels' token ids, as a user's loop
around XCLIPModel would; in bf16 its weights are cast to bf16, with SDPA attention. ``host clips/s``
is our replica's whole call, ``BatchScorer.score``: numpy windows in (stacked into pinned memory,
uploaded), logits out as Python floats. Each row's sides are timed alternately in one run, so the
ratio holds on a noisy machine even where the absolute figures drift.

``rel err`` is ||ours - reference float32|| / ||reference float32|| over the logits of one batch
(the worse of the two paths), ``ref err`` the same for the reference at that dtype, and ``emb err``
that of our normalised video embeddings. With random weights every embedding is nearly orthogonal to
every label (cosines of a few hundredths), so an embedding error of a few 1e-3, bf16's own rounding,
is a large part of each logit: bf16 logits errors are large for both sides, and only float32 can
meet 1e-2 on them. ``--max-error E`` therefore fails a row whose embedding error exceeds E, whose
float32 logits error exceeds E, or whose bf16/fp16 logits error exceeds both E and twice the
reference's own (at B=1 that error is judged on one video's logits, and two implementations rounding
at different places differ by that much: fp16 B=1 measured 1.7x where B=64 measured 1.0x).
Trained weights show what reduced precision costs: ``bench/precision.py`` (and ``bench/gpu_check.py``).

``int8`` (CPUs): our scorer with int8 Linear layers (``model.quantize``) against transformers'
float32 forward, which has no int8 path; ``float8`` (GPUs with FP8 tensor cores): e4m3 GEMMs in the
Linear layers against transformers' bf16 forward. Neither has a reference at its own precision, so
their errors are against float32 and are not judged by ``--max-error``.

Prints a table and writes bench/results/model.json (or --out). Defaults: on CUDA the issue's grid
(B 1, 8, 32, 64; both configs; float32, bf16 and, on FP8 tensor cores, float8); on a CPU base32 at
B 1, 4, 8, float32, int8 and, where the CPU runs bf16 natively (AVX512-BF16, AMX: a replica's choice
there), bf16.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xclip_stream.model import XCLIPModel  # noqa: E402
from xclip_stream.model.processor import XCLIPVideoProcessor  # noqa: E402
from xclip_stream.pipeline.scoring import BatchScorer, auto_precision, check_precision, has_float8  # noqa: E402

# transformers' XCLIPConfig arguments: xclip-base-patch32 / -patch16, and the suite's "tiny" (the
# bench's plumbing on a model a few hundredths of base32's size; its figures say nothing of speed)
CONFIGS = {"base32": {"vision_config": {"patch_size": 32}}, "base16": {"vision_config": {"patch_size": 16}},
           "tiny": {"vision_config": {"patch_size": 32, "hidden_size": 64, "intermediate_size": 128,
                                      "num_hidden_layers": 2, "num_attention_heads": 4, "mit_hidden_size": 64,
                                      "mit_intermediate_size": 128, "mit_num_attention_heads": 4},
                    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                    "num_attention_heads": 4},
                    "projection_dim": 64, "prompt_num_attention_heads": 4}}
# our precision -> the reference's dtype: transformers has no int8 or FP8 path, so int8 is timed
# against its float32 forward and float8 against its bf16 one
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.float32,
          "float8": torch.bfloat16}
UNJUDGED = ("int8", "float8")  # no reference at their own precision (see the docstring)
BOS, EOS = 49406, 49407


def reference_model(kind: str, frames: int, attn: str = "sdpa"):
    import transformers  # the test-only oracle: imported here so the module loads without it

    kwargs = CONFIGS[kind]
    config = transformers.XCLIPConfig(**{**kwargs, "vision_config": {**kwargs["vision_config"], "num_frames": frames}})
    torch.manual_seed(0)
    return transformers.XCLIPModel._from_config(config, attn_implementation=attn).eval()


def label_tokens(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` labels of 4-10 tokens (BOS, words, EOS), end-of-text padded as CLIP's tokenizer pads."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 11, (count,), generator=g).tolist()
    ids = torch.full((count, max(lengths)), EOS)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, 0] = BOS
        ids[i, 1:n - 1] = torch.randint(0, 49000, (n - 2,), generator=g)
        mask[i, :n] = 1
    return ids, mask


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(fn: Callable[[], object], device: torch.device, min_seconds: float, min_runs: int) -> list[float]:
    """Seconds per call, over at least ``min_runs`` calls and ``min_seconds``."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.float() - reference.float()).norm() / reference.float().norm())


def bench_config(kind: str, args, device: torch.device) -> list[dict]:
    reference = reference_model(kind, args.frames).to(device)
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        ours = XCLIPModel.from_pretrained(folder, device=device).eval()
    size = reference.config.vision_config.image_size
    ids, mask = (t.to(device) for t in label_tokens(args.labels))
    labels = tuple(f"label {i}" for i in range(args.labels))  # names for the scorer's cache
    with torch.inference_mode():
        text = ours.get_text_features(input_ids=ids, attention_mask=mask)  # cached once, as a replica does
    references = {name: reference if DTYPES[name] == torch.float32 else copy.deepcopy(reference).to(DTYPES[name])
                  for name in args.dtypes}
    scorers = {}
    for name in args.dtypes:  # the replica's scorer: bf16 weights, CUDA graphs on a GPU, compiled if asked
        scorers[name] = BatchScorer(ours, processor=None, precision=name, compile=args.compiled,
                                    cuda_graphs=not args.no_graphs)
        scorers[name].remember(labels, text)
    normalize = XCLIPVideoProcessor().normalize  # transformers' fused rescale + normalise, on the device
    rows = []
    for batch in args.batch_sizes:
        g = torch.Generator().manual_seed(batch)
        host = torch.randint(0, 256, (batch, args.frames, 3, size, size), dtype=torch.uint8, generator=g)
        windows = list(host.numpy())  # what streams send a replica
        frames = host.to(device)
        pixels = normalize(frames)
        with torch.inference_mode():
            truth = reference(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        for dtype_name in args.dtypes:
            ref, scorer = references[dtype_name], scorers[dtype_name]
            ref_pixels = pixels.to(DTYPES[dtype_name])

            # classify() from uint8 frames on the device, against cached label features
            def run_ours(scorer=scorer, frames=frames):
                with torch.inference_mode():
                    video, context = scorer.encoder(frames)
                    return scorer.encoder.score(video, context, text), video

            # the replica's whole call: numpy windows in, logits as Python floats out
            def run_host(scorer=scorer, windows=windows, batch=batch):
                return scorer.score(windows, [labels] * batch)

            def run_ref(ref=ref, ref_pixels=ref_pixels):
                with torch.inference_mode():
                    return ref(input_ids=ids, attention_mask=mask, pixel_values=ref_pixels).logits_per_video

            t0 = time.perf_counter()
            logits, video = run_ours()  # + warm-up: graph capture, compile
            sync(device)
            first_call = time.perf_counter() - t0
            error = relative_error(logits, truth.logits_per_video)
            ref_error = relative_error(run_ref(), truth.logits_per_video)
            embed_error = relative_error(F.normalize(video.float(), dim=-1), truth.video_embeds)
            host_error = relative_error(torch.tensor(run_host()), truth.logits_per_video.cpu())
            sync(device)
            ours_t, ref_t, host_t = [], [], []
            for _ in range(args.rounds):  # alternate, so drift hits both sides alike
                ours_t += time_batches(run_ours, device, args.seconds, args.min_runs)
                ref_t += time_batches(run_ref, device, args.seconds, args.min_runs)
                host_t += time_batches(run_host, device, args.seconds / 2, args.min_runs)
            ours_s, ref_s, host_s = (statistics.median(t) for t in (ours_t, ref_t, host_t))
            rows.append({
                "config": kind, "dtype": dtype_name, "batch": batch,
                "ours_clips_per_s": round(batch / ours_s, 2), "ref_clips_per_s": round(batch / ref_s, 2),
                "ratio": round(ref_s / ours_s, 3),
                "ours_ms_per_batch": round(ours_s * 1e3, 3), "ref_ms_per_batch": round(ref_s * 1e3, 3),
                "ours_host_clips_per_s": round(batch / host_s, 2),  # incl. stacking, upload, results to Python
                "ours_first_call_s": round(first_call, 2),  # a new batch size: capture/compile happen here
                "rel_error_vs_ref_fp32": float(f"{max(error, host_error):.2e}"),
                "ref_rel_error_vs_ref_fp32": float(f"{ref_error:.2e}"),  # the reference's own, at this dtype
                "embed_rel_error_vs_ref_fp32": float(f"{embed_error:.2e}"),  # normalised video embeddings
            })
            print(format_row(rows[-1]), flush=True)
            if args.profile == f"{kind}:{dtype_name}:{batch}":
                profile(run_ours, run_ref, device)
    return rows


def profile(run_ours: Callable, run_ref: Callable, device: torch.device, steps: int = 5) -> None:
    """Where the time goes: the top kernels/ops of each side over a few batches."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, fn in (("ours", run_ours), ("reference", run_ref)):
        with torch_profile(activities=activities) as prof:
            for _ in range(steps):
                fn()
            sync(device)
        print(f"\nprofile: {name}, {steps} batches")
        print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


HEADER = (f"{'config':<7} {'dtype':<9} {'B':>3} {'ours clips/s':>12} {'ref clips/s':>11} {'ratio':>6} "
          f"{'ours ms':>9} {'ref ms':>9} {'host clips/s':>12} {'rel err':>8} {'ref err':>8} {'emb err':>8}")


def format_row(r: dict) -> str:
    return (f"{r['config']:<7} {r['dtype']:<9} {r['batch']:>3} {r['ours_clips_per_s']:>12.1f} "
            f"{r['ref_clips_per_s']:>11.1f} {r['ratio']:>5.2f}x {r['ours_ms_per_batch']:>9.2f} "
            f"{r['ref_ms_per_batch']:>9.2f} {r['ours_host_clips_per_s']:>12.1f} {r['rel_error_vs_ref_fp32']:>8.1e} "
            f"{r['ref_rel_error_vs_ref_fp32']:>8.1e} {r['embed_rel_error_vs_ref_fp32']:>8.1e}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=None, help="comma list of base32, base16 (tiny: the suite's)")
    parser.add_argument("--batch-sizes", default=None, help="comma list, e.g. 1,8,32,64")
    parser.add_argument("--dtypes", default=None,
                        help="comma list of float32, bfloat16, float16, int8 (CPUs), float8 (GPUs with FP8)")
    parser.add_argument("--labels", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seconds", type=float, default=None, help="minimum seconds per side per round")
    parser.add_argument("--min-runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="our video encoder through torch.compile (auto: on a GPU, as a replica does)")
    parser.add_argument("--no-graphs", action="store_true", help="our side without CUDA graphs (eager on a GPU)")
    parser.add_argument("--profile", default=None, metavar="CONFIG:DTYPE:B",
                        help="after that row, print where each side's time goes (torch.profiler)")
    parser.add_argument("--max-error", type=float, default=None,
                        help="exit 1 if a row's relative error against the float32 reference exceeds this")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "model.json"))
    args = parser.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    args.compiled = {"on": True, "off": False}.get(args.compile, gpu)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.configs = (args.configs or ("base32,base16" if gpu else "base32")).split(",")
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("1,8,32,64" if gpu else "1,4,8")).split(",")]
    native_bf16 = auto_precision(device) == "bfloat16"  # CPUs too: what a replica picks there
    fp8 = has_float8(device)
    args.dtypes = (args.dtypes or ("float32,bfloat16,float8" if fp8 else "float32,bfloat16" if gpu
                                   else "float32,bfloat16,int8" if native_bf16 else "float32,int8")).split(",")
    args.seconds = args.seconds if args.seconds is not None else (1.0 if gpu else 3.0)
    for name, values, known in (("config", args.configs, CONFIGS), ("dtype", args.dtypes, DTYPES)):
        unknown = [v for v in values if v not in known]
        if unknown:
            parser.error(f"unknown {name} {unknown}; known: {sorted(known)}")
    for name in args.dtypes:
        try:
            check_precision(name, device)
        except ValueError as e:
            parser.error(str(e))
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32, on both sides
        torch.backends.cudnn.allow_tf32 = False  # (the reference's patch embedding is a cuDNN conv)
    print(f"device: {device_name(device)}; torch {torch.__version__}; {args.labels} labels, {args.frames} frames"
          f"{'; ours compiled' if args.compiled else ''}{'; ours with CUDA graphs' if gpu and not args.no_graphs else ''}")
    print(HEADER, flush=True)
    rows = [row for kind in args.configs for row in bench_config(kind, args, device)]
    print("\n" + HEADER)
    for row in rows:
        print(format_row(row))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device_name(device), "torch": torch.__version__, "labels": args.labels,
                               "frames": args.frames, "compiled": args.compiled,
                               "cuda_graphs": gpu and not args.no_graphs, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    if args.max_error is not None:
        # int8 and float8 are not judged here: random weights' logits are mostly rounding (see above),
        # and they have no reference of their own; bench/precision.py measures what they cost on trained weights
        bad = [r for r in rows if r["dtype"] not in UNJUDGED and (
            r["embed_rel_error_vs_ref_fp32"] > args.max_error
            or r["rel_error_vs_ref_fp32"] > (args.max_error if r["dtype"] == "float32"
                                             else max(args.max_error, 2 * r["ref_rel_error_vs_ref_fp32"])))]
        for r in bad:
            print(f"FAIL: {r['config']} {r['dtype']} B={r['batch']}: relative error of the logits "
                  f"{r['rel_error_vs_ref_fp32']:.1e} (reference's own {r['ref_rel_error_vs_ref_fp32']:.1e}), "
                  f"of the embeddings {r['embed_rel_error_vs_ref_fp32']:.1e}; bound {args.max_error:g}",
                  file=sys.stderr)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
