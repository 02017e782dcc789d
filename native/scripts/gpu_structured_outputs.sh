#!/usr/bin/env bash
# Structured outputs on a GPU machine: the token-mask path of the CUDA engine
# at the 20b shape, step time with every row constrained vs none at batch 1
# and 64 (bench/structured-outputs.ts; targets: masking <= 10 % of the step at
# batch 1 and <= 5 % at batch 64).
#
#   native/scripts/gpu_structured_outputs.sh [MODEL_DIR] [OUT_DIR]
#
# MODEL_DIR defaults to the 20b checkpoint gpu_check_bench.sh writes
# (/tmp/gptoss-models/20b); it is generated when absent. Needs node and the
# repository's node_modules (npm ci). The CUDA mask kernel itself is checked
# by gptoss-cuda-kernel-check (apply_token_masks + sample_rows vs the CPU
# Sampler), which gpu_check_bench.sh runs.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
model="${1:-${GPTOSS_MODELS:-/tmp/gptoss-models}/20b}"
out="${2:-${OUT:-$PWD/gpu-out}}"
mkdir -p "$out"
cd "$root"
command -v node >/dev/null && [ -d node_modules/@mlc-ai/web-xgrammar ] ||
  { echo "needs node and the repository's node_modules (npm ci)"; exit 1; }
# The addon built here finds nvcc and links the CUDA backend.
node scripts/build-native.mjs >"$out/structured_build.log" 2>&1 || { tail -30 "$out/structured_build.log"; exit 1; }
if [ ! -f "$model/config.json" ]; then
  echo "generating the 20b checkpoint in $model"
  native/build/gptoss-gen-model --preset 20b --out "$model" >"$out/structured_gen.log" 2>&1 || { tail "$out/structured_gen.log"; exit 1; }
fi
BENCH_MODEL_DIR="$model" BENCH_BACKEND=cuda timeout 500 node --import tsx bench/structured-outputs.ts 2>&1 |
  tee "$out/structured.log"
exit "${PIPESTATUS[0]}"
