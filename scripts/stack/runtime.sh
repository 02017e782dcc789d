# Sourced by scripts/gpu-stack.sh: makes node, deno (node_modules/.bin/deno),
# redis-server and node_modules available. Where they are installed (a dev
# machine, CI) nothing happens; on a host without them (the GPU machines) they
# are unpacked from .stack-runtime/, made by scripts/stack/pack-runtime.sh, into
# $STACK_RUNTIME_DIR (default /tmp/stack-runtime) and put first on PATH.
# Exports NODE_API_INCLUDE when Node's headers had to come from the pack.
# xz -dc, or Python's lzma where xz is not installed.
stack_unxz() {
  if command -v xz >/dev/null; then xz -dc "$1"; else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; fi
}

stack_runtime_setup() {
  local root="$1" pack="$1/.stack-runtime" dir="${STACK_RUNTIME_DIR:-/tmp/stack-runtime}"
  unpack_needed() { [ -f "$pack/$1" ] || { echo "missing $pack/$1: run scripts/stack/pack-runtime.sh where Node is installed, and carry .stack-runtime" >&2; return 1; }; }
  mkdir -p "$dir/bin"
  if ! command -v node >/dev/null; then
    unpack_needed node.xz || return 1
    stack_unxz "$pack/node.xz" >"$dir/bin/node" && chmod +x "$dir/bin/node"
  fi
  if ! command -v redis-server >/dev/null; then
    unpack_needed redis-headers.tar.xz || return 1
    stack_unxz "$pack/redis-headers.tar.xz" | tar -C "$dir" -x
    # A wrapper, so the carried libraries are seen by redis-server alone.
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/redis/lib exec %s/redis/redis-server "$@"\n' "$dir" "$dir" >"$dir/bin/redis-server"
    chmod +x "$dir/bin/redis-server"
  fi
  if [ ! -d /usr/include/node ] && [ ! -d /usr/local/include/node ]; then
    [ -d "$dir/node-include" ] || { unpack_needed redis-headers.tar.xz && stack_unxz "$pack/redis-headers.tar.xz" | tar -C "$dir" -x; } || return 1
    export NODE_API_INCLUDE="$dir/node-include"
  fi
  if [ ! -d "$root/node_modules/bullmq" ]; then
    unpack_needed node_modules.tar.xz || return 1
    stack_unxz "$pack/node_modules.tar.xz" | tar -C "$root" -x
  fi
  if [ ! -x "$root/node_modules/deno/deno" ]; then
    unpack_needed deno.xz || return 1
    stack_unxz "$pack/deno.xz" >"$root/node_modules/deno/deno" && chmod +x "$root/node_modules/deno/deno"
    mkdir -p "$root/node_modules/.bin" && ln -sf ../deno/deno "$root/node_modules/.bin/deno"
  fi
  export PATH="$dir/bin:$PATH"
  echo "runtime: node $(node --version), $(redis-server --version | cut -d' ' -f1-3), $("$root/node_modules/.bin/deno" --version | head -1)"
}
