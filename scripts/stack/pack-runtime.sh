#!/usr/bin/env bash
# Packs what the stack needs to run on a GPU host that has no Node, Deno, Redis
# or network (the device machines of docs/PERFORMANCE.md "GPU stack"): this
# machine's node binary, the Deno binary from node_modules, redis-server with
# the shared libraries it links, Node's N-API headers and the runtime part of
# node_modules, each compressed with xz. scripts/stack/runtime.sh unpacks them
# there. Output: .stack-runtime/ (git-ignored), about 60 MiB; run it again after
# `npm ci` or a dependency change.
#
#   scripts/stack/pack-runtime.sh [OUT_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$root/.stack-runtime}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
xzc() { xz -T0 -9 -c; }

# Node: a stripped copy of this machine's binary (it needs glibc 2.28 and libstdc++ only).
cp "$(command -v node)" "$work/node" && strip "$work/node"
xzc <"$work/node" >"$out/node.xz"
# Deno ships stripped; node_modules/.bin/deno is what scripts/lib/local-stack.ts starts.
xzc <"$root/node_modules/deno/deno" >"$out/deno.xz"

# redis-server and every library it links except glibc's own.
mkdir -p "$work/redis/lib"
cp "$(readlink -f "$(command -v redis-server)")" "$work/redis/redis-server"
ldd "$work/redis/redis-server" | awk '$3 ~ /^\// {print $3}' |
  grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' | xargs -I{} cp -L {} "$work/redis/lib/"
# N-API is C and self-contained: the addon builds against these headers alone.
mkdir -p "$work/node-include"
cp /usr/include/node/{node_api.h,node_api_types.h,js_native_api.h,js_native_api_types.h} "$work/node-include/"
tar -C "$work" -c redis node-include | xzc >"$out/redis-headers.tar.xz"

# node_modules as installed, without what only the browser tests, the type
# checker and the property tests use, Deno's binary (packed above), type
# declarations, source maps and the TypeScript sources two packages ship beside
# their built files (openai, zod: Node and tsx load the built ones).
cd "$root"
tar -c --exclude='node_modules/@deno' --exclude='node_modules/deno/deno' --exclude='node_modules/playwright-core' \
  --exclude='node_modules/@types' --exclude='node_modules/fast-check' --exclude='node_modules/pure-rand' \
  --exclude='*.d.ts' --exclude='*.d.mts' --exclude='*.d.cts' --exclude='*.map' \
  --exclude='node_modules/openai/src' --exclude='node_modules/zod/src' \
  --exclude='js-tiktoken/dist/ranks/[!o]*' node_modules | xzc >"$out/node_modules.tar.xz"
du -b "$out"/* | awk '{ s += $1; print } END { printf "total %.1f MiB\n", s / 1048576 }'
