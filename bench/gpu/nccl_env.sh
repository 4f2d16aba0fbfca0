# Sourced by the GPU scripts that build against NCCL: the CUDA toolkit's, else PyTorch's
# nvidia-nccl wheel through NCCL_HOME (CMakeLists.txt's find_library looks there).
if [ ! -e /usr/local/cuda/include/nccl.h ] && [ -z "${NCCL_HOME:-}" ]; then
  nccl_py=$(python3 -c "import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])" 2>/dev/null || true)
  if [ -n "$nccl_py" ]; then
    export NCCL_HOME="$PWD/build-nccl"  # the wheel ships libnccl.so.2 only: give find_library its name
    mkdir -p "$NCCL_HOME/lib"
    ln -sfn "$nccl_py/include" "$NCCL_HOME/include"
    ln -sf "$nccl_py/lib/libnccl.so.2" "$NCCL_HOME/lib/libnccl.so"
    export LD_LIBRARY_PATH="$nccl_py/lib:${LD_LIBRARY_PATH:-}"
  fi
fi
echo "NCCL_HOME=${NCCL_HOME:-/usr/local/cuda}"
