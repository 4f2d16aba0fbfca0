#!/usr/bin/env bash
# ropex's CLI against llama.cpp's tools on SmolLM2-135M-Instruct Q4_1, same GGUF, same text, same
# threads, runs interleaved (each round runs every program once per thread count, so a load that
# comes and goes on a shared machine hits both), medians over ROUNDS:
#   perplexity  `ropex perplexity --fast` (and exact) against `llama-perplexity`, context 2048, over
#               /usr/share/common-licenses/GPL-3, each tokenized by the program's own tokenizer
#               from the GGUF. Rate = tokens through the forward / the process's wall seconds
#               (ropex: every token, windows of 2048 + the tail; llama.cpp: its whole 2048-token
#               chunks), and the same per CPU-second (user + sys), which another tenant's load
#               does not inflate at one thread.
#   generation  `ropex generate --fast --steps 128` after a short prompt against
#               `llama-bench -p 0 -n 128` (depth 0): the decode steps' rate, as each reports it
#               (ropex times its steps apart from the model's set-up and the prompt).
#   memory      peak RSS of every process (/usr/bin/time -v).
# Builds: ropex Release (ROPEX_NATIVE: -march=native) into build-perf/, llama.cpp by
# bench/cpu/build_llamacpp.sh into build-perf-llamacpp/. Results: $OUT/runs.jsonl and the
# markdown table of bench/cpu/vs_llamacpp_report.py on stdout.
#   bench/cpu/vs_llamacpp.sh                        # THREADS="1 2" ROUNDS=3 EXACT=1
#   THREADS=2 ROUNDS=5 EXACT=0 bench/cpu/vs_llamacpp.sh
#   PPL=0 ROUNDS=5 bench/cpu/vs_llamacpp.sh         # generation only
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-build-perf-data/vs-llamacpp}
THREADS=${THREADS:-"1 2"}
ROUNDS=${ROUNDS:-3}
EXACT=${EXACT:-1}
PPL=${PPL:-1}  # 0: generation only
CONTEXT=${CONTEXT:-2048}
STEPS=${STEPS:-128}
MODEL=.models/SmolLM2-135M-Instruct.Q4_1.gguf
TEXT=/usr/share/common-licenses/GPL-3
PROMPT="This program is free software: you can redistribute it"
mkdir -p "$OUT"
[ -s "$MODEL" ] || scripts/fetch_models.sh

ROPEX=${ROPEX:-build-perf/bin/ropex}
if [ ! -x "$ROPEX" ]; then
  LAUNCHER=()
  command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S . -B build-perf -DCMAKE_BUILD_TYPE=Release -DROPEX_BUILD_BENCH=OFF "${LAUNCHER[@]}" >/dev/null
  cmake --build build-perf -j"${JOBS:-$(nproc)}" --target ropex_cli
fi
LB=build-perf-llamacpp/build/bin
[ -x "$LB/llama-perplexity" ] && [ -x "$LB/llama-bench" ] || bench/cpu/build_llamacpp.sh >/dev/null

RUNS=$OUT/runs.jsonl
: > "$RUNS"
# run NAME THREADS ROUND CMD...: the command under /usr/bin/time -v; its stdout+stderr in $OUT/NAME.log
run() {
  local name=$1 t=$2 r=$3; shift 3
  /usr/bin/time -v -o "$OUT/time.txt" "$@" > "$OUT/$name.log" 2>&1 || { echo "failed: $*" >&2; tail -5 "$OUT/$name.log" >&2; return 1; }
  python3 bench/cpu/vs_llamacpp_report.py --parse "$name" "$t" "$r" "$OUT/$name.log" "$OUT/time.txt" >> "$RUNS"
}
for r in $(seq "$ROUNDS"); do
  for t in $THREADS; do
    echo "== round $r, $t thread(s) (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    if [ "$PPL" = 1 ]; then
      run ropex-ppl-fast "$t" "$r" "$ROPEX" perplexity --model "$MODEL" --text "$TEXT" --context "$CONTEXT" --threads "$t" --fast --json
      run llama-perplexity "$t" "$r" "$LB/llama-perplexity" -m "$MODEL" -f "$TEXT" -c "$CONTEXT" -b "$CONTEXT" -t "$t"
      [ "$EXACT" = 0 ] || run ropex-ppl-exact "$t" "$r" "$ROPEX" perplexity --model "$MODEL" --text "$TEXT" --context "$CONTEXT" --threads "$t" --json
    fi
    run ropex-generate-fast "$t" "$r" "$ROPEX" generate --model "$MODEL" --prompt "$PROMPT" --steps "$STEPS" --threads "$t" --fast
    run llama-bench-tg "$t" "$r" "$LB/llama-bench" -m "$MODEL" -p 0 -n "$STEPS" -r 1 -t "$t" -o jsonl
    [ "$EXACT" = 0 ] || run ropex-generate-exact "$t" "$r" "$ROPEX" generate --model "$MODEL" --prompt "$PROMPT" --steps "$STEPS" --threads "$t"
  done
done
python3 bench/cpu/vs_llamacpp_report.py "$RUNS"
