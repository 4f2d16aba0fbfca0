// Fused dot products of quantized weight rows with activations: the one-token (decode) products
// of ops<cpu> read each ggml block once and never write its floats anywhere.
//
//   exact:  dot(w, x) = sum_b  d_b * sum_i q_bi x_bi  (+ m_b * S_b)        x float32
//           (Q4_0: q - 8; Q4_1: + m * S_b; K-quants: per sub-block scale d*sc and min dmin*m;
//            S_b = sum of x over the block, computed once per activation row, not per weight row)
//   fast:   x quantized per 32-block to int8 (xq = round(x / dx), dx = max|x| / 127, like
//           llama.cpp's Q8_0/Q8_1 activations), then integer dot products of the weight's
//           integer quants with xq (AVX-512 VNNI vpdpbusd, AVX-VNNI, or AVX2 maddubs), scaled
//           once per block:  d_b * dx_b * sum_i q_bi xq_bi  (+ m_b * dx_b * sum_i xq_bi).
//
// Error bounds (tests/test_quant_matmul.cpp checks both):
//   exact: the same products as dequantize-then-dot, summed in another order in float32: within
//          ~ n * 2^-24 * sum_i |w_i x_i| of the exact sum (ordinary fp32 dot rounding), which is the
//          rounding HF's float32 forward has too.
//   fast:  each x_i moves by at most dx_b / 2, so |fast - exact| <= sum_b (dx_b / 2) sum_{i in b} |w_i|
//          (+ the fp32 rounding above); relative to |w|.|x| that is <= 1/254 per block, ~0.2% typical.
//
// Layouts of the blocks: blocks.hpp. Kernels: AVX2+FMA+F16C on x86-64 (compiled in, picked at run
// time when the build itself is not for AVX2), scalar elsewhere (dequantize a block, dot it).
#pragma once
#include <ropex/quant/blocks.hpp>
#include <ropex/quant/dequantize.hpp>
#include <ropex/quant/ggml_type.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

// x86-64 with GCC/Clang: the AVX2 kernels are always compiled, with a target attribute where the
// translation unit itself is not built for AVX2 (a portable build), and chosen at run time
// (__builtin_cpu_supports). VNNI (vpdpbusd) only where the build enables it (-march=native).
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#include <immintrin.h>
#define ROPEX_QUANT_AVX2 1
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define ROPEX_QUANT_TARGET
#define ROPEX_QUANT_AVX2_BUILD 1
#else
#define ROPEX_QUANT_TARGET __attribute__((target("avx2,fma,f16c")))
#endif
#endif

namespace ropex::quant {

/// Types with a fused exact kernel (the others: dequantize a row, then dot).
constexpr bool has_fused_dot(GgmlType t) {
  return t == GgmlType::Q4_0 || t == GgmlType::Q4_1 || t == GgmlType::Q8_0 || t == GgmlType::Q4_K ||
         t == GgmlType::Q5_K || t == GgmlType::Q6_K;
}
/// Types with an int8-activation (fast) kernel (the others fall back to the exact fused kernel).
constexpr bool has_int8_dot(GgmlType t) {
  return t == GgmlType::Q4_0 || t == GgmlType::Q4_1 || t == GgmlType::Q8_0 || t == GgmlType::Q4_K ||
         t == GgmlType::Q5_K;
}

/// One 32-block of activations to int8: q = round(x / d) (ties to even), d = max|x| / 127; returns
/// d (0 for an all-zero block, NaN where x has a NaN) and sets sum = sum of q. The one rounding
/// rule of fast mode: the one-token dots here and the GEMM (quant/gemm.hpp) both use it.
inline float quantize32(const float* x, int8_t* q, int32_t& sum) {
  float amax = 0;
  bool nan = false;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i])), nan |= std::isnan(x[i]);
  const float d = nan ? std::nanf("") : amax / 127.0f;
  const float inv = d > 0 ? 1.0f / d : 0.0f;
  int32_t s = 0;
  for (int i = 0; i < 32; ++i) {
    const int v = std::clamp(int(std::nearbyint(x[i] * inv)), -127, 127);
    q[i] = int8_t(v), s += v;
  }
  sum = s;
  return d;
}

/// An activation row prepared for the dot products: per-32 sums of x (exact mode's min/offset
/// terms); with int8, x quantized per 32-block (fast mode, quantize32). n must be a multiple of 32.
struct PreparedX {
  const float* x = nullptr;
  int64_t n = 0;
  std::vector<float> sum32;   ///< [n/32] sum of x over each 32-block
  bool int8 = false;
  std::vector<int8_t> q;      ///< [n] round(x / d)
  std::vector<float> d;       ///< [n/32] scale of each block: max|x| / 127
  std::vector<int32_t> qsum;  ///< [n/32] sum of q over each block
  std::vector<int32_t> qsum16;  ///< [n/16] sum of q over each 16-half (Q6_K's sub-blocks)

  void prepare(const float* xr, int64_t len, bool quantize) {
    x = xr, n = len, int8 = quantize;
    const int64_t nb = len / 32;
    sum32.resize(size_t(nb));
    for (int64_t b = 0; b < nb; ++b) {
      float s = 0;
      for (int i = 0; i < 32; ++i) s += xr[32 * b + i];
      sum32[size_t(b)] = s;
    }
    if (!quantize) return;
    q.resize(size_t(len)), d.resize(size_t(nb)), qsum.resize(size_t(nb)), qsum16.resize(size_t(2 * nb));
    for (int64_t b = 0; b < nb; ++b) {
      int8_t* qb = q.data() + 32 * b;
      d[size_t(b)] = quantize32(xr + 32 * b, qb, qsum[size_t(b)]);
      int32_t s0 = 0;
      for (int i = 0; i < 16; ++i) s0 += qb[i];
      qsum16[size_t(2 * b)] = s0, qsum16[size_t(2 * b + 1)] = qsum[size_t(b)] - s0;
    }
  }
};

namespace dot_detail {

// Reference for any supported type: dequantize one block at a time, dot in float.
inline float dot_dequant(GgmlType t, const std::byte* row, const float* x, int64_t n) {
  const BlockTraits bt = block_traits(t);
  float buf[256];
  float s = 0;
  for (int64_t i = 0; i < n; i += bt.block_size) {
    dequantize(t, row + (i / bt.block_size) * bt.type_size, bt.block_size, buf);
    for (int64_t j = 0; j < bt.block_size; ++j) s += buf[j] * x[i + j];
  }
  return s;
}

#if ROPEX_QUANT_AVX2
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#define ROPEX_Q_INLINE static inline __attribute__((always_inline)) ROPEX_QUANT_TARGET
ROPEX_Q_INLINE float f16(const uint8_t* p) { return _cvtsh_ss(uint16_t(p[0] | (p[1] << 8))); }
ROPEX_Q_INLINE float hsum(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}
// 32 unsigned/signed bytes (as elements 0..31) times x[0..31], summed into one float vector.
ROPEX_Q_INLINE __m256 dot32_u8(__m256i q, const float* x) {
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), _mm256_loadu_ps(x + 16), s);
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + 24), s);
}
ROPEX_Q_INLINE __m256 dot32_i8(__m256i q, const float* x) {
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(x + 16), s);
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + 24), s);
}
// 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15), then high nibbles (16..31).
ROPEX_Q_INLINE __m256i nibbles32(const uint8_t* qs) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m4 = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
}
// sum_i u[i] * s[i] over groups of 4 bytes -> 8 int32 (u unsigned <= 128, s signed in [-127, 127]).
ROPEX_Q_INLINE __m256i dot_u8s8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}
ROPEX_Q_INLINE __m256i load32(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// ---- exact (float activations)
ROPEX_QUANT_TARGET inline float dot_exact(const BlockQ4_0* b, const PreparedX& px, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  const __m256i eight = _mm256_set1_epi8(8);
  for (int64_t i = 0; i < nb; ++i)
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(b[i].d)), dot32_i8(_mm256_sub_epi8(nibbles32(b[i].qs), eight), px.x + 32 * i), acc);
  return hsum(acc);
}
ROPEX_QUANT_TARGET inline float dot_exact(const BlockQ4_1* b, const PreparedX& px, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float macc = 0;
  for (int64_t i = 0; i < nb; ++i) {
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(b[i].d)), dot32_u8(nibbles32(b[i].qs), px.x + 32 * i), acc);
    macc += f16(b[i].m) * px.sum32[size_t(i)];
  }
  return hsum(acc) + macc;
}
ROPEX_QUANT_TARGET inline float dot_exact(const BlockQ8_0* b, const PreparedX& px, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i)
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(b[i].d)), dot32_i8(load32(b[i].qs), px.x + 32 * i), acc);
  return hsum(acc);
}
// Q4_K / Q5_K: sub-block s = 2g + j is the low (j = 0) / high (j = 1) nibbles of qs[32g..32g+31].
template <bool Five, class Block>
ROPEX_QUANT_TARGET inline float dot_exact_k45(const Block* b, const PreparedX& px, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float macc = 0;
  const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16(b[i].d), dmin = f16(b[i].dmin);
    uint8_t sc[8], m[8];
    unpack_scale_min_k4(b[i].scales, sc, m);
    const float* x = px.x + 256 * i;
    const float* xs = px.sum32.data() + 8 * i;
    __m256i qh{};
    if constexpr (Five) qh = load32(b[i].qh);
    for (int g = 0; g < 4; ++g) {
      const __m256i q = load32(b[i].qs + 32 * g);
      __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (Five) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g + 1)), one), 4));
      }
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * float(sc[2 * g])), dot32_u8(lo, x + 64 * g), acc);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * float(sc[2 * g + 1])), dot32_u8(hi, x + 64 * g + 32), acc);
      macc += dmin * (float(m[2 * g]) * xs[2 * g] + float(m[2 * g + 1]) * xs[2 * g + 1]);
    }
  }
  return hsum(acc) - macc;
}
ROPEX_QUANT_TARGET inline float dot_exact(const BlockQ4_K* b, const PreparedX& px, int64_t nb) { return dot_exact_k45<false>(b, px, nb); }
ROPEX_QUANT_TARGET inline float dot_exact(const BlockQ5_K* b, const PreparedX& px, int64_t nb) { return dot_exact_k45<true>(b, px, nb); }
// Q6_K: element 128g + 32r + l: low 4 bits ql[64g + 32(r%2) + l] >> 4(r/2), high 2 bits
// qh[32g + l] >> 2r, minus 32; scale (16 elements each) 8g + 2r + (l >= 16).
ROPEX_QUANT_TARGET inline float dot_exact(const BlockQ6_K* b, const PreparedX& px, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16(b[i].d);
    const float* x = px.x + 256 * i;
    for (int g = 0; g < 2; ++g) {
      const __m256i qh = load32(b[i].qh + 32 * g);
      for (int r = 0; r < 4; ++r) {
        __m256i ql = load32(b[i].ql + 64 * g + 32 * (r % 2));
        if (r >= 2) ql = _mm256_srli_epi16(ql, 4);
        const __m256i h = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * r)), m2);
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(ql, m4), _mm256_slli_epi16(h, 4)), k32);
        const float* xr = x + 128 * g + 32 * r;
        const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        __m256 s0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(xr));
        s0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(xr + 8), s0);
        __m256 s1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(xr + 16));
        s1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(xr + 24), s1);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * float(b[i].scales[8 * g + 2 * r])), s0, acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * float(b[i].scales[8 * g + 2 * r + 1])), s1, acc);
      }
    }
  }
  return hsum(acc);
}

// ---- fast (int8 activations)
ROPEX_QUANT_TARGET inline float dot_int8(const BlockQ4_0* b, const PreparedX& px, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float off = 0;
  for (int64_t i = 0; i < nb; ++i) {
    const float dd = f16(b[i].d) * px.d[size_t(i)];
    const __m256i p = dot_u8s8(nibbles32(b[i].qs), load32(px.q.data() + 32 * i));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p), acc);
    off += dd * float(px.qsum[size_t(i)]);
  }
  return hsum(acc) - 8.0f * off;
}
ROPEX_QUANT_TARGET inline float dot_int8(const BlockQ4_1* b, const PreparedX& px, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float macc = 0;
  for (int64_t i = 0; i < nb; ++i) {
    const float dx = px.d[size_t(i)];
    const __m256i p = dot_u8s8(nibbles32(b[i].qs), load32(px.q.data() + 32 * i));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(b[i].d) * dx), _mm256_cvtepi32_ps(p), acc);
    macc += f16(b[i].m) * dx * float(px.qsum[size_t(i)]);
  }
  return hsum(acc) + macc;
}
ROPEX_QUANT_TARGET inline float dot_int8(const BlockQ8_0* b, const PreparedX& px, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m256i w = load32(b[i].qs);
    const __m256i p = dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(load32(px.q.data() + 32 * i), w));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(b[i].d) * px.d[size_t(i)]), _mm256_cvtepi32_ps(p), acc);
  }
  return hsum(acc);
}
template <bool Five, class Block>
ROPEX_QUANT_TARGET inline float dot_int8_k45(const Block* b, const PreparedX& px, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  float macc = 0;
  const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16(b[i].d), dmin = f16(b[i].dmin);
    uint8_t sc[8], m[8];
    unpack_scale_min_k4(b[i].scales, sc, m);
    const int8_t* xq = px.q.data() + 256 * i;
    const float* dx = px.d.data() + 8 * i;
    const int32_t* qs = px.qsum.data() + 8 * i;
    __m256i qh{};
    if constexpr (Five) qh = load32(b[i].qh);
    for (int g = 0; g < 4; ++g) {
      const __m256i q = load32(b[i].qs + 32 * g);
      __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (Five) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g + 1)), one), 4));
      }
      const int s0 = 2 * g, s1 = 2 * g + 1;
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * float(sc[s0]) * dx[s0]), _mm256_cvtepi32_ps(dot_u8s8(lo, load32(xq + 32 * s0))), acc);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(d * float(sc[s1]) * dx[s1]), _mm256_cvtepi32_ps(dot_u8s8(hi, load32(xq + 32 * s1))), acc);
      macc += dmin * (float(m[s0]) * dx[s0] * float(qs[s0]) + float(m[s1]) * dx[s1] * float(qs[s1]));
    }
  }
  return hsum(acc) - macc;
}
ROPEX_QUANT_TARGET inline float dot_int8(const BlockQ4_K* b, const PreparedX& px, int64_t nb) { return dot_int8_k45<false>(b, px, nb); }
ROPEX_QUANT_TARGET inline float dot_int8(const BlockQ5_K* b, const PreparedX& px, int64_t nb) { return dot_int8_k45<true>(b, px, nb); }
#undef ROPEX_Q_INLINE
#pragma GCC diagnostic pop
#endif  // ROPEX_QUANT_AVX2

