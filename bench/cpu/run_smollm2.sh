#!/usr/bin/env bash
# SmolLM2-135M-Instruct Q4_1 (GGUF) on the CPU, everything in one interleaved run:
#   ropex before   bench_smollm2 built from $BEFORE's headers the way the README built it then
#                  (Release, no ISA flags, Eigen handing products to OpenBLAS)
#   ropex native   this checkout as the README builds it now (ROPEX_NATIVE: -march=native), exact and fast
#   ropex portable this checkout without -march (what CI builds, ROPEX_NATIVE=OFF), exact
#   HF             transformers + torch, CPU, float32, sdpa (bench/cpu/hf_smollm2.py)
#   llama.cpp      llama-bench pp2048 / tg128 at depth 2048 (bench/cpu/build_llamacpp.sh)
# Prefill = first 2048 tokens of /usr/share/common-licenses/GPL-3 (+ the last row's logits),
# decode = 128 greedy steps after it. ROUNDS rounds of every variant in turn (one repetition each),
# medians reported. Then perplexity at context 2048 over the whole text: ropex exact, ropex fast,
# llama-perplexity; peak RSS of each. Results: $OUT/results.jsonl and a table on stdout.
# Every program also reports tokens per CPU-second of its process; with THREADS=1 that is the
# comparison a shared, loaded machine does not distort (llama-bench's includes its model load).
#   bench/cpu/run_smollm2.sh                 # THREADS=$(nproc) ROUNDS=3 BEFORE=d7ab1d3 PPL=1
#   THREADS=1 PPL=0 bench/cpu/run_smollm2.sh # single-thread CPU-time comparison, no perplexity
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-build-perf-data}
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-3}
BEFORE=${BEFORE:-d7ab1d3}
PREFILL=${PREFILL:-2048}
DECODE=${DECODE:-128}
PPL=${PPL:-1}
MODEL=.models/SmolLM2-135M-Instruct.Q4_1.gguf
TEXT=/usr/share/common-licenses/GPL-3
mkdir -p "$OUT"
[ -s "$MODEL" ] || scripts/fetch_models.sh
TOK=$OUT/gpl3.tokens.npy
if [ ! -s "$TOK" ]; then  # HF's tokenizer for SmolLM2 (the tokenizer.json scripts/fetch_tokenizers.sh fetches)
  [ -s .models/tokenizers/smollm2/tokenizer.json ] || scripts/fetch_tokenizers.sh
  python3 - "$TEXT" "$TOK" <<'PY'
import sys, numpy as np
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(".models/tokenizers/smollm2")
ids = tok(open(sys.argv[1]).read(), add_special_tokens=False)["input_ids"]
np.save(sys.argv[2], np.array(ids, dtype=np.int32)); print(f"{len(ids)} tokens", file=sys.stderr)
PY
fi

# ---- builds (the flags each CMake configuration gives ropex_runtime's programs)
CXX=${CXX:-g++}
COMMON=(-std=c++20 -O3 -DNDEBUG -fopenmp -isystem /usr/include/eigen3 -DROPEX_HAS_BLAS=1)
LIBS=(-lopenblas)
mkdir -p "$OUT/before"
git archive "$BEFORE" include | tar x -C "$OUT/before"
build() {  # name include-dir extra-flags...
  local name=$1 inc=$2; shift 2
  "$CXX" "${COMMON[@]}" "$@" -I"$inc" bench/cpu/bench_smollm2.cpp -o "$OUT/$name" "${LIBS[@]}"
}
build bench_before "$OUT/before/include" -DEIGEN_USE_BLAS &
build bench_native include -march=native &
build bench_portable include &
wait
bench/cpu/build_llamacpp.sh >/dev/null
LB=build-perf-llamacpp/build/bin

RES=$OUT/results.jsonl
: > "$RES"
tag() { python3 -c 'import json,sys; d=json.loads(sys.stdin.readline()); d.update(json.loads(sys.argv[1])); print(json.dumps(d))' "$1"; }
for r in $(seq "$ROUNDS"); do
  echo "== round $r (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  for v in before native portable; do
    "$OUT/bench_$v" "$MODEL" "$TOK" --prefill "$PREFILL" --decode "$DECODE" --reps 1 --threads "$THREADS" \
      | tag "{\"variant\": \"ropex-$v\", \"round\": $r}" >> "$RES"
  done
  "$OUT/bench_native" "$MODEL" "$TOK" --prefill "$PREFILL" --decode "$DECODE" --reps 1 --threads "$THREADS" --mode fast \
    | tag "{\"variant\": \"ropex-native-fast\", \"round\": $r}" >> "$RES"
  python3 bench/cpu/hf_smollm2.py "$MODEL" "$TOK" --prefill "$PREFILL" --decode "$DECODE" --reps 1 --threads "$THREADS" 2>/dev/null \
    | tag "{\"variant\": \"hf\", \"round\": $r}" >> "$RES"
  /usr/bin/time -f '%U %S' -o "$OUT/cpu.txt" "$LB/llama-bench" -m "$MODEL" -t "$THREADS" -r 1 -p "$PREFILL" -n 0 -o jsonl 2>/dev/null > "$OUT/lb.json"
  tag "{\"variant\": \"llama.cpp-pp\", \"round\": $r, \"cpu_s\": $(awk '{print $1 + $2}' "$OUT/cpu.txt")}" < "$OUT/lb.json" >> "$RES"
  /usr/bin/time -f '%U %S' -o "$OUT/cpu.txt" "$LB/llama-bench" -m "$MODEL" -t "$THREADS" -r 1 -p 0 -n "$DECODE" -d "$PREFILL" -o jsonl 2>/dev/null > "$OUT/lb.json"
  tag "{\"variant\": \"llama.cpp-tg\", \"round\": $r, \"cpu_s\": $(awk '{print $1 + $2}' "$OUT/cpu.txt")}" < "$OUT/lb.json" >> "$RES"
done
[ "$PPL" = 0 ] && { python3 bench/cpu/report_smollm2.py "$RES"; exit 0; }

# ---- perplexity at context 2048 over the whole text, with peak RSS
rss() { /usr/bin/time -f '%M' -o "$OUT/rss.txt" "$@"; }
echo "== perplexity (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
for m in exact fast; do
  rss "$OUT/bench_native" "$MODEL" "$TOK" --prefill 0 --decode 0 --reps 0 --threads "$THREADS" --mode $m --ppl 2048 \
    | tag "{\"variant\": \"ropex-native-ppl-$m\"}" >> "$RES"
done
rss "$LB/llama-perplexity" -m "$MODEL" -f "$TEXT" -c 2048 -b 2048 -t "$THREADS" > "$OUT/llama-perplexity.log" 2>&1
python3 - "$OUT/llama-perplexity.log" "$OUT/rss.txt" >> "$RES" <<'PY'
import json, re, sys
log = open(sys.argv[1]).read()
m = re.search(r"Final estimate: PPL = ([0-9.]+)", log)
t = re.search(r"prompt eval time =\s*([0-9.]+) ms /\s*(\d+) tokens", log)
print(json.dumps({"variant": "llama.cpp-ppl", "ppl": float(m.group(1)) if m else None,
                  "prompt_eval_ms": float(t.group(1)) if t else None, "prompt_eval_tokens": int(t.group(2)) if t else None,
                  "peak_rss_mb": int(open(sys.argv[2]).read().split()[-1]) / 1024}))
PY
python3 bench/cpu/report_smollm2.py "$RES"
