"""One table from bench/model.py's JSON results, and the issue's GPU targets met or missed.

    python bench/gpu_report.py bench/results/model-gpu.json [more results ...]

A file's variant is read from its JSON (CUDA graphs or eager, compiled or not). The targets are
checked on the best variant a replica can be configured to run: base32, 8 frames, 16 labels, bf16
(the kernels, and the replica's whole call: numpy windows in, floats out), and float8 where run.
Exits 1 if no result holds the bf16 targets' rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TARGET_CLIPS_PER_S = 6000  # base32 bf16 B=64
TARGET_LATENCY_MS = 3.0  # base32 bf16 B=1
TARGET_ERROR = 1e-2
TARGET_HOST_CLIPS_PER_S = 5000  # the replica's whole call (BatchScorer.score), base32 bf16 B=64 (issue 17)
TARGET_HOST_LATENCY_MS = 1.3  # the same at B=1
TARGET_FLOAT8_CLIPS_PER_S = 8000  # base32 float8 B=64, kernel path (issue 17)


def variant(result: dict) -> str:
    parts = ["graphs" if result.get("cuda_graphs", True) else "eager"]
    if result.get("compiled"):
        parts.append("compiled")
    return "+".join(parts)


def main(paths: list[str]) -> int:
    rows = []
    for path in paths:
        if not Path(path).exists():
            print(f"gpu_report: {path} missing (its step failed)")
            continue
        result = json.loads(Path(path).read_text())
        rows += [{**r, "variant": variant(result), "device": result["device"]} for r in result["rows"]]
    if not rows:
        return 1
    print(f"\nGPU results ({rows[0]['device']}; 16 labels, 8 frames; ratio = ours / transformers, same run)")
    print(f"{'variant':<16} {'config':<7} {'dtype':<9} {'B':>3} {'ours clips/s':>12} {'ref clips/s':>11} "
          f"{'ratio':>6} {'ours ms':>8} {'ref ms':>8} {'host clips/s':>12} {'rel err':>8} {'ref err':>8} {'emb err':>8} {'1st call s':>10}")
    for r in rows:
        print(f"{r['variant']:<16} {r['config']:<7} {r['dtype']:<9} {r['batch']:>3} {r['ours_clips_per_s']:>12.0f} "
              f"{r['ref_clips_per_s']:>11.0f} {r['ratio']:>5.2f}x {r['ours_ms_per_batch']:>8.2f} "
              f"{r['ref_ms_per_batch']:>8.2f} {r['ours_host_clips_per_s']:>12.0f} {r['rel_error_vs_ref_fp32']:>8.1e} "
              f"{r['ref_rel_error_vs_ref_fp32']:>8.1e} {r['embed_rel_error_vs_ref_fp32']:>8.1e} "
              f"{r.get('ours_first_call_s', float('nan')):>10.1f}")
    target = [r for r in rows if r["config"] == "base32" and r["dtype"] == "bfloat16"]
    b64 = [r for r in target if r["batch"] == 64]
    b1 = [r for r in target if r["batch"] == 1]
    if not b64 or not b1:
        print("gpu_report: no base32 bf16 rows at B 1 and 64")
        return 1
    best64 = max(b64, key=lambda r: r["ours_clips_per_s"])
    best1 = min(b1, key=lambda r: r["ours_ms_per_batch"])
    print("\ntargets (base32, bf16):")
    print(f"  B=64 throughput: {best64['ours_clips_per_s']:.0f} clips/s ({best64['variant']}), target "
          f"{TARGET_CLIPS_PER_S}: {'met' if best64['ours_clips_per_s'] >= TARGET_CLIPS_PER_S else 'MISSED'}; "
          f"transformers {best64['ref_clips_per_s']:.0f}, ratio {best64['ratio']:.2f}x")
    print(f"  B=1 latency: {best1['ours_ms_per_batch']:.2f} ms ({best1['variant']}), target {TARGET_LATENCY_MS} ms: "
          f"{'met' if best1['ours_ms_per_batch'] <= TARGET_LATENCY_MS else 'MISSED'}; "
          f"transformers {best1['ref_ms_per_batch']:.2f} ms")
    host64, host1 = max(r["ours_host_clips_per_s"] for r in b64), 1000 / max(r["ours_host_clips_per_s"] for r in b1)
    print(f"  whole call, B=64: {host64:.0f} clips/s, target {TARGET_HOST_CLIPS_PER_S}: "
          f"{'met' if host64 >= TARGET_HOST_CLIPS_PER_S else 'MISSED'}; B=1: {host1:.2f} ms, target "
          f"{TARGET_HOST_LATENCY_MS} ms: {'met' if host1 <= TARGET_HOST_LATENCY_MS else 'MISSED'}")
    fp8 = [r for r in rows if r["config"] == "base32" and r["dtype"] == "float8" and r["batch"] == 64]
    if fp8:
        best = max(fp8, key=lambda r: r["ours_clips_per_s"])
        print(f"  float8 B=64: {best['ours_clips_per_s']:.0f} clips/s ({best['variant']}), target "
              f"{TARGET_FLOAT8_CLIPS_PER_S}: {'met' if best['ours_clips_per_s'] >= TARGET_FLOAT8_CLIPS_PER_S else 'MISSED'};"
              f" {best['ours_clips_per_s'] / best64['ours_clips_per_s']:.2f}x bf16's best (accuracy: "
              "bench/results/precision-gpu.json)")
    worst = max(target, key=lambda r: r["rel_error_vs_ref_fp32"])
    print(f"  logits relative error (worst bf16 row): {worst['rel_error_vs_ref_fp32']:.1e}, target {TARGET_ERROR:g}: "
          f"{'met' if worst['rel_error_vs_ref_fp32'] <= TARGET_ERROR else 'MISSED'} (transformers' own bf16: "
          f"{worst['ref_rel_error_vs_ref_fp32']:.1e}; embeddings {worst['embed_rel_error_vs_ref_fp32']:.1e}; "
          "random weights, see bench/model.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
