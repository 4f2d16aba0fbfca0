// ops<cpu>: the math a LLaMA layer needs, on the CPU with Eigen (+ OpenMP, + BLAS when Eigen was
// built with EIGEN_USE_BLAS). Activations are float32 row-major [tokens, features]; weights stay in
// their stored dtype (F32/F16/BF16 or a GGUF block type, TensorViews into the mmapped checkpoint)
// and are converted to float32 a block of rows at a time, just before they are multiplied.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/backends/eigen/attention.hpp>
#include <ropex/backends/eigen/simd.hpp>
#include <ropex/model/kv_cache.hpp>
#include <ropex/model/tensor.hpp>
#include <ropex/rope/apply.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <span>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ropex::backends {

/// Compile-time backend tags: Llama<cpu> runs on ops<cpu>. (ops<cuda> lives in backends/cuda.)
struct cpu {};
template <class Backend>
struct ops;

namespace eigen_detail {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapRows = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;
using ConstMapRows = Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>;

// n elements of a stored tensor (from element `offset`) -> float, vectorizable loops for the
// 16-bit types (bf16: the top half of a float; f16: rebias via one multiply, fix inf/NaN).
// ggml block types (GGUF Q4_0..Q6_K) decode whole blocks with quant::dequantize: the callers
// ask for whole rows (a matmul's weight rows, an embedding row), which GGUF keeps block-aligned;
// a range that starts or ends inside a block is an error naming the tensor.
inline void to_float(const model::TensorView& w, size_t offset, size_t n, float* dst) {
  if (model::is_quantized(w.dtype)) {
    w.to_float(dst, offset, n);  // bounds and block alignment checked there
    return;
  }
  const std::byte* p = w.data + offset * model::dtype_size(w.dtype);
  if (w.dtype == model::DType::f32) {
    std::memcpy(dst, p, n * 4);
    return;
  }
  if (reinterpret_cast<uintptr_t>(p) % 2 != 0) {  // never from a sane writer; keep it correct anyway
    w.to_float(dst, offset, n);
    return;
  }
  const auto* h = reinterpret_cast<const uint16_t*>(p);
  if (w.dtype == model::DType::bf16) {
#pragma omp simd
    for (size_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(uint32_t(h[i]) << 16);
  } else {
#pragma omp simd
    for (size_t i = 0; i < n; ++i) {
      // (exp|mant) << 13 read as a float is 2^(e-127)(1+m/1024); * 2^112 rebias to 2^(e-15)(...)
      // (subnormals come out exact too). e == 31 is inf/NaN: force the float exponent to 255.
      const uint32_t em = uint32_t(h[i] & 0x7fffu) << 13;
      const uint32_t sign = uint32_t(h[i] & 0x8000u) << 16;
      const float mag = std::bit_cast<float>(em) * 0x1p112f;
      const uint32_t bits = (h[i] & 0x7c00u) == 0x7c00u ? (em | 0x7f800000u) : std::bit_cast<uint32_t>(mag);
      dst[i] = std::bit_cast<float>(bits | sign);
    }
  }
}

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace eigen_detail

template <>
struct ops<cpu> {
  using RowMatrix = eigen_detail::RowMatrix;

  // ---- what Llama<cpu> stores (backends/cuda/ops.cuh provides the same names on the GPU)
  using Scalar = float;
  using Matrix = RowMatrix;                                          ///< activations [tokens, features]
  using Weight = std::reference_wrapper<const model::TensorView>;  ///< stays in the mmapped file
  using Vector = std::vector<float>;                                 ///< norm weights, converted once
  using Cache = model::KVCache;
  using Rope = RopeTable;  ///< cos/sin of one chunk's positions

  static Weight upload(const model::TensorView& t) { return std::cref(t); }
  /// Weights used together (q|k|v, gate|up); on the CPU each simply stays where it is.
  static std::vector<Weight> upload_stacked(std::initializer_list<const model::TensorView*> ts) {
    std::vector<Weight> out;
    for (const auto* t : ts) out.push_back(std::cref(*t));
    return out;
  }
  static Vector upload_vector(const model::TensorView& t) {
    Vector v(t.numel());
    t.to_float(v.data(), 0, v.size());
    return v;
  }
  /// Around the layers of a forward(): the GPU records a one-token step as a graph; here nothing.
  struct Step {};
  static Step begin_step(Cache&, bool /*record*/) { return {}; }
  static void end_layer(Step&) {}
  static void end_step(Step&) {}
  /// x[t, :] = table[tokens[t], :]  (ids already checked against the vocabulary)
  static void embed(float* x, const model::TensorView& table, std::span<const int32_t> tokens) {
    const int64_t dim = table.shape.at(1);
    for (size_t t = 0; t < tokens.size(); ++t)
      eigen_detail::to_float(table, size_t(tokens[t]) * size_t(dim), size_t(dim), x + int64_t(t) * dim);
  }
  /// y[i, :] += bias for each of n rows of `cols` (projection biases: Qwen2's q/k/v, Llama's
  /// attention_bias / mlp_bias).
  static void add_bias(float* y, const Vector& bias, int64_t n, int64_t cols) {
    for (int64_t i = 0; i < n; ++i) {
      float* row = y + i * cols;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) row[c] += bias[size_t(c)];
    }
  }
  /// The rotation angles of positions first .. first+n-1.
  static Rope rope_angles(std::span<const double> inv_freq, double attention_factor, int64_t first, int64_t n) {
    return rope_table(inv_freq, iota_positions(n, first), attention_factor);
  }
  /// Rotates q [n, q_heads, head_dim] and k [n, k_heads, head_dim] in place.
  static void rope(float* q, int64_t q_heads, float* k, int64_t k_heads, int64_t n, int64_t head_dim,
                   const Rope& table, RopeLayout layout) {
    ropex::apply_rope(q, n, q_heads, head_dim, table, layout);
    ropex::apply_rope(k, n, k_heads, head_dim, table, layout);
  }
  /// out[n, vocab] = x lm_head^T (host memory, like every CPU buffer).
  static void logits(const model::TensorView& w, const float* x, int64_t n, float* out) { matmul(w, x, n, out); }

#if defined(EIGEN_USE_BLAS)
  // Products go to the BLAS's own thread pool: converting weight blocks with an OpenMP team in
  // between would leave its threads spinning against the BLAS threads (measured: ~12% of a
  // prefill in libgomp). The conversion is ~2% of the work, so it runs on the calling thread.
  static constexpr bool kGemmHasOwnThreads = true;
#else
  static constexpr bool kGemmHasOwnThreads = false;
#endif

  /// y[n, out] = x[n, in] W^T for W [out, in] in its stored dtype (an nn.Linear weight);
  /// y += x W^T with `accumulate` (the residual connections: x += att Wo^T).
  /// Few rows (decode): one fused pass over W, converting each weight row once while it is hot,
  /// rows split across threads — memory-bound, reads W exactly once. Many rows (prefill): W is
  /// converted a block of rows at a time into float scratch and multiplied by a GEMM.
  static void matmul(const model::TensorView& w, const float* x, int64_t n, float* y, bool accumulate = false) {
    const int64_t out = w.shape.at(0), in = w.shape.at(1);
    if (n <= 0 || out <= 0) return;
    if (n <= 4) {
      gemv_rows(w, x, n, y, 0, out, out, accumulate);
      return;
    }
    eigen_detail::ConstMapRows X(x, n, in, Eigen::OuterStride<>(in));
    auto product = [&](eigen_detail::MapRows Y, eigen_detail::ConstMapRows W) {
      if (accumulate) Y.noalias() += X * W.transpose();
      else Y.noalias() = X * W.transpose();
    };
    if (const float* wf = w.as_f32()) {
      product(eigen_detail::MapRows(y, n, out, Eigen::OuterStride<>(out)),
              eigen_detail::ConstMapRows(wf, out, in, Eigen::OuterStride<>(in)));
      return;
    }
    // Blocks of ~4M weights (16 MB of float scratch): big enough for GEMM efficiency, small
    // enough that the whole matrix is never expanded.
    const int64_t block = std::clamp<int64_t>(int64_t(1 << 22) / in, 64, out);
    std::vector<float> scratch(size_t(std::min(block, out) * in));
    float* buf = scratch.data();  // shared by the converting threads (not thread_local: OpenMP threads)
    for (int64_t r0 = 0; r0 < out; r0 += block) {
      const int64_t rows = std::min(block, out - r0);
#pragma omp parallel for schedule(static) if (!kGemmHasOwnThreads && rows * in > (1 << 16))
      for (int64_t r = 0; r < rows; ++r)
        eigen_detail::to_float(w, size_t((r0 + r) * in), size_t(in), buf + r * in);
      product(eigen_detail::MapRows(y + r0, n, rows, Eigen::OuterStride<>(out)),
              eigen_detail::ConstMapRows(buf, rows, in, Eigen::OuterStride<>(in)));
    }
  }

  /// Several projections of the same input (q|k|v, gate|up): y_i = x W_i^T, one after another
  /// (the GPU backend fuses them for one token).
  struct Proj {
    const model::TensorView& w;
    float* y;
  };
  static void matmul(const float* x, int64_t n, std::initializer_list<Proj> projs) {
    for (const Proj& p : projs) matmul(p.w, x, n, p.y);
  }

  /// out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight   (RMSNorm, Zhang & Sennrich 2019)
  static void rmsnorm(float* out, const float* x, const float* weight, int64_t n, int64_t dim, double eps) {
#pragma omp parallel for schedule(static) if (n * dim > (1 << 16))
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * dim;
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += double(xt[i]) * double(xt[i]);
      const float inv = float(1.0 / std::sqrt(ss / double(dim) + eps));
      float* ot = out + t * dim;
      for (int64_t i = 0; i < dim; ++i) ot[i] = xt[i] * inv * weight[i];
    }
  }

