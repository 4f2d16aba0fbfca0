// Two memory-bound kernels of decoding, written with GCC/Clang vector extensions (8 floats: AVX2
// under -march=native, two SSE registers otherwise; plain loops elsewhere):
//   gemv: y[r] = dot(W[r, :], x), four rows per pass so each 8-float slice of x is loaded once
//         for four FMAs; BF16 weights widen in registers (bits << 16). The weight GEMV of a decode
//         step and the scores of one query against a block of cached keys.
//   axpy_rows: acc += sum_c p[c] * V[c, :], four rows per pass over acc (attention's P V).
// Neither calls a BLAS: they run inside OpenMP threads, where a threaded BLAS would oversubscribe.
#pragma once
#include <ropex/config.hpp>
#include <ropex/model/tensor.hpp>

#include <bit>
#include <cstdint>
#include <cstring>

// GCC >= 12 / Clang vector extensions; not in nvcc translation units (its front end lacks the
// shuffle builtins), which take the plain loops.
#if defined(__GNUC__) && !defined(__CUDACC__) && defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector) && __has_builtin(__builtin_convertvector)
#define ROPEX_VECTOR_EXT 1
#endif
#endif

namespace ropex::backends::eigen::simd {

#if ROPEX_VECTOR_EXT
// The helpers pass vectors by value. They have internal linkage (static) and are always inlined,
// so that calling convention never crosses a translation unit: GCC's -Wpsabi note does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#define ROPEX_SIMD_INLINE static inline __attribute__((always_inline))
using f32x8 = float __attribute__((vector_size(32)));
using u16x8 = uint16_t __attribute__((vector_size(16)));
using u32x8 = uint32_t __attribute__((vector_size(32)));
ROPEX_SIMD_INLINE f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
ROPEX_SIMD_INLINE f32x8 load8(const uint16_t* p) {  // BF16 -> float: the stored 16 bits are a float's top half
  u16x8 h;
  std::memcpy(&h, p, sizeof h);
  const u32x8 b = __builtin_convertvector(h, u32x8) << 16;
  f32x8 v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
using f32x4 = float __attribute__((vector_size(16)));
// {sum(a), sum(b), sum(c), sum(d)} by a shuffle tree: 9 vector ops instead of 28 scalar adds,
// which is most of the work of a head_dim-8 score.
ROPEX_SIMD_INLINE f32x4 hsum4(const f32x8& a, const f32x8& b, const f32x8& c, const f32x8& d) {
  const f32x4 a4 = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  const f32x4 b4 = __builtin_shufflevector(b, b, 0, 1, 2, 3) + __builtin_shufflevector(b, b, 4, 5, 6, 7);
  const f32x4 c4 = __builtin_shufflevector(c, c, 0, 1, 2, 3) + __builtin_shufflevector(c, c, 4, 5, 6, 7);
  const f32x4 d4 = __builtin_shufflevector(d, d, 0, 1, 2, 3) + __builtin_shufflevector(d, d, 4, 5, 6, 7);
  const f32x4 ab = __builtin_shufflevector(a4, b4, 0, 4, 1, 5) + __builtin_shufflevector(a4, b4, 2, 6, 3, 7);
  const f32x4 cd = __builtin_shufflevector(c4, d4, 0, 4, 1, 5) + __builtin_shufflevector(c4, d4, 2, 6, 3, 7);
  return __builtin_shufflevector(ab, cd, 0, 1, 4, 5) + __builtin_shufflevector(ab, cd, 2, 3, 6, 7);
}
#endif
inline float widen(float v) { return v; }
inline float widen(uint16_t b) { return model::bfloat16_to_float(b); }

/// y[r] = sum_i W[r * ld + i] * x[i] for r < rows, i < in (y[r] += ... with accumulate); W float
/// or BF16 bits (uint16_t).
template <class W>
inline void gemv(const W* w, int64_t ld, int64_t in, int64_t rows, const float* x, float* y, bool accumulate = false) {
  int64_t r = 0;
#if ROPEX_VECTOR_EXT
  const int64_t in8 = in / 8 * 8;
  for (; r + 4 <= rows; r += 4) {
    const W *w0 = w + r * ld, *w1 = w0 + ld, *w2 = w1 + ld, *w3 = w2 + ld;
    f32x8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t i = 0; i < in8; i += 8) {
      const f32x8 xv = load8(x + i);
      a0 += load8(w0 + i) * xv, a1 += load8(w1 + i) * xv, a2 += load8(w2 + i) * xv, a3 += load8(w3 + i) * xv;
    }
    const f32x4 sum = hsum4(a0, a1, a2, a3);
    float s0 = sum[0], s1 = sum[1], s2 = sum[2], s3 = sum[3];
    for (int64_t i = in8; i < in; ++i)
      s0 += widen(w0[i]) * x[i], s1 += widen(w1[i]) * x[i], s2 += widen(w2[i]) * x[i], s3 += widen(w3[i]) * x[i];
    if (accumulate) s0 += y[r], s1 += y[r + 1], s2 += y[r + 2], s3 += y[r + 3];
    y[r] = s0, y[r + 1] = s1, y[r + 2] = s2, y[r + 3] = s3;
  }
#endif
  for (; r < rows; ++r) {
    float s = 0;
    for (int64_t i = 0; i < in; ++i) s += widen(w[r * ld + i]) * x[i];
    y[r] = accumulate ? y[r] + s : s;
  }
}

/// acc[t] += sum_c p[c] * v[c * ld + t] for c < rows, t < d.
inline void axpy_rows(const float* p, const float* v, int64_t ld, int64_t rows, int64_t d, float* acc) {
  int64_t c = 0;
  for (; c + 4 <= rows; c += 4) {  // four value rows per pass over the accumulator
    const float p0 = p[c], p1 = p[c + 1], p2 = p[c + 2], p3 = p[c + 3];
    const float *v0 = v + c * ld, *v1 = v0 + ld, *v2 = v1 + ld, *v3 = v2 + ld;
    ROPEX_OMP(simd)
    for (int64_t t = 0; t < d; ++t) acc[t] += p0 * v0[t] + p1 * v1[t] + p2 * v2[t] + p3 * v3[t];
  }
  for (; c < rows; ++c) {
    const float pc = p[c];
    const float* vc = v + c * ld;
    ROPEX_OMP(simd)
    for (int64_t t = 0; t < d; ++t) acc[t] += pc * vc[t];
  }
}

}  // namespace ropex::backends::eigen::simd

#if ROPEX_VECTOR_EXT
#undef ROPEX_SIMD_INLINE
#pragma GCC diagnostic pop
#endif
