// Tiled causal attention on the CPU with an online softmax (FlashAttention's algorithm, Dao et al.
// 2022, done with CPU tiles): for each (head, block of queries) walk the visible keys in blocks,
// keep a running max/sum per query row (attention/online_softmax.hpp) and a [block, head_dim]
// accumulator. Memory per thread is O(block x head_dim); no [seq, seq] score matrix ever exists.
//
//   work item (h, query block Qb):          for each key block Kb (inside the causal limit and
//                                           the sliding window, when there is one):
//     Qs = Qb * scale       [bq, d]           S  = Qs Kb^T            [bq, bk]   (-inf where j > i)
//     acc = 0               [bq, d]           m' = max(m, rowmax S);  acc *= exp(m - m')
//     state[r] = {-inf, 0}                    P  = exp(S - m');       l = l*exp(m-m') + rowsum P
//                                             acc += P Vb             [bq, d]
//     out = acc / l
//
// The tile products are small register-blocked loops the compiler vectorizes (they run inside
// OpenMP threads, where handing them to a threaded BLAS would oversubscribe the cores); a decode
// step (few query rows) scores and accumulates straight on the cache rows (simd.hpp); exp uses
// Eigen's packets.
#pragma once
#include <ropex/config.hpp>
#include <ropex/attention/layout.hpp>
#include <ropex/attention/online_softmax.hpp>
#include <ropex/attention/reference.hpp>
#include <ropex/backends/eigen/simd.hpp>
#include <ropex/backends/eigen/threads.hpp>

#include <Eigen/Core>

#if defined(__AVX512F__) && !defined(__CUDACC__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace ropex::backends::eigen {

using attention::AttentionShape;
using attention::HeadsView;

/// Tile sizes of the tiled attention: queries per block, keys per block.
struct AttentionTiles {
  int64_t queries = 126;  // K/V tiles are re-read once per query block: big blocks (a multiple of 6)
  int64_t keys = 64;
};

namespace detail {

// C[m, n] (+)= A[m, k] B[k, n], row-major with leading dimensions, in 6 x 16 register blocks (6 x 32
// with AVX-512) (12 AVX2/AVX-512 accumulators; per k step 6 broadcasts of A, 2 loads of B, 12 FMAs) that the compiler
// keeps in registers; measured ~2x a 4 x 16 block here. Used for both tile products once a query
// block has several rows:  S = Qs Kt (Kt: the key tile transposed to [d, bk])  and  acc += P V.
template <bool Accumulate>
inline void gemm_tile(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                      float* c, int64_t ldc) {
#if defined(__AVX512F__) && !defined(__CUDACC__)
  // AVX-512: 6 x 32 blocks, 12 zmm accumulators (2 loads of B, 6 broadcasts, 12 FMAs per k
  // step), written with intrinsics: GCC's omp-simd loops follow the tuning's preferred width
  // (256 bits for CPUs it does not know), which would leave half of each register unused.
  constexpr int R = 6, C = 32;
#else
  constexpr int R = 6, C = 16;
#endif
  int64_t i = 0;
  for (; i + R <= m; i += R) {
    int64_t j = 0;
#if defined(__AVX512F__) && !defined(__CUDACC__)
    for (; j + C <= n; j += C) {
      __m512 c0[R], c1[R];
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        c0[r] = Accumulate ? _mm512_loadu_ps(c + (i + r) * ldc + j) : _mm512_setzero_ps();
        c1[r] = Accumulate ? _mm512_loadu_ps(c + (i + r) * ldc + j + 16) : _mm512_setzero_ps();
      }
      for (int64_t p = 0; p < k; ++p) {
        const __m512 b0 = _mm512_loadu_ps(b + p * ldb + j), b1 = _mm512_loadu_ps(b + p * ldb + j + 16);
#pragma GCC unroll 6
        for (int r = 0; r < R; ++r) {
          const __m512 x = _mm512_set1_ps(a[(i + r) * lda + p]);
          c0[r] = _mm512_fmadd_ps(x, b0, c0[r]);
          c1[r] = _mm512_fmadd_ps(x, b1, c1[r]);
        }
      }
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        _mm512_storeu_ps(c + (i + r) * ldc + j, c0[r]);
        _mm512_storeu_ps(c + (i + r) * ldc + j + 16, c1[r]);
      }
    }
#else
    for (; j + C <= n; j += C) {
      float cc[R][C];
      for (int r = 0; r < R; ++r)
        for (int jj = 0; jj < C; ++jj) cc[r][jj] = Accumulate ? c[(i + r) * ldc + j + jj] : 0.0f;
      for (int64_t p = 0; p < k; ++p) {
        const float* bp = b + p * ldb + j;
        for (int r = 0; r < R; ++r) {
          const float x = a[(i + r) * lda + p];
          ROPEX_OMP(simd)
          for (int jj = 0; jj < C; ++jj) cc[r][jj] += x * bp[jj];
        }
      }
      for (int r = 0; r < R; ++r)
        for (int jj = 0; jj < C; ++jj) c[(i + r) * ldc + j + jj] = cc[r][jj];
    }
#endif
    for (int64_t r = i; r < i + R; ++r)  // ragged columns
      for (int64_t jj = j; jj < n; ++jj) {
        float acc = Accumulate ? c[r * ldc + jj] : 0.0f;
        for (int64_t p = 0; p < k; ++p) acc += a[r * lda + p] * b[p * ldb + jj];
        c[r * ldc + jj] = acc;
      }
  }
  for (; i < m; ++i) {  // ragged rows
    float* cr = c + i * ldc;
    if (!Accumulate)
      for (int64_t jj = 0; jj < n; ++jj) cr[jj] = 0.0f;
    for (int64_t p = 0; p < k; ++p) {
      const float x = a[i * lda + p];
      const float* bp = b + p * ldb;
      ROPEX_OMP(simd)
      for (int64_t jj = 0; jj < n; ++jj) cr[jj] += x * bp[jj];
    }
  }
}

}  // namespace detail

