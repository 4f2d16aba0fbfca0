// The many-token product of QuantMode::fast:  Y[n, N] (+)= X[n, K] W[N, K]^T  with W in ggml
// blocks (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K) and X quantized to int8 once per call, per 32-block as
// llama.cpp quantizes activations (Q8_0/Q8_1: q = round(x / dx), dx = max|x| / 127).
//
// Every type is read as 32-element sub-blocks of unsigned integers with a scale and an offset:
//   w_k = dw * (u_k - off) + mw      u_k in [0, 255]
//   Q4_0: u = nibble, off 8, mw 0    Q8_0: u = q + 128, off 128, mw 0    Q4_1: dw = d, mw = m
//   Q4_K / Q5_K: dw = d * sc, mw = -dmin * m (sub-block s of the super-block)
// and the product of weight row j with token row i is, block by block in order (b = 0, 1, ...):
//   isum = sum_k (u_jk - off) q_ik                       (exact, int32)
//   acc  = fma(float(isum), dw_jb * dx_ib, acc)          (fp32, one rounding each)
//   acc  = fma(mw_jb, dx_ib * float(sum_k q_ik), acc)    (types with a min)
// The SIMD kernels compute exactly this, so they equal the scalar form bit for bit
// (tests/test_quant_gemm.cpp); its error against the exact product is dot.hpp's fast-mode bound.
//
// Layout (what makes it a GEMM and not n*N dot products): the weight rows are unpacked once per
// tile of 16 rows into `TileBlock`s, [g][row][4] bytes for the 8 groups of 4 elements of a
// sub-block, so one 512-bit register holds 4 consecutive elements of 16 rows; a token's 4 int8
// activations are broadcast against it (vpdpbusd: 16 rows x 4 products into 16 int32 lanes). A
// tile (K/32 * 640 bytes: 11 KB at K = 576) stays in L1 while every token row streams past it,
// 8 tokens at a time, each weight register reused by the 8.
// Kernels: AVX-512 VNNI (picked at run time, or compiled in natively), AVX2 (maddubs; Q8_0 via
// |w| and sign(x, w), since (q + 128) * x can overflow its int16 pairs), scalar elsewhere.
// Threads: the caller's parallel-for (ops<cpu>: its chunk pool, backends/eigen/threads.hpp; by
// default OpenMP): the rows quantized, then tiles of output columns claimed dynamically (a
// preempted thread's tiles are taken over on a shared machine).
#pragma once
#include <ropex/config.hpp>
#include <ropex/quant/blocks.hpp>
#include <ropex/quant/dequantize.hpp>
#include <ropex/quant/dot.hpp>
#include <ropex/quant/ggml_type.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ropex::quant {

/// The types the int8 GEMM reads (the fast-mode types of dot.hpp).
constexpr bool has_int8_gemm(GgmlType t) { return has_int8_dot(t); }

/// `off` of the unsigned form above.
constexpr int32_t int8_offset(GgmlType t) { return t == GgmlType::Q4_0 ? 8 : t == GgmlType::Q8_0 ? 128 : 0; }
/// Whether the type has a per-block min (mw != 0).
constexpr bool int8_has_min(GgmlType t) { return t == GgmlType::Q4_1 || t == GgmlType::Q4_K || t == GgmlType::Q5_K; }

