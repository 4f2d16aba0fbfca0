// Dequantizers: ggml block formats -> float32, a run of whole blocks at a time (a matmul decodes
// one weight row into a scratch buffer, then runs the f32 kernel on it).
// Source for the arithmetic: gguf-py gguf/quants.py `dequantize_blocks` (numpy) and
// ggml/src/ggml-quants.c `dequantize_row_*`; block layouts in blocks.hpp.
//
// Bit-exact with gguf-py's numpy decoder, whatever the compiler contracts or reorders: the f16
// scale has an 11-bit significand and the integer factors (sub-block scale <= 8 bits, quant
// <= 6 bits) add at most 13 more, so every product below is exact in float32 (<= 24 bits, and
// far from overflow or underflow). Only the final `+ m` / `- dmin*m` rounds, once, as in numpy;
// an FMA of an exact product rounds the same way.
//
// Special scales follow IEEE arithmetic, as numpy does: a zero scale gives +-0 (the sign of
// 0 * q), a subnormal f16 scale is exact in float32, an infinite scale gives +-inf where the
// quant is non-zero and NaN where it is zero (inf * 0), a NaN scale gives NaN everywhere it is
// used. Nothing is flushed or clamped.
#pragma once
#include <ropex/error.hpp>
#include <ropex/quant/blocks.hpp>
#include <ropex/quant/ggml_type.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace ropex::quant {

/// IEEE binary16 bits -> float32, exact (every half is a float), branch-free so loops over
/// F16 tensors vectorize. normal: rebias the exponent (+112); inf/NaN: exponent 31 -> 255,
/// payload kept; subnormal: m * 2^-24, exact.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  // Selects written as masks: GCC turns ?: here into branches, which stop vectorization.
  const uint32_t normal = (em << 13) + (112u << 23) + uint32_t(em >= 0x7c00u) * (112u << 23);
  const uint32_t sub = std::bit_cast<uint32_t>(float(int32_t(em)) * 0x1p-24f);
  const uint32_t is_sub = 0u - uint32_t(em < 0x0400u);
  return std::bit_cast<float>(sign | (sub & is_sub) | (normal & ~is_sub));
}

/// The f16 stored little-endian at p.
inline float load_f16(const uint8_t* p) { return f16_to_f32(uint16_t(p[0] | (p[1] << 8))); }

// ---- one block each (y gets block_size floats) ------------------------------------------------

inline void dequantize_block(const BlockQ4_0& b, float* y) {
  const float d = load_f16(b.d);
  for (int l = 0; l < 16; ++l) {
    y[l] = d * (float(b.qs[l] & 0x0f) - 8.0f);  // q - 8 is exact in float either way
    y[l + 16] = d * (float(b.qs[l] >> 4) - 8.0f);
  }
}

inline void dequantize_block(const BlockQ4_1& b, float* y) {
  const float d = load_f16(b.d), m = load_f16(b.m);
  for (int l = 0; l < 16; ++l) {
    y[l] = d * float(b.qs[l] & 0x0f) + m;
    y[l + 16] = d * float(b.qs[l] >> 4) + m;
  }
}

// Q5_*: bit i of the little-endian u32 qh is the fifth bit of element i.
inline void dequantize_block(const BlockQ5_0& b, float* y) {
  const float d = load_f16(b.d);
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int l = 0; l < 16; ++l) {
    const int lo = int(b.qs[l] & 0x0f) | int(((qh >> l) & 1u) << 4);
    const int hi = int(b.qs[l] >> 4) | int(((qh >> (l + 16)) & 1u) << 4);
    y[l] = d * float(lo - 16);
    y[l + 16] = d * float(hi - 16);
  }
}

inline void dequantize_block(const BlockQ5_1& b, float* y) {
  const float d = load_f16(b.d), m = load_f16(b.m);
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int l = 0; l < 16; ++l) {
    const int lo = int(b.qs[l] & 0x0f) | int(((qh >> l) & 1u) << 4);
    const int hi = int(b.qs[l] >> 4) | int(((qh >> (l + 16)) & 1u) << 4);
    y[l] = d * float(lo) + m;
    y[l + 16] = d * float(hi) + m;
  }
}

inline void dequantize_block(const BlockQ8_0& b, float* y) {
  const float d = load_f16(b.d);
  for (int l = 0; l < 32; ++l) y[l] = float(b.qs[l]) * d;
}

// Q2_K: element i = 128*g + 32*j + l (g < 2, j < 4, l < 32) is bits 2j..2j+1 of qs[32g + l];
// its sub-block (i / 16) has scale scales[..] & 15 and min scales[..] >> 4.
inline void dequantize_block(const BlockQ2_K& b, float* y) {
  const float d = load_f16(b.d), dmin = load_f16(b.dmin);
  for (int g = 0; g < 2; ++g)
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < 2; ++h) {
        const uint8_t sc = b.scales[8 * g + 2 * j + h];
        const float dl = d * float(sc & 0x0f), ml = dmin * float(sc >> 4);
        const uint8_t* q = b.qs + 32 * g + 16 * h;
        float* out = y + 128 * g + 32 * j + 16 * h;
        for (int l = 0; l < 16; ++l) out[l] = dl * float((q[l] >> (2 * j)) & 3) - ml;
      }
}

