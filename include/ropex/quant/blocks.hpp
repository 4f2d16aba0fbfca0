// Byte layouts of ggml's quantized blocks, as stored in GGUF files.
// Source: ggml/src/ggml-common.h (block_q4_0 ... block_q6_K); gguf-py gguf/quants.py decodes the
// same bytes. Every field is a byte array, so a block may sit at any address (alignment 1) and
// multi-byte fields are read little-endian with memcpy. "f16" fields are IEEE binary16 scales.
//
//   y = value written to the output, i = element index inside the block, d/m = f16 scale/min
//
//   Q4_0  [d:2][qs:16]            y[i] = d * (q[i] - 8)        q[i] = low nibbles of qs for i < 16,
//                                                                      high nibbles for i >= 16
//   Q4_1  [d:2][m:2][qs:16]       y[i] = d * q[i] + m          q as Q4_0
//   Q5_0  [d:2][qh:4][qs:16]      y[i] = d * (q[i] - 16)       q = nibble | bit i of qh (u32 LE) << 4
//   Q5_1  [d:2][m:2][qh:4][qs:16] y[i] = d * q[i] + m
//   Q8_0  [d:2][qs:32 int8]       y[i] = d * qs[i]
//
// k-quants: a 256-element super-block of sub-blocks, each with its own small integer scale.
//   Q2_K  [scales:16][qs:64][d:2][dmin:2]           16 x 16: y = (d*(sc&15)) * q - (dmin*(sc>>4)), q 2-bit
//   Q3_K  [hmask:32][qs:64][scales:12][d:2]         16 x 16: y = (d*(sc6-32)) * (q2 - 4*(1-hbit))
//   Q4_K  [d:2][dmin:2][scales:12][qs:128]          8 x 32:  y = (d*sc6) * q4 - (dmin*m6)
//   Q5_K  [d:2][dmin:2][scales:12][qh:32][qs:128]   8 x 32:  y = (d*sc6) * (q4 | hbit<<4) - (dmin*m6)
//   Q6_K  [ql:128][qh:64][scales:16 int8][d:2]      16 x 16: y = (d*sc8) * ((q4 | q2<<4) - 32)
// The bit positions of each q inside qs/qh/hmask are spelled out next to each decoder.
#pragma once
#include <ropex/quant/ggml_type.hpp>

#include <cstdint>

namespace ropex::quant {

struct BlockQ4_0 { uint8_t d[2]; uint8_t qs[16]; };
struct BlockQ4_1 { uint8_t d[2]; uint8_t m[2]; uint8_t qs[16]; };
struct BlockQ5_0 { uint8_t d[2]; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint8_t d[2]; uint8_t m[2]; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ8_0 { uint8_t d[2]; int8_t qs[32]; };
struct BlockQ2_K { uint8_t scales[16]; uint8_t qs[64]; uint8_t d[2]; uint8_t dmin[2]; };
struct BlockQ3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint8_t d[2]; };
struct BlockQ4_K { uint8_t d[2]; uint8_t dmin[2]; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint8_t d[2]; uint8_t dmin[2]; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint8_t d[2]; };

// The structs must be exactly the file's bytes.
static_assert(sizeof(BlockQ4_0) == block_traits(GgmlType::Q4_0).type_size && alignof(BlockQ4_0) == 1);
static_assert(sizeof(BlockQ4_1) == block_traits(GgmlType::Q4_1).type_size && alignof(BlockQ4_1) == 1);
static_assert(sizeof(BlockQ5_0) == block_traits(GgmlType::Q5_0).type_size && alignof(BlockQ5_0) == 1);
static_assert(sizeof(BlockQ5_1) == block_traits(GgmlType::Q5_1).type_size && alignof(BlockQ5_1) == 1);
static_assert(sizeof(BlockQ8_0) == block_traits(GgmlType::Q8_0).type_size && alignof(BlockQ8_0) == 1);
static_assert(sizeof(BlockQ2_K) == block_traits(GgmlType::Q2_K).type_size && alignof(BlockQ2_K) == 1);
static_assert(sizeof(BlockQ3_K) == block_traits(GgmlType::Q3_K).type_size && alignof(BlockQ3_K) == 1);
static_assert(sizeof(BlockQ4_K) == block_traits(GgmlType::Q4_K).type_size && alignof(BlockQ4_K) == 1);
static_assert(sizeof(BlockQ5_K) == block_traits(GgmlType::Q5_K).type_size && alignof(BlockQ5_K) == 1);
static_assert(sizeof(BlockQ6_K) == block_traits(GgmlType::Q6_K).type_size && alignof(BlockQ6_K) == 1);

}  // namespace ropex::quant
