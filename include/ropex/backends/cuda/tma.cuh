// The tensor copy engine (TMA, sm_90): a tensor map describes a strided tensor in global memory
// (host side, cuTensorMapEncodeTiled through the runtime's driver entry point, so no -lcuda), and
// one instruction copies a box of it into shared memory, 128-byte swizzled, zero-filling elements
// past the tensor's edge and counting the bytes on an mbarrier (mma.cuh).
//
// Swizzled box rows are 128 bytes (64 16-bit elements): 16-byte chunk c of row r of a box lands at
// r*128 + ((c ^ r%8) * 16) from the box's 1024-byte aligned start (PTX ISA "Tensor copy swizzling
// modes"), so 8 consecutive rows' same chunk fall in 8 different bank groups.
#pragma once
#include <ropex/backends/cuda/common.cuh>

#include <cudaTypedefs.h>  // CUtensorMap, PFN_cuTensorMapEncodeTiled

#include <string>
#include <type_traits>

namespace ropex::cuda::tma {

/// Byte offset of 16-byte chunk `chunk` (0..7) of row `row` in a 128-byte swizzled box.
__host__ __device__ constexpr uint32_t swizzled(int row, int chunk) {
  return static_cast<uint32_t>(row * 128 + ((chunk ^ (row & 7)) << 4));
}

/// One box of a 4-d tensor map (coordinates innermost first) into shared memory at `dst`; the
/// copy engine counts its bytes on `bar` (mbarrier, shared memory).
__device__ __forceinline__ void load_4d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2, int c3) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
      "[%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
#endif
}
/// Same, under an L2 cache policy (createpolicy), e.g. evict-first for data read once.
__device__ __forceinline__ void load_4d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2, int c3,
                                        uint64_t policy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, {%3, %4, "
      "%5, %6}], [%2], %7;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "l"(policy)
      : "memory");
#endif
}

/// A 4-d tensor of 16-bit elements, innermost dimension first: dims[i] elements, strides[i-1]
/// bytes between consecutive indices of dimension i (dimension 0 is contiguous).
struct Tensor4d {
  uint64_t dims[4];
  uint64_t strides[3];
};

/// Whether cuTensorMapEncodeTiled can describe `t` at `base`: a 16-byte aligned base, strides
/// multiples of 16 bytes below 2^40, dimensions 1..2^32. A stride of a dimension of size 1 is never
/// used and need not meet this (tensor_map replaces it).
inline bool describable(const void* base, const Tensor4d& t) {
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
  for (int i = 0; i < 4; ++i)
    if (t.dims[i] == 0 || t.dims[i] > (uint64_t(1) << 32)) return false;
  for (int i = 0; i < 3; ++i)
    if (t.dims[i + 1] > 1 && (t.strides[i] % 16 != 0 || t.strides[i] == 0 || t.strides[i] >= (uint64_t(1) << 40)))
      return false;
  return true;
}

/// The tensor map of `t` (elements of `type`, `elem_bytes` each, at `base`) for boxes of
/// box[0..3] elements, 128-byte swizzle (box[0] * elem_bytes <= 128), elements past the tensor's
/// edge read as zeros. Throws ropex::Error when the driver refuses it (call describable first for
/// a clear precondition).
inline CUtensorMap tensor_map(const void* base, CUtensorMapDataType type, uint64_t elem_bytes, Tensor4d t,
                              const uint32_t (&box)[4]) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q{};
    ROPEX_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
    if (!fn || q != cudaDriverEntryPointSuccess) throw ropex::Error("cuda: cuTensorMapEncodeTiled not found");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  // Unused strides (dimensions of size 1) may be 0 in a view (batch 1): give them the packed value.
  uint64_t packed = t.dims[0] * elem_bytes;
  for (int i = 0; i < 3; ++i) {
    if (t.dims[i + 1] == 1 && (t.strides[i] % 16 != 0 || t.strides[i] == 0)) t.strides[i] = ((packed + 15) / 16) * 16;
    packed = t.strides[i] * t.dims[i + 1];
  }
  CUtensorMap map{};
  const cuuint32_t elem[4] = {1, 1, 1, 1};
  const CUresult r = encode(&map, type, 4, const_cast<void*>(base), t.dims, t.strides, box, elem,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) throw ropex::Error("cuda: cuTensorMapEncodeTiled failed (" + std::to_string(int(r)) + ")");
  return map;
}
/// The same for a 16-bit T (bf16 / fp16).
template <class T>
CUtensorMap tensor_map(const T* base, Tensor4d t, const uint32_t (&box)[4]) {
  static_assert(sizeof(T) == 2, "16-bit tensors");
  return tensor_map(base, std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                    2, t, box);
}

}  // namespace ropex::cuda::tma