// Q3_K: 16 six-bit scales (biased by 32) packed into 12 bytes: low nibbles in bytes 0..7
// (sub-blocks 0..7 low, 8..15 high nibble), top 2 bits in bytes 8..11 (sub-block k: byte
// 8 + k%4, bits 2*(k/4)). Element i = 128*g + 32*j + l takes 2 bits from qs[32g + l] >> 2j and
// subtracts 4 unless bit (4g + j) of hmask[l] is set.
inline void dequantize_block(const BlockQ3_K& b, float* y) {
  const float d = load_f16(b.d);
  float dl[16];
  for (int k = 0; k < 16; ++k) {
    const int lo = k < 8 ? (b.scales[k] & 0x0f) : (b.scales[k - 8] >> 4);
    const int hi = (b.scales[8 + k % 4] >> (2 * (k / 4))) & 3;
    dl[k] = d * float((lo | (hi << 4)) - 32);
  }
  for (int g = 0; g < 2; ++g)
    for (int j = 0; j < 4; ++j) {
      const int hbit = 4 * g + j;
      for (int h = 0; h < 2; ++h) {
        const float s = dl[8 * g + 2 * j + h];
        const uint8_t* q = b.qs + 32 * g + 16 * h;
        const uint8_t* hm = b.hmask + 16 * h;
        float* out = y + 128 * g + 32 * j + 16 * h;
        for (int l = 0; l < 16; ++l) {
          const int v = int((q[l] >> (2 * j)) & 3) - (((hm[l] >> hbit) & 1) ? 0 : 4);
          out[l] = s * float(v);
        }
      }
    }
}

// Q4_K / Q5_K: 8 six-bit scales and 8 six-bit mins in 12 bytes (ggml's get_scale_min_k4):
// k < 4: sc = s[k] & 63, m = s[k+4] & 63; k >= 4: the low 4 bits from s[k+4] (sc: low nibble,
// m: high nibble), the top 2 bits from the spare top bits of s[k-4] (sc) and s[k] (m).
inline void unpack_scale_min_k4(const uint8_t* s, uint8_t* sc, uint8_t* m) {
  for (int k = 0; k < 4; ++k) {
    sc[k] = s[k] & 63;
    m[k] = s[k + 4] & 63;
  }
  for (int k = 4; k < 8; ++k) {
    sc[k] = uint8_t((s[k + 4] & 0x0f) | ((s[k - 4] >> 6) << 4));
    m[k] = uint8_t((s[k + 4] >> 4) | ((s[k] >> 6) << 4));
  }
}

// Q4_K: sub-block s = 2g + j (32 elements) is the low (j = 0) or high (j = 1) nibbles of qs[32g..].
inline void dequantize_block(const BlockQ4_K& b, float* y) {
  const float d = load_f16(b.d), dmin = load_f16(b.dmin);
  uint8_t sc[8], m[8];
  unpack_scale_min_k4(b.scales, sc, m);
  for (int g = 0; g < 4; ++g)
    for (int j = 0; j < 2; ++j) {
      const int s = 2 * g + j;
      const float ds = d * float(sc[s]), dm = dmin * float(m[s]);
      const uint8_t* q = b.qs + 32 * g;
      float* out = y + 32 * s;
      for (int l = 0; l < 32; ++l) out[l] = ds * float((q[l] >> (4 * j)) & 0x0f) - dm;
    }
}

// Q5_K: as Q4_K, plus bit s of qh[l] as the fifth bit of element 32s + l.
inline void dequantize_block(const BlockQ5_K& b, float* y) {
  const float d = load_f16(b.d), dmin = load_f16(b.dmin);
  uint8_t sc[8], m[8];
  unpack_scale_min_k4(b.scales, sc, m);
  for (int g = 0; g < 4; ++g)
    for (int j = 0; j < 2; ++j) {
      const int s = 2 * g + j;
      const float ds = d * float(sc[s]), dm = dmin * float(m[s]);
      const uint8_t* q = b.qs + 32 * g;
      float* out = y + 32 * s;
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> (4 * j)) & 0x0f) | (((b.qh[l] >> s) & 1) << 4);
        out[l] = ds * float(v) - dm;
      }
    }
}

