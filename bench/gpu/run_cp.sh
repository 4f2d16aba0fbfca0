#!/usr/bin/env bash
# One GPU-machine call for context-parallel perplexity on one GPU (ranks as repeated devices):
# builds test_cuda_cp_perplexity, test_ring_attention and the CLI against NCCL (the CUDA toolkit's,
# or PyTorch's nvidia-nccl wheel through NCCL_HOME), runs the tests, then times
# `ropex perplexity --device cuda` on stories260K, one GPU against --gpus 1 / 0,0 / 0,0,0,0 (NCCL)
# and 0,0 (streams), 16K-token windows, and prints tokens/s and each run's perplexity.
#   bench/gpu/run_cp.sh            outputs under $OUT (default ./gpu-out)
# Carry .deps (scripts/stage_device_deps.sh), with stories260K.bin copied to .deps/data/ (or set
# ROPEX_STORIES260K).
set -uo pipefail
source "$(dirname "$0")/common.sh"
exec > >(tee -a "$OUT/cp.log") 2>&1
T0=$(date +%s)
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
source bench/gpu/nccl_env.sh  # (common.sh made the repository root the working directory)
for p in "${ROPEX_STORIES260K:-}" .deps/data/stories260K.bin ../shared/data/stories260K.bin; do
  if [ -n "$p" ] && [ -f "$p" ]; then export ROPEX_STORIES260K=$(realpath "$p"); break; fi
done
echo "ROPEX_STORIES260K=${ROPEX_STORIES260K:-not found}"
cmake -S . -B build-cp -G Ninja -DCMAKE_BUILD_TYPE=Release -DROPEX_CUDA=ON -DROPEX_BUILD_BENCH=OFF -DROPEX_INSTALL=OFF \
      -DROPEX_BLAS=OFF -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_PREFIX_PATH="$PWD/.deps" > "$OUT/build_cp.log" 2>&1 &&
  cmake --build build-cp --target test_cuda_cp_perplexity test_ring_attention ropex_cli -j"$(nproc)" >> "$OUT/build_cp.log" 2>&1 ||
  { grep -E "NCCL|error" "$OUT/build_cp.log" | head -30; tail -30 "$OUT/build_cp.log"; exit 1; }
log "built ($(( $(date +%s) - T0 )) s)"
run() {  # name, then the command
  local name=$1; shift
  timeout 400 "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  grep -E "MESSAGE|perplexity|ERROR|error|test cases|assertions" "$OUT/$name.log" | tail -60
  echo "$name: exit $rc"; [ $rc = 0 ] || status=1
}
run cp_cuda build-cp/tests/cuda/test_cuda_cp_perplexity
run ring_cuda build-cp/tests/cuda/test_ring_attention

if [ -n "${ROPEX_STORIES260K:-}" ] && [ -f "$ROPEX_STORIES260K" ]; then
  log "timing: stories260K, 4 windows of 16384 tokens"
  python3 -c "
import random; random.seed(7)
print(' '.join(str(random.randrange(512)) for _ in range(4 * 16384 + 1)))" > /tmp/cp_tokens.txt
  ppl() {  # name, then extra flags
    local name=$1; shift
    timeout 300 build-cp/bin/ropex perplexity --device cuda --model "$ROPEX_STORIES260K" --tokens /tmp/cp_tokens.txt \
      --context 16384 --json "$@" > "$OUT/cp_$name.json" 2> "$OUT/cp_$name.err" || { echo "$name failed"; tail -3 "$OUT/cp_$name.err"; status=1; }
  }
  ppl one
  ppl r1_nccl --gpus 1
  ppl r2_nccl --gpus 0,0
  ppl r4_nccl --gpus 0,0,0,0
  ppl r2_streams --gpus 0,0 --cp-transport streams
  python3 - "$OUT" <<'PY' || status=1
import json, os, sys
out = sys.argv[1]
one = json.load(open(os.path.join(out, "cp_one.json")))
print(f"{'run':12} {'perplexity':>12} {'rel diff':>10} {'seconds':>9} {'tokens/s':>10}  device")
bad = False
for n in ["one", "r1_nccl", "r2_nccl", "r4_nccl", "r2_streams"]:
    p = os.path.join(out, f"cp_{n}.json")
    if not os.path.exists(p) or os.path.getsize(p) == 0:
        print(f"{n:12} missing"); bad = True; continue
    j = json.load(open(p))
    rel = abs(j["mean_nll"] - one["mean_nll"]) / abs(one["mean_nll"])
    bad |= rel > 1e-3
    print(f"{n:12} {j['perplexity']:12.4f} {rel:10.2e} {j['gpu']['seconds']:9.3f} {j['tokens'] / j['gpu']['seconds']:10.0f}  {j['gpu']['device']}")
sys.exit(1 if bad else 0)
PY
else
  echo "timing skipped: stories260K.bin not found"; status=1
fi
log "done ($(( $(date +%s) - T0 )) s), status $status"
exit $status
