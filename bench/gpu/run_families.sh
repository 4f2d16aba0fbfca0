#!/usr/bin/env bash
# One short GPU-machine call for the model-family work: builds the CUDA CLI, the window benches
# (this tree and the base tree's headers, as run_window.sh does) and the three CUDA tests that
# cover windows and families; runs the window and family test cases (sliding-window kernels under
# compute-sanitizer memcheck too), then the window-0 / window timing (run_window.sh bench).
# The full CUDA test list is run_window.sh test; this is the quick form for a small device budget.
#   bench/gpu/run_families.sh            outputs under $OUT (default ./gpu-out)
# Carry .deps (scripts/stage_device_deps.sh) and build-base (git archive 837bda5 include).
set -uo pipefail
source "$(dirname "$0")/common.sh"
exec > >(tee -a "$OUT/families.log") 2>&1
T0=$(date +%s)
status=0
NVCC_FLAGS=(-std=c++20 -O3 -DNDEBUG -lineinfo -gencode arch=compute_90a,code=sm_90a -DROPEX_HAS_CUDA=1 -DROPEX_CUDA_SM90A=1
            --expt-relaxed-constexpr --extended-lambda -I.deps/include -I.deps/include/eigen3 -lcublas -lcublasLt -lcuda)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
mkdir -p build-window
nvcc "${NVCC_FLAGS[@]}" -Ibuild-base/src/include bench/gpu/window.cu -o build-window/window_base > "$OUT/build_base.log" 2>&1 &
p1=$!
nvcc "${NVCC_FLAGS[@]}" -Iinclude bench/gpu/window.cu -o build-window/window_new > "$OUT/build_new.log" 2>&1 &
p2=$!
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DROPEX_CUDA=ON -DROPEX_BUILD_EXAMPLES=ON \
      -DROPEX_BUILD_BENCH=OFF -DROPEX_INSTALL=OFF -DROPEX_BLAS=OFF -DCMAKE_CUDA_ARCHITECTURES=90a \
      -DCMAKE_PREFIX_PATH="$PWD/.deps" > "$OUT/build.log" 2>&1 &&
  cmake --build build-gpu --target test_cuda_attention test_cuda_flash_sm90 test_cuda_llama ropex_cli -j"$(nproc)" \
        >> "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
wait $p1 || { tail -20 "$OUT/build_base.log"; status=1; }
wait $p2 || { tail -20 "$OUT/build_new.log"; status=1; }
log "built ($(( $(date +%s) - T0 )) s)"
B=build-gpu/tests/cuda
run() {  # name, then the command
  local name=$1; shift
  timeout 300 "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  grep -E "MESSAGE: (llama_bias|smollm2|mistral|qwen2|qwen3|phi3|window)|ERROR SUMMARY|test cases|assertions|ERROR" "$OUT/$name.log" | tail -14
  echo "$name: exit $rc"; [ $rc = 0 ] || status=1
}
run attention_window "$B/test_cuda_attention" -tc='*window*'
run sm90_window "$B/test_cuda_flash_sm90" -tc='*window*'
run llama_families "$B/test_cuda_llama" -tc='*famil*,*window*'
run memcheck_window env ROPEX_CUDA_TEST_QUICK=1 compute-sanitizer --tool memcheck --error-exitcode 9 "$B/test_cuda_flash_sm90" -tc='*window*'
log "tests done ($(( $(date +%s) - T0 )) s)"
ROPEX_MODEL_LAYERS=${ROPEX_MODEL_LAYERS:-8} bash bench/gpu/run_window.sh bench > "$OUT/bench.log" 2>&1 || status=1
grep -E "^prefill|^model" "$OUT/bench.log" | tail -40
log "done ($(( $(date +%s) - T0 )) s, status $status)"
exit $status