/// Sub-block `s` (elements 32s .. 32s+31) of one weight row of type T in the unsigned form:
/// u[32], dw, mw. dw * (u - off) + mw equals quant::dequantize's value (tests/test_quant_gemm.cpp).
template <GgmlType T>
inline void unpack32_as(const std::byte* row, int64_t s, uint8_t* u, float& dw, float& mw) {
  if constexpr (T == GgmlType::Q4_0 || T == GgmlType::Q4_1) {
    const uint8_t* qs;
    if constexpr (T == GgmlType::Q4_0) {
      const auto& b = reinterpret_cast<const BlockQ4_0*>(row)[s];
      dw = load_f16(b.d), mw = 0, qs = b.qs;
    } else {
      const auto& b = reinterpret_cast<const BlockQ4_1*>(row)[s];
      dw = load_f16(b.d), mw = load_f16(b.m), qs = b.qs;
    }
    for (int l = 0; l < 16; ++l) u[l] = qs[l] & 0x0f, u[l + 16] = qs[l] >> 4;
  } else if constexpr (T == GgmlType::Q8_0) {
    const auto& b = reinterpret_cast<const BlockQ8_0*>(row)[s];
    dw = load_f16(b.d), mw = 0;
    for (int l = 0; l < 32; ++l) u[l] = uint8_t(b.qs[l] ^ int8_t(-128));  // q + 128
  } else {
    static_assert(T == GgmlType::Q4_K || T == GgmlType::Q5_K);
    using Block = std::conditional_t<T == GgmlType::Q4_K, BlockQ4_K, BlockQ5_K>;
    const auto& b = reinterpret_cast<const Block*>(row)[s / 8];
    const int j = int(s % 8), g = j / 2, shift = 4 * (j % 2);
    uint8_t sc[8], m[8];
    unpack_scale_min_k4(b.scales, sc, m);
    dw = load_f16(b.d) * float(sc[j]), mw = -(load_f16(b.dmin) * float(m[j]));
    for (int l = 0; l < 32; ++l) {
      uint8_t v = (b.qs[32 * g + l] >> shift) & 0x0f;
      if constexpr (T == GgmlType::Q5_K) v |= uint8_t(((b.qh[l] >> j) & 1) << 4);
      u[l] = v;
    }
  }
}

/// unpack32_as for a type known at run time (one of has_int8_gemm's).
inline void unpack32(GgmlType t, const std::byte* row, int64_t s, uint8_t* u, float& dw, float& mw) {
  switch (t) {
    case GgmlType::Q4_0: return unpack32_as<GgmlType::Q4_0>(row, s, u, dw, mw);
    case GgmlType::Q4_1: return unpack32_as<GgmlType::Q4_1>(row, s, u, dw, mw);
    case GgmlType::Q8_0: return unpack32_as<GgmlType::Q8_0>(row, s, u, dw, mw);
    case GgmlType::Q4_K: return unpack32_as<GgmlType::Q4_K>(row, s, u, dw, mw);
    case GgmlType::Q5_K: return unpack32_as<GgmlType::Q5_K>(row, s, u, dw, mw);
    default: dw = mw = 0; std::memset(u, 0, 32); return;  // not reached: callers check has_int8_gemm
  }
}

/// Activation rows quantized for the GEMM: q [n, K], per (row, 32-block) b = i * K/32 + s:
/// dx, sx = dx * float(sum q) (the min term's factor) and xoff = off * sum q.
struct Int8Rows {
  int64_t n = 0, k = 0, nb = 0;
  std::vector<int8_t> q;
  std::vector<float> dx, sx;
  std::vector<int32_t> xoff;
  void resize(int64_t rows, int64_t cols) {
    n = rows, k = cols, nb = cols / 32;
    q.resize(size_t(n * k)), dx.resize(size_t(n * nb)), sx.resize(size_t(n * nb)), xoff.resize(size_t(n * nb));
  }
};

/// 16 weight rows x one 32-element sub-block, unpacked for the kernels.
struct alignas(64) TileBlock {
  uint8_t u[8][16][4];  ///< [group g][row][element 4g + c]
  float dw[16], mw[16];
};
inline constexpr int kTileRows = 16;

