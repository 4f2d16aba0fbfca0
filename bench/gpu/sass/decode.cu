// The decode kernels decode_attention<bf16> launches (decode.cuh), for bench/gpu/sass_same.sh:
// every instantiation a shape or card selects, so a comparison covers each kernel that runs.
#include <ropex/backends/cuda/decode.cuh>

using bf16 = __nv_bfloat16;
namespace ropex::cuda::detail {
// Taking the addresses instantiates the kernels (their default template arguments included).
void* kDecodeKernels[] = {  // external linkage: no unused-variable warning
    // TMA tensor-core (sm_90, <= 8 rows a KV head)
    reinterpret_cast<void*>(decode_tma_kernel<bf16, 64>), reinterpret_cast<void*>(decode_tma_kernel<bf16, 128>),
    reinterpret_cast<void*>(decode_tma_kernel<bf16, 256>),
    // mma.sync tensor-core (8 warps x 2 stages)
    reinterpret_cast<void*>(decode_mma_kernel<bf16, 64, 8, 2>), reinterpret_cast<void*>(decode_mma_kernel<bf16, 128, 8, 2>),
    // CUDA-core: rows 1/2/4/8 (4 key steps in flight, 2 at 8 rows), without and with a window
#define ROPEX_CC(HD, R, U)                                                                                          \
  reinterpret_cast<void*>(decode_kernel<bf16, HD, R, 4, U, false>), reinterpret_cast<void*>(decode_kernel<bf16, HD, R, 4, U, true>)
    ROPEX_CC(64, 1, 4), ROPEX_CC(64, 2, 4), ROPEX_CC(64, 4, 4), ROPEX_CC(64, 8, 2),
    ROPEX_CC(128, 1, 4), ROPEX_CC(128, 2, 4), ROPEX_CC(128, 4, 4), ROPEX_CC(128, 8, 2),
    ROPEX_CC(256, 1, 4), ROPEX_CC(256, 2, 4), ROPEX_CC(256, 4, 4), ROPEX_CC(256, 8, 2),
#undef ROPEX_CC
};
}  // namespace ropex::cuda::detail
