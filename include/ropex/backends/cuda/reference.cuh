// Plain reference attention kernels, the GPU counterparts of attention/reference.hpp, used to
// check the fast kernels at sizes the CPU oracle is too slow for (4K x 4K x heads).
//
//   attention_reference: every product and sum in double, two plain passes per query row
//                        (max, then sum of exp and weighted V): the oracle.
//   attention_naive:     what an eager framework computes in the storage precision (PyTorch's
//                        math path in bf16/fp16): S = T(T(q.k) * scale), P = T(softmax_fp32(S)),
//                        O = T(sum_fp32 P v). Its error against the oracle calibrates the tolerance
//                        of the fast kernels (FlashAttention's test rule: fast error <= 2x naive error).
// One warp per (batch, query, head) row; lanes split head_dim; no tiling, no online softmax.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/backends/cuda/decode.cuh>  // KVView

namespace ropex::cuda {

namespace detail {

__device__ __forceinline__ double warp_sum(double x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <class T>
struct RefArgs {
  const T* q;  // [batch, n_queries, n_heads, head_dim]
  KVView<T> k, v;
  attention::AttentionShape shape;
  int batch;
};

/// Row index -> (b, i, h) and pointers, shared by both reference kernels.
template <class T>
struct RefRow {
  int64_t b, i, h, kvh, first, visible;  // keys [first, visible) (causal limit, sliding window)
  const T* q;
  const T* k;
  const T* v;
  __device__ RefRow(const RefArgs<T>& a, int64_t row) {
    const auto& s = a.shape;
    h = row % s.n_heads;
    i = (row / s.n_heads) % s.n_queries;
    b = row / (s.n_heads * s.n_queries);
    kvh = h / s.group();
    visible = s.visible_keys(i);
    first = min(s.first_key(i), visible);
    q = a.q + ((b * s.n_queries + i) * s.n_heads + h) * s.head_dim;
    k = a.k.data + b * a.k.batch_stride + kvh * a.k.head_stride;
    v = a.v.data + b * a.v.batch_stride + kvh * a.v.head_stride;
  }
};

template <class T>
__global__ void attention_reference_kernel(RefArgs<T> a, double* out, double* lse) {
  const int lane = threadIdx.x % 32;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const auto& s = a.shape;
  if (row >= a.batch * s.n_queries * s.n_heads) return;
  const RefRow<T> r(a, row);
  const int D = static_cast<int>(s.head_dim);
  auto score = [&](int64_t j) {
    double d = 0;
    for (int e = lane; e < D; e += 32) d += double(to_float(r.q[e])) * double(to_float(r.k[j * a.k.token_stride + e]));
    return warp_sum(d) * s.scale;
  };
  double m = -INFINITY;
  for (int64_t j = r.first; j < r.visible; ++j) m = fmax(m, score(j));
  double l = 0, acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // head_dim <= 256: 8 dims per lane
  for (int64_t j = r.first; j < r.visible; ++j) {
    const double p = exp(score(j) - m);
    l += p;
    for (int e = lane, c = 0; e < D; e += 32, ++c) acc[c] += p * double(to_float(r.v[j * a.v.token_stride + e]));
  }
  double* o = out + row * D;
  for (int e = lane, c = 0; e < D; e += 32, ++c) o[e] = l > 0 ? acc[c] / l : 0.0;
  if (lane == 0) lse[(r.b * s.n_heads + r.h) * s.n_queries + r.i] = l > 0 ? m + log(l) : -INFINITY;
}

template <class T>
__global__ void attention_naive_kernel(RefArgs<T> a, T* out, float* lse) {
  const int lane = threadIdx.x % 32;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const auto& s = a.shape;
  if (row >= a.batch * s.n_queries * s.n_heads) return;
  const RefRow<T> r(a, row);
  const int D = static_cast<int>(s.head_dim);
  const T scale = from_float<T>(static_cast<float>(s.scale));
  auto score = [&](int64_t j) {  // T(T(q.k) * scale), as a T matmul followed by a T multiply
    float d = 0;
    for (int e = lane; e < D; e += 32) d += to_float(r.q[e]) * to_float(r.k[j * a.k.token_stride + e]);
    return to_float(from_float<T>(to_float(from_float<T>(warp_sum(d))) * to_float(scale)));
  };
  float m = -INFINITY, l = 0;
  for (int64_t j = r.first; j < r.visible; ++j) m = fmaxf(m, score(j));
  for (int64_t j = r.first; j < r.visible; ++j) l += expf(score(j) - m);
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t j = r.first; j < r.visible; ++j) {
    const float p = to_float(from_float<T>(expf(score(j) - m) / l));
    for (int e = lane, c = 0; e < D; e += 32, ++c) acc[c] += p * to_float(r.v[j * a.v.token_stride + e]);
  }
  T* o = out + row * D;
  for (int e = lane, c = 0; e < D; e += 32, ++c) o[e] = from_float<T>(acc[c]);
  if (lane == 0) lse[(r.b * s.n_heads + r.h) * s.n_queries + r.i] = l > 0 ? m + logf(l) : -INFINITY;
}

}  // namespace detail

/// Oracle: out [batch, n_queries, n_heads, head_dim] and lse [batch, n_heads, n_queries] in double.
template <class T>
void attention_reference(const T* q, KVView<T> k, KVView<T> v, double* out, double* lse, int batch,
                         const attention::AttentionShape& shape, cudaStream_t stream = nullptr) {
  if (shape.head_dim > 256) throw make_error("cuda::attention_reference", "head_dim", "must be <= 256");
  const int64_t rows = batch * shape.n_queries * shape.n_heads;
  if (rows == 0) return;
  detail::attention_reference_kernel<<<static_cast<unsigned>(ceil_div(rows * 32, 256)), 256, 0, stream>>>(
      detail::RefArgs<T>{q, k, v, shape, batch}, out, lse);
  check_launch("attention_reference_kernel");
}

/// Same-precision eager attention (see above); out and lse as in attention_reference but T / float.
template <class T>
void attention_naive(const T* q, KVView<T> k, KVView<T> v, T* out, float* lse, int batch,
                     const attention::AttentionShape& shape, cudaStream_t stream = nullptr) {
  if (shape.head_dim > 256) throw make_error("cuda::attention_naive", "head_dim", "must be <= 256");
  const int64_t rows = batch * shape.n_queries * shape.n_heads;
  if (rows == 0) return;
  detail::attention_naive_kernel<<<static_cast<unsigned>(ceil_div(rows * 32, 256)), 256, 0, stream>>>(
      detail::RefArgs<T>{q, k, v, shape, batch}, out, lse);
  check_launch("attention_naive_kernel");
}

}  // namespace ropex::cuda