namespace gemm_detail {

// ---- activations: row i of x -> q, dx, sx, xoff (scalar; the SIMD forms below agree exactly)
inline void quantize_row_scalar(const float* x, int64_t k, int8_t* q, float* dx, float* sx, int32_t* xoff, int32_t off) {
  for (int64_t s = 0; s < k / 32; ++s) {
    int32_t sum = 0;
    dx[s] = quantize32(x + 32 * s, q + 32 * s, sum);
    sx[s] = dx[s] * float(sum), xoff[s] = off * sum;
  }
}

// Tile rows [j0, j0 + rows) of W (rows <= 16; missing rows zero) into nb TileBlocks. signed_q8:
// Q8_0's bytes as the signed q (the AVX2 kernel's form) instead of q + 128. Row by row, so each
// weight row is read front to back once.
template <GgmlType T>
inline void unpack_tile_as(const std::byte* w, size_t row_bytes, int64_t j0, int64_t rows, int64_t nb, bool signed_q8,
                           TileBlock* tile) {
  alignas(32) uint8_t u[32];
  for (int64_t j = 0; j < kTileRows; ++j) {
    const std::byte* row = j < rows ? w + size_t(j0 + j) * row_bytes : w;
    for (int64_t s = 0; s < nb; ++s) {
      TileBlock& tb = tile[s];
      float dw = 0, mw = 0;
      if (j < rows) unpack32_as<T>(row, s, u, dw, mw);
      else std::memset(u, T == GgmlType::Q8_0 ? 128 : 0, 32);
      if (signed_q8)
        for (uint8_t& v : u) v ^= 0x80;
      for (int g = 0; g < 8; ++g) std::memcpy(tb.u[g][j], u + 4 * g, 4);
      tb.dw[j] = dw, tb.mw[j] = mw;
    }
  }
}

inline void unpack_tile(GgmlType t, const std::byte* w, size_t row_bytes, int64_t j0, int64_t rows, int64_t nb,
                        bool signed_q8, TileBlock* tile) {
  switch (t) {
    case GgmlType::Q4_0: return unpack_tile_as<GgmlType::Q4_0>(w, row_bytes, j0, rows, nb, signed_q8, tile);
    case GgmlType::Q4_1: return unpack_tile_as<GgmlType::Q4_1>(w, row_bytes, j0, rows, nb, signed_q8, tile);
    case GgmlType::Q8_0: return unpack_tile_as<GgmlType::Q8_0>(w, row_bytes, j0, rows, nb, signed_q8, tile);
    case GgmlType::Q4_K: return unpack_tile_as<GgmlType::Q4_K>(w, row_bytes, j0, rows, nb, signed_q8, tile);
    case GgmlType::Q5_K: return unpack_tile_as<GgmlType::Q5_K>(w, row_bytes, j0, rows, nb, signed_q8, tile);
    default: return;
  }
}

// Y rows i0 .. i0+mr of the tile's columns j0 .. j0+cols, scalar (no SIMD on this machine).
inline void tile_scalar(const TileBlock* tile, int64_t nb, const Int8Rows& xr, int64_t i0, int64_t mr, int32_t off,
                        bool has_min, float* y, int64_t ldy, int64_t j0, int64_t cols, bool accumulate) {
  for (int64_t i = i0; i < i0 + mr; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      float acc = 0;
      for (int64_t s = 0; s < nb; ++s) {
        const TileBlock& tb = tile[s];
        const int8_t* q = xr.q.data() + i * xr.k + 32 * s;
        int32_t isum = 0;
        for (int g = 0; g < 8; ++g)
          for (int c = 0; c < 4; ++c) isum += int32_t(tb.u[g][j][c]) * q[4 * g + c];
        const size_t b = size_t(i * nb + s);
        isum -= off == 0 ? 0 : xr.xoff[b];
        acc = std::fma(float(isum), tb.dw[j] * xr.dx[b], acc);
        if (has_min) acc = std::fma(tb.mw[j], xr.sx[b], acc);
      }
      float& out = y[i * ldy + j0 + j];
      out = accumulate ? out + acc : acc;
    }
}

#if ROPEX_QUANT_AVX2
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#define ROPEX_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- AVX-512 VNNI: MR tokens x 16 rows, one zmm accumulator per token.
template <int MR, bool Off, bool Min>
ROPEX_AVX512_TARGET inline void tile_avx512(const TileBlock* tile, int64_t nb, const Int8Rows& xr, int64_t i0, float* y,
                                            int64_t ldy, int64_t j0, int64_t cols, bool accumulate) {
  __m512 acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
  const int8_t* q0 = xr.q.data() + i0 * xr.k;
  const size_t b0 = size_t(i0 * nb);
  for (int64_t s = 0; s < nb; ++s) {
    const TileBlock& tb = tile[s];
    __m512i w[8];
    for (int g = 0; g < 8; ++g) w[g] = _mm512_load_si512(tb.u[g]);
    const __m512 dw = _mm512_load_ps(tb.dw);
    __m512 mw{};
    if constexpr (Min) mw = _mm512_load_ps(tb.mw);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const int8_t* q = q0 + r * xr.k + 32 * s;
      __m512i isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], _mm512_set1_epi32(load_i32(q)));
#pragma GCC unroll 8
      for (int g = 1; g < 8; ++g) isum = _mm512_dpbusd_epi32(isum, w[g], _mm512_set1_epi32(load_i32(q + 4 * g)));
      const size_t b = b0 + size_t(r) * size_t(nb) + size_t(s);
      if constexpr (Off) isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(xr.xoff[b]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, _mm512_set1_ps(xr.dx[b])), acc[r]);
      if constexpr (Min) acc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xr.sx[b]), acc[r]);
    }
  }
  const __mmask16 mask = __mmask16((1u << cols) - 1u);
  for (int r = 0; r < MR; ++r) {
    float* out = y + (i0 + r) * ldy + j0;
    __m512 v = acc[r];
    if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), v);
    _mm512_mask_storeu_ps(out, mask, v);
  }
}

