#!/usr/bin/env bash
# GPU check and benchmarks in one go, for a machine with an NVIDIA GPU, PyTorch and no network:
#   bash bench/gpu.sh            (uses .venv/bin/python when present, else python3; PY=... overrides)
# 1. correctness: our logits against transformers' float32 XCLIPModel on the GPU, same random weights,
#    float32 and bf16, relative error at most 1e-2 (bench/model.py --max-error);
# 2. speed: bench/model.py's grid (base32 and base16, B 1/8/32/64, float32 and bf16, 16 labels), eager;
# 3. the targets' rows again with our side compiled as a replica runs it on a GPU (torch.compile,
#    CUDA graphs): base32, bf16, B 1 and 64.
# Prints the tables and writes bench/results/model-gpu.json and model-gpu-compiled.json.
# Needs transformers (the oracle).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"bench/gpu.sh: no CUDA device visible to torch {torch.__version__}")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PYEOF
status=0
timeout 170 "$PY" bench/model.py --device cuda --configs base32,base16 --batch-sizes 1,8,32,64 \
    --dtypes float32,bfloat16 --seconds 1 --rounds 2 --max-error 1e-2 --out bench/results/model-gpu.json || status=1
timeout 120 "$PY" bench/model.py --device cuda --configs base32 --batch-sizes 1,64 --dtypes bfloat16 --compile \
    --seconds 1 --rounds 2 --max-error 1e-2 --out bench/results/model-gpu-compiled.json || status=1
exit $status
