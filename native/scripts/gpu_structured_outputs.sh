#!/usr/bin/env bash
# Structured outputs on a GPU machine: the token-mask path of the CUDA engine
# at the 20b shape, step time with every row constrained vs none at batch 1
# and 64 (bench/structured-outputs.ts; targets: masking <= 10 % of the step at
# batch 1 and <= 5 % at batch 64).
#
#   native/scripts/gpu_structured_outputs.sh [MODEL_DIR] [OUT_DIR]
#
# MODEL_DIR defaults to the 20b checkpoint gpu_check_bench.sh writes
# (/tmp/gptoss-models/20b); it is generated when absent. Node and node_modules
# come from the machine or, on the lent GPU hosts, from .stack-runtime/ as for
# scripts/gpu-stack.sh (carry it; scripts/stack/pack-runtime.sh makes it). The
# CUDA mask kernel itself is checked by gptoss-cuda-kernel-check
# (apply_token_masks + sample_rows vs the CPU Sampler), which
# gpu_check_bench.sh runs in its `kernels` stage.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
model="${1:-${GPTOSS_MODELS:-/tmp/gptoss-models}/20b}"
out="${2:-${OUT:-$PWD/gpu-out}}"
mkdir -p "$out"
cd "$root"
# shellcheck source=../../scripts/stack/runtime.sh
source "$root/scripts/stack/runtime.sh"
stack_runtime_setup "$root" || exit 1
# The engine and its addon, with the CUDA backend (as scripts/gpu-stack.sh builds them).
cmake -S native -B native/build -DCMAKE_BUILD_TYPE=Release -Wno-dev --log-level=WARNING \
  -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" $(command -v ninja >/dev/null && echo -G Ninja) \
  ${NODE_API_INCLUDE:+-DNODE_API_INCLUDE="$NODE_API_INCLUDE"} >"$out/structured_build.log" 2>&1 &&
  cmake --build native/build -j"$(nproc)" >>"$out/structured_build.log" 2>&1 || { tail -40 "$out/structured_build.log"; exit 1; }
[ -f native/build/gptoss_node.node ] || { echo "the N-API addon was not built (Node's headers missing?)"; exit 1; }
if [ ! -f "$model/config.json" ]; then
  echo "generating the 20b checkpoint in $model"
  native/build/gptoss-gen-model --preset 20b --out "$model" >"$out/structured_gen.log" 2>&1 || { tail "$out/structured_gen.log"; exit 1; }
fi
BENCH_MODEL_DIR="$model" BENCH_BACKEND=cuda timeout 500 node --import tsx bench/structured-outputs.ts 2>&1 |
  tee "$out/structured.log"
exit "${PIPESTATUS[0]}"
