// Split-KV decode attention: a few query tokens against a long KV cache (FlashDecoding style).
// decode_attention below launches one of three kernels, one file each under decode/, all sharing
// the split-KV launch and merge of decode/split.cuh:
//
//   DecodeKernel      file                         rows a block   head_dim      cards
//   tma_tensor_core   decode/tma_tensor_core.cuh   8              64/128/256    sm_90+
//   tensor_core       decode/tensor_core.cuh       16             64/128        sm_80+ (mma.sync)
//   cuda_core         decode/cuda_core.cuh         1, 2, 4, 8     64/128/256    any
//
// Which one runs (DecodeKernel::automatic); rows = query rows per KV head = n_queries x group:
//   sm_90+ build and device, K/V a tensor map describes (16-byte aligned base and strides: every
//   cache ropex allocates, and the peers' head-major tensors):
//     rows <= 8                      tma_tensor_core   (a one-token step with group <= 8)
//     rows 9..16, head_dim 64/128    tensor_core       (a few new tokens x the group)
//     rows > 8, head_dim 256         cuda_core, 8 rows a block
//   earlier cards, or strides a tensor map cannot describe:
//     rows 1                         cuda_core, 1 row a block (multi-head attention, one token)
//     rows >= 2, head_dim 64/128     tensor_core
//     rows >= 2, head_dim 256        cuda_core, 2, 4 or 8 rows a block
// More rows than a block takes run as row groups (each reads the KV head once). Ops::attention
// (ops.cuh) sends up to 16 rows here and longer chunks to flash prefill. The forced values run
// the other cards' kernels on one card: tests/cuda/test_cuda_attention.cu checks each against the
// oracle, bench/gpu/bench_gpu.cu times them side by side.
#pragma once
#include <ropex/backends/cuda/decode/cuda_core.cuh>
#include <ropex/backends/cuda/decode/split.cuh>
#include <ropex/backends/cuda/decode/tensor_core.cuh>
#include <ropex/backends/cuda/decode/tma_tensor_core.cuh>

#include <algorithm>
#include <string>

namespace ropex::cuda {

/// Which decode kernel (the table above): the CUDA-core one (lanes split a key's dims, shuffles
/// reduce the scores), the tensor-core one (16 query rows per block through mma.sync; head_dim 64
/// or 128), or the tensor-core one fed by the tensor copy engine (sm_90+, 8 query rows a block,
/// strides a TMA map can describe).
enum class DecodeKernel { automatic, cuda_core, tensor_core, tma_tensor_core };

/// Decode attention:  o[b, t, h] = softmax(q[b, t, h] . K[b, :, h/group]^T * scale) V[b, :, h/group]
/// for n_queries new tokens per sequence (shape.query_offset = n_keys - n_queries for a cache that
/// already holds them; causal masks later keys per token). q, o: [batch, n_queries, n_heads,
/// head_dim] contiguous; K, V: any strides (token- or head-major caches); lse: [batch, n_heads,
/// n_queries] or nullptr. T = __nv_bfloat16 or __half; head_dim 64, 128 or 256.
/// max_splits = 1 runs without the split/merge step (for tests of both paths). kernel: automatic
/// picks by the table at the top of this file; another value forces that kernel (it throws where
/// the kernel cannot run).
/// pdl: launched as a programmatic dependent of the kernel before it (common.cuh): the kernel then
/// reads keys before n_keys - n_queries ahead of waiting for that kernel (they must be older; the
/// newest n_queries keys, and q, are read after the wait).
template <class T>
void decode_attention(const T* q, KVView<T> k, KVView<T> v, T* o, float* lse, int batch,
                      const attention::AttentionShape& shape, DecodeWorkspace& ws, int max_splits = 0,
                      cudaStream_t stream = nullptr, DecodeKernel kernel = DecodeKernel::automatic, bool pdl = false) {
  if (shape.n_heads <= 0 || shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0)
    throw make_error("cuda::decode_attention", "n_heads", "must be a positive multiple of n_kv_heads");
  if (shape.n_queries <= 0 || batch <= 0) return;
  if (shape.n_keys <= 0) throw make_error("cuda::decode_attention", "n_keys", "must be positive");
  if (shape.window < 0 || (shape.window > 0 && !shape.causal))
    throw make_error("cuda::decode_attention", "window", "must be >= 0, and a sliding window needs causal attention");
  detail::DecodeArgs<T> a{};
  a.q = q; a.k = k; a.v = v; a.o = o; a.lse = lse;
  a.shape = shape;
  a.scale_log2 = static_cast<float>(shape.scale) * kLog2e;
  // A window leaves the splits the keys of [first query's first key, n_keys): the cost of the
  // window, not of the whole cache. Without one, key_begin = 0 and every key below visible counts.
  a.key_begin = std::clamp<int64_t>(shape.first_key(0), 0, shape.n_keys - 1);
  a.span = shape.causal && shape.window > 0 ? static_cast<uint64_t>(shape.window) : detail::kAllKeys;
  const int n_rows = static_cast<int>(shape.n_queries * shape.group());
  const int kvh = static_cast<int>(shape.n_kv_heads);
  const bool mma_dim = shape.head_dim == 64 || shape.head_dim == 128;
  if (kernel == DecodeKernel::tensor_core && !mma_dim)
    throw make_error("cuda::decode_attention", "head_dim", "the tensor-core kernel takes 64 or 128");
  const bool tma_ok = detail::tma_decode_usable(k, v, shape, batch);
  if (kernel == DecodeKernel::tma_tensor_core && !tma_ok)
    throw make_error("cuda::decode_attention", "kernel",
                     "tma_tensor_core needs an sm_90+ build and device, head_dim 64/128/256, n_keys < 2^31 and K/V "
                     "whose base and strides are multiples of 16 bytes");
  // <= 8 rows per KV head: the TMA tensor-core kernel read fastest on both layouts, 1-16% above the
  // CUDA-core math on bulk-copied stages (head-major) and 1-25% above the CUDA-core and mma.sync
  // kernels (token-major) on an H100 (bench_gpu).
  if (kernel == DecodeKernel::tma_tensor_core || (kernel == DecodeKernel::automatic && tma_ok && n_rows <= 8)) {
    if (shape.head_dim == 64) detail::launch_decode_tma<T, 64>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    else if (shape.head_dim == 128) detail::launch_decode_tma<T, 128>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    else detail::launch_decode_tma<T, 256>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    return;
  }
  if (kernel == DecodeKernel::tensor_core || (kernel == DecodeKernel::automatic && mma_dim && n_rows >= 2)) {
    if (shape.head_dim == 64) detail::decode_rows_mma<T, 64>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    else detail::decode_rows_mma<T, 128>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    return;
  }
  switch (shape.head_dim) {
    case 64: detail::decode_rows<T, 64>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl); break;
    case 128: detail::decode_rows<T, 128>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl); break;
    case 256: detail::decode_rows<T, 256>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl); break;
    default:
      throw make_error("cuda::decode_attention", "head_dim",
                       "must be 64, 128 or 256, got " + std::to_string(shape.head_dim));
  }
}

}  // namespace ropex::cuda
