// Tiled causal attention on the CPU with an online softmax (FlashAttention's algorithm, Dao et al.
// 2022, done with CPU tiles): for each (head, block of queries) walk the visible keys in blocks,
// keep a running max/sum per query (attention/online_softmax.hpp) and an accumulator.
// Memory per thread is O(block x head_dim); no [seq, seq] score matrix ever exists.
//
// Many queries (prefill): the block is kept transposed, queries along the vector lanes:
//   work item (h, query block Qb):           for each key block Kb (inside the causal limit and
//                                            the sliding window, when there is one):
//     Qt  = (Qb * scale)^T   [d, bq]           St = Kb Qt                [bk, bq]  (-inf where j > i)
//     acc = 0                [d, bq]           m' = max(m, colmax St);   acc *= exp(m - m')
//     m = -inf, l = 0        [bq]              Pt = exp(St - m');        l = l*exp(m-m') + colsum Pt
//                                              acc += Vb^T Pt  (Vb read in place as a [d, bk] matrix)
//     out = (acc / l)^T
// so the softmax's max, exp and sums run down columns, one query per lane (no horizontal
// reductions), and K and V are read where they lie (K rows as the left operand, V rows as
// columns of the left operand): nothing is transposed per tile but the query block, once.
// Few queries (decode): scores and accumulation straight on the cache rows (simd.hpp).
// The tile products are tile_gemm.hpp's register blocks (they run inside OpenMP threads, where
// handing them to a threaded BLAS would oversubscribe the cores); exp uses Eigen's packets.
#pragma once
#include <ropex/config.hpp>
#include <ropex/attention/layout.hpp>
#include <ropex/attention/online_softmax.hpp>
#include <ropex/attention/reference.hpp>
#include <ropex/backends/eigen/simd.hpp>
#include <ropex/backends/eigen/tile_gemm.hpp>
#include <ropex/backends/eigen/threads.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace ropex::backends::eigen {

using attention::AttentionShape;
using attention::HeadsView;

/// Tile sizes of the tiled attention: queries per block, keys per block.
struct AttentionTiles {
  int64_t queries = 128;  // K/V tiles are re-read once per query block: big blocks (a multiple of 32)
  int64_t keys = 64;
};