  /// gate <- silu(gate) * up, silu(g) = g / (1 + exp(-g))   (SwiGLU, Shazeer 2020)
  static void swiglu(float* gate, const float* up, int64_t count) {
#pragma omp parallel for schedule(static) if (count > (1 << 16))
    for (int64_t c0 = 0; c0 < count; c0 += 4096) {
      const int64_t len = std::min<int64_t>(4096, count - c0);
      Eigen::Map<Eigen::ArrayXf> g(gate + c0, len);
      Eigen::Map<const Eigen::ArrayXf> u(up + c0, len);
      g = g / (1.0f + (-g).exp()) * u;
    }
  }

  /// matmul(rmsnorm(x), projs), the normed rows left in xb (the GPU fuses the two for one token).
  static void norm_matmul(float* xb, const float* x, const float* weight, int64_t n, int64_t dim, double eps,
                          std::initializer_list<Proj> projs) {
    rmsnorm(xb, x, weight, n, dim, eps);
    matmul(xb, n, projs);
  }
  /// y = (silu(gate) * up) W^T (+= with accumulate); gate becomes silu(gate) * up.
  static void swiglu_matmul(const model::TensorView& w, float* gate, const float* up, int64_t n, int64_t inter,
                            float* y, bool accumulate) {
    swiglu(gate, up, n * inter);
    matmul(w, gate, n, y, accumulate);
  }