/// out = softmax(q k^T * scale, causal) v, computed in tiles with an online softmax; GQA through
/// shape.n_kv_heads. `out` may not alias q/k/v. OpenMP threads share the (head, query block) items;
/// small calls (a tiny model's decode step) run on the calling thread without an OpenMP region.
inline void attention_tiled(HeadsView<const float> q, HeadsView<const float> k, HeadsView<const float> v,
                            HeadsView<float> out, const AttentionShape& s, AttentionTiles tiles = {}) {
  attention::validate(s);
  const int64_t d = s.head_dim, group = s.group();
  const int64_t bq = std::max<int64_t>(1, std::min(tiles.queries, s.n_queries));
  const bool blocked = bq >= 6;  // several query rows: register-blocked GEMM tiles
  // Few query rows (decode): bigger key tiles, scored and accumulated as matrix-vector products
  // on the cache rows in place (no transposed copy).
  const int64_t bk = std::max<int64_t>(1, blocked ? tiles.keys : 8 * tiles.keys);
  const int64_t n_qblocks = (s.n_queries + bq - 1) / bq;
  // Items ordered (kv head, query block, head within group): neighbours reuse the same K/V rows.
  const int64_t n_items = s.n_kv_heads * n_qblocks * group;
  const float scale = static_cast<float>(s.scale);
  const double work = double(s.n_queries) * double(s.n_keys) * double(d) * double(s.n_heads);

  // Per-thread scratch, kept between calls (decode calls this once per layer per token).
  struct Scratch {
    std::vector<float> qs, acc, sc, kt;
    std::vector<attention::SoftmaxState<float>> state;
  };
  auto scratch = [&]() -> Scratch& {
    thread_local Scratch t;
    t.qs.resize(size_t(bq * d)), t.acc.resize(size_t(bq * d)), t.sc.resize(size_t(bq * bk));
    t.kt.resize(blocked ? size_t(d * bk) : 0), t.state.resize(size_t(bq));
    return t;
  };
  auto run_item = [&](int64_t item, Scratch& w) {
    const int64_t kvh = item / (n_qblocks * group);
    const int64_t qb = (item / group) % n_qblocks;
    const int64_t h = kvh * group + item % group;
    const int64_t i0 = qb * bq, nr = std::min(bq, s.n_queries - i0);
    float *qs = w.qs.data(), *acc = w.acc.data(), *sc = w.sc.data(), *kt = w.kt.data();

    for (int64_t r = 0; r < nr; ++r) {
      const float* src = q.row(i0 + r, h);
      for (int64_t t = 0; t < d; ++t) qs[r * d + t] = src[t] * scale;
    }
    std::fill(acc, acc + nr * d, 0.0f);
    std::fill(w.state.begin(), w.state.begin() + nr, attention::SoftmaxState<float>{});

    const int64_t keys_end = s.visible_keys(i0 + nr - 1);  // the last query row sees the most keys
    // A sliding window starts at the first row's first key: tiles wholly before it are never read.
    const int64_t keys_begin = std::min(s.first_key(i0), keys_end);
    for (int64_t j0 = keys_begin; j0 < keys_end; j0 += bk) {
      const int64_t nc = std::min(bk, keys_end - j0);
      if (blocked) {
        for (int64_t c = 0; c < nc; ++c) {  // Kt[t, c] = k_c[t]
          const float* kc = k.row(j0 + c, kvh);
          for (int64_t t = 0; t < d; ++t) kt[t * bk + c] = kc[t];
        }
        detail::gemm_tile<false>(nr, nc, d, qs, d, kt, bk, sc, bk);
      } else {
        for (int64_t r = 0; r < nr; ++r)  // s_r = K_b q_r
          simd::gemv(k.row(j0, kvh), k.token_stride, d, nc, qs + r * d, sc + r * bk);
      }
      for (int64_t r = 0; r < nr; ++r) {
        float* sr = sc + r * bk;
        const int64_t visible = std::min(nc, s.visible_keys(i0 + r) - j0);  // causal mask
        for (int64_t c = std::max<int64_t>(visible, 0); c < nc; ++c) sr[c] = -std::numeric_limits<float>::infinity();
        const int64_t before = std::min(nc, s.first_key(i0 + r) - j0);  // keys left of the window
        for (int64_t c = 0; c < before; ++c) sr[c] = -std::numeric_limits<float>::infinity();
        Eigen::Map<Eigen::ArrayXf> row(sr, nc);
        const float factor = attention::softmax_rescale(w.state[r], row.maxCoeff());
        if (w.state[r].max == -std::numeric_limits<float>::infinity()) {
          row.setZero();
          continue;
        }
        row = (row - w.state[r].max).exp();
        w.state[r].sum += row.sum();
        if (factor != 1.0f) Eigen::Map<Eigen::ArrayXf>(acc + r * d, d) *= factor;
      }
      if (blocked) {
        detail::gemm_tile<true>(nr, d, nc, sc, bk, v.row(j0, kvh), v.token_stride, acc, d);
      } else {
        for (int64_t r = 0; r < nr; ++r)  // acc_r += V_b^T p_r
          simd::axpy_rows(sc + r * bk, v.row(j0, kvh), v.token_stride, nc, d, acc + r * d);
      }
    }
    for (int64_t r = 0; r < nr; ++r) {
      const float inv = attention::softmax_finalize(w.state[r]);
      float* dst = out.row(i0 + r, h);
      for (int64_t t = 0; t < d; ++t) dst[t] = acc[r * d + t] * inv;
    }
  };

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
