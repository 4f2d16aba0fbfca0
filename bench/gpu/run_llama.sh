#!/usr/bin/env bash
# The LLaMA-2-7B-shaped stack in one GPU-machine call: build the LLaMA-on-CUDA targets, run test_cuda_llama, make a
# LLaMA-2-7B-shaped random bf16 model with HF transformers (and time HF on it), check ropex's CLI
# logits against HF's on those weights, then time ropex (prefill, decode, 128K and 1M-token
# layer-streamed perplexity) and write the report.
#   bench/gpu/run_llama.sh [--quick]        outputs under $OUT (default ./gpu-out)
# ROPEX_BUILD_ONLY=1: build and run the tests, stop there; ROPEX_SKIP_TESTS=1: skip the tests (a
# second call on the same warm machine, with ROPEX_LLAMA_BIN=build-gpu-llama/run).
# Needs .deps/ (scripts/stage_device_deps.sh) when the machine lacks Eigen/xtensor/CLI11/doctest.
# Prebuilt binaries: ROPEX_LLAMA_BIN=dir holding test_cuda_llama, llama7b and ropex.
set -uo pipefail
source "$(dirname "$0")/common.sh"
QUICK=${1:-}
exec > >(tee -a "$OUT/llama.log") 2>&1
T_START=$(date +%s)
status=0

log "card"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv

BIN=${ROPEX_LLAMA_BIN:-}
if [ -z "$BIN" ] || ! "$BIN/test_cuda_llama" --list-test-cases >/dev/null 2>&1 || ! "$BIN/ropex" --help >/dev/null 2>&1; then
  log "build"
  cmake -S . -B build-gpu-llama -G Ninja -DCMAKE_BUILD_TYPE=Release -DROPEX_CUDA=ON -DROPEX_BUILD_BENCH=OFF \
        -DROPEX_INSTALL=OFF -DROPEX_BLAS=OFF -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_PREFIX_PATH="$PWD/.deps" \
        > "$OUT/llama_build.log" 2>&1 &&
  cmake --build build-gpu-llama --target test_cuda_llama test_cuda_ops test_cuda_rope llama7b ropex_cli -j"$(nproc)" >> "$OUT/llama_build.log" 2>&1 ||
    { tail -60 "$OUT/llama_build.log"; exit 1; }
  mkdir -p build-gpu-llama/run
  cp build-gpu-llama/tests/cuda/test_cuda_llama build-gpu-llama/tests/cuda/test_cuda_ops build-gpu-llama/tests/cuda/test_cuda_rope build-gpu-llama/bin/llama7b build-gpu-llama/bin/ropex build-gpu-llama/run/
  BIN=build-gpu-llama/run
fi
log "built ($(( $(date +%s) - T_START )) s so far)"

[ -f .deps/data/stories260K.bin ] && export ROPEX_STORIES260K=$PWD/.deps/data/stories260K.bin
if [ "${ROPEX_SKIP_TESTS:-0}" != 1 ]; then
  for t in test_cuda_ops test_cuda_rope; do
    log "$t"
    timeout 120 "$BIN/$t" 2>&1 | tail -8 || status=1
  done
  log "test_cuda_llama"
  timeout 240 "$BIN/test_cuda_llama" 2>&1 | tail -60 || status=1
fi
[ "${ROPEX_BUILD_ONLY:-0}" = 1 ] && { log "build + tests only (status $status)"; exit $status; }

MODEL=/tmp/llama7b
log "HF transformers: random 7B-shaped model, saved for ropex; HF prefill/decode timings"
rm -rf "$MODEL" "${MODEL}_L2"
timeout 300 python3 bench/gpu/llama7b_hf.py --dir "$MODEL" --out "$OUT/llama7b_hf.json" --few-layers 2 ${QUICK:+--quick} 2>&1 |
  grep -v -i warn || status=1

log "parity: ropex logits --device cuda (bf16 and f32) vs HF bf16 and HF fp32 on the same weights"
if [ -f "$MODEL/parity_tokens.npy" ]; then
  timeout 120 "$BIN/ropex" logits --device cuda --model "$MODEL" --tokens "$MODEL/parity_tokens.npy" --out /tmp/ropex_logits.npy &&
  timeout 180 "$BIN/ropex" logits --device cuda --dtype f32 --model "$MODEL" --tokens "$MODEL/parity_tokens.npy" --out /tmp/ropex_logits32.npy &&
  python3 - "$OUT/llama7b_parity.json" <<'EOF' || status=1
import json, os, sys
import numpy as np
L = lambda p: np.load(p).astype(np.float64)
r16, r32, h16 = L("/tmp/ropex_logits.npy"), L("/tmp/ropex_logits32.npy"), L("/tmp/llama7b/parity_hf_logits.npy")
h32 = L("/tmp/llama7b/parity_hf32_logits.npy") if os.path.exists("/tmp/llama7b/parity_hf32_logits.npy") else None
def cmp(a, b):
    return {"nmse": float(((a - b) ** 2).sum() / (b ** 2).sum()), "top1": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs": float(abs(a - b).max())}
out = {"ropex_bf16_vs_hf_bf16": cmp(r16, h16)}
if h32 is not None:
    out.update(ropex_bf16_vs_hf_fp32=cmp(r16, h32), hf_bf16_vs_hf_fp32=cmp(h16, h32), ropex_f32_vs_hf_fp32=cmp(r32, h32))
for k, v in out.items():
    print(f"{k}: NMSE {v['nmse']:.3e}, max abs {v['max_abs']:.3e}, top-1 agreement {100 * v['top1']:.1f}%")
# Pass: fp32 within 1e-3 of HF fp32; bf16 no further from the fp32 reference than HF's own bf16.
ok = h32 is not None and out["ropex_f32_vs_hf_fp32"]["max_abs"] <= 1e-3 and \
     out["ropex_bf16_vs_hf_fp32"]["nmse"] <= out["hf_bf16_vs_hf_fp32"]["nmse"]
out["pass"] = bool(ok)
print("7B parity:", "PASS" if ok else "FAIL")
out.update(nmse=out["ropex_bf16_vs_hf_bf16"]["nmse"], top1=out["ropex_bf16_vs_hf_bf16"]["top1"])
json.dump(out, open(sys.argv[1], "w"), indent=1)
sys.exit(0 if ok else 1)
EOF
fi

log "ropex: prefill, decode, perplexity 128K (32 layers) and 1M (2 layers) ($(( $(date +%s) - T_START )) s so far)"
timeout 330 "$BIN/llama7b" "$MODEL" "${MODEL}_L2" "$OUT/llama7b_ropex.json" $QUICK 2>&1 || status=1

log "report"
python3 bench/gpu/llama7b_report.py "$OUT/llama7b_ropex.json" "$OUT/llama7b_hf.json" --out "$OUT/llama7b_cases.json" \
  $( [ -f "$OUT/llama7b_parity.json" ] && echo --parity "$OUT/llama7b_parity.json" ) | tee "$OUT/llama7b.md" || status=1

log "CLI smoke: ropex perplexity --device cuda on the 2-layer model, 64K tokens"
python3 -c "import numpy as np; np.save('/tmp/ppl_tokens.npy', np.random.default_rng(0).integers(3, 32000, 65537).astype(np.int32))"
timeout 90 "$BIN/ropex" perplexity --device cuda --model "${MODEL}_L2" --tokens /tmp/ppl_tokens.npy --context 65536 --bins 4 --json \
  2>&1 | tail -30 || status=1

log "done in $(( $(date +%s) - T_START )) s (status $status)"
exit $status
