#!/usr/bin/env bash
# Real English text for perplexity tests and docs, from Debian packages (never committed):
#   bible   the King James Bible (package bible-kjv, dumped with its `bible` command), ~4.3 MB
#   austen  Jane Austen's six novels (package r-cran-janeaustenr, read with Rscript), ~4 MB
# Usage: scripts/fetch_text.sh OUT_DIR [bible|austen] [--spm VOCAB]
#   writes OUT_DIR/<name>.txt; with --spm, also trains OUT_DIR/<name>_spm<VOCAB>.model (BPE,
#   unk 0 / bos 1 / eos 2 as LLaMA) with Debian's spm_train. Prints the text path on stdout.
# Installs the package with apt-get when it is missing and we are root; exits 3 when the text
# cannot be had (tests then skip).
set -euo pipefail
out=${1:?usage: fetch_text.sh OUT_DIR [bible|austen] [--spm VOCAB]}
name=${2:-bible}
spm_vocab=""
if [[ "${3:-}" == "--spm" ]]; then spm_vocab=${4:?--spm needs a vocabulary size}; fi
mkdir -p "$out"
txt="$out/$name.txt"

need_pkg() {  # need_pkg COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2 || return 1
    command -v "$1" >/dev/null 2>&1 && return 0
  fi
  return 1
}

if [[ ! -s "$txt" ]]; then
  case "$name" in
    bible)
      need_pkg bible bible-kjv || { echo "fetch_text.sh: cannot get the bible-kjv package" >&2; exit 3; }
      # Every verse, Genesis 1:1 to Revelation 22:21, one per line; drop the "Ge1:1 " references.
      bible -f "Gen1:1-Rev22:21" | sed -E 's/^[0-9A-Za-z]+[0-9]+:[0-9]+ //' > "$txt.tmp"
      ;;
    austen)
      if ! Rscript -e 'library(janeaustenr)' >/dev/null 2>&1; then
        need_pkg Rscript r-base-core || true
        if [[ $(id -u) -eq 0 ]]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q r-cran-janeaustenr >&2 || true; fi
      fi
      Rscript -e 'library(janeaustenr); b <- austen_books(); writeLines(as.character(b$text))' > "$txt.tmp" 2>/dev/null ||
        { echo "fetch_text.sh: cannot read r-cran-janeaustenr" >&2; exit 3; }
      ;;
    *) echo "fetch_text.sh: unknown text '$name' (bible or austen)" >&2; exit 2 ;;
  esac
  [[ -s "$txt.tmp" ]] || { echo "fetch_text.sh: produced no text" >&2; exit 3; }
  mv "$txt.tmp" "$txt"
fi

if [[ -n "$spm_vocab" ]]; then
  model="$out/${name}_spm${spm_vocab}"
  if [[ ! -s "$model.model" ]]; then
    command -v spm_train >/dev/null 2>&1 || need_pkg spm_train sentencepiece ||
      { echo "fetch_text.sh: spm_train (package sentencepiece) is missing" >&2; exit 3; }
    spm_train --input="$txt" --model_prefix="$model" --vocab_size="$spm_vocab" --model_type=bpe \
      --character_coverage=1.0 --input_sentence_size=20000 --shuffle_input_sentence=true \
      --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --minloglevel=2 >&2
  fi
fi
echo "$txt"