// ---- AVX2: MR tokens x 16 rows as two halves of 8; maddubs pairs then madd to int32.
// SignedQ8: the tile holds Q8_0's signed q, multiplied as |w| * sign(x, w) (maddubs takes an
// unsigned first operand, and (q + 128) * x would saturate its int16 pair sums).
template <int MR, bool Off, bool Min, bool SignedQ8>
ROPEX_QUANT_TARGET inline void tile_avx2(const TileBlock* tile, int64_t nb, const Int8Rows& xr, int64_t i0, float* y,
                                         int64_t ldy, int64_t j0, int64_t cols, bool accumulate) {
  __m256 acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  const int8_t* q0 = xr.q.data() + i0 * xr.k;
  const size_t b0 = size_t(i0 * nb);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t s = 0; s < nb; ++s) {
    const TileBlock& tb = tile[s];
    for (int r = 0; r < MR; ++r) {
      const int8_t* q = q0 + r * xr.k + 32 * s;
      __m256i isum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
      for (int g = 0; g < 8; ++g) {
        const __m256i xb = _mm256_set1_epi32(load_i32(q + 4 * g));
        for (int h = 0; h < 2; ++h) {
          const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(tb.u[g][8 * h]));
          __m256i p;
          if constexpr (SignedQ8) p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xb, w));
          else p = _mm256_maddubs_epi16(w, xb);
          isum[h] = _mm256_add_epi32(isum[h], _mm256_madd_epi16(p, ones));
        }
      }
      const size_t b = b0 + size_t(r) * size_t(nb) + size_t(s);
      const __m256 dx = _mm256_set1_ps(xr.dx[b]);
      for (int h = 0; h < 2; ++h) {
        __m256i is = isum[h];
        if constexpr (Off) is = _mm256_sub_epi32(is, _mm256_set1_epi32(xr.xoff[b]));
        const __m256 scale = _mm256_mul_ps(_mm256_load_ps(tb.dw + 8 * h), dx);
        acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), scale, acc[r][h]);
        if constexpr (Min) acc[r][h] = _mm256_fmadd_ps(_mm256_load_ps(tb.mw + 8 * h), _mm256_set1_ps(xr.sx[b]), acc[r][h]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    float* out = y + (i0 + r) * ldy + j0;
    alignas(32) float v[16];
    _mm256_store_ps(v, acc[r][0]), _mm256_store_ps(v + 8, acc[r][1]);
    for (int64_t j = 0; j < cols; ++j) out[j] = accumulate ? out[j] + v[j] : v[j];
  }
}

