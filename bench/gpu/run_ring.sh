#!/usr/bin/env bash
# One GPU-machine call for context-parallel ring attention on one GPU: builds the CPU schedule test,
# the CUDA ring test and the ring overhead bench against NCCL (the CUDA toolkit's, or PyTorch's
# nvidia-nccl wheel through NCCL_HOME), runs the tests (the CUDA one under compute-sanitizer
# racecheck/memcheck in quick form too) and the bench.
#   bench/gpu/run_ring.sh          outputs under $OUT (default ./gpu-out)
# Carry .deps (scripts/stage_device_deps.sh).
set -uo pipefail
source "$(dirname "$0")/common.sh"
exec > >(tee -a "$OUT/ring.log") 2>&1
T0=$(date +%s)
status=0
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ ! -e /usr/local/cuda/include/nccl.h ] && [ -z "${NCCL_HOME:-}" ]; then
  nccl_py=$(python3 -c "import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])" 2>/dev/null || true)
  if [ -n "$nccl_py" ]; then
    export NCCL_HOME="$PWD/build-nccl"  # the wheel ships libnccl.so.2 only: give find_library its name
    mkdir -p "$NCCL_HOME/lib"
    ln -sfn "$nccl_py/include" "$NCCL_HOME/include"
    ln -sf "$nccl_py/lib/libnccl.so.2" "$NCCL_HOME/lib/libnccl.so"
    export LD_LIBRARY_PATH="$nccl_py/lib:${LD_LIBRARY_PATH:-}"
  fi
fi
echo "NCCL_HOME=${NCCL_HOME:-/usr/local/cuda}"
cmake -S . -B build-ring -G Ninja -DCMAKE_BUILD_TYPE=Release -DROPEX_CUDA=ON -DROPEX_BUILD_EXAMPLES=OFF \
      -DROPEX_BUILD_BENCH=OFF -DROPEX_INSTALL=OFF -DROPEX_BLAS=OFF -DCMAKE_CUDA_ARCHITECTURES=90a \
      -DCMAKE_PREFIX_PATH="$PWD/.deps" > "$OUT/build_ring.log" 2>&1 &&
  cmake --build build-ring --target test_context_parallel test_ring_attention ring -j"$(nproc)" >> "$OUT/build_ring.log" 2>&1 ||
  { grep -E "NCCL|error" "$OUT/build_ring.log" | head -30; tail -30 "$OUT/build_ring.log"; exit 1; }
log "built ($(( $(date +%s) - T0 )) s)"
run() {  # name, then the command
  local name=$1; shift
  timeout 400 "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  grep -E "ERROR SUMMARY|test cases|assertions|ERROR|error|T=" "$OUT/$name.log" | tail -24
  echo "$name: exit $rc"; [ $rc = 0 ] || status=1
}
run context_parallel_cpu build-ring/tests/test_context_parallel
run ring_cuda build-ring/tests/cuda/test_ring_attention
run ring_bench build-ring/bin/ring "$OUT/ring.json"
log "done ($(( $(date +%s) - T0 )) s), status $status"
exit $status
