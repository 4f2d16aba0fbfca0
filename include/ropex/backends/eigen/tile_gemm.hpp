// Register-blocked f32 products on the CPU: C[m, n] (+)= A[m, k] B[k, n], B and C row-major, A
// row-major or read through its columns. One block keeps an R x kTileCols piece of C in
// registers (AVX-512: 8 x 32 in 16 zmm accumulators; per k step R broadcasts of A, 2 loads of B,
// 2R FMAs); ragged rows get their own block size, ragged columns masked loads and stores.
// The tiled attention's two tile products (attention.hpp). Written here rather than taken from a
// BLAS: one reads V^T in place (a layout sgemm does not take), and both run inside OpenMP
// threads, where a threaded BLAS would oversubscribe the cores.
#pragma once
#include <ropex/config.hpp>

#include <algorithm>
#include <cstdint>
#include <utility>

#if defined(__AVX512F__) && !defined(__CUDACC__)
#include <immintrin.h>
#endif

namespace ropex::backends::eigen::tile {

#if defined(__AVX512F__) && !defined(__CUDACC__)
constexpr int kTileRows = 8, kTileCols = 32;  // 16 zmm accumulators
#else
constexpr int kTileRows = 6, kTileCols = 16;  // 12 AVX2 accumulators (the compiler's vectors)
#endif

// One register block: C[R, cols] (+)= A[R, k] B[k, cols], cols <= kTileCols;
// A(i, p) = a[i * lda + p] (row-major) or, with AColumns, a[i + p * lda] (A's columns contiguous:
// V rows read as the columns of V^T).
template <int R, bool Accumulate, bool AColumns>
inline void block(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                  int cols) {
  auto at = [&](int r, int64_t p) { return AColumns ? a[p * lda + r] : a[r * lda + p]; };
#if defined(__AVX512F__) && !defined(__CUDACC__)
  // Intrinsics: GCC's omp-simd loops follow the tuning's preferred width (256 bits for CPUs it
  // does not know), which would leave half of each register unused. Ragged columns by masks.
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xffff) : cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : __mmask16(0);
  __m512 c0[R], c1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    c0[r] = Accumulate ? _mm512_maskz_loadu_ps(m0, c + r * ldc) : _mm512_setzero_ps();
    c1[r] = Accumulate ? _mm512_maskz_loadu_ps(m1, c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < k; ++p) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + p * ldb), b1 = _mm512_maskz_loadu_ps(m1, b + p * ldb + 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_set1_ps(at(r, p));
      c0[r] = _mm512_fmadd_ps(x, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(x, b1, c1[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(c + r * ldc, m0, c0[r]);
    _mm512_mask_storeu_ps(c + r * ldc + 16, m1, c1[r]);
  }
#else
  constexpr int C = kTileCols;
  float cc[R][C];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < C; ++j) cc[r][j] = Accumulate && j < cols ? c[r * ldc + j] : 0.0f;
  float bp[C];
  for (int64_t p = 0; p < k; ++p) {
    for (int j = 0; j < C; ++j) bp[j] = j < cols ? b[p * ldb + j] : 0.0f;
    for (int r = 0; r < R; ++r) {
      const float x = at(r, p);
      ROPEX_OMP(simd)
      for (int j = 0; j < C; ++j) cc[r][j] += x * bp[j];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < cols; ++j) c[r * ldc + j] = cc[r][j];
#endif
}

// block<R> for R = rows (1 .. kTileRows) known at run time: ragged last rows get their own size.
template <bool Accumulate, bool AColumns>
inline void block_rows(int rows, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                       int64_t ldc, int cols) {
  [&]<int... Rs>(std::integer_sequence<int, Rs...>) {
    ((rows == Rs + 1 ? block<Rs + 1, Accumulate, AColumns>(k, a, lda, b, ldb, c, ldc, cols) : void()), ...);
  }(std::make_integer_sequence<int, kTileRows>{});
}

// C[m, n] (+)= A[m, k] B[k, n] in register blocks (A as in block).
template <bool Accumulate, bool AColumns>
inline void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                 float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; i += kTileRows) {
    const float* ai = AColumns ? a + i : a + i * lda;
    const int rows = int(std::min<int64_t>(kTileRows, m - i));
    for (int64_t j = 0; j < n; j += kTileCols)
      block_rows<Accumulate, AColumns>(rows, k, ai, lda, b + j, ldb, c + i * ldc + j, ldc,
                                       int(std::min<int64_t>(kTileCols, n - j)));
  }
}

}  // namespace ropex::backends::eigen::tile