/// out = softmax(q k^T * scale, causal) v, computed in tiles with an online softmax; GQA through
/// shape.n_kv_heads. `out` may not alias q/k/v. OpenMP threads share the (head, query block) items;
/// small calls (a tiny model's decode step) run on the calling thread without an OpenMP region.
inline void attention_tiled(HeadsView<const float> q, HeadsView<const float> k, HeadsView<const float> v,
                            HeadsView<float> out, const AttentionShape& s, AttentionTiles tiles = {}) {
  attention::validate(s);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t d = s.head_dim, group = s.group();
  const int64_t bq = std::max<int64_t>(1, std::min(tiles.queries, s.n_queries));
  const bool blocked = bq >= 16;  // enough queries to fill the vector lanes: the transposed block
  // Few query rows (decode): bigger key tiles, scored and accumulated as matrix-vector products
  // on the cache rows in place.
  const int64_t bk = std::max<int64_t>(1, blocked ? tiles.keys : 8 * tiles.keys);
  const int64_t n_qblocks = (s.n_queries + bq - 1) / bq;
  // Items ordered (kv head, query block, head within group): neighbours reuse the same K/V rows.
  const int64_t n_items = s.n_kv_heads * n_qblocks * group;
  const float scale = static_cast<float>(s.scale);
  const double work = double(s.n_queries) * double(s.n_keys) * double(d) * double(s.n_heads);

  // Per-thread scratch, kept between calls (decode calls this once per layer per token).
  // Aligned to Eigen's packets (64 bytes with AVX-512): rows of bq lanes then start on a vector
  // boundary, where its packet loops run from the first element (unaligned, it peels up to 15
  // lanes into scalar expf calls).
  using Floats = std::vector<float, Eigen::aligned_allocator<float>>;
  struct Scratch {
    Floats qs, acc, sc;
    Floats m, l, m_new, shift, factor, part;  // blocked: per query lane (part: 8 rows of lanes)
    std::vector<attention::SoftmaxState<float>> state;  // decode: per query row
  };
  auto scratch = [&]() -> Scratch& {
    thread_local Scratch t;
    t.qs.resize(size_t(bq * d)), t.acc.resize(size_t(bq * d)), t.sc.resize(size_t(bq * bk));
    for (auto* lane : {&t.m, &t.l, &t.m_new, &t.shift, &t.factor}) lane->resize(blocked ? size_t(bq) : 0);
    t.part.resize(blocked ? size_t(8 * bq) : 0);
    t.state.resize(blocked ? 0 : size_t(bq));
    return t;
  };
  auto item_of = [&](int64_t item, int64_t& kvh, int64_t& h, int64_t& i0, int64_t& nr) {
    kvh = item / (n_qblocks * group);
    const int64_t qb = (item / group) % n_qblocks;
    h = kvh * group + item % group;
    i0 = qb * bq, nr = std::min(bq, s.n_queries - i0);
  };

  // Many queries: the transposed block (top of the file). Arrays below are [rows][bq] with the
  // first nr lanes in use.
  auto run_block = [&](int64_t item, Scratch& w) {
    int64_t kvh, h, i0, nr;
    item_of(item, kvh, h, i0, nr);
    float *qt = w.qs.data(), *acc = w.acc.data(), *st = w.sc.data();
    using Lanes = Eigen::Map<Eigen::ArrayXf>;
    Lanes m(w.m.data(), nr), l(w.l.data(), nr), m_new(w.m_new.data(), nr), shift(w.shift.data(), nr),
        factor(w.factor.data(), nr);
    for (int64_t c = 0; c < nr; ++c) {
      const float* src = q.row(i0 + c, h);
      for (int64_t t = 0; t < d; ++t) qt[t * bq + c] = src[t] * scale;
    }
    std::fill(acc, acc + d * bq, 0.0f);
    m.setConstant(kNegInf), l.setZero();

    const int64_t keys_end = s.visible_keys(i0 + nr - 1);  // the last query sees the most keys
    // A sliding window starts at the first query's first key: tiles wholly before it are never read.
    const int64_t keys_begin = std::min(s.first_key(i0), keys_end);
    for (int64_t j0 = keys_begin; j0 < keys_end; j0 += bk) {
      const int64_t nc = std::min(bk, keys_end - j0);
      tile::gemm<false, false>(nc, nr, d, k.row(j0, kvh), k.token_stride, qt, bq, st, bq);
      // Key j is visible to query i when first_key(i) <= j < visible_keys(i): for each key a
      // range of lanes [lo, hi) (both bounds grow with i). Only tiles on the diagonal or the
      // window's edge have masked entries.
      const bool masked = j0 + nc > s.visible_keys(i0) || j0 < s.first_key(i0 + nr - 1);
      auto visible_lanes = [&](int64_t j, int64_t& lo, int64_t& hi) {
        lo = 0, hi = nr;
        while (lo < nr && s.visible_keys(i0 + lo) <= j) ++lo;
        while (hi > lo && s.first_key(i0 + hi - 1) > j) --hi;
      };
      if (masked)
        for (int64_t r = 0; r < nc; ++r) {
          int64_t lo, hi;
          visible_lanes(j0 + r, lo, hi);
          std::fill(st + r * bq, st + r * bq + lo, kNegInf);
          std::fill(st + r * bq + hi, st + r * bq + nr, kNegInf);
        }
      // online_softmax.hpp's rescale, one query per lane: m' = max(m, column max), the old sum
      // and accumulator scaled by exp(m - m'), P = exp(S - m'); a lane that has seen no visible
      // key yet keeps m = -inf and weights 0.
      m_new = m;
      for (int64_t r = 0; r < nc; ++r) m_new = m_new.max(Lanes(st + r * bq, nr));
      shift = (m_new == kNegInf).select(0.0f, m_new);
      factor = (m == kNegInf).select(0.0f, (m - shift).exp());
      m = m_new;
      // Column sums into 8 partial sums (row r into r % 8), added pairwise: the rounding of a
      // tree sum, as the rows path's Eigen reduction, instead of one long sequential chain.
      float* part = w.part.data();
      std::fill(part, part + 8 * bq, 0.0f);
      for (int64_t r = 0; r < nc; ++r) {
        Lanes p(st + r * bq, nr);
        p = (p - shift).exp();
        if (masked) {  // exp(-inf) by Eigen's packets is a denormal, not 0: the masked lanes exactly 0
          int64_t lo, hi;
          visible_lanes(j0 + r, lo, hi);
          std::fill(st + r * bq, st + r * bq + lo, 0.0f);
          std::fill(st + r * bq + hi, st + r * bq + nr, 0.0f);
        }
        Lanes(part + (r % 8) * bq, nr) += p;
      }
      auto sum = [&](int i) { return Lanes(part + i * bq, nr); };
      l = l * factor + (((sum(0) + sum(1)) + (sum(2) + sum(3))) + ((sum(4) + sum(5)) + (sum(6) + sum(7))));
      if (!(factor == 1.0f).all())
        for (int64_t t = 0; t < d; ++t) Lanes(acc + t * bq, nr) *= factor;
      tile::gemm<true, true>(d, nr, nc, v.row(j0, kvh), v.token_stride, st, bq, acc, bq);
    }
    for (int64_t c = 0; c < nr; ++c) {
      const float inv = attention::softmax_finalize(attention::SoftmaxState<float>{m[c], l[c]});
      float* dst = out.row(i0 + c, h);
      for (int64_t t = 0; t < d; ++t) dst[t] = acc[t * bq + c] * inv;
    }
  };

  // Few queries: each query row scored against the cache rows in place.
  auto run_rows = [&](int64_t item, Scratch& w) {
    int64_t kvh, h, i0, nr;
    item_of(item, kvh, h, i0, nr);
    float *qs = w.qs.data(), *acc = w.acc.data(), *sc = w.sc.data();
    for (int64_t r = 0; r < nr; ++r) {
      const float* src = q.row(i0 + r, h);
      for (int64_t t = 0; t < d; ++t) qs[r * d + t] = src[t] * scale;
    }
    std::fill(acc, acc + nr * d, 0.0f);
    std::fill(w.state.begin(), w.state.begin() + nr, attention::SoftmaxState<float>{});
    const int64_t keys_end = s.visible_keys(i0 + nr - 1);
    const int64_t keys_begin = std::min(s.first_key(i0), keys_end);
    for (int64_t j0 = keys_begin; j0 < keys_end; j0 += bk) {
      const int64_t nc = std::min(bk, keys_end - j0);
      for (int64_t r = 0; r < nr; ++r)  // s_r = K_b q_r
        simd::gemv(k.row(j0, kvh), k.token_stride, d, nc, qs + r * d, sc + r * bk);
      for (int64_t r = 0; r < nr; ++r) {
        float* sr = sc + r * bk;
        const int64_t visible = std::min(nc, s.visible_keys(i0 + r) - j0);  // causal mask
        for (int64_t c = std::max<int64_t>(visible, 0); c < nc; ++c) sr[c] = kNegInf;
        const int64_t before = std::min(nc, s.first_key(i0 + r) - j0);  // keys left of the window
        for (int64_t c = 0; c < before; ++c) sr[c] = kNegInf;
        Eigen::Map<Eigen::ArrayXf> row(sr, nc);
        const float factor = attention::softmax_rescale(w.state[r], row.maxCoeff());
        if (w.state[r].max == kNegInf) {
          row.setZero();
          continue;
        }
        row = (row - w.state[r].max).exp();
        w.state[r].sum += row.sum();
        if (factor != 1.0f) Eigen::Map<Eigen::ArrayXf>(acc + r * d, d) *= factor;
      }
      for (int64_t r = 0; r < nr; ++r)  // acc_r += V_b^T p_r
        simd::axpy_rows(sc + r * bk, v.row(j0, kvh), v.token_stride, nc, d, acc + r * d);
    }
    for (int64_t r = 0; r < nr; ++r) {
      const float inv = attention::softmax_finalize(w.state[r]);
      float* dst = out.row(i0 + r, h);
      for (int64_t t = 0; t < d; ++t) dst[t] = acc[r * d + t] * inv;
    }
  };
  auto run_item = [&](int64_t item, Scratch& w) { blocked ? run_block(item, w) : run_rows(item, w); };

  if (work <= 2e5 || n_items == 1) {
    Scratch& w = scratch();
    for (int64_t item = 0; item < n_items; ++item) run_item(item, w);
    return;
  }
  if (!blocked) {  // decode: on the chunk pool, as the decode products (threads.hpp says why)
    parallel_chunks(n_items, [&](int64_t item) { run_item(item, scratch()); });
    return;
  }
ROPEX_OMP(parallel)
  {
    Scratch& w = scratch();
    ROPEX_OMP(for schedule(dynamic, 1))
    for (int64_t item = 0; item < n_items; ++item) run_item(item, w);
  }
}

}  // namespace ropex::backends::eigen
