// Dequantizers against gguf-py's numpy decoder (gguf.quants.dequantize), bit for bit, on the
// fixtures of scripts/make_quant_fixtures.py: random blocks and blocks with extreme f16 scales.
#include <ropex/io/npy.hpp>
#include <ropex/model/tensor.hpp>
#include <ropex/quant/dequantize.hpp>

#include <doctest/doctest.h>
#include "test_util.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace ropex::quant;
using ropex::test::error_of;

namespace {

const fs::path kDir = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "quant";

std::vector<std::byte> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in, "cannot open " << p);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
  return b;
}

// Same bits, or both NaN (numpy may quiet a signalling NaN; payloads are not compared).
bool same(float want, float got) {
  if (std::isnan(want)) return std::isnan(got);
  return std::bit_cast<uint32_t>(want) == std::bit_cast<uint32_t>(got);
}

struct Mismatch {
  size_t count = 0, first = SIZE_MAX;
};
Mismatch compare(const std::vector<float>& want, const float* got) {
  Mismatch m;
  for (size_t i = 0; i < want.size(); ++i)
    if (!same(want[i], got[i])) {
      if (!m.count) m.first = i;
      ++m.count;
    }
  return m;
}

const GgmlType kTypes[] = {GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                           GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K,
                           GgmlType::Q5_K, GgmlType::Q6_K};

}  // namespace

TEST_CASE("f16_to_f32 is exact for all 65536 half bit patterns (same bits as half_to_float)") {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = f16_to_f32(uint16_t(h)), b = ropex::model::half_to_float(uint16_t(h));
    if (std::bit_cast<uint32_t>(a) != std::bit_cast<uint32_t>(b)) ++bad;
  }
  CHECK(bad == 0);
}

TEST_CASE("block geometry matches ggml's table") {
  // gguf-py GGML_QUANT_SIZES, written out: (block size, bytes per block)
  CHECK(block_traits(GgmlType::Q4_0).type_size == 18);
  CHECK(block_traits(GgmlType::Q4_1).type_size == 20);
  CHECK(block_traits(GgmlType::Q5_0).type_size == 22);
  CHECK(block_traits(GgmlType::Q5_1).type_size == 24);
  CHECK(block_traits(GgmlType::Q8_0).type_size == 34);
  CHECK(block_traits(GgmlType::Q2_K).type_size == 84);
  CHECK(block_traits(GgmlType::Q3_K).type_size == 110);
  CHECK(block_traits(GgmlType::Q4_K).type_size == 144);
  CHECK(block_traits(GgmlType::Q5_K).type_size == 176);
  CHECK(block_traits(GgmlType::Q6_K).type_size == 210);
  CHECK(ggml_type_name(GgmlType::IQ2_XXS) == "IQ2_XXS");
  CHECK(ggml_type_name(GgmlType::MXFP4) == "MXFP4");
  CHECK(ggml_type_name(uint32_t(1000)).empty());
  CHECK_FALSE(is_supported(GgmlType::Q8_K));
  CHECK(quantized_bytes(GgmlType::Q4_K, 512) == 288);
  CHECK(quantized_bytes(GgmlType::Q4_K, 100) == -1);
  CHECK(quantized_bytes(GgmlType::Q8_0, INT64_MAX / 32 * 32) == -1);  // overflow
}

TEST_CASE("every type decodes its fixture bit-exactly like gguf.quants.dequantize") {
  for (GgmlType t : kTypes) {
    const std::string name(ggml_type_name(t));
    CAPTURE(name);
    const auto raw = read_bytes(kDir / (name + ".bin"));
    const auto ref = ropex::io::read_npy_f32(kDir / (name + ".npy"));
    const BlockTraits bt = block_traits(t);
    const int64_t n = int64_t(ref.data.size());
    REQUIRE(n > 0);
    REQUIRE(quantized_bytes(t, n) == int64_t(raw.size()));

    std::vector<float> got(size_t(n), -12345.0f);
    dequantize(t, raw.data(), n, got.data());
    const auto m = compare(ref.data, got.data());
    CHECK_MESSAGE(m.count == 0, m.count << " mismatches, first at " << m.first << ": want "
                                        << (m.count ? ref.data[m.first] : 0) << " got " << (m.count ? got[m.first] : 0));

    // Same answer from an odd address (blocks have alignment 1) and one block at a time.
    std::vector<std::byte> shifted(raw.size() + 1);
    std::memcpy(shifted.data() + 1, raw.data(), raw.size());
    std::vector<float> got2(size_t(n), -1.0f);
    for (int64_t b = 0; b < n / bt.block_size; ++b)
      dequantize(t, shifted.data() + 1 + b * bt.type_size, bt.block_size, got2.data() + b * bt.block_size);
    CHECK(compare(ref.data, got2.data()).count == 0);

    // The fixture must really hold the extreme cases it claims to (scripts/make_quant_fixtures.py).
    size_t n_inf = 0, n_nan = 0, n_big = 0;
    for (float v : ref.data) {
      n_inf += std::isinf(v);
      n_nan += std::isnan(v);
      n_big += std::isfinite(v) && std::fabs(v) >= 60000.0f;
    }
    CHECK(n_inf > 0);
    CHECK(n_nan > 0);
    CHECK(n_big > 0);
  }
}

TEST_CASE("special scales follow IEEE arithmetic (Q8_0 by hand)") {
  BlockQ8_0 b{};
  for (int i = 0; i < 32; ++i) b.qs[i] = int8_t(i - 16);  // qs[16] == 0
  float y[32];
  const auto with_scale = [&](uint16_t d) {
    b.d[0] = uint8_t(d & 0xff);
    b.d[1] = uint8_t(d >> 8);
    dequantize(GgmlType::Q8_0, reinterpret_cast<const std::byte*>(&b), 32, y);
  };
  with_scale(0x7c00);  // +inf: +-inf where q != 0, NaN where q == 0 (inf * 0)
  CHECK(std::isinf(y[0]));
  CHECK(y[0] < 0);
  CHECK(std::isnan(y[16]));
  CHECK(y[31] == INFINITY);
  with_scale(0x7e00);  // NaN everywhere
  for (float v : y) CHECK(std::isnan(v));
  with_scale(0x0000);  // +0 scale: zeros signed like q
  CHECK(std::bit_cast<uint32_t>(y[0]) == 0x80000000u);
  CHECK(std::bit_cast<uint32_t>(y[31]) == 0u);
  with_scale(0x0001);  // smallest subnormal, 2^-24: exact
  CHECK(y[31] == std::ldexp(15.0f, -24));
  with_scale(0x7bff);  // f16 max: 65504 * -16, exact, no overflow in float32
  CHECK(y[0] == -65504.0f * 16.0f);
}

TEST_CASE("dequantize refuses unsupported types and partial blocks") {
  std::vector<std::byte> buf(1024);
  float out[256];
  CHECK_HAS(error_of([&] { dequantize(GgmlType::IQ2_XXS, buf.data(), 256, out); }), "IQ2_XXS is not supported");
  CHECK_HAS(error_of([&] { dequantize(GgmlType(77), buf.data(), 256, out); }), "type 77");
  CHECK_HAS(error_of([&] { dequantize(GgmlType::Q4_K, buf.data(), 128, out); }), "128 elements is not a whole number of Q4_K blocks of 256");
  CHECK_HAS(error_of([&] { dequantize(GgmlType::Q8_0, buf.data(), -32, out); }), "-32 elements");
  CHECK(error_of([&] { dequantize(GgmlType::Q8_0, buf.data(), 0, out); }) == "<no exception>");
}
