// Shared pieces of the CUDA backend: error checks, element types, 16-byte vector access.
#pragma once
#if !defined(__CUDACC__)
#error "ropex/backends/cuda/*.cuh must be compiled by nvcc (put the CUDA half of a program in a .cu file)"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <utility>

#include <ropex/config.hpp>
#include <ropex/error.hpp>

namespace ropex::cuda {

/// Throws ropex::Error naming the failed call and the CUDA error string.
inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw ropex::Error(std::string("cuda: ") + what + ": " + cudaGetErrorString(status));
}
/// After a launch: catches bad launch configurations at once (kernel faults surface at the next sync).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

#define ROPEX_CUDA_CHECK(call) ::ropex::cuda::check((call), #call)

// Element conversions for the storage types we support (float, __half, __nv_bfloat16).
template <class T> __device__ __forceinline__ float to_float(T x) { return static_cast<float>(x); }
template <> __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T from_float(float x) { return static_cast<T>(x); }
template <> __device__ __forceinline__ __half from_float(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }

/// Number of elements of T in one 16-byte access.
template <class T> inline constexpr int kVec = 16 / static_cast<int>(sizeof(T));

/// Sixteen bytes of T, loaded and stored as one int4 so each thread moves 16 bytes per instruction.
template <class T>
struct alignas(16) Vec16 {
  T v[kVec<T>];
};

// ---- programmatic dependent launch (PDL, sm_90+): a kernel launched with the attribute may start
// while the kernel before it in the stream is still running; it must pdl_wait() before reading
// anything that kernel writes. Kernels of a decode step call pdl_launch_dependents() first thing,
// so the next one's blocks can be scheduled (and prefetch weights) as this one's drain.
/// Waits until the kernel before this one in the stream has finished and its writes are visible
/// (returns at once for a kernel launched without the PDL attribute).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
/// Lets the next kernel of the stream start, if it was launched with the PDL attribute (it still
/// waits in pdl_wait for this one to finish before reading what this one writes).
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

/// kernel<<<grid, block, smem, stream>>>(args...); with `pdl`, as a programmatic dependent of the
/// kernel before it in the stream (the kernel must pdl_wait before reading that kernel's output).
template <class... Params, class... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, bool pdl,
                Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  ROPEX_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

/// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
__device__ __forceinline__ float block_sum(float v, float* shared32) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  __syncthreads();  // shared32 may still be read by a previous call
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  float s = lane < n_warps ? shared32[lane] : 0.f;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}
__device__ __forceinline__ float block_max(float v, float* shared32) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  float s = lane < n_warps ? shared32[lane] : -INFINITY;
#pragma unroll
  for (int o = 16; o > 0; o /= 2) s = fmaxf(s, __shfl_xor_sync(0xffffffffu, s, o));
  return s;
}

/// RMSNorm's scale 1 / sqrt(mean(x^2) + eps) from the row's sum of squares (Zhang and Sennrich
/// 2019); the rmsnorm kernel and the gemv kernel's fused prologue both use it.
__device__ __forceinline__ float rms_scale(float sum_sq, int64_t dim, float eps) {
  return rsqrtf(sum_sq / static_cast<float>(dim) + eps);
}
/// SwiGLU's silu(g) * u, silu(g) = g / (1 + e^-g) (Shazeer 2020), in fp32.
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.f + __expf(-g)) * u; }

inline int device_sm_count() {
  int dev = 0, n = 0;
  ROPEX_CUDA_CHECK(cudaGetDevice(&dev));
  ROPEX_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Base changes of the kernels' softmax, which runs in base 2 (exp2 of scale * log2(e) * s).
inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

/// n / d for a divisor fixed at launch, as a multiply-high, an add and a shift (Granlund and
/// Montgomery 1994, "Division by invariant integers using multiplication", round-up method): a
/// 32-bit integer division is a ~20-instruction sequence, which the index math of a streaming
/// kernel cannot afford per element. Exact for every n < 2^32 and 1 <= d < 2^31.
struct FastDiv {
  uint32_t d = 1, m = 0, s = 0;
  FastDiv() = default;
  explicit FastDiv(uint32_t divisor) : d(divisor) {
    if (divisor == 0 || divisor >= (1u << 31)) throw ropex::Error("cuda::FastDiv: divisor out of range");
    while ((1ull << s) < divisor) ++s;  // s = ceil(log2 d)
    m = static_cast<uint32_t>(((1ull << 32) * ((1ull << s) - divisor)) / divisor + 1);
  }
  __host__ __device__ __forceinline__ uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(n, m);
#else
    const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(n) * m) >> 32);
#endif
    return static_cast<uint32_t>((static_cast<uint64_t>(hi) + n) >> s);
  }
};

}  // namespace ropex::cuda
