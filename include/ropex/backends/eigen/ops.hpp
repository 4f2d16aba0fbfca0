// ops<cpu>: the math a LLaMA layer needs, on the CPU with Eigen (+ OpenMP, + the linked BLAS's
// sgemm for prefill products when it runs a kernel for this CPU: backends/eigen/gemm.hpp). Activations are float32 row-major [tokens, features]; weights stay in
// their stored dtype (F32/F16/BF16 or a GGUF block type, TensorViews into the mmapped checkpoint)
// and are converted to float32 a block of rows at a time, just before they are multiplied.
// One-token products with GGUF block weights (Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K) read each block once
// and dot it with the activations directly (quant/dot.hpp): exact mode with float activations
// (the default), or QuantMode::fast with activations quantized per 32-block to int8 and integer
// dot products (llama.cpp's way; error bound in quant/dot.hpp).
#pragma once
#include <ropex/config.hpp>
#include <ropex/attention/layout.hpp>
#include <ropex/backends/eigen/attention.hpp>
#include <ropex/backends/eigen/gemm.hpp>
#include <ropex/backends/eigen/simd.hpp>
#include <ropex/backends/eigen/threads.hpp>
#include <ropex/model/kv_cache.hpp>
#include <ropex/model/tensor.hpp>
#include <ropex/quant/dot.hpp>
#include <ropex/quant/gemm.hpp>
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

