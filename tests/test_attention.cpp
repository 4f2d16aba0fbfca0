// Tiled attention (backends/eigen/attention.hpp) and the online softmax against the double
// reference (attention/reference.hpp). Tolerance, flash-attention style: the tiled kernel's error
// vs the double oracle must be within 2x the error of a naive float32 implementation
// (materialized scores, plain softmax) on the same inputs, plus NMSE < 1e-9.
#include <doctest/doctest.h>

#include <ropex/attention/online_softmax.hpp>
#include <ropex/attention/reference.hpp>
#include <ropex/backends/eigen/attention.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace ropex::attention;
using ropex::backends::eigen::attention_tiled;
using ropex::backends::eigen::AttentionTiles;

namespace {

std::vector<float> random_vec(size_t n, std::mt19937& rng, float sd) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> x(n);
  for (auto& e : x) e = nd(rng);
  return x;
}

// Same-precision naive attention: scores materialized in float, plain float softmax.
std::vector<float> naive_float(HeadsView<const float> q, HeadsView<const float> k, HeadsView<const float> v,
                               const AttentionShape& s) {
  std::vector<float> out(size_t(s.n_queries * s.n_heads * s.head_dim), 0.0f), p(size_t(s.n_keys));
  for (int64_t i = 0; i < s.n_queries; ++i)
    for (int64_t h = 0; h < s.n_heads; ++h) {
      const int64_t nv = s.visible_keys(i), kvh = h / s.group();
      float mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < nv; ++j) {
        float dot = 0;
        for (int64_t t = 0; t < s.head_dim; ++t) dot += q.row(i, h)[t] * k.row(j, kvh)[t];
        p[j] = dot * float(s.scale);
        mx = std::max(mx, p[j]);
      }
      for (int64_t j = 0; j < nv; ++j) sum += (p[j] = std::exp(p[j] - mx));
      float* o = out.data() + (i * s.n_heads + h) * s.head_dim;
      for (int64_t j = 0; j < nv; ++j)
        for (int64_t t = 0; t < s.head_dim; ++t) o[t] += p[j] / sum * v.row(j, kvh)[t];
    }
  return out;
}

struct Errors {
  double max_abs = 0, nmse = 0;
};
template <class V>
Errors compare(const V& got, HeadsView<const float> view, const AttentionShape& s, const std::vector<double>& ref) {
  Errors e;
  double num = 0, den = 0;
  for (int64_t i = 0; i < s.n_queries; ++i)
    for (int64_t h = 0; h < s.n_heads; ++h)
      for (int64_t t = 0; t < s.head_dim; ++t) {
        const double r = ref[size_t((i * s.n_heads + h) * s.head_dim + t)];
        double g;
        if constexpr (std::is_same_v<V, HeadsView<const float>>) g = got.row(i, h)[t];
        else g = got[size_t((i * s.n_heads + h) * s.head_dim + t)];
        const double err = std::isnan(g) ? INFINITY : std::abs(g - r);
        e.max_abs = std::max(e.max_abs, err);
        num += err * err;
        den += r * r;
      }
  e.nmse = den > 0 ? num / den : num;
  (void)view;
  return e;
}

