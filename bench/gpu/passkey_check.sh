#!/usr/bin/env bash
# GPU run of `ropex passkey` and `ropex check` on the SmolLM2-135M GGUF: builds the CUDA CLI, runs a
# passkey grid on the GPU (bf16 and f32) and on the CPU for the same grid (accuracy must agree up to
# the precision's effect), then a short `ropex check` on the GPU with its time split.
#   bench/gpu/passkey_check.sh           outputs under $OUT (default ./gpu-out)
# Carry .deps (scripts/stage_device_deps.sh) and .models/SmolLM2-135M-Instruct.Q4_1.gguf.
set -uo pipefail
source "$(dirname "$0")/common.sh"
exec > >(tee -a "$OUT/passkey_check.log") 2>&1
M=${GGUF:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}  # or the GGUF placed on the machine by an earlier call
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DROPEX_CUDA=ON -DROPEX_BUILD_EXAMPLES=ON \
      -DROPEX_BUILD_BENCH=OFF -DROPEX_INSTALL=OFF -DROPEX_BLAS=OFF -DCMAKE_CUDA_ARCHITECTURES=90a \
      -DCMAKE_PREFIX_PATH="$PWD/.deps" > "$OUT/build.log" 2>&1 &&
  cmake --build build-gpu --target ropex_cli -j"$(nproc)" >> "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
R=build-gpu/bin/ropex
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
grid=(--lengths 1024,4096,8192,16384 --depths 0,0.5,1 --trials 4 --seed 0)
for dt in bf16 f32; do
  log "passkey cuda $dt"
  $R passkey --model $M --device cuda --dtype $dt "${grid[@]}" --json > "$OUT/passkey_cuda_$dt.json"
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(j['time']); [print(c['length'],c['depth'],c['accuracy'],round(c['answer_nll'],3)) for c in j['cells']]" "$OUT/passkey_cuda_$dt.json"
done
log "passkey cpu (lengths up to 4096)"
$R passkey --model $M --lengths 1024,4096 --depths 0,0.5,1 --trials 4 --seed 0 --json > "$OUT/passkey_cpu.json"
python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(j['time']); [print(c['length'],c['depth'],c['accuracy'],round(c['answer_nll'],3)) for c in j['cells']]" "$OUT/passkey_cpu.json"
log "check cuda to 32K"
fetch_text=scripts/fetch_text.sh
text=$($fetch_text "$OUT/text" austen 2>/dev/null || true)
[ -s "$text" ] || text=tests/fixtures/gguf_cli/gpl3_apache2.txt
timeout 540 $R check --model $M --device cuda --text "$text" --max-len 32768 --train-len 2048 --pretrain-base 10000 \
  --passkey-trials 2 --report "$OUT/check" > "$OUT/check.txt"
cat "$OUT/check.txt"
python3 -c "import json; print(json.load(open('$OUT/check/report.json'))['time'])"
