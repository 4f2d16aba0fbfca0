#!/usr/bin/env bash
# ropex.Model(device="cuda") against the CLI's --device cuda, on the GPU machine: builds the CLI
# (build-gpu) and the Python module with CUDA (pip, no network, into /tmp/ropex-py), then runs
# python/tests/test_cuda.py: logits (bf16 and f32), nll, perplexity and generation of
# stories260K.bin and the SmolLM2-135M-Instruct Q4_1 GGUF, Python against the CLI and the CPU.
# Before the call, on the host: scripts/stage_device_deps.sh (headers, the pip wheels, and
# .deps/data/stories260K.bin; carry .deps), and the GGUF in gzipped parts as run_gguf.sh says
# (carry .gguf_p1 .gguf_p2 .gguf_p3), or already at $GGUF from an earlier call on the same machine.
# scikit-build-core and nanobind come from the image's python3, else from .deps/wheels.
# Outputs under $OUT (default ./gpu-out): python.log, build logs, pytest's junit XML.
set -uo pipefail
source "$(dirname "$0")/common.sh"
exec > >(tee -a "$OUT/python.log") 2>&1
T0=$(date +%s)
GGUF=${GGUF:-/tmp/smollm2.gguf}
if [ ! -s "$GGUF" ]; then
  cat .gguf_p1/part.gz .gguf_p2/part.gz .gguf_p3/part.gz 2>/dev/null | gunzip > "$GGUF" 2>/dev/null ||
    { echo "run_python: GGUF parts missing: the GGUF cases will be skipped"; rm -f "$GGUF"; }
fi
log "card"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 --version
if ! python3 -c 'import scikit_build_core, nanobind' 2>/dev/null; then
  log "installing scikit-build-core and nanobind from .deps/wheels"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .deps/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

log "build: CLI (build-gpu) and Python module (build-py-gpu), in parallel"
CUDA_DEFS=(-DROPEX_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DROPEX_BLAS=OFF -DCMAKE_PREFIX_PATH="$PWD/.deps")
( cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DROPEX_BUILD_EXAMPLES=ON -DROPEX_BUILD_TESTS=OFF \
        -DROPEX_BUILD_BENCH=OFF -DROPEX_INSTALL=OFF "${CUDA_DEFS[@]}" &&
  cmake --build build-gpu --target ropex_cli -j"$(nproc)" ) > "$OUT/build_cli.log" 2>&1 &
cli_pid=$!
pip_defs=()
for d in "${CUDA_DEFS[@]}"; do pip_defs+=(-C "cmake.define.${d#-D}"); done
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python3 -m pip install --no-build-isolation --no-deps --no-index --upgrade \
  --target /tmp/ropex-py -C build-dir=build-py-gpu "${pip_defs[@]}" . > "$OUT/build_python.log" 2>&1
py_rc=$?
wait $cli_pid
cli_rc=$?
[ $cli_rc = 0 ] || { echo "CLI build failed"; tail -40 "$OUT/build_cli.log"; }
[ $py_rc = 0 ] || { echo "module build failed"; tail -60 "$OUT/build_python.log"; }
log "built ($(( $(date +%s) - T0 )) s)"
[ $cli_rc = 0 ] && [ $py_rc = 0 ] || exit 1

log "python/tests/test_cuda.py"
export PYTHONPATH=/tmp/ropex-py${PYTHONPATH:+:$PYTHONPATH}
# the staged PCRE2/utf8proc (the pip-installed module has no run path into .deps)
export LD_LIBRARY_PATH=$PWD/.deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
python3 -c 'import ropex; assert ropex.has_cuda, "module built without CUDA"; print("ropex", ropex.__version__, "has_cuda", ropex.has_cuda)' || exit 1
ROPEX_CLI=$PWD/build-gpu/bin/ropex ROPEX_GGUF=$GGUF ROPEX_STORIES260K=$PWD/.deps/data/stories260K.bin \
  timeout 400 python3 -m pytest -v -s -p no:cacheprovider --junitxml="$OUT/test_cuda.xml" python/tests/test_cuda.py
status=$?
log "done in $(( $(date +%s) - T0 )) s (status $status)"
exit $status
