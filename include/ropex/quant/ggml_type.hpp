// ggml's tensor type table: the numbers GGUF files store, their names, and the block geometry of
// the types ropex decodes.
// Source: gguf-py gguf/constants.py (GGMLQuantizationType, GGML_QUANT_SIZES), ggml/include/ggml.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ropex::quant {

/// A ggml tensor type as numbered in GGUF tensor infos (ggml.h `enum ggml_type`).
/// Every number ggml has assigned is listed so an error can name it; ropex decodes the ones
/// with a BlockTraits entry (see `is_supported`).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3,
  Q4_2 = 4, Q4_3 = 5,  // removed from ggml in 2023
  Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  Q4_0_4_4 = 31, Q4_0_4_8 = 32, Q4_0_8_8 = 33,  // removed (repacked at load time now)
  TQ1_0 = 34, TQ2_0 = 35,
  IQ4_NL_4_4 = 36, IQ4_NL_4_8 = 37, IQ4_NL_8_8 = 38,  // removed
  MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

/// Elements per block and bytes per block (GGML_QUANT_SIZES). Plain types are blocks of one.
struct BlockTraits {
  int64_t block_size = 0;  ///< elements per block; a row length must be a multiple of it
  int64_t type_size = 0;   ///< bytes per block
};

/// Super-block length of the k-quants (QK_K).
inline constexpr int64_t kQK_K = 256;

/// The ggml name of type number `t` ("Q4_K", "IQ2_XXS"), or "" for a number ggml never assigned.
constexpr std::string_view ggml_type_name(uint32_t t) {
  constexpr std::string_view names[] = {
      "F32",     "F16",     "Q4_0",     "Q4_1",     "Q4_2",     "Q4_3",       "Q5_0",       "Q5_1",
      "Q8_0",    "Q8_1",    "Q2_K",     "Q3_K",     "Q4_K",     "Q5_K",       "Q6_K",       "Q8_K",
      "IQ2_XXS", "IQ2_XS",  "IQ3_XXS",  "IQ1_S",    "IQ4_NL",   "IQ3_S",      "IQ2_S",      "IQ4_XS",
      "I8",      "I16",     "I32",      "I64",      "F64",      "IQ1_M",      "BF16",       "Q4_0_4_4",
      "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",  "TQ2_0",    "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
      "NVFP4",   "Q1_0"};
  return t < std::size(names) ? names[t] : std::string_view{};
}
constexpr std::string_view ggml_type_name(GgmlType t) { return ggml_type_name(uint32_t(t)); }

/// Block geometry of the types ropex decodes; {0, 0} for every other type.
constexpr BlockTraits block_traits(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return {1, 4};
    case GgmlType::F16: return {1, 2};
    case GgmlType::BF16: return {1, 2};
    case GgmlType::Q4_0: return {32, 2 + 16};
    case GgmlType::Q4_1: return {32, 2 + 2 + 16};
    case GgmlType::Q5_0: return {32, 2 + 4 + 16};
    case GgmlType::Q5_1: return {32, 2 + 2 + 4 + 16};
    case GgmlType::Q8_0: return {32, 2 + 32};
    case GgmlType::Q2_K: return {kQK_K, kQK_K / 16 + kQK_K / 4 + 2 + 2};
    case GgmlType::Q3_K: return {kQK_K, kQK_K / 8 + kQK_K / 4 + 12 + 2};
    case GgmlType::Q4_K: return {kQK_K, 2 + 2 + 12 + kQK_K / 2};
    case GgmlType::Q5_K: return {kQK_K, 2 + 2 + 12 + kQK_K / 8 + kQK_K / 2};
    case GgmlType::Q6_K: return {kQK_K, kQK_K / 2 + kQK_K / 4 + kQK_K / 16 + 2};
    default: return {0, 0};
  }
}

/// True for the types ropex decodes (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K).
constexpr bool is_supported(GgmlType t) { return block_traits(t).block_size != 0; }

/// The supported types' names, for error messages.
inline constexpr std::string_view kSupportedTypes =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// "Q4_K", or "type 99" for an unassigned number (error messages).
inline std::string ggml_type_label(uint32_t t) {
  const auto n = ggml_type_name(t);
  return n.empty() ? "type " + std::to_string(t) : std::string(n);
}

}  // namespace ropex::quant
