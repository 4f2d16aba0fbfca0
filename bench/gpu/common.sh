# The shared start of bench/gpu/run.sh and run_llama.sh (sourced): the repository root as the
# working directory, $OUT (default ./gpu-out) created, NVLink multicast off (KINDS.md), log().
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
log() { echo "== $* ($(date +%T))"; }
