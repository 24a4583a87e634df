#!/usr/bin/env bash
# GPU check and benchmarks in one go, for a machine with an NVIDIA GPU, PyTorch and no network
# (about 5 minutes on an H200: 312 s on 2026-11-27 with 0.5 s timing windows, since cut to 0.3 s,
# which should save about 20 s, not yet rerun; a third of it is torch.compile, ~20 s a compile;
# step 4's float8 and precision runs, added since, not yet run on a GPU: perhaps 2 minutes more):
#   bash bench/gpu.sh            (uses .venv/bin/python when present, else python3; PY=... overrides)
# 1. correctness of the replica's fast path (bench/gpu_check.py): CUDA graphs replay what eager
#    computes, over uneven batches; bf16 and fp16 against float32 on trained weights (demo checkpoint);
# 2. the issue's grid (bench/model.py): base32 and base16, B 1/8/32/64, 16 labels, ours as a replica
#    runs on a GPU against transformers' XCLIPModel with the same random weights, bf16 (compiled,
#    CUDA graphs; with a profile at base32 B 64) and float32 (CUDA graphs), error bound 1e-2 as
#    bench/model.py --max-error defines it;
# 3. variants at the targets' rows (base32, B 1 and 64): bf16 eager (with a profile), fp16 CUDA
#    graphs without compile;
# 4. float8 (e4m3 GEMMs; GPUs with FP8 tensor cores) at base32, B 1/8/32/64, compiled with CUDA graphs,
#    and what it costs on trained weights (bench/precision.py: bf16, fp16, float8 against float32);
# 5. one table of everything, and the targets met or missed (bench/gpu_report.py).
# Writes bench/results/model-gpu*.json. Needs transformers (the oracle).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PY" - <<'PYEOF' || exit 1
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"bench/gpu.sh: no CUDA device visible to torch {torch.__version__}")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PYEOF
R=bench/results
BENCH=("$PY" bench/model.py --device cuda --labels 16 --frames 8 --rounds 2 --max-error 1e-2)
status=0
run() {
    local t=$1; shift
    timeout "$t" "$@" || { echo "bench/gpu.sh: FAILED ($?): $*"; status=1; }
    echo "bench/gpu.sh: ${SECONDS}s elapsed"
}
run 90 "$PY" bench/gpu_check.py
run 200 "${BENCH[@]}" --configs base32,base16 --batch-sizes 1,8,32,64 --dtypes bfloat16 --seconds 0.3 \
    --profile base32:bfloat16:64 --out $R/model-gpu.json
run 100 "${BENCH[@]}" --configs base32,base16 --batch-sizes 1,8,32,64 --dtypes float32 --compile off \
    --seconds 0.3 --out $R/model-gpu-fp32.json
run 60 "${BENCH[@]}" --configs base32 --batch-sizes 1,64 --dtypes bfloat16 --compile off --no-graphs \
    --seconds 0.3 --profile base32:bfloat16:64 --out $R/model-gpu-eager.json
run 50 "${BENCH[@]}" --configs base32 --batch-sizes 1,64 --dtypes float16 --compile off \
    --seconds 0.3 --out $R/model-gpu-fp16.json
if "$PY" -c "import sys, torch; from xclip_stream.pipeline.scoring import has_float8
sys.exit(not has_float8(torch.device('cuda')))"; then
    run 150 "${BENCH[@]}" --configs base32 --batch-sizes 1,8,32,64 --dtypes float8 --seconds 0.3 \
        --out $R/model-gpu-fp8.json
else
    echo "bench/gpu.sh: no FP8 tensor cores (compute capability under 8.9): float8 not run"
fi
run 90 "$PY" bench/precision.py --device cuda --out $R/precision-gpu.json
"$PY" bench/gpu_report.py $R/model-gpu.json $R/model-gpu-fp32.json $R/model-gpu-eager.json \
    $R/model-gpu-fp16.json $R/model-gpu-fp8.json || status=1
exit $status
