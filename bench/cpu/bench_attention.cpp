// Tiled online-softmax attention (ops<cpu>::attention) vs a naive materialized-scores Eigen
// version (S = Q K^T as one GEMM per head, masked softmax over the [n, n] matrix, O = P V), causal,
// 8 heads x head_dim 128, 1K-16K tokens. The naive one needs n*n*4 bytes per head (1 GiB at 16K);
// the tiled one O(n * head_dim).
#include <ropex/backends/eigen/ops.hpp>

#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace {

using namespace ropex;
constexpr int64_t kHeads = 8, kHeadDim = 128;

struct Inputs {
  std::vector<float> q, k, v, out;
  explicit Inputs(int64_t n) : q(size_t(n * kHeads * kHeadDim)), k(q.size()), v(q.size()), out(q.size()) {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    for (auto* x : {&q, &k, &v})
      for (auto& e : *x) e = nd(rng);
  }
};

attention::AttentionShape shape(int64_t n) {
  attention::AttentionShape s;
  s.n_queries = s.n_keys = n, s.n_heads = s.n_kv_heads = kHeads, s.head_dim = kHeadDim;
  s.scale = 1.0 / std::sqrt(double(kHeadDim));
  return s;
}

void counters(benchmark::State& st, int64_t n, bool causal_skips) {
  // Useful FLOPs (causal: half of QK^T and PV), the same count for both so rates compare.
  const double flops = 2.0 * 2.0 * double(n) * double(n) * kHeadDim * kHeads / 2.0;
  st.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["tokens"] = double(n);
  (void)causal_skips;
}

void BM_attention_tiled(benchmark::State& st) {
  const int64_t n = st.range(0);
  Inputs in(n);
  const auto s = shape(n);
  for (auto _ : st) {
    backends::ops<backends::cpu>::attention(attention::token_major<const float>(in.q.data(), kHeads, kHeadDim),
                                            attention::token_major<const float>(in.k.data(), kHeads, kHeadDim),
                                            attention::token_major<const float>(in.v.data(), kHeads, kHeadDim),
                                            attention::token_major<float>(in.out.data(), kHeads, kHeadDim), s);
    benchmark::DoNotOptimize(in.out.data());
  }
  counters(st, n, true);
}

void BM_attention_naive(benchmark::State& st) {
  const int64_t n = st.range(0);
  Inputs in(n);
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Map = Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>;
  RowMatrix scores(n, n);  // [n, n]: the memory the tiled version never needs
  const float scale = float(1.0 / std::sqrt(double(kHeadDim)));
  for (auto _ : st) {
    for (int64_t h = 0; h < kHeads; ++h) {
      const Map Q(in.q.data() + h * kHeadDim, n, kHeadDim, Eigen::OuterStride<>(kHeads * kHeadDim));
      const Map K(in.k.data() + h * kHeadDim, n, kHeadDim, Eigen::OuterStride<>(kHeads * kHeadDim));
      const Map V(in.v.data() + h * kHeadDim, n, kHeadDim, Eigen::OuterStride<>(kHeads * kHeadDim));
      scores.noalias() = (Q * scale) * K.transpose();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        auto row = scores.row(i).array();
        row.tail(n - i - 1) = -std::numeric_limits<float>::infinity();  // causal mask
        row = (row - row.head(i + 1).maxCoeff()).exp();
        row /= row.sum();
      }
      Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>> O(in.out.data() + h * kHeadDim, n, kHeadDim,
                                                       Eigen::OuterStride<>(kHeads * kHeadDim));
      O.noalias() = scores * V;
    }
    benchmark::DoNotOptimize(in.out.data());
  }
  counters(st, n, false);
}

// SmolLM2-135M's prefill at 2048 tokens, one layer: 9 query / 3 KV heads of 64, the forward's four
// 512-query chunks after 0, 512, 1024, 1536 cached keys (token-major K/V, as the forward passes).
void BM_attention_smollm2_layer(benchmark::State& st) {
  constexpr int64_t H = 9, KV = 3, D = 64, N = 2048, C = 512;
  std::vector<float> q(size_t(N * H * D)), k(size_t(N * KV * D)), v(k.size()), out(q.size());
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto* x : {&q, &k, &v})
    for (auto& e : *x) e = nd(rng);
  double flops = 0;  // useful: causal half of the diagonal chunk
  for (auto _ : st) {
    flops = 0;
    for (int64_t c0 = 0; c0 < N; c0 += C) {
      attention::AttentionShape s;
      s.n_queries = C, s.n_keys = c0 + C, s.n_heads = H, s.n_kv_heads = KV, s.head_dim = D, s.query_offset = c0;
      s.scale = 1.0 / std::sqrt(double(D));
      backends::ops<backends::cpu>::attention(attention::token_major<const float>(q.data() + c0 * H * D, H, D),
                                              attention::token_major<const float>(k.data(), KV, D),
                                              attention::token_major<const float>(v.data(), KV, D),
                                              attention::token_major<float>(out.data() + c0 * H * D, H, D), s);
      flops += 4.0 * H * D * (double(C) * double(c0) + double(C) * double(C + 1) / 2.0);
    }
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_attention_smollm2_layer)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_attention_tiled)->RangeMultiplier(2)->Range(1024, 16384)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_attention_naive)->RangeMultiplier(2)->Range(1024, 16384)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
