// TensorView: a named, typed, shaped window into a memory-mapped checkpoint file.
// Weights stay in their stored dtype; consumers convert blocks to fp32 as they need them, so a
// BF16 7B checkpoint never costs 28 GB of fp32, and a GGUF Q4_1 model stays 4.5 bits a weight.
#pragma once
#include <ropex/error.hpp>
#include <ropex/quant/dequantize.hpp>
#include <ropex/quant/ggml_type.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ropex::model {

static_assert(std::endian::native == std::endian::little,
              "ropex reads little-endian checkpoint files in place: big-endian hosts are not supported");

/// Element types ropex reads. f32/f16/bf16: one element each (safetensors "F32", "F16", "BF16";
/// GGUF F32/F16/BF16 map onto them). The others are ggml's block types from GGUF files: a block
/// of 32 (Q4_0..Q8_0) or 256 (k-quants) elements in a fixed number of bytes (quant/blocks.hpp).
enum class DType { f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k };

/// The ggml type of a dtype (F32, F16, BF16, Q4_0, ...).
constexpr quant::GgmlType dtype_ggml_type(DType t) {
  switch (t) {
    case DType::f32: return quant::GgmlType::F32;
    case DType::f16: return quant::GgmlType::F16;
    case DType::bf16: return quant::GgmlType::BF16;
    case DType::q4_0: return quant::GgmlType::Q4_0;
    case DType::q4_1: return quant::GgmlType::Q4_1;
    case DType::q5_0: return quant::GgmlType::Q5_0;
    case DType::q5_1: return quant::GgmlType::Q5_1;
    case DType::q8_0: return quant::GgmlType::Q8_0;
    case DType::q2_k: return quant::GgmlType::Q2_K;
    case DType::q3_k: return quant::GgmlType::Q3_K;
    case DType::q4_k: return quant::GgmlType::Q4_K;
    case DType::q5_k: return quant::GgmlType::Q5_K;
    case DType::q6_k: return quant::GgmlType::Q6_K;
  }
  return quant::GgmlType::F32;
}

/// The dtype of a ggml type, or nothing for a type ropex does not decode.
constexpr std::optional<DType> dtype_from_ggml(quant::GgmlType g) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::q4_0, DType::q4_1, DType::q5_0, DType::q5_1, DType::q8_0,
                  DType::q2_k, DType::q3_k, DType::q4_k, DType::q5_k, DType::q6_k})
    if (dtype_ggml_type(t) == g) return t;
  return std::nullopt;
}

/// Elements per block: 1 for f32/f16/bf16, 32 for Q4_0..Q8_0, 256 for Q2_K..Q6_K.
constexpr int64_t dtype_block_size(DType t) { return quant::block_traits(dtype_ggml_type(t)).block_size; }
/// Bytes per block.
constexpr int64_t dtype_block_bytes(DType t) { return quant::block_traits(dtype_ggml_type(t)).type_size; }
/// A ggml block type (more than one element per block): rows and ranges are whole blocks.
constexpr bool is_quantized(DType t) { return dtype_block_size(t) > 1; }

/// The spelling in files and messages: "F32", "F16", "BF16" (safetensors), "Q4_1", "Q6_K" (ggml).
constexpr std::string_view dtype_name(DType t) { return quant::ggml_type_name(dtype_ggml_type(t)); }

/// Bytes per element of an element type (f32, f16, bf16). A block type has no per-element size:
/// asking for one is an error naming the type, so code written for per-element dtypes (a GPU
/// upload, a byte offset computed as index * size) refuses a quantized tensor instead of reading
/// the wrong bytes. Use dtype_bytes for sizes of whole blocks.
constexpr size_t dtype_size(DType t) {
  if (is_quantized(t))
    throw make_error("dtype " + std::string(dtype_name(t)), "element size",
                     "a block type (" + std::to_string(dtype_block_size(t)) + " elements in " +
                         std::to_string(dtype_block_bytes(t)) +
                         " bytes) has no per-element size; this path reads F32/F16/BF16 tensors only");
  return t == DType::f32 ? 4 : 2;
}

/// Bytes of n elements, n a multiple of the block size (checked by the caller); any dtype.
constexpr size_t dtype_bytes(DType t, size_t n) { return n / size_t(dtype_block_size(t)) * size_t(dtype_block_bytes(t)); }

/// IEEE-754 binary16 -> binary32, exact (every half is a float).
///   normal:    (-1)^s 2^(e-15) (1 + m/1024)  -> rebias the exponent by 127-15
///   subnormal: (-1)^s 2^-14 (m/1024)          -> m * 2^-24, exact in float
///   e == 31:   inf / NaN (payload kept)
inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {
      float v = static_cast<float>(mant) * 0x1p-24f;
      bits = sign | std::bit_cast<uint32_t>(v);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

/// bfloat16 -> binary32, exact: bf16 is the top half of a float.
inline float bfloat16_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

/// A view into an mmapped file; never owns. Row-major (C order), shape as stored.
struct TensorView {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  std::string source;  ///< file it came from, for error messages

  /// Number of elements (product of the shape; 1 for a scalar).
  size_t numel() const {
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    return n;
  }

  /// Converts elements [offset_elems, offset_elems + n_elems) to fp32 into dst.
  /// Throws ropex::Error naming source and tensor if the range runs past the tensor, or, for a
  /// block type, does not start and end on block boundaries (rows of a GGUF tensor always do).
  /// The data need not be aligned (safetensors does not promise alignment; ggml blocks are bytes).
  void to_float(float* dst, size_t offset_elems, size_t n_elems) const {
    const size_t total = numel();
    if (offset_elems > total || n_elems > total - offset_elems)
      throw make_error(source, "tensor '" + name + "'",
                       "element range [" + std::to_string(offset_elems) + ", " +
                           std::to_string(offset_elems) + "+" + std::to_string(n_elems) +
                           ") is outside its " + std::to_string(total) + " elements");
    if (is_quantized(dtype)) {
      const size_t bs = size_t(dtype_block_size(dtype));
      if (offset_elems % bs != 0 || n_elems % bs != 0)
        throw make_error(source, "tensor '" + name + "'",
                         "element range [" + std::to_string(offset_elems) + ", " + std::to_string(offset_elems) + "+" +
                             std::to_string(n_elems) + ") is not whole " + std::string(dtype_name(dtype)) +
                             " blocks of " + std::to_string(bs));
      quant::dequantize(dtype_ggml_type(dtype), data + dtype_bytes(dtype, offset_elems), int64_t(n_elems), dst);
      return;
    }
    const std::byte* p = data + offset_elems * dtype_size(dtype);
    switch (dtype) {
      case DType::f32:
        if (n_elems) std::memcpy(dst, p, n_elems * 4);
        break;
      case DType::f16:
        for (size_t i = 0; i < n_elems; ++i) {
          uint16_t h;
          std::memcpy(&h, p + 2 * i, 2);
          dst[i] = half_to_float(h);
        }
        break;
      case DType::bf16:
        for (size_t i = 0; i < n_elems; ++i) {
          uint16_t h;
          std::memcpy(&h, p + 2 * i, 2);
          dst[i] = bfloat16_to_float(h);
        }
        break;
      default:
        break;  // block types handled above
    }
  }

  /// Bytes of one row (the last dimension) of a 2-D or higher tensor, any dtype.
  size_t row_bytes() const { return shape.empty() ? 0 : dtype_bytes(dtype, size_t(shape.back())); }

  /// Element i as a float (slow path for tests and spot checks).
  float at(size_t i) const {
    if (is_quantized(dtype)) {  // decode the block holding i
      const size_t bs = size_t(dtype_block_size(dtype));
      std::vector<float> block(bs);
      to_float(block.data(), i / bs * bs, bs);
      return block[i % bs];
    }
    float v;
    to_float(&v, i, 1);
    return v;
  }

  /// Zero-copy access: the data as floats when stored as F32 and 4-byte aligned, else nullptr
  /// (then use to_float).
  const float* as_f32() const {
    if (dtype != DType::f32 || reinterpret_cast<uintptr_t>(data) % alignof(float) != 0) return nullptr;
    return reinterpret_cast<const float*>(data);
  }
};

/// "[a, b, c]" for error messages.
inline std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace ropex::model