  /// Rotates the first 2*table.half dims of every head of x [n, heads, head_dim] in place.
  static void rope(float* x, int64_t n, int64_t heads, int64_t head_dim, const RopeTable& table, RopeLayout layout) {
    ropex::apply_rope(x, n, heads, head_dim, table, layout);
  }

  /// Causal GQA attention, tiled with an online softmax (backends/eigen/attention.hpp).
  static void attention(attention::HeadsView<const float> q, attention::HeadsView<const float> k,
                        attention::HeadsView<const float> v, attention::HeadsView<float> out,
                        const attention::AttentionShape& s) {
    eigen::attention_tiled(q, k, v, out, s);
  }

 private:
  // y[t, r] for rows r in [r_begin, r_end): each weight row converted once, dotted with all n inputs.
  // One token (decode) with F32/BF16 weights: four rows per pass over x, converted in registers
  // (eigen::simd::gemv). Small matrices stay on the calling thread without entering an
  // OpenMP region at all (a tiny model's decode step is ~30 of them).
  static void gemv_rows(const model::TensorView& w, const float* x, int64_t n, float* y, int64_t r_begin,
                        int64_t r_end, int64_t ldy, bool accumulate) {
    const int64_t in = w.shape.at(1);
    const float* wf = w.as_f32();
    const bool bf16 = w.dtype == model::DType::bf16 && reinterpret_cast<uintptr_t>(w.data) % 2 == 0;
    const bool fused = n == 1 && (wf || bf16);
    auto rows = [&](int64_t a, int64_t b, std::vector<float>& row) {
      if (fused) {
        if (wf) eigen::simd::gemv(wf + a * in, in, in, b - a, x, y + a, accumulate);
        else eigen::simd::gemv(reinterpret_cast<const uint16_t*>(w.data) + a * in, in, in, b - a, x, y + a, accumulate);
        return;
      }
      row.resize(wf ? 0 : size_t(in));
      for (int64_t r = a; r < b; ++r) {
        const float* wr = wf ? wf + r * in : row.data();
        if (!wf) eigen_detail::to_float(w, size_t(r * in), size_t(in), row.data());
        const Eigen::Map<const Eigen::VectorXf> wrow(wr, in);
        for (int64_t t = 0; t < n; ++t) {
          const float d = wrow.dot(Eigen::Map<const Eigen::VectorXf>(x + t * in, in));
          y[t * ldy + r] = accumulate ? y[t * ldy + r] + d : d;
        }
      }
    };
    constexpr int64_t kChunk = 32;
    if ((r_end - r_begin) * in * n <= (int64_t(1) << 16) || eigen_detail::max_threads() == 1) {
      std::vector<float> row;
      rows(r_begin, r_end, row);
      return;
    }
    const int64_t n_chunks = (r_end - r_begin + kChunk - 1) / kChunk;
    // Dynamic chunks: on a shared machine a preempted thread's rows are taken over instead of
    // the other thread idling at the barrier.
#pragma omp parallel
    {
      std::vector<float> row;
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < n_chunks; ++c)
        rows(r_begin + c * kChunk, std::min(r_end, r_begin + (c + 1) * kChunk), row);
    }
  }
};

}  // namespace ropex::backends