// Runs one case: tokens-major q/out, K/V either token-major or head-major (KV-cache layout).
// `check_from` limits the (slow) reference to queries >= check_from.
void check_case(int64_t n_queries, int64_t n_keys, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                bool causal, bool head_major_kv, uint32_t seed, AttentionTiles tiles = {}, int64_t check_from = 0) {
  INFO("n_queries=" << n_queries << " n_keys=" << n_keys << " heads=" << n_heads << "/" << n_kv_heads
                     << " head_dim=" << head_dim << " causal=" << causal << " head_major_kv=" << head_major_kv
                     << " tiles=" << tiles.queries << "x" << tiles.keys);
  std::mt19937 rng(seed);
  AttentionShape s;
  s.n_queries = n_queries, s.n_keys = n_keys, s.n_heads = n_heads, s.n_kv_heads = n_kv_heads;
  s.head_dim = head_dim, s.query_offset = n_keys - n_queries, s.causal = causal;
  s.scale = 1.0 / std::sqrt(double(head_dim));
  // sd 1.5 gives peaked softmaxes (scores ~ N(0, 2.25*...)) that exercise the running max.
  auto qd = random_vec(size_t(n_queries * n_heads * head_dim), rng, 1.5f);
  auto kd = random_vec(size_t(n_keys * n_kv_heads * head_dim), rng, 1.5f);
  auto vd = random_vec(size_t(n_keys * n_kv_heads * head_dim), rng, 1.0f);
  HeadsView<const float> q = token_major<const float>(qd.data(), n_heads, head_dim);
  HeadsView<const float> k = head_major_kv ? head_major<const float>(kd.data(), n_keys, head_dim)
                                           : token_major<const float>(kd.data(), n_kv_heads, head_dim);
  HeadsView<const float> v = head_major_kv ? head_major<const float>(vd.data(), n_keys, head_dim)
                                           : token_major<const float>(vd.data(), n_kv_heads, head_dim);
  std::vector<float> out(qd.size(), std::numeric_limits<float>::quiet_NaN());  // poisoned
  attention_tiled(q, k, v, token_major<float>(out.data(), n_heads, head_dim), s, tiles);

  // Reference and naive on queries [check_from, n_queries) only.
  AttentionShape sub = s;
  sub.n_queries = n_queries - check_from;
  sub.query_offset = s.query_offset + check_from;
  HeadsView<const float> qsub{q.row(check_from, 0), q.token_stride, q.head_stride};
  const auto ref = attention_reference(qsub, k, v, sub);
  const auto naive = naive_float(qsub, k, v, sub);
  HeadsView<const float> got{out.data() + check_from * n_heads * head_dim, n_heads * head_dim, head_dim};
  const Errors et = compare(got, got, sub, ref);
  const Errors en = compare(naive, got, sub, ref);
  INFO("tiled max_abs=" << et.max_abs << " nmse=" << et.nmse << "  naive-float max_abs=" << en.max_abs
                        << " nmse=" << en.nmse);
  CHECK(et.max_abs <= 2.0 * en.max_abs + 1e-6);
  CHECK(et.nmse < 1e-9);
  if (check_from > 0) {  // rows not compared to the reference must still have been written
    int64_t n_nan = 0;
    for (int64_t i = 0; i < check_from * n_heads * head_dim; ++i) n_nan += std::isnan(out[size_t(i)]);
    CHECK(n_nan == 0);
  }
}

}  // namespace

TEST_CASE("online softmax: streaming over blocks and merging partial states equal the plain softmax") {
  const std::vector<double> s = {0.3, -1.2, 4.0, 2.5, -0.7, 3.9, 0.0};
  double mx = -INFINITY, denom = 0;
  for (double x : s) mx = std::max(mx, x);
  for (double x : s) denom += std::exp(x - mx);
  // Streaming in blocks of 3: sum and max match.
  SoftmaxState<double> st;
  for (size_t b = 0; b < s.size(); b += 3) {
    double bm = -INFINITY;
    for (size_t j = b; j < std::min(s.size(), b + 3); ++j) bm = std::max(bm, s[j]);
    softmax_rescale(st, bm);
    for (size_t j = b; j < std::min(s.size(), b + 3); ++j) st.sum += softmax_weight(st, s[j]);
  }
  CHECK(st.max == doctest::Approx(mx));
  CHECK(st.sum == doctest::Approx(denom).epsilon(1e-14));
  CHECK(softmax_finalize(st) == doctest::Approx(1.0 / denom));
  // Merge two partial states over disjoint halves.
  SoftmaxState<double> a, b;
  softmax_rescale(a, 4.0);
  for (int j = 0; j < 3; ++j) a.sum += softmax_weight(a, s[size_t(j)]);
  softmax_rescale(b, 3.9);
  for (int j = 3; j < 7; ++j) b.sum += softmax_weight(b, s[size_t(j)]);
  const auto m = softmax_merge(a, b);
  CHECK(m.merged.max == 4.0);
  CHECK(m.merged.sum == doctest::Approx(denom).epsilon(1e-14));
  CHECK(m.factor_a == 1.0);
  CHECK(m.factor_b == doctest::Approx(std::exp(-0.1)));
  // All-masked rows: no NaN, zero output scale.
  SoftmaxState<float> masked;
  CHECK(softmax_rescale(masked, -INFINITY) == 0.0f);
  CHECK(softmax_finalize(masked) == 0.0f);
  const auto mm = softmax_merge(masked, SoftmaxState<float>{});
  CHECK(mm.factor_a == 0.0f);
  CHECK(mm.merged.sum == 0.0f);
}

