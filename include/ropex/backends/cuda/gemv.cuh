// One-token products (decode's weight stream): y = W x for [rows, in] weights, fp32 accumulation,
// with programmatic dependent launch (PDL), Hopper's way to overlap a kernel with the one before.
//
// Alone, every product of a 7B decode step pays a fixed ~5-7 us on an H200 (launch, the first
// loads' latency, the last rows' tail: cuBLAS's n = 1 products of a 32-layer step stream 3.6 TB/s
// against 4.5 for a plain read, bench/gpu/gemv.cu). A weight does not depend on the kernel before,
// so this kernel requests its first rows before `griddepcontrol.wait`: launched as a programmatic
// dependent (launch_pdl), it streams weights while the previous kernel drains.
#pragma once
#include <ropex/backends/cuda/common.cuh>

#include <algorithm>
#include <cstring>
#include <span>
#include <type_traits>
#include <utility>

namespace ropex::cuda {

/// One weight of a gemv launch: [rows, in] row-major, its output y[rows].
template <class T, class Y = T>
struct GemvPart {
  const T* w = nullptr;
  Y* y = nullptr;
  int rows = 0;
};
inline constexpr size_t kGemvMaxParts = 3;

/// What a gemv multiplies: x itself, rmsnorm(x) = x / sqrt(mean(x^2) + eps) * norm_weight, or
/// silu(x) * up (SwiGLU). The last two are computed while the kernel stages x, rounded to T as the
/// separate kernels round them, so a decode step needs no launch of its own for them.
template <class T>
struct GemvInput {
  const T* x = nullptr;
  const float* norm_weight = nullptr;  // rmsnorm(x) with this weight and eps
  float eps = 0.f;
  const T* up = nullptr;  // silu(x) * up
};

namespace kernels {

template <class T, class Y>
struct GemvParts {
  GemvPart<T, Y> part[kGemvMaxParts];
  int count = 0;
  /// Stacked row r: its weight row (in elements per row) and its output, with constant indices
  /// only (a kernel parameter indexed at run time is copied to the stack).
  __device__ __forceinline__ void locate(int r, int in, const T*& w, Y*& y) const {
    const T* pw = part[0].w;
    Y* py = part[0].y;
    bool more = true;
#pragma unroll
    for (int i = 1; i < static_cast<int>(kGemvMaxParts); ++i) {
      more = more && i < count && r >= part[i - 1].rows;
      if (more) {
        r -= part[i - 1].rows;
        pw = part[i].w;
        py = part[i].y;
      }
    }
    w = pw + static_cast<int64_t>(r) * in;
    y = py + r;
  }
};

enum class GemvPrologue { none, rmsnorm, swiglu };

/// y_i[r] = sum_j W_i[r, j] x[j] (y_i[r] += ... with Accumulate) over up to three weights of the
/// same `in`, rows numbered back to back; x as GemvInput says (Prologue). Warp g of the grid takes
/// rows g, g + W, ... (W warps in all); a row is read in pieces of D 16-byte chunks per lane (D
/// loads in flight), x staged once per block in shared memory. The first piece is loaded before
/// pdl_wait.
template <class T, class Y, bool Accumulate, int D, GemvPrologue Prologue>
__global__ void __launch_bounds__(256, 2) gemv(GemvParts<T, Y> parts, GemvInput<T> input, int rows, int in) {
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  using V = Vec16<T>;
  constexpr int E = kVec<T>;
  const int nv = in / E, lane = threadIdx.x % 32;
  const int warps = static_cast<int>(gridDim.x * blockDim.x / 32);
  int row = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) / 32);
  auto row_ptr = [&](int r) {
    const T* w;
    Y* y;
    parts.locate(r, in, w, y);
    return reinterpret_cast<const int4*>(w);
  };
  int4 w[D];
  const int4* wr = row < rows ? row_ptr(row) : nullptr;
  int c = 0;  // first chunk (of this lane's stride) of the piece in w
#pragma unroll
  for (int u = 0; u < D; ++u) w[u] = wr && lane + 32 * u < nv ? __ldg(wr + lane + 32 * u) : make_int4(0, 0, 0, 0);
  pdl_launch_dependents();
  pdl_wait();
  V* xs = reinterpret_cast<V*>(gemv_smem);
  const V* xv = reinterpret_cast<const V*>(input.x);
  if constexpr (Prologue == GemvPrologue::rmsnorm) {
    __shared__ float red[32];
    float ss = 0.f;
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
      const V v = xv[i];
#pragma unroll
      for (int e = 0; e < E; ++e) ss += to_float(v.v[e]) * to_float(v.v[e]);
    }
    const float inv = rms_scale(block_sum(ss, red), in, input.eps);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
      V v = xv[i];
#pragma unroll
      for (int e = 0; e < E; ++e) v.v[e] = from_float<T>(to_float(v.v[e]) * inv * input.norm_weight[i * E + e]);
      xs[i] = v;
    }
  } else if constexpr (Prologue == GemvPrologue::swiglu) {
    const V* uv = reinterpret_cast<const V*>(input.up);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
      V g = xv[i];
      const V u = uv[i];
#pragma unroll
      for (int e = 0; e < E; ++e) g.v[e] = from_float<T>(silu_mul(to_float(g.v[e]), to_float(u.v[e])));
      xs[i] = g;
    }
  } else {
    for (int i = threadIdx.x; i < nv; i += blockDim.x) xs[i] = xv[i];
  }
  __syncthreads();

  float acc = 0.f;
  while (row < rows) {
#pragma unroll
    for (int u = 0; u < D; ++u) {
      const int ch = c + lane + 32 * u;
      if (ch < nv) {
        V a, b = xs[ch];
        memcpy(&a, &w[u], sizeof a);
#pragma unroll
        for (int e = 0; e < E; ++e) acc = fmaf(to_float(a.v[e]), to_float(b.v[e]), acc);
      }
    }
    c += 32 * D;
    if (c >= nv) {  // row done: reduce, write, move to the warp's next row
#pragma unroll
      for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (lane == 0) {
        const T* unused;
        Y* y;
        parts.locate(row, in, unused, y);
        if constexpr (Accumulate) acc += to_float(*y);
        *y = from_float<Y>(acc);
      }
      acc = 0.f;
      c = 0;
      row += warps;
      if (row >= rows) break;
      wr = row_ptr(row);
    }
#pragma unroll
    for (int u = 0; u < D; ++u) {
      const int ch = c + lane + 32 * u;
      w[u] = ch < nv ? __ldg(wr + ch) : make_int4(0, 0, 0, 0);
    }
  }
}

}  // namespace kernels

