#!/usr/bin/env bash
# Sliding windows on the GPU machine, in two steps (each under a device call's 10 minutes):
#   bench/gpu/run_window.sh test    build the CUDA tests and bench/gpu/window.cu (this tree, and the
#                                   base tree's headers for the window-0 comparison), run every CUDA
#                                   test, then compute-sanitizer memcheck on the window cases
#   bench/gpu/run_window.sh bench   window.cu: base, this tree, base, this tree (same card, same
#                                   process order), then the 7B-shaped model once each
# Before the call, on the host: scripts/stage_device_deps.sh (carry .deps) and the base tree's
# headers: mkdir -p build-base/src && git archive BASE include | tar -x -C build-base/src (carry
# build-base). Outputs under $OUT (default ./gpu-out).
set -uo pipefail
source "$(dirname "$0")/common.sh"
STEP=${1:-test}
exec > >(tee -a "$OUT/window_$STEP.log") 2>&1
T0=$(date +%s)
status=0
NVCC_FLAGS=(-std=c++20 -O3 -DNDEBUG -lineinfo -gencode arch=compute_90a,code=sm_90a -DROPEX_HAS_CUDA=1 -DROPEX_CUDA_SM90A=1
            --expt-relaxed-constexpr --extended-lambda -I.deps/include -I.deps/include/eigen3 -lcublas -lcublasLt -lcuda)

if [ "$STEP" = test ]; then
  log "card"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
  log "build"
  mkdir -p build-window
  nvcc "${NVCC_FLAGS[@]}" -Ibuild-base/src/include bench/gpu/window.cu -o build-window/window_base > "$OUT/build_base.log" 2>&1 &
  p1=$!
  nvcc "${NVCC_FLAGS[@]}" -Iinclude bench/gpu/window.cu -o build-window/window_new > "$OUT/build_new.log" 2>&1 &
  p2=$!
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DROPEX_CUDA=ON -DROPEX_BUILD_EXAMPLES=ON \
        -DROPEX_BUILD_BENCH=OFF -DROPEX_INSTALL=OFF -DROPEX_BLAS=OFF -DCMAKE_CUDA_ARCHITECTURES=90a \
        -DCMAKE_PREFIX_PATH="$PWD/.deps" > "$OUT/build.log" 2>&1 &&
    cmake --build build-gpu --target test_cuda_attention test_cuda_flash_sm90 test_cuda_ops test_cuda_rope test_cuda_llama ropex_cli \
          -j"$(nproc)" >> "$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; status=1; }
  wait $p1 || tail -30 "$OUT/build_base.log"  # the benches need it, the tests do not
  wait $p2 || tail -30 "$OUT/build_new.log"
  log "built ($(( $(date +%s) - T0 )) s)"
  [ $status = 0 ] || exit $status
  B=build-gpu/tests/cuda
  [ -f .deps/data/stories260K.bin ] && export ROPEX_STORIES260K=$PWD/.deps/data/stories260K.bin
  log "tests (concurrently; each to its own log)"
  pids=()
  for t in test_cuda_attention test_cuda_flash_sm90 test_cuda_llama test_cuda_ops test_cuda_rope; do
    ( timeout 400 "$B/$t" > "$OUT/$t.log" 2>&1; echo "exit $?" >> "$OUT/$t.log" ) &
    pids+=($!)
  done
  ( ROPEX_CUDA_TEST_QUICK=1 timeout 400 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/test_cuda_attention" \
      -tc='*sliding window*' > "$OUT/memcheck_attention.log" 2>&1; echo "exit $?" >> "$OUT/memcheck_attention.log"
    ROPEX_CUDA_TEST_QUICK=1 timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/test_cuda_flash_sm90" \
      -tc='*sliding window*' > "$OUT/memcheck_sm90.log" 2>&1; echo "exit $?" >> "$OUT/memcheck_sm90.log" ) &
  pids+=($!)
  for p in "${pids[@]}"; do wait "$p"; done
  for f in test_cuda_attention test_cuda_flash_sm90 test_cuda_llama test_cuda_ops test_cuda_rope memcheck_attention memcheck_sm90; do
    log "$f"
    grep -E "MESSAGE|max \||NMSE|window|ERROR|FAILED|failed|passed|Summary|exit " "$OUT/$f.log" | grep -v "^$" | tail -40
    tail -1 "$OUT/$f.log" | grep -q "exit 0" || status=1
  done
  log "done in $(( $(date +%s) - T0 )) s (status $status)"
  exit $status
fi

# bench: kernels twice each, interleaved, then the model once each (its weights written first).
for i in 1 2; do
  for tree in base new; do
    log "kernels: $tree ($i)"
    ROPEX_BENCH_OPS=prefill,decode timeout 150 build-window/window_$tree "$OUT/window_${tree}_$i.json" || status=1
  done
done
for tree in base new; do
  log "model: $tree"
  ROPEX_BENCH_OPS=model timeout 200 build-window/window_$tree "$OUT/model_$tree.json" /tmp/llama7b_shaped "${ROPEX_MODEL_LAYERS:-32}" || status=1
done
log "done in $(( $(date +%s) - T0 )) s (status $status)"
exit $status
