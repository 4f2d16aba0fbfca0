// Finding NaN and inf: in a checkpoint's tensors (a check at load time) and in a forward's logits,
// so a run that would print "perplexity nan" stops with an error naming the likely cause instead.
#pragma once
#include <ropex/model/config.hpp>
#include <ropex/model/tensor.hpp>
#include <ropex/quant/blocks.hpp>
#include <ropex/rope/scaling.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace ropex::model {

/// Index of the first NaN or inf among x[0..n), or n when all are finite. Branch-free blocks of 64,
/// so the scan vectorizes (a forward's logits are checked on every call).
inline size_t first_nonfinite(const float* x, size_t n) {
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    bool bad = false;
    for (size_t j = 0; j < 64; ++j) bad |= !(x[i + j] - x[i + j] == 0.0f);  // NaN - NaN, inf - inf: NaN
    if (bad) break;
  }
  for (; i < n; ++i)
    if (!(x[i] - x[i] == 0.0f)) return i;
  return n;
}

namespace detail {
// Raw-bit tests: an all-ones exponent is inf or NaN.
template <class U>
inline size_t first_all_ones_exponent(const std::byte* p, size_t n, U mask) {
  constexpr size_t block = 256;
  size_t i = 0;
  U buf[block];
  for (; i < n; i += block) {
    const size_t m = std::min(block, n - i);
    std::memcpy(buf, p + i * sizeof(U), m * sizeof(U));  // safetensors data need not be aligned
    bool bad = false;
    for (size_t j = 0; j < m; ++j) bad |= (buf[j] & mask) == mask;
    if (bad)
      for (size_t j = 0; j < m; ++j)
        if ((buf[j] & mask) == mask) return i + j;
  }
  return n;
}
}  // namespace detail

/// The first element of `t` that is NaN or inf (after decoding, for block types), or nullopt.
inline std::optional<size_t> first_nonfinite(const TensorView& t) {
  const size_t n = t.numel();
  size_t at = n;
  switch (t.dtype) {
    case DType::f32: at = detail::first_all_ones_exponent<uint32_t>(t.data, n, 0x7f800000u); break;
    case DType::f16: at = detail::first_all_ones_exponent<uint16_t>(t.data, n, uint16_t(0x7c00)); break;
    case DType::bf16: at = detail::first_all_ones_exponent<uint16_t>(t.data, n, uint16_t(0x7f80)); break;
    default: {
      // Block types: the only floats are each block's f16 scale (and min); the quants are small
      // integers, so a block decodes to finite values exactly when those are finite (|y| <=
      // 65504 * 63 * 63). Reading 2-4 bytes per block instead of decoding keeps the check cheap.
      using namespace quant;
      const size_t nb = n / size_t(dtype_block_size(t.dtype));
      auto scan = [&](size_t bytes, size_t off0, size_t off1) {
        for (size_t b = 0; b < nb; ++b) {
          const std::byte* blk = t.data + b * bytes;
          for (size_t off : {off0, off1}) {
            if (off == size_t(-1)) continue;
            uint16_t h;
            std::memcpy(&h, blk + off, 2);
            if ((h & 0x7c00) == 0x7c00) return b * size_t(dtype_block_size(t.dtype));
          }
        }
        return n;
      };
      constexpr size_t none = size_t(-1);
      switch (t.dtype) {
        case DType::q4_0: at = scan(sizeof(BlockQ4_0), offsetof(BlockQ4_0, d), none); break;
        case DType::q4_1: at = scan(sizeof(BlockQ4_1), offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)); break;
        case DType::q5_0: at = scan(sizeof(BlockQ5_0), offsetof(BlockQ5_0, d), none); break;
        case DType::q5_1: at = scan(sizeof(BlockQ5_1), offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)); break;
        case DType::q8_0: at = scan(sizeof(BlockQ8_0), offsetof(BlockQ8_0, d), none); break;
        case DType::q2_k: at = scan(sizeof(BlockQ2_K), offsetof(BlockQ2_K, d), offsetof(BlockQ2_K, dmin)); break;
        case DType::q3_k: at = scan(sizeof(BlockQ3_K), offsetof(BlockQ3_K, d), none); break;
        case DType::q4_k: at = scan(sizeof(BlockQ4_K), offsetof(BlockQ4_K, d), offsetof(BlockQ4_K, dmin)); break;
        case DType::q5_k: at = scan(sizeof(BlockQ5_K), offsetof(BlockQ5_K, d), offsetof(BlockQ5_K, dmin)); break;
        case DType::q6_k: at = scan(sizeof(BlockQ6_K), offsetof(BlockQ6_K, d), none); break;
        default: {  // a block type added later: decode and look
          constexpr size_t chunk = 1 << 14;  // a multiple of every block size (32, 256)
          std::vector<float> buf(chunk);
          for (size_t i = 0; i < n && at == n; i += chunk) {
            const size_t m = std::min(chunk, n - i);
            t.to_float(buf.data(), i, m);
            if (const size_t j = first_nonfinite(buf.data(), m); j < m) at = i + j;
          }
        }
      }
    }
  }
  if (at == n) return std::nullopt;
  return at;
}

/// The likely cause of non-finite logits, for the error message: with the weights checked finite
/// at load, the RoPE settings in use (or activations past float range); else the weights first.
inline std::string nonfinite_cause(const LlamaConfig& c, bool weights_checked) {
  const RopeScaling& r = c.rope;
  char rope[256];
  std::snprintf(rope, sizeof rope, "rope_type %s, rope_theta %.10g, factor %.10g, attention_factor %.10g",
                to_string(r.type), r.base, r.factor, r.attention_factor(0));
  const std::string settings = std::string("the RoPE settings (") + rope +
                               "; see docs/rope-variants.md for the accepted ranges) or activations past float range";
  if (weights_checked) return "the weights are finite (checked at load), so likely " + settings;
  return "likely non-finite weights (run without --no-weight-check to name the tensor), else " + settings;
}

}  // namespace ropex::model