/// How ops<cpu> multiplies GGUF block weights (F32/F16/BF16 weights are unaffected):
///   exact  float32 activations; the weights' values exactly as dequantized (the default)
///   fast   activations quantized per 32-block to int8 (scale max|x|/127) and integer dot
///          products against Q4_0/Q4_1/Q8_0/Q4_K/Q5_K weights, in every product (prefill too);
///          other block types run exact. Prefill products: quant/gemm.hpp; -0.32% perplexity on SmolLM2-135M Q4_1 (docs/gguf.md).
enum class QuantMode { exact, fast };

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
    ROPEX_OMP(simd)
    for (size_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(uint32_t(h[i]) << 16);
  } else {
    ROPEX_OMP(simd)
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

  /// Quantized-weight products: exact (default) or fast (int8 activations). Set it on the ops
  /// a model is built with: Llama<>(ck, 512, ops<cpu>{QuantMode::fast}).
  QuantMode quant_mode = QuantMode::exact;

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
      ROPEX_OMP(simd)
      for (int64_t c = 0; c < cols; ++c) row[c] += bias[size_t(c)];
    }
  }
  /// The rotation angles of positions first .. first+n-1.
  static Rope rope_angles(std::span<const double> inv_freq, double attention_factor, int64_t first, int64_t n) {
    return rope_table(inv_freq, iota_positions(n, first), attention_factor);
  }
  /// Rows at arbitrary positions (a context-parallel rank's zigzag rows).
  static Rope rope_angles_at(std::span<const double> inv_freq, double attention_factor,
                             std::span<const int64_t> positions) {
    return rope_table(inv_freq, positions, attention_factor);
  }
  /// Rotates q [n, q_heads, head_dim] and k [n, k_heads, head_dim] in place.
  static void rope(float* q, int64_t q_heads, float* k, int64_t k_heads, int64_t n, int64_t head_dim,
                   const Rope& table, RopeLayout layout) {
    ropex::apply_rope(q, n, q_heads, head_dim, table, layout);
    ropex::apply_rope(k, n, k_heads, head_dim, table, layout);
  }
  /// out[n, vocab] = x lm_head^T (host memory, like every CPU buffer).
  void logits(const model::TensorView& w, const float* x, int64_t n, float* out) const {
    matmul_q(w, x, n, out, false, fast());
  }

  /// y[n, out] = x[n, in] W^T for W [out, in] in its stored dtype (an nn.Linear weight);
  /// y += x W^T with `accumulate` (the residual connections: x += att Wo^T).
  /// Few rows (decode): one fused pass over W, each weight row read once (block types: dotted
  /// in their blocks, quant/dot.hpp), rows split across threads — memory-bound, reads W exactly
  /// once. Many rows (prefill): W is converted a block of rows at a time into float scratch and
  /// multiplied by a GEMM (backends/eigen/gemm.hpp). This static form is exact mode; a model's
  /// products go through the member form, which follows quant_mode.
  static void matmul(const model::TensorView& w, const float* x, int64_t n, float* y, bool accumulate = false) {
    matmul_q(w, x, n, y, accumulate, false);
  }
  void matmul(const Weight& w, const float* x, int64_t n, float* y, bool accumulate = false) const {
    matmul_q(w.get(), x, n, y, accumulate, fast());
  }

 private:
  bool fast() const { return quant_mode == QuantMode::fast; }
  static constexpr int64_t kGemvTokens = 4;  ///< up to this many tokens: one pass over W (decode)

  static void matmul_q(const model::TensorView& w, const float* x, int64_t n, float* y, bool accumulate, bool fast) {
    const int64_t out = w.shape.at(0), in = w.shape.at(1);
    if (n <= 0 || out <= 0) return;
    if (n <= kGemvTokens) {
      Gemv job{w, x, y, n, accumulate, fast};
      gemv(std::span(&job, 1));
      return;
    }
    if (fast && model::is_quantized(w.dtype) && quant::has_int8_gemm(model::dtype_ggml_type(w.dtype)) &&
        in % model::dtype_block_size(w.dtype) == 0) {
      int8_rows(w, x, n, y, accumulate);
      return;
    }
    auto product = [&](float* yb, int64_t rows, const float* wb) {
      eigen::gemm_nt(n, rows, in, x, in, wb, in, yb, out, accumulate);
    };
    if (const float* wf = w.as_f32()) {
      product(y, out, wf);
      return;
    }
    // Products on the BLAS's own thread pool: converting weight blocks with an OpenMP team in
    // between would leave its threads spinning against the BLAS threads (measured: ~12% of a
    // prefill in libgomp), so the conversion (~2% of the work) then runs on the calling thread.
    [[maybe_unused]] const bool gemm_own_threads = eigen::gemm_has_own_threads();  // read by ROPEX_OMP
    // Blocks of ~4M weights (16 MB of float scratch): big enough for GEMM efficiency, small
    // enough that the whole matrix is never expanded.
    const int64_t block = std::clamp<int64_t>(int64_t(1 << 22) / in, 64, out);
    // The calling thread's, kept between products (a fresh 16 MB vector per product cost ~6% of
    // a one-thread prefill in page faults and zeroing); the converting threads share it via buf.
    thread_local std::vector<float> scratch;
    if (scratch.size() < size_t(block * in)) scratch.resize(size_t(block * in));
    float* buf = scratch.data();
    for (int64_t r0 = 0; r0 < out; r0 += block) {
      const int64_t rows = std::min(block, out - r0);
      ROPEX_OMP(parallel for schedule(static) if (!gemm_own_threads && rows * in > (1 << 16)))
      for (int64_t r = 0; r < rows; ++r)
        eigen_detail::to_float(w, size_t((r0 + r) * in), size_t(in), buf + r * in);
      product(y + r0, rows, buf);
    }
  }

  // Fast mode with many rows: the int8 GEMM (quant/gemm.hpp): the tokens quantized once, weight
  // rows unpacked once per tile of 16 and dotted with every token in integers.
  static void int8_rows(const model::TensorView& w, const float* x, int64_t n, float* y, bool accumulate) {
    const int64_t out = w.shape.at(0), in = w.shape.at(1);
    // On the chunk pool, as decode: a few-token prefill is ~200 small products, and an OpenMP
    // barrier per product stalls on a loaded machine (threads.hpp).
    quant::gemm_int8(model::dtype_ggml_type(w.dtype), w.data, w.row_bytes(), out, in, x, in, n, y, out, accumulate, -1,
                     [](int64_t count, auto&& fn) { parallel_chunks(count, fn); });
  }

 public:

  /// Several projections of the same input (q|k|v, gate|up): y_i = x W_i^T, one after another
  /// (the GPU backend fuses them for one token).
  struct Proj {
    const model::TensorView& w;
    float* y;
  };
  void matmul(const float* x, int64_t n, std::initializer_list<Proj> projs) const {
    if (n <= kGemvTokens) {
      std::vector<Gemv> jobs;
      for (const Proj& p : projs) jobs.push_back(Gemv{p.w, x, p.y, n, false, fast()});
      gemv(jobs);
      return;
    }
    for (const Proj& p : projs) matmul_q(p.w, x, n, p.y, false, fast());
  }

  /// out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight   (RMSNorm, Zhang & Sennrich 2019)
  static void rmsnorm(float* out, const float* x, const float* weight, int64_t n, int64_t dim, double eps) {
    ROPEX_OMP(parallel for schedule(static) if (n * dim > (1 << 16)))
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
    ROPEX_OMP(parallel for schedule(static) if (count > (1 << 16)))
    for (int64_t c0 = 0; c0 < count; c0 += 4096) {
      const int64_t len = std::min<int64_t>(4096, count - c0);
      Eigen::Map<Eigen::ArrayXf> g(gate + c0, len);
      Eigen::Map<const Eigen::ArrayXf> u(up + c0, len);
      g = g / (1.0f + (-g).exp()) * u;
    }
  }

  /// matmul(rmsnorm(x), projs), the normed rows left in xb (the GPU fuses the two for one token).
  void norm_matmul(float* xb, const float* x, const float* weight, int64_t n, int64_t dim, double eps,
                          std::initializer_list<Proj> projs) const {
    rmsnorm(xb, x, weight, n, dim, eps);
    matmul(xb, n, projs);
  }
  /// y = (silu(gate) * up) W^T (+= with accumulate); gate becomes silu(gate) * up.
  void swiglu_matmul(const model::TensorView& w, float* gate, const float* up, int64_t n, int64_t inter,
                     float* y, bool accumulate) const {
    swiglu(gate, up, n * inter);
    matmul_q(w, gate, n, y, accumulate, fast());
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
  // Few tokens (decode): y[t, r] for every row r, each weight row converted or dotted once with
  // all n inputs. One token with F32/BF16 weights: four rows per pass over x, converted in
  // registers (eigen::simd::gemv). Block types with a fused kernel: each row's blocks dotted with
  // every token's activations (prepared once per input: per-32 sums, and int8 quants in fast mode).
  static constexpr size_t kPrefetchBytes = 3072;  // tried 1-4 KB: 2-3 KB best, 64-row chunks
  // Asks for the cache lines of base[from, to).
  static void prefetch(const std::byte* base, size_t from, size_t to) {
    if (from >= to) return;
    for (size_t o = from & ~size_t(63); o < to; o += 64) __builtin_prefetch(base + o);
  }
  struct Gemv {
    const model::TensorView& w;
    const float* x;
    float* y;
    int64_t n;
    bool accumulate, fast;
    const std::vector<quant::PreparedX>* px = nullptr;  // set by gemv() for block types

    int64_t in() const { return w.shape.at(1); }
    int64_t out() const { return w.shape.at(0); }
    quant::GgmlType type() const { return model::dtype_ggml_type(w.dtype); }
    bool qdot() const {
      return model::is_quantized(w.dtype) && in() % model::dtype_block_size(w.dtype) == 0 &&
             (quant::has_fused_dot(type()) || (fast && quant::has_int8_dot(type())));
    }
    // rows [a, b)
    void rows(int64_t a, int64_t b, std::vector<float>& row) const {
      const int64_t k = in(), ldy = out();
      if (px) {
        const size_t row_bytes = w.row_bytes();
        const quant::GgmlType gt = type();
        // Software prefetch kPrefetchBytes ahead of the row being dotted, from the chunk's first
        // byte: a decode product reads each weight byte once, in short rows (360 B for a 576-wide
        // Q4_1 row), and the hardware prefetcher alone left the loads waiting on memory (SmolLM2
        // Q4_1 `generate --fast` on a 2-core Xeon: 52.9 -> 69.3 tok/s on one thread, 88.4 -> 113.9
        // on two; docs/gguf.md "The prefetch").
        const size_t end = size_t(b) * row_bytes;
        prefetch(w.data, size_t(a) * row_bytes, std::min(size_t(a) * row_bytes + kPrefetchBytes, end));
        for (int64_t r = a; r < b; ++r) {
          const size_t ahead = size_t(r) * row_bytes + kPrefetchBytes;
          prefetch(w.data, ahead, std::min(ahead + row_bytes, end));
          for (int64_t t = 0; t < n; ++t) {
            const float d = quant::dot_row(gt, w.data + size_t(r) * row_bytes, (*px)[size_t(t)], fast);
            y[t * ldy + r] = accumulate ? y[t * ldy + r] + d : d;
          }
        }
        return;
      }
      const float* wf = w.as_f32();
      const bool bf16 = w.dtype == model::DType::bf16 && reinterpret_cast<uintptr_t>(w.data) % 2 == 0;
      if (n == 1 && (wf || bf16)) {
        if (wf) eigen::simd::gemv(wf + a * k, k, k, b - a, x, y + a, accumulate);
        else eigen::simd::gemv(reinterpret_cast<const uint16_t*>(w.data) + a * k, k, k, b - a, x, y + a, accumulate);
        return;
      }
      row.resize(wf ? 0 : size_t(k));
      for (int64_t r = a; r < b; ++r) {
        const float* wr = wf ? wf + r * k : row.data();
        if (!wf) eigen_detail::to_float(w, size_t(r * k), size_t(k), row.data());
        const Eigen::Map<const Eigen::VectorXf> wrow(wr, k);
        for (int64_t t = 0; t < n; ++t) {
          const float d = wrow.dot(Eigen::Map<const Eigen::VectorXf>(x + t * k, k));
          y[t * ldy + r] = accumulate ? y[t * ldy + r] + d : d;
        }
      }
    }
  };

  // Several decode products at once (q|k|v of one input, gate|up): the input prepared once, and
  // one parallel loop over the row chunks of all of them. Small work stays on the calling thread without a
  // region at all (a tiny model's decode step is ~30 of them). Each row is computed as on its
  // own, so grouping changes no result.
  static void gemv(std::span<Gemv> jobs) {
    std::vector<std::vector<quant::PreparedX>> prepared;  // one per distinct input
    std::vector<const Gemv*> owner;                        // the job each was prepared for
    prepared.reserve(jobs.size());
    int64_t work = 0;
    for (Gemv& j : jobs) {
      work += j.out() * j.in() * j.n;
      if (!j.qdot()) continue;
      size_t i = 0;
      while (i < owner.size() && !(owner[i]->x == j.x && owner[i]->n == j.n && owner[i]->in() == j.in() && owner[i]->fast == j.fast)) ++i;
      if (i == owner.size()) {
        auto& px = prepared.emplace_back(size_t(j.n));
        for (int64_t t = 0; t < j.n; ++t) px[size_t(t)].prepare(j.x + t * j.in(), j.in(), j.fast);
        owner.push_back(&j);
      }
      j.px = &prepared[i];
    }
    if (work <= (int64_t(1) << 16) || eigen_detail::max_threads() == 1) {
      std::vector<float> row;
      for (const Gemv& j : jobs) j.rows(0, j.out(), row);
      return;
    }
    // Chunks of 64 rows (long runs for the prefetch), fewer where that leaves < 4 chunks a thread.
    int64_t rows = 0, chunk = 64;
    for (const Gemv& j : jobs) rows += j.out();
    while (chunk > 16 && rows < 4 * chunk * eigen_detail::max_threads()) chunk /= 2;
    std::vector<int64_t> first(jobs.size() + 1, 0);  // first chunk of each job
    for (size_t i = 0; i < jobs.size(); ++i) first[i + 1] = first[i] + (jobs[i].out() + chunk - 1) / chunk;
    const int64_t n_chunks = first.back();
    // On the chunk pool (eigen/threads.hpp), not an OpenMP region: a thread another process holds
    // off the core is not waited for.
    parallel_chunks(n_chunks, [&](int64_t c) {
      thread_local std::vector<float> row;
      const size_t i = size_t(std::upper_bound(first.begin(), first.end(), c) - first.begin() - 1);
      const int64_t r0 = (c - first[i]) * chunk;
      jobs[i].rows(r0, std::min(jobs[i].out(), r0 + chunk), row);
    });
  }
};

}  // namespace ropex::backends