// ---- activations with AVX-512 (the same arithmetic as quantize32: max, divide, multiply,
// round to nearest even, clamp).
ROPEX_AVX512_TARGET inline void quantize_row_avx512(const float* x, int64_t k, int8_t* q, float* dx, float* sx,
                                                    int32_t* xoff, int32_t off) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t s = 0; s < k / 32; ++s) {
    const __m512 a = _mm512_loadu_ps(x + 32 * s), b = _mm512_loadu_ps(x + 32 * s + 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, a), _mm512_andnot_ps(sign, b)));
    const float d = nan ? std::nanf("") : amax / 127.0f;
    const float inv = d > 0 ? 1.0f / d : 0.0f;
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    const __m512i qa = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(a, _mm512_set1_ps(inv))), lo), hi);
    const __m512i qb = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(b, _mm512_set1_ps(inv))), lo), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 32 * s), _mm512_cvtepi32_epi8(qa));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 32 * s + 16), _mm512_cvtepi32_epi8(qb));
    const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    dx[s] = d, sx[s] = d * float(sum), xoff[s] = off * sum;
  }
}

#pragma GCC diagnostic pop
#endif  // ROPEX_QUANT_AVX2

enum class Isa { scalar, avx2, avx512 };

inline Isa best_isa() {
#if ROPEX_QUANT_AVX2
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && defined(__AVX512VNNI__)
  return Isa::avx512;
#else
  static const Isa isa = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                                 __builtin_cpu_supports("avx512vnni")
                             ? Isa::avx512
                             : quant_avx2() ? Isa::avx2 : Isa::scalar;
  return isa;
#endif
#else
  return Isa::scalar;
#endif
}

// Token rows [0, n) of one tile, MR at a time (tails by smaller MR).
template <int MR>
inline void tile_rows(Isa isa, GgmlType t, const TileBlock* tile, int64_t nb, const Int8Rows& xr, int64_t i0, float* y,
                      int64_t ldy, int64_t j0, int64_t cols, bool accumulate) {
#if ROPEX_QUANT_AVX2
  if (isa == Isa::avx512) {
    if (int8_has_min(t)) return tile_avx512<MR, false, true>(tile, nb, xr, i0, y, ldy, j0, cols, accumulate);
    return tile_avx512<MR, true, false>(tile, nb, xr, i0, y, ldy, j0, cols, accumulate);
  }
  if (isa == Isa::avx2) {
    if (int8_has_min(t)) return tile_avx2<MR, false, true, false>(tile, nb, xr, i0, y, ldy, j0, cols, accumulate);
    if (t == GgmlType::Q8_0) return tile_avx2<MR, false, false, true>(tile, nb, xr, i0, y, ldy, j0, cols, accumulate);
    return tile_avx2<MR, true, false, false>(tile, nb, xr, i0, y, ldy, j0, cols, accumulate);
  }
#endif
  tile_scalar(tile, nb, xr, i0, MR, int8_offset(t), int8_has_min(t), y, ldy, j0, cols, accumulate);
}

