#!/usr/bin/env bash
# Installs ropex's build and test dependencies from Debian 12 (bookworm) packages.
# Idempotent: skips apt when everything is already there.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libeigen3-dev libxtensor-dev xtl-dev doctest-dev
      nlohmann-json3-dev libbenchmark-dev libcli11-dev libsentencepiece-dev sentencepiece
      libpcre2-dev libutf8proc-dev
      libopenblas-dev clang libclang-rt-dev libomp-dev python3 python3-numpy python3-venv
      python3-dev  # python3-dev: headers for the Python module (pip install .)
      chromium zlib1g-dev)  # chromium, zlib: test_report_html renders report.html and decodes the screenshot
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi
