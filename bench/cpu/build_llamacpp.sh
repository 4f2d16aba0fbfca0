#!/usr/bin/env bash
# Builds llama.cpp's CPU tools (llama-perplexity, llama-bench, llama-simple, llama-cli) as a peer
# for bench/cpu/run_smollm2.sh, from the llama.cpp that the llama-cpp-python sdist vendors.
# Nothing of llama.cpp is committed: source and build live in build-perf-llamacpp/ (git-ignored).
#   bench/cpu/build_llamacpp.sh            # -> build-perf-llamacpp/build/bin/llama-*
#   SDIST=path/to/llama_cpp_python-X.tar.gz bench/cpu/build_llamacpp.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=build-perf-llamacpp
JOBS=${JOBS:-$(nproc)}
SDIST=${SDIST:-$(ls -t .models/src/llama_cpp_python-*.tar.gz 2>/dev/null | head -1 || true)}
if [ -z "$SDIST" ]; then
  mkdir -p .models/src
  PIP=${PIP:-$(command -v pip3 || command -v pip)}
  "$PIP" download llama-cpp-python --no-deps --no-binary :all: -d .models/src
  SDIST=$(ls -t .models/src/llama_cpp_python-*.tar.gz | head -1)
fi
mkdir -p "$DEST"
if [ ! -f "$DEST/src/CMakeLists.txt" ]; then
  rm -rf "$DEST/src" "$DEST/unpack"
  mkdir -p "$DEST/unpack"
  tar xzf "$SDIST" -C "$DEST/unpack"
  mv "$DEST"/unpack/llama_cpp_python-*/vendor/llama.cpp "$DEST/src"
  rm -rf "$DEST/unpack"
fi
# ccache (where installed) makes a rebuild in another checkout cheap.
LAUNCHER=()
if command -v ccache >/dev/null; then
  LAUNCHER=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
# CPU only, Release, native ISA (AVX-512/VNNI where the machine has them), no curl, no server.
cmake -S "$DEST/src" -B "$DEST/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF \
  -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF -DBUILD_SHARED_LIBS=OFF "${LAUNCHER[@]}" >/dev/null
cmake --build "$DEST/build" -j"$JOBS" --target llama-perplexity llama-bench llama-simple
ls -1 "$DEST"/build/bin/llama-*