inline void tile_all_rows(Isa isa, GgmlType t, const TileBlock* tile, int64_t nb, const Int8Rows& xr, float* y,
                          int64_t ldy, int64_t j0, int64_t cols, bool accumulate) {
  constexpr int64_t kMR = 8;
  int64_t i = 0;
  for (; i + kMR <= xr.n; i += kMR) tile_rows<kMR>(isa, t, tile, nb, xr, i, y, ldy, j0, cols, accumulate);
  for (; i + 4 <= xr.n; i += 4) tile_rows<4>(isa, t, tile, nb, xr, i, y, ldy, j0, cols, accumulate);
  for (; i < xr.n; ++i) tile_rows<1>(isa, t, tile, nb, xr, i, y, ldy, j0, cols, accumulate);
}

}  // namespace gemm_detail

/// fn(c) for c in [0, n) on OpenMP threads (gemm_int8's default ParallelFor).
struct OmpFor {
  template <class F>
  void operator()(int64_t n, F&& fn) const {
    ROPEX_OMP(parallel for schedule(dynamic, 1) if (n > 1))
    for (int64_t c = 0; c < n; ++c) fn(c);
  }
};

/// Y[n, N] = X[n, K] W[N, K]^T (+= with accumulate) in fast mode's arithmetic (top of file).
/// W: N rows of `row_bytes` bytes of type t (has_int8_gemm), K a multiple of the block size;
/// X, Y row-major with leading dimensions ldx, ldy. `pfor(count, fn)` runs fn(c) for c < count,
/// in parallel as it likes (ops<cpu> passes its chunk pool): once over row blocks (quantize),
/// then over 16-row tiles. `isa` forces a kernel (tests); by default the best the CPU runs.
template <class ParallelFor = OmpFor>
void gemm_int8(GgmlType t, const std::byte* w, size_t row_bytes, int64_t N, int64_t K, const float* x, int64_t ldx,
               int64_t n, float* y, int64_t ldy, bool accumulate, int isa_override = -1, ParallelFor&& pfor = {}) {
  using namespace gemm_detail;
  const Isa isa = isa_override >= 0 ? Isa(isa_override) : best_isa();
  const int64_t nb = K / 32, n_tiles = (N + kTileRows - 1) / kTileRows;
  const int32_t off = isa == Isa::avx2 && t == GgmlType::Q8_0 ? 0 : int8_offset(t);
  static thread_local Int8Rows xr;  // reused across calls (the other threads read the caller's)
  xr.resize(n, K);
  Int8Rows& rows = xr;
  const bool parallel = n * N * K >= (int64_t(1) << 20);
  auto run = [&](int64_t count, auto&& fn) {
    if (parallel) pfor(count, fn);
    else for (int64_t c = 0; c < count; ++c) fn(c);
  };
  constexpr int64_t kRowBlock = 16;
  run((n + kRowBlock - 1) / kRowBlock, [&](int64_t c) {
    for (int64_t i = c * kRowBlock; i < std::min(n, (c + 1) * kRowBlock); ++i) {
      const size_t b = size_t(i * nb);
#if ROPEX_QUANT_AVX2
      if (isa == Isa::avx512) {
        quantize_row_avx512(x + i * ldx, K, rows.q.data() + i * K, rows.dx.data() + b, rows.sx.data() + b,
                            rows.xoff.data() + b, off);
        continue;
      }
#endif
      quantize_row_scalar(x + i * ldx, K, rows.q.data() + i * K, rows.dx.data() + b, rows.sx.data() + b,
                          rows.xoff.data() + b, off);
    }
  });
  run(n_tiles, [&](int64_t tj) {
    static thread_local std::vector<TileBlock> tile;
    tile.resize(size_t(nb));
    const int64_t j0 = tj * kTileRows, cols = std::min<int64_t>(kTileRows, N - j0);
    unpack_tile(t, w, row_bytes, j0, cols, nb, isa == Isa::avx2 && t == GgmlType::Q8_0, tile.data());
    tile_all_rows(isa, t, tile.data(), nb, rows, y, ldy, j0, cols, accumulate);
  });
}

}  // namespace ropex::quant
