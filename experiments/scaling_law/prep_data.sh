#!/usr/bin/env bash
# Stage 1: install the Debian text sources + tools, then build tokenizer and token files (CPU, ~3 min).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v bible >/dev/null || ! command -v Rscript >/dev/null || ! command -v spm_train >/dev/null \
   || [ ! -d /usr/lib/R/site-library/janeaustenr ] || [ ! -d /usr/share/doc/python3.11/html/_sources ] \
   || ! ls /usr/share/perl/*/pod/perl.pod >/dev/null 2>&1; then
  apt-get install -y bible-kjv r-cran-janeaustenr r-base-core python3.11-doc perl-doc sentencepiece
fi
python3 prep_data.py
