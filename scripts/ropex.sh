#!/usr/bin/env bash
# Installs what is missing, builds the ropex CLI (Release) and runs it.
# With no arguments it runs the main job on built-in defaults:
#   LLaMA-2-7B's predicted supported context after tuning with base 1,000,000.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh" >&2
if [ ! -x "$root/build-release/bin/ropex" ] || [ -n "$(find "$root/include" "$root/examples" -newer "$root/build-release/bin/ropex" -print -quit)" ]; then
  cmake -S "$root" -B "$root/build-release" -DCMAKE_BUILD_TYPE=Release -DROPEX_BUILD_TESTS=OFF -DROPEX_BUILD_BENCH=OFF >&2
  cmake --build "$root/build-release" --target ropex_cli -j"$(nproc)" >&2
fi
if [ $# -eq 0 ]; then
  set -- predict --model llama2-7b --base 1000000
fi
exec "$root/build-release/bin/ropex" "$@"
