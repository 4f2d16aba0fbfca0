// TensorView: a named, typed, shaped window into a memory-mapped checkpoint file.
// Weights stay in their stored dtype; consumers convert blocks to fp32 as they need them, so a
// BF16 7B checkpoint never costs 28 GB of fp32.
#pragma once
#include <ropex/error.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace ropex::model {

static_assert(std::endian::native == std::endian::little,
              "ropex reads little-endian checkpoint files in place: big-endian hosts are not supported");

/// Element types ropex reads. Names follow safetensors ("F32", "F16", "BF16").
enum class DType { f32, f16, bf16 };

/// Bytes per element.
constexpr size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

/// The safetensors spelling: "F32", "F16", "BF16".
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
  }
  return "?";
}

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
  size_t numel() const { return nbytes / dtype_size(dtype); }

  /// Converts elements [offset_elems, offset_elems + n_elems) to fp32 into dst.
  /// Throws ropex::Error naming source and tensor if the range runs past the tensor.
  /// The data need not be aligned (safetensors does not promise alignment).
  void to_float(float* dst, size_t offset_elems, size_t n_elems) const {
    const size_t total = numel();
    if (offset_elems > total || n_elems > total - offset_elems)
      throw make_error(source, "tensor '" + name + "'",
                       "element range [" + std::to_string(offset_elems) + ", " +
                           std::to_string(offset_elems) + "+" + std::to_string(n_elems) +
                           ") is outside its " + std::to_string(total) + " elements");
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
    }
  }

  /// Element i as a float (slow path for tests and spot checks).
  float at(size_t i) const {
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