// Scalar fast mode (no AVX2): the same arithmetic, one element at a time.
inline float dot_int8_scalar(GgmlType t, const std::byte* row, const PreparedX& px, int64_t n) {
  const BlockTraits bt = block_traits(t);
  float buf[256];
  double s = 0;
  for (int64_t i = 0; i < n; i += bt.block_size) {
    dequantize(t, row + (i / bt.block_size) * bt.type_size, bt.block_size, buf);
    for (int64_t j = 0; j < bt.block_size; ++j)
      s += double(buf[j]) * double(px.d[size_t((i + j) / 32)]) * double(px.q[size_t(i + j)]);
  }
  return float(s);
}

}  // namespace dot_detail

/// Whether the AVX2 kernels can run here (compiled for AVX2, or the CPU has AVX2+FMA; F16C comes with AVX2).
inline bool quant_avx2() {
#if defined(ROPEX_QUANT_AVX2_BUILD)
  return true;
#elif defined(ROPEX_QUANT_AVX2)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");  // every AVX2 CPU has F16C
  return ok;
#else
  return false;
#endif
}

/// dot(row, x) for one weight row of n elements of type t (n a multiple of the block size),
/// x prepared by px.prepare(x, n, int8). int8: the fast kernel where the type has one.
inline float dot_row(GgmlType t, const std::byte* row, const PreparedX& px, bool int8) {
  const int64_t n = px.n;
  int8 = int8 && px.int8;
  const int64_t nb = n / block_traits(t).block_size;
#if ROPEX_QUANT_AVX2
  if (quant_avx2()) {
#define ROPEX_DOT_CASE(T, B)                                                                              \
  case GgmlType::T:                                                                                     \
    if (int8) return dot_detail::dot_int8(reinterpret_cast<const B*>(row), px, nb);                     \
    return dot_detail::dot_exact(reinterpret_cast<const B*>(row), px, nb);
  switch (t) {
    ROPEX_DOT_CASE(Q4_0, BlockQ4_0)
    ROPEX_DOT_CASE(Q4_1, BlockQ4_1)
    ROPEX_DOT_CASE(Q8_0, BlockQ8_0)
    ROPEX_DOT_CASE(Q4_K, BlockQ4_K)
    ROPEX_DOT_CASE(Q5_K, BlockQ5_K)
    case GgmlType::Q6_K: return dot_detail::dot_exact(reinterpret_cast<const BlockQ6_K*>(row), px, nb);
    default: break;
  }
#undef ROPEX_DOT_CASE
  }
#endif
  if (int8 && has_int8_dot(t)) return dot_detail::dot_int8_scalar(t, row, px, n);
  return dot_detail::dot_dequant(t, row, px.x, n);
}

}  // namespace ropex::quant
