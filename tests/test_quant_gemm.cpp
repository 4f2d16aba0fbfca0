// The int8 GEMM of fast mode (quant/gemm.hpp), every kernel this CPU runs (scalar, AVX2,
// AVX-512 VNNI) bit for bit against the formula it documents, written out here one product at a
// time: isum = sum (u - off) q in int32, acc = fma(float(isum), dw * dx, acc),
// acc = fma(mw, dx * float(sum q), acc), blocks in order. And its two inputs: the unsigned
// form of each block type against the dequantizer, the activation quantizer against its rule.
#include <ropex/quant/dequantize.hpp>
#include <ropex/quant/dot.hpp>
#include <ropex/quant/gemm.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

using namespace ropex;
using quant::GgmlType;

namespace {

const GgmlType kTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K};

// Random blocks with finite f16 scales in +-[2^-10, 2^-3] (mins too), the rest random bytes.
std::vector<std::byte> random_rows(GgmlType t, int64_t rows, int64_t k, std::mt19937& rng) {
  const auto bt = quant::block_traits(t);
  const int64_t nblocks = rows * k / bt.block_size;
  std::vector<std::byte> bytes(size_t(nblocks * bt.type_size));
  for (auto& b : bytes) b = std::byte(rng() & 0xff);
  const bool two = t == GgmlType::Q4_1 || t == GgmlType::Q4_K || t == GgmlType::Q5_K;
  for (int64_t b = 0; b < nblocks; ++b)
    for (int f = 0; f < (two ? 2 : 1); ++f) {
      const uint16_t h = uint16_t(((rng() & 1) << 15) | ((5 + rng() % 8) << 10) | (rng() % 1024));
      std::memcpy(bytes.data() + b * bt.type_size + 2 * f, &h, 2);
    }
  return bytes;
}

std::vector<quant::gemm_detail::Isa> isas_here() {
  using quant::gemm_detail::Isa;
  std::vector<Isa> v{Isa::scalar};
#if ROPEX_QUANT_AVX2
  if (quant::quant_avx2()) v.push_back(Isa::avx2);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni"))
    v.push_back(Isa::avx512);
#endif
  return v;
}

}  // namespace

TEST_CASE("unpack32: dw * (u - off) + mw is the dequantized value, every fast-mode type") {
  std::mt19937 rng(3);
  for (GgmlType t : kTypes) {
    const int64_t k = 512;
    const auto bytes = random_rows(t, 1, k, rng);
    std::vector<float> ref(static_cast<size_t>(k));
    quant::dequantize(t, bytes.data(), k, ref.data());
    const int32_t off = quant::int8_offset(t);
    for (int64_t s = 0; s < k / 32; ++s) {
      uint8_t u[32];
      float dw = 0, mw = 0;
      quant::unpack32(t, bytes.data(), s, u, dw, mw);
      if (!quant::int8_has_min(t)) CHECK(mw == 0.0f);
      for (int l = 0; l < 32; ++l) {
        const float v = dw * float(int32_t(u[l]) - off) + mw;
        INFO(quant::ggml_type_name(t) << " element " << 32 * s + l);
        REQUIRE(v == ref[size_t(32 * s + l)]);
      }
    }
  }
}

TEST_CASE("activation quantizer: the rule, and the AVX-512 rows equal the scalar ones") {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  const int64_t k = 32 * 7;
  std::vector<float> x(static_cast<size_t>(k));
  for (auto& v : x) v = nd(rng) * 4.0f;
  for (int i = 32; i < 64; ++i) x[size_t(i)] = 0.0f;                        // an all-zero block
  for (int i = 64; i < 96; ++i) x[size_t(i)] = float(i - 80) * 0.5f;        // exact halves: ties
  x[size_t(100)] = std::nanf("");                                           // a NaN block
  std::vector<int8_t> q(static_cast<size_t>(k));
  std::vector<float> dx(size_t(k / 32)), sx(dx.size());
  std::vector<int32_t> xoff(dx.size());
  quant::gemm_detail::quantize_row_scalar(x.data(), k, q.data(), dx.data(), sx.data(), xoff.data(), 8);
  for (int64_t s = 0; s < k / 32; ++s) {
    if (s == 3) {
      CHECK(std::isnan(dx[size_t(s)]));
      continue;
    }
    float amax = 0;
    int32_t sum = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[size_t(32 * s + i)]));
    CHECK(dx[size_t(s)] == amax / 127.0f);
    for (int i = 0; i < 32; ++i) {
      const size_t e = size_t(32 * s + i);
      CHECK(std::abs(int(q[e])) <= 127);
      if (amax > 0) CHECK(std::fabs(float(q[e]) * dx[size_t(s)] - x[e]) <= dx[size_t(s)] * 0.5001f);
      sum += q[e];
    }
    CHECK(xoff[size_t(s)] == 8 * sum);
    CHECK(sx[size_t(s)] == dx[size_t(s)] * float(sum));
  }
  CHECK(dx[1] == 0.0f);
#if ROPEX_QUANT_AVX2
  if (quant::gemm_detail::best_isa() == quant::gemm_detail::Isa::avx512) {
    std::vector<int8_t> q2(q.size());
    std::vector<float> dx2(dx.size()), sx2(dx.size());
    std::vector<int32_t> xoff2(dx.size());
    quant::gemm_detail::quantize_row_avx512(x.data(), k, q2.data(), dx2.data(), sx2.data(), xoff2.data(), 8);
    CHECK(q2 == q);
    CHECK(xoff2 == xoff);
    for (size_t s = 0; s < dx.size(); ++s) {
      CHECK(std::memcmp(&dx2[s], &dx[s], 4) == 0);
      CHECK(std::memcmp(&sx2[s], &sx[s], 4) == 0);
    }
  }
#endif
}

TEST_CASE("gemm_int8: every kernel here bit for bit against the documented formula") {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  for (GgmlType t : kTypes) {
    const int64_t bs = quant::block_traits(t).block_size;
    for (int64_t k : {bs, 3 * bs}) {
      for (int64_t N : {1, 15, 16, 17, 40, 130}) {  // 130 x 37 x 3 blocks: the threaded path
        const auto w = random_rows(t, N, k, rng);
        const size_t row_bytes = size_t(k / bs * quant::block_traits(t).type_size);
        for (int64_t n : {1, 3, 5, 8, 13, 21, 37}) {
          const int64_t ldx = k + 32, ldy = N + 3;  // strided rows
          std::vector<float> x(static_cast<size_t>(n * ldx));
          for (auto& v : x) v = nd(rng);
          // the formula, one product at a time
          const int32_t off = quant::int8_offset(t);
          const bool min = quant::int8_has_min(t);
          std::vector<float> want(size_t(n * ldy), -7.0f);
          std::vector<int8_t> q(static_cast<size_t>(k));
          std::vector<float> dx(static_cast<size_t>(k / 32));
          std::vector<int32_t> qs(static_cast<size_t>(k / 32));
          for (int64_t i = 0; i < n; ++i) {
            for (int64_t s = 0; s < k / 32; ++s) dx[size_t(s)] = quant::quantize32(x.data() + i * ldx + 32 * s, q.data() + 32 * s, qs[size_t(s)]);
            for (int64_t j = 0; j < N; ++j) {
              float acc = 0;
              for (int64_t s = 0; s < k / 32; ++s) {
                uint8_t u[32];
                float dw, mw;
                quant::unpack32(t, w.data() + size_t(j) * row_bytes, s, u, dw, mw);
                int32_t isum = 0;
                for (int l = 0; l < 32; ++l) isum += (int32_t(u[l]) - off) * int32_t(q[size_t(32 * s + l)]);
                const float scale = dw * dx[size_t(s)];
                acc = std::fma(float(isum), scale, acc);
                if (min) {
                  const float sx = dx[size_t(s)] * float(qs[size_t(s)]);
                  acc = std::fma(mw, sx, acc);
                }
              }
              want[size_t(i * ldy + j)] = acc;
            }
          }
          for (auto isa : isas_here()) {
            for (bool accumulate : {false, true}) {
              std::vector<float> got(size_t(n * ldy), accumulate ? 0.0f : -7.0f);
              if (accumulate)  // padding columns stay, real ones get want added onto 0
                for (int64_t i = 0; i < n; ++i)
                  for (int64_t j = N; j < ldy; ++j) got[size_t(i * ldy + j)] = -7.0f;
              quant::gemm_int8(t, w.data(), row_bytes, N, k, x.data(), ldx, n, got.data(), ldy, accumulate, int(isa));
              int64_t bad = 0;
              for (size_t e = 0; e < got.size(); ++e) bad += std::memcmp(&got[e], &want[e], 4) != 0;
              INFO(quant::ggml_type_name(t) << " isa " << int(isa) << " k " << k << " N " << N << " n " << n
                                            << " accumulate " << accumulate << ": " << bad << " of " << got.size() << " differ");
              CHECK(bad == 0);
            }
          }
        }
      }
    }
  }
}
