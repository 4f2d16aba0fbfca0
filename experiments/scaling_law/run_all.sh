#!/usr/bin/env bash
# Reruns the miniature scaling-law experiment (docs/validation.md) in stages that save
# their outputs, so each fits the GPU machine's 10-minute-per-command limit:
#   ./run_all.sh prep      # CPU, ~7 min: Debian texts -> SentencePiece -> data/*.u16, data/emma.npy
#   ./run_all.sh train     # GPU, ~6.5 min on one H100: writes $OUT (default ./out) models_*.tar.gz,
#                          #   train_log.json, gpu_eval.json. Here it ran through the device tool with
#                          #   carry = data/{train,val,emma}.u16 and
#                          #   `python3 experiments/scaling_law/train.py --budget 430 --out $OUT`
#   ./run_all.sh unpack    # unpack out/models_*.tar.gz into ckpt/, add tokenizer.model, copy logs to results/
#   ./run_all.sh check     # ours vs HF transformers vs ropex logits on two exported checkpoints
#   ./run_all.sh eval      # CPU, ~1.5 min per model and window: ropex perplexity, windows 0 and 1 of 16K (resumable)
#   ./run_all.sh analyze   # results.csv, docs/img/validation_*.png, Markdown tables on stdout
#   ./run_all.sh all       # everything in order (train needs a CUDA GPU on this machine)
# ROPEX=path/to/ropex overrides the CLI (default: ../../build/bin/ropex; build target ropex_cli).
set -euo pipefail
cd "$(dirname "$0")"
ROPEX=${ROPEX:-$(cd ../.. && pwd)/build/bin/ropex}
OUT=${OUT:-$PWD/out}
stage=${1:-all}

prep()    { ./prep_data.sh; }
train()   { mkdir -p "$OUT"; PYTHONUNBUFFERED=1 python3 train.py --budget 430 --out "$OUT" 2>&1 | tee "$OUT/train_stdout.log"; }
unpack()  {
  mkdir -p ckpt results
  for f in "$OUT"/models_*.tar.gz; do tar xzf "$f" -C ckpt; done
  for d in ckpt/*/; do cp data/tokenizer.model "$d"; done
  cp "$OUT"/gpu_eval.json "$OUT"/train_log.json "$OUT"/train_stdout.log results/
}
check()   { for m in tune512_b1e+06 tune1024_b500; do python3 check_export.py "ckpt/$m" "$ROPEX" 600; done; }
evaluate(){ for k in 0 1; do python3 eval_ropex.py "$ROPEX" --window $k --context 16384; done; }
analyze() { python3 analyze.py "$ROPEX"; }

case "$stage" in
  prep) prep ;; train) train ;; unpack) unpack ;; check) check ;; eval) evaluate ;; analyze) analyze ;;
  all) prep; train; unpack; check; evaluate; analyze ;;
  *) echo "usage: $0 prep|train|unpack|check|eval|analyze|all" >&2; exit 2 ;;
esac
