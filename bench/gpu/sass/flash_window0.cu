// Window-0 prefill kernels, the instantiations ops.cuh's flash_attention<bf16> makes for head_dim 128
// (the window argument, where the tree has one, is left at its default: false).
#include <ropex/backends/cuda/flash_prefill.cuh>
#include <ropex/backends/cuda/flash_prefill_sm90.cuh>
using bf16 = __nv_bfloat16;
namespace ropex::cuda::detail {
template __global__ void flash_forward_kernel<bf16, 128, 4, 2, 64>(FlashArgs<bf16>);
template __global__ void flash_forward_kernel<bf16, 128, 4, 2, 32>(FlashArgs<bf16>);
template __global__ void flash_forward_kernel<bf16, 128, 8, 1, 64>(FlashArgs<bf16>);
template __global__ void flash_forward_kernel<bf16, 128, 4, 1, 64>(FlashArgs<bf16>);
}  // namespace ropex::cuda::detail
namespace ropex::cuda::sm90 {
#define ROPEX_I(M)                                                                                             \
  template __global__ void flash_forward_sm90_kernel<bf16, Sm90Rope::M>(                                      \
      const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap, \
      const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap, const __grid_constant__ CUtensorMap, \
      Sm90Args<bf16>);
ROPEX_I(none)
ROPEX_I(q)
ROPEX_I(k)
ROPEX_I(anchors_q)
ROPEX_I(anchors_k)
#undef ROPEX_I
}  // namespace ropex::cuda::sm90