/// Where the kernel applies: rows of whole 16-byte chunks, x (and up) 16-byte aligned, x at most
/// 96 KB.
template <class T>
bool gemv_fits(int64_t rows, int64_t in, const GemvInput<T>& input) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return rows > 0 && rows <= INT32_MAX && in % kVec<T> == 0 && in * static_cast<int64_t>(sizeof(T)) <= (96 << 10) &&
         aligned(input.x) && (!input.up || aligned(input.up));
}

namespace detail {
template <class T, class Y, bool Acc, kernels::GemvPrologue P>
void launch_gemv(const kernels::GemvParts<T, Y>& gp, const GemvInput<T>& input, int64_t rows, int64_t in,
                 cudaStream_t stream, bool pdl) {
  constexpr int D = 16, threads = 256;
  auto kernel = kernels::gemv<T, Y, Acc, D, P>;
  static const int slots = [&] {  // blocks resident at once: one wave
    ROPEX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 << 10));
    int per_sm = 0;
    ROPEX_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 24 << 10));
    return std::max(1, per_sm) * device_sm_count();
  }();
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(rows, threads / 32), slots));
  launch_pdl(kernel, dim3(blocks), dim3(threads), static_cast<size_t>(in) * sizeof(T), stream, pdl, gp, input,
             static_cast<int>(rows), static_cast<int>(in));
}
}  // namespace detail

/// y_i = W_i x for one token (x as `input` says: plain, rmsnorm'ed or SwiGLU'd), fp32 accumulation
/// (+= with `accumulate`); `pdl`: launched as a programmatic dependent of the kernel before it.
/// False (nothing launched) if !gemv_fits.
template <class T, class Y>
bool gemv(std::span<const GemvPart<T, Y>> parts, int64_t in, const GemvInput<T>& input, bool accumulate,
          cudaStream_t stream, bool pdl) {
  int64_t rows = 0;
  for (const auto& p : parts) rows += p.rows;
  if (parts.empty() || parts.size() > kGemvMaxParts || !gemv_fits<T>(rows, in, input)) return false;
  kernels::GemvParts<T, Y> gp{};
  gp.count = static_cast<int>(parts.size());
  for (size_t i = 0; i < parts.size(); ++i) gp.part[i] = parts[i];
  using P = kernels::GemvPrologue;
  auto go = [&](auto acc) {
    constexpr bool A = decltype(acc)::value;
    if (input.norm_weight) detail::launch_gemv<T, Y, A, P::rmsnorm>(gp, input, rows, in, stream, pdl);
    else if (input.up) detail::launch_gemv<T, Y, A, P::swiglu>(gp, input, rows, in, stream, pdl);
    else detail::launch_gemv<T, Y, A, P::none>(gp, input, rows, in, stream, pdl);
  };
  if (accumulate) go(std::true_type{});
  else go(std::false_type{});
  check_launch("gemv");
  return true;
}

}  // namespace ropex::cuda
