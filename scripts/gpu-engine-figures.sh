#!/usr/bin/env bash
# The engine's GPU figures (issue 16, item 5), for a session that has a GPU. Prepared on a CPU-only
# machine and NOT yet run there. It writes everything under ${OUT:-gpu-figures}/ and keeps going
# past a failing step, so one run gives every figure it can within about 10 minutes on an H200:
#   1. the ~1 B LLaMA-shaped fp16 model with 64 adapters, against the base-only ceiling (target 0.9x);
#   2. the grid benchmark at default settings on the GPU (quick grid: 12 points);
#   3. the model zoo's equivalence tests on CUDA are not part of this: they pin device="cpu".
# Usage: bash scripts/gpu-engine-figures.sh   (from the repository root, after `make env`)
set -uo pipefail
OUT=${OUT:-gpu-figures}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' | tee "$OUT/torch.txt"

echo "== 1. ~1B fp16, 64 adapters (bench.engine --large)"
timeout 420 "$PY" -m saigon_runtime.bench.engine --device cuda --large --repeats 3 \
    --json "$OUT/engine-large.json" --plot "$OUT/engine-large.png" 2>&1 | tee "$OUT/engine-large.txt"

echo "== 2. grid at default settings on the GPU (--quick)"
timeout 300 "$PY" -m saigon_runtime.bench.grid --device cuda --quick --rounds 3 \
    --json "$OUT/grid-quick.json" --plot "$OUT/grid-quick.png" 2>&1 | tee "$OUT/grid-quick.txt"

grep -h "ratio Saigon / base ceiling\|worst" "$OUT"/*.txt || true
