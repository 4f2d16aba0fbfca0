#!/usr/bin/env bash
# One call on the GPU machine: build (or reuse prebuilt binaries), run the CUDA tests, one
# time ropex's kernels and the PyTorch peers, write the report, then one compute-sanitizer pass.
#   bench/gpu/run.sh [--quick]          outputs under $OUT (default ./gpu-out)
# Needs .deps/ (scripts/stage_device_deps.sh) when the machine lacks xtensor/CLI11/doctest/...
# Prebuilt binaries: set ROPEX_GPU_BIN=dir holding test_cuda_rope, test_cuda_attention, bench_gpu.
set -uo pipefail
source "$(dirname "$0")/common.sh"
QUICK=${1:-}
exec > >(tee -a "$OUT/run.log") 2>&1  # one log file (the device call returns at most 8 files)

log "card"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit,driver_version --format=csv

BIN=${ROPEX_GPU_BIN:-}
if [ -n "$BIN" ] && [ -d "$BIN/lib" ]; then export LD_LIBRARY_PATH="$PWD/$BIN/lib:${LD_LIBRARY_PATH:-}"; fi
if [ -z "$BIN" ] || ! "$BIN/test_cuda_rope" --list-test-cases >/dev/null 2>&1; then
  log "build (prebuilt binaries absent or not runnable here)"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DROPEX_CUDA=ON -DROPEX_BUILD_EXAMPLES=OFF \
        -DROPEX_BUILD_BENCH=OFF -DROPEX_INSTALL=OFF -DCMAKE_CUDA_ARCHITECTURES=90a \
        -DCMAKE_PREFIX_PATH="$PWD/.deps" > "$OUT/build.log" 2>&1 &&
  cmake --build build-gpu --target test_cuda_rope test_cuda_attention test_cuda_flash_sm90 bench_gpu -j"$(nproc)" >> "$OUT/build.log" 2>&1 ||
    { tail -40 "$OUT/build.log"; exit 1; }
  mkdir -p build-gpu/run && cp build-gpu/tests/cuda/test_cuda_* build-gpu/bin/bench_gpu build-gpu/run/
  BIN=build-gpu/run
fi

log "tests"
status=0
for t in test_cuda_rope test_cuda_attention test_cuda_flash_sm90; do
  timeout 240 "$BIN/$t" 2>&1 | tail -60 || status=1  # test_cuda_attention: 136 s warm, past 150 s cold
done

log "ropex benchmarks"
timeout 180 "$BIN/bench_gpu" "$OUT/ropex.json" $QUICK 2>&1
log "PyTorch peers"
timeout 200 python3 bench/gpu/peers.py --out "$OUT/peers.json" $QUICK 2>&1 | grep -v Warning | tail -60
log "report"
python3 bench/gpu/report.py "$OUT/ropex.json" "$OUT/peers.json" --out-dir "$OUT"
log "compute-sanitizer (quick sizes)"
ROPEX_CUDA_TEST_QUICK=1 timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/test_cuda_attention" \
  -tc='*odd sizes*,*split*,*fused*,*head-major*,*KV 1..100K*' 2>&1 | tail -8 || status=1
ROPEX_CUDA_TEST_QUICK=1 timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 "$BIN/test_cuda_attention" \
  -tc='*tiling variant*,*fused*,*head-major*' 2>&1 | tail -5 || status=1
ROPEX_CUDA_TEST_QUICK=1 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/test_cuda_flash_sm90" 2>&1 | tail -4 || status=1
ROPEX_CUDA_TEST_QUICK=1 timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 "$BIN/test_cuda_flash_sm90" \
  -tc='*RoPE*' 2>&1 | tail -3 || status=1
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/test_cuda_rope" 2>&1 | tail -4 || status=1

log "done (tests/sanitizer status $status)"
exit $status
