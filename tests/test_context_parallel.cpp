// The context-parallel ring (parallel/zigzag.hpp) on the CPU: every rank's queries attended to the
// K/V chunks that pass it, block by block, merged by their log-sum-exps (online_softmax.hpp's
// lse_merge, the same function the CUDA ring merges with) must give the one-window attention of the
// double-precision oracle — for 1..8 ranks, odd window lengths, GQA, causal, non-causal and
// sliding-window masks. Also: each (query, key) pair is computed exactly once, and the causal work
// is balanced across ranks.
#include <doctest/doctest.h>

#include <ropex/attention/online_softmax.hpp>
#include <ropex/attention/reference.hpp>
#include <ropex/parallel/zigzag.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace ropex;
using namespace ropex::parallel;
using attention::AttentionShape;

namespace {

struct Case {
  int64_t tokens;
  int ranks, heads, kv_heads, head_dim;
  bool causal;
  int64_t window;
};

// Rows [span) of a token-major [tokens, heads, head_dim] array.
attention::HeadsView<const double> rows(const std::vector<double>& x, Span s, int heads, int head_dim) {
  return {x.data() + s.begin * heads * head_dim, int64_t(heads) * head_dim, head_dim};
}

// The ring on simulated ranks: returns the attention output of every window position.
std::vector<double> ring_attention_cpu(const Case& c, const std::vector<double>& q, const std::vector<double>& k,
                                       const std::vector<double>& v, const AttentionShape& whole) {
  const Zigzag z(c.tokens, c.ranks);
  const int64_t hd = c.head_dim, H = c.heads;
  std::vector<double> out(q.size(), 0.0);
  for (int r = 0; r < c.ranks; ++r) {
    // rank r's accumulator over its two chunks, indexed by window position (rows it does not hold stay unused)
    std::vector<double> acc(q.size(), 0.0), acc_lse(size_t(H * c.tokens), -INFINITY);
    for (int step = 0; step < c.ranks; ++step)
      for (const RingBlock& b : ring_blocks(z, r, step, c.causal, c.window)) {
        std::vector<double> lse;
        const AttentionShape s = block_shape(whole, b.q, b.k, b.block);
        const auto part = attention::attention_reference(rows(q, b.q, c.heads, c.head_dim),
                                                         rows(k, b.k, c.kv_heads, c.head_dim),
                                                         rows(v, b.k, c.kv_heads, c.head_dim), s, &lse);
        for (int64_t i = 0; i < b.q.size(); ++i)
          for (int64_t h = 0; h < H; ++h) {
            double& a_lse = acc_lse[size_t(h * c.tokens + b.q.begin + i)];
            const auto m = attention::lse_merge(a_lse, lse[size_t(h * b.q.size() + i)]);
            double* o = acc.data() + ((b.q.begin + i) * H + h) * hd;
            const double* p = part.data() + (i * H + h) * hd;
            for (int64_t d = 0; d < hd; ++d) o[d] = o[d] * m.factor_a + p[d] * m.factor_b;
            a_lse = m.lse;
          }
      }
    for (int which = 0; which < 2; ++which) {
      const Span s = z.chunk(z.chunks_of(r)[which]);
      std::copy(acc.begin() + s.begin * H * hd, acc.begin() + s.end * H * hd, out.begin() + s.begin * H * hd);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("zigzag chunks cover the window once; rank r holds chunks r and 2N-1-r") {
  for (int n : {1, 2, 3, 4, 8})
    for (int64_t t : {int64_t(2 * n), int64_t(97), int64_t(1000), int64_t(4096)}) {
      if (t < 2 * n) continue;
      const Zigzag z(t, n);
      std::vector<int> seen(size_t(t), 0);
      int64_t held = 0;
      for (int r = 0; r < n; ++r) {
        for (int64_t p : z.positions_of(r)) ++seen[size_t(p)];
        held += z.local_tokens(r);
        CHECK(z.chunks_of(r)[0] == r);
        CHECK(z.chunks_of(r)[1] == 2 * n - 1 - r);
      }
      CHECK(held == t);
      CHECK(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
      for (int c = 0; c < z.chunks(); ++c) CHECK(std::abs(z.chunk(c).size() - t / (2 * n)) <= 1);
    }
  CHECK_THROWS_WITH_AS(Zigzag(3, 2), doctest::Contains("tokens"), ropex::Error);
  CHECK_THROWS_WITH_AS(Zigzag(100, 0), doctest::Contains("ranks"), ropex::Error);
}

TEST_CASE("the ring visits every causal (query, key) pair exactly once and balances the work") {
  for (int n : {1, 2, 4, 8}) {
    const int64_t t = 1024;
    const Zigzag z(t, n);
    std::vector<int> visits(size_t(t * t), 0);
    std::vector<int64_t> pairs_per_rank(size_t(n), 0);
    for (int r = 0; r < n; ++r)
      for (int step = 0; step < n; ++step)
        for (const RingBlock& b : ring_blocks(z, r, step, true, 0))
          for (int64_t i = b.q.begin; i < b.q.end; ++i)
            for (int64_t j = b.k.begin; j < b.k.end; ++j)
              if (j <= i) {
                ++visits[size_t(i * t + j)];
                ++pairs_per_rank[size_t(r)];
              }
    bool once = true;
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j <= i; ++j) once = once && visits[size_t(i * t + j)] == 1;
    CHECK(once);
    const auto [lo, hi] = std::minmax_element(pairs_per_rank.begin(), pairs_per_rank.end());
    CAPTURE(n);
    CHECK(double(*hi) / double(*lo) < 1.01);  // zigzag: equal causal work on every rank
  }
}

TEST_CASE("block classification by positions") {
  CHECK(classify({0, 8}, {8, 16}, true, 0).kind == BlockKind::skip);     // keys after the queries
  CHECK(classify({8, 16}, {0, 8}, true, 0).kind == BlockKind::full);     // keys before: no mask
  const Block d = classify({8, 16}, {8, 16}, true, 0);                     // diagonal
  CHECK(d.kind == BlockKind::masked);
  CHECK(d.query_offset == 0);
  CHECK(classify({100, 108}, {0, 8}, true, 16).kind == BlockKind::skip);  // left every window
  const Block w = classify({16, 24}, {8, 16}, true, 12);                   // partly inside the windows
  CHECK(w.kind == BlockKind::masked);
  CHECK(w.query_offset == 8);
  CHECK(classify({16, 24}, {8, 16}, false, 0).kind == BlockKind::full);
}

TEST_CASE("ring attention over simulated ranks equals one-window attention (double oracle)") {
  const Case cases[] = {
      {64, 1, 4, 4, 16, true, 0},   {64, 2, 4, 2, 16, true, 0},  {97, 3, 6, 2, 8, true, 0},
      {128, 4, 8, 1, 16, true, 0},  {200, 8, 4, 4, 8, true, 0},  {96, 4, 4, 2, 8, false, 0},
      {160, 4, 4, 2, 8, true, 24},  {131, 3, 2, 1, 8, true, 7},  {64, 2, 2, 2, 8, true, 1},
  };
  std::mt19937 rng(7);
  std::normal_distribution<double> nd(0.0, 1.5);
  for (const Case& c : cases) {
    CAPTURE(c.tokens); CAPTURE(c.ranks); CAPTURE(c.heads); CAPTURE(c.kv_heads); CAPTURE(c.causal); CAPTURE(c.window);
    std::vector<double> q(size_t(c.tokens * c.heads * c.head_dim)), k(size_t(c.tokens * c.kv_heads * c.head_dim)),
        v(k.size());
    for (auto* x : {&q, &k, &v})
      for (double& e : *x) e = nd(rng);
    AttentionShape whole;
    whole.n_queries = whole.n_keys = c.tokens;
    whole.n_heads = c.heads; whole.n_kv_heads = c.kv_heads; whole.head_dim = c.head_dim;
    whole.causal = c.causal; whole.window = c.window;
    whole.scale = 1.0 / std::sqrt(double(c.head_dim));
    const auto want = attention::attention_reference(rows(q, {0, c.tokens}, c.heads, c.head_dim),
                                                     rows(k, {0, c.tokens}, c.kv_heads, c.head_dim),
                                                     rows(v, {0, c.tokens}, c.kv_heads, c.head_dim), whole);
    const auto got = ring_attention_cpu(c, q, k, v, whole);
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(want[i] - got[i]));
    CHECK(worst < 1e-12);
  }
}

TEST_CASE("lse_merge: a partial that saw no key contributes nothing") {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const auto m = attention::lse_merge(-inf, 1.5);
  CHECK(m.lse == doctest::Approx(1.5));
  CHECK(m.factor_a == 0.0);
  CHECK(m.factor_b == doctest::Approx(1.0));
  const auto none = attention::lse_merge(-inf, -inf);
  CHECK(std::isinf(none.lse));
  CHECK(none.factor_a == 0.0);
  CHECK(none.factor_b == 0.0);
  const auto both = attention::lse_merge(std::log(2.0), std::log(6.0));
  CHECK(both.lse == doctest::Approx(std::log(8.0)));
  CHECK(both.factor_a == doctest::Approx(0.25));
  CHECK(both.factor_b == doctest::Approx(0.75));
}