TEST_CASE("attention reference: one key gives its value; uniform scores give the mean; bad shapes throw") {
  // One query, two keys with equal scores -> mean of the two values.
  const std::vector<float> q = {1, 0}, k = {0, 1, 0, 1}, v = {2, 4, 6, 8};
  AttentionShape s{1, 2, 1, 1, 2, 1, true, 1.0};
  const auto o = attention_reference(token_major(q.data(), 1, 2), token_major(k.data(), 1, 2),
                                     token_major(v.data(), 1, 2), s);
  CHECK(o[0] == doctest::Approx(4.0));
  CHECK(o[1] == doctest::Approx(6.0));
  // Causal with query_offset 0: the query sees only key 0.
  s.query_offset = 0;
  const auto o2 = attention_reference(token_major(q.data(), 1, 2), token_major(k.data(), 1, 2),
                                      token_major(v.data(), 1, 2), s);
  CHECK(o2[0] == 2.0);
  CHECK(o2[1] == 4.0);
  s.n_kv_heads = 3;
  CHECK_THROWS_AS(validate(s), ropex::Error);
}

TEST_CASE("tiled attention matches the double reference: GQA 1/2/4/8, head_dim 64/80/128, odd lengths") {
  uint32_t seed = 1;
  for (int64_t ratio : {1, 2, 4, 8})
    for (int64_t hd : {64, 80, 128})
      for (int64_t seq : {1, 7, 129}) check_case(seq, seq, 8, 8 / ratio, hd, true, false, seed++);
}

TEST_CASE("tiled attention: decode and chunked queries over a head-major KV cache, non-causal, odd tiles") {
  uint32_t seed = 100;
  for (int64_t hd : {64, 80, 128}) {
    check_case(1, 300, 8, 2, hd, true, true, seed++);     // one decode step at position 299
    check_case(37, 301, 4, 1, hd, true, true, seed++);    // a chunk of 37 new tokens after 264 cached
    check_case(19, 53, 4, 4, hd, false, false, seed++);   // no mask
  }
  check_case(129, 129, 8, 2, 64, true, false, seed++, AttentionTiles{7, 5});  // ragged tiles, rows path
  // The transposed block (>= 16 queries): lanes 32 + 8, key tiles of 5 (ragged register rows),
  // a head_dim that is not a multiple of the register rows, a cache offset
  check_case(129, 129, 8, 2, 64, true, false, seed++, AttentionTiles{40, 5});
  check_case(70, 70, 4, 2, 20, true, false, seed++, AttentionTiles{32, 7});
  check_case(37, 301, 4, 1, 80, true, true, seed++, AttentionTiles{16, 13});
  check_case(129, 129, 8, 2, 64, true, true, seed++, AttentionTiles{1, 1});
  check_case(50, 50, 2, 1, 80, true, false, seed++, AttentionTiles{64, 1000});  // one key tile
}

TEST_CASE("tiled attention at 4097 tokens (reference checked on the last 40 queries and the first 8)") {
  check_case(4097, 4097, 2, 1, 64, true, false, 7, {}, 4097 - 40);
  check_case(8, 8, 2, 1, 128, true, false, 8);
}
