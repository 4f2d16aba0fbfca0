#!/usr/bin/env bash
# Copies the header-only dependencies the CUDA build needs into .deps/ (git-ignored), mirroring the
# /usr layout so each package's CMake config finds its headers relative to itself. The GPU machine
# has no network; bench/gpu/run.sh configures with -DCMAKE_PREFIX_PATH=$PWD/.deps and the device
# call names .deps in `carry`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dst="$root/.deps"
rm -rf "$dst"
copy() {  # copy /usr/<rel> to .deps/<rel> if it exists
  local rel="$1"
  if [[ -e "/usr/$rel" ]]; then
    mkdir -p "$dst/$(dirname "$rel")"
    cp -a "/usr/$rel" "$dst/$rel"
  else
    echo "stage_device_deps: /usr/$rel not found (skipped)" >&2
  fi
}
copy include/xtensor
copy include/xtl
copy lib/x86_64-linux-gnu/cmake/xtensor
copy share/cmake/xtl
copy include/CLI
copy share/cmake/CLI11
copy include/eigen3
copy share/eigen3/cmake
copy include/nlohmann
copy share/cmake/nlohmann_json
copy include/doctest
copy lib/cmake/doctest
# PCRE2 and utf8proc for the byte-level BPE tokenizer (ropex tokenize / --prompt): header, library
# and a .pc whose prefix is relative to itself, which CMake's pkg_check_modules finds through
# CMAKE_PREFIX_PATH. Without them the GPU build still works and the BPE tokenizer refuses.
arch=lib/x86_64-linux-gnu
for lib in libpcre2-8 libutf8proc; do
  [[ -e "/usr/$arch/pkgconfig/$lib.pc" ]] || { echo "stage_device_deps: $lib.pc not found (skipped)" >&2; continue; }
  for f in /usr/$arch/$lib.so*; do copy "$arch/$(basename "$f")"; done
  mkdir -p "$dst/$arch/pkgconfig"
  sed 's|^prefix=.*|prefix=${pcfiledir}/../../..|' "/usr/$arch/pkgconfig/$lib.pc" > "$dst/$arch/pkgconfig/$lib.pc"
done
copy include/pcre2.h
copy include/utf8proc.h
# The Python module's build there (bench/gpu/run_python.sh): scikit-build-core and nanobind with
# their pure-Python needs as wheels, installed there only when the image's python3 lacks them.
py=python3
[[ -x "$root/build-py/venv/bin/python" ]] && py="$root/build-py/venv/bin/python"
mkdir -p "$dst/wheels"
"$py" -m pip download -q --no-deps --only-binary=:all: -d "$dst/wheels" scikit-build-core nanobind packaging pathspec ||
  echo "stage_device_deps: Python wheels not downloaded (no pip or no network): run_python.sh needs them in the image" >&2
# The llama2.c checkpoint the GPU tests run (tests/cuda, python/tests/test_cuda.py), from ../shared/data.
if [[ -e "$root/../shared/data/stories260K.bin" ]]; then
  mkdir -p "$dst/data"
  cp "$root/../shared/data/stories260K.bin" "$dst/data/"
fi
du -sh "$dst"