// Q6_K: element i = 128g + 32r + l (g < 2, r < 4, l < 32): low 4 bits from
// ql[64g + 32(r%2) + l] >> 4(r/2), high 2 bits from qh[32g + l] >> 2r; minus 32; scale i / 16.
inline void dequantize_block(const BlockQ6_K& b, float* y) {
  const float d = load_f16(b.d);
  for (int g = 0; g < 2; ++g)
    for (int r = 0; r < 4; ++r)
      for (int h = 0; h < 2; ++h) {
        const float s = d * float(b.scales[8 * g + 2 * r + h]);
        const uint8_t* ql = b.ql + 64 * g + 32 * (r % 2) + 16 * h;
        const uint8_t* qh = b.qh + 32 * g + 16 * h;
        float* out = y + 128 * g + 32 * r + 16 * h;
        for (int l = 0; l < 16; ++l) {
          const int v = ((ql[l] >> (4 * (r / 2))) & 0x0f) | (((qh[l] >> (2 * r)) & 3) << 4);
          out[l] = s * float(v - 32);
        }
      }
}

namespace detail {
template <class Block>
inline void dequantize_blocks(const std::byte* src, int64_t n_blocks, float* dst, int64_t block_size) {
  const auto* blocks = reinterpret_cast<const Block*>(src);  // alignment 1, all byte members
  for (int64_t i = 0; i < n_blocks; ++i) dequantize_block(blocks[i], dst + i * block_size);
}
}  // namespace detail

/// Bytes that `n_elements` of type `t` take, for n_elements a multiple of the block size;
/// -1 when the type is not supported, n_elements is negative or not a multiple, or the size
/// overflows int64.
constexpr int64_t quantized_bytes(GgmlType t, int64_t n_elements) {
  const BlockTraits bt = block_traits(t);
  if (bt.block_size == 0 || n_elements < 0 || n_elements % bt.block_size != 0) return -1;
  int64_t bytes = 0;
  if (__builtin_mul_overflow(n_elements / bt.block_size, bt.type_size, &bytes)) return -1;
  return bytes;
}

/// Decodes `n_elements` values of type `type` starting at `src` (any alignment) into dst.
/// n_elements must be a non-negative multiple of the type's block size (32 for Q4_0..Q8_0, 256
/// for the k-quants, 1 for F32/F16/BF16); src must hold quantized_bytes(type, n_elements)
/// bytes. Throws ropex::Error for an unsupported type or a bad count.
inline void dequantize(GgmlType type, const std::byte* src, int64_t n_elements, float* dst) {
  const BlockTraits bt = block_traits(type);
  if (bt.block_size == 0)
    throw make_error("", "dequantize", "type " + ggml_type_label(uint32_t(type)) + " is not supported (ropex decodes " +
                                           std::string(kSupportedTypes) + ")");
  if (n_elements < 0 || n_elements % bt.block_size != 0)
    throw make_error("", "dequantize",
                     std::to_string(n_elements) + " elements is not a whole number of " +
                         std::string(ggml_type_name(type)) + " blocks of " + std::to_string(bt.block_size));
  const int64_t nb = n_elements / bt.block_size;
  switch (type) {
    case GgmlType::F32:
      if (n_elements) std::memcpy(dst, src, size_t(n_elements) * 4);
      return;
    case GgmlType::F16: {
      // Through a local chunk: a byte pointer may alias dst, which would stop the vectorizer.
      uint16_t h[64];
      for (int64_t i = 0; i < n_elements; i += 64) {
        const int64_t k = n_elements - i < 64 ? n_elements - i : 64;
        std::memcpy(h, src + 2 * i, size_t(k) * 2);
        for (int64_t j = 0; j < k; ++j) dst[i + j] = f16_to_f32(h[j]);
      }
      return;
    }
    case GgmlType::BF16: {  // the top half of a float32
      const auto* p = reinterpret_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n_elements; ++i)
        dst[i] = std::bit_cast<float>((uint32_t(p[2 * i]) << 16) | (uint32_t(p[2 * i + 1]) << 24));
      return;
    }
    case GgmlType::Q4_0: return detail::dequantize_blocks<BlockQ4_0>(src, nb, dst, bt.block_size);
    case GgmlType::Q4_1: return detail::dequantize_blocks<BlockQ4_1>(src, nb, dst, bt.block_size);
    case GgmlType::Q5_0: return detail::dequantize_blocks<BlockQ5_0>(src, nb, dst, bt.block_size);
    case GgmlType::Q5_1: return detail::dequantize_blocks<BlockQ5_1>(src, nb, dst, bt.block_size);
    case GgmlType::Q8_0: return detail::dequantize_blocks<BlockQ8_0>(src, nb, dst, bt.block_size);
    case GgmlType::Q2_K: return detail::dequantize_blocks<BlockQ2_K>(src, nb, dst, bt.block_size);
    case GgmlType::Q3_K: return detail::dequantize_blocks<BlockQ3_K>(src, nb, dst, bt.block_size);
    case GgmlType::Q4_K: return detail::dequantize_blocks<BlockQ4_K>(src, nb, dst, bt.block_size);
    case GgmlType::Q5_K: return detail::dequantize_blocks<BlockQ5_K>(src, nb, dst, bt.block_size);
    case GgmlType::Q6_K: return detail::dequantize_blocks<BlockQ6_K>(src, nb, dst, bt.block_size);
    default: break;
  }
}

}  // namespace ropex::quant
