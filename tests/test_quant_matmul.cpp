// Quantized-weight products of ops<cpu> (quant/dot.hpp, backends/eigen/ops.hpp) against
// dequantize-then-dot in double, on random blocks of every GGUF block type:
//   exact mode (fused block dots for one to four tokens, dequantize + GEMM for more): within the
//     fp32 dot-product rounding bound  in * 2^-24 * sum_i |w_i x_i|  of the double reference;
//   fast mode (int8 activations per 32-block): within  sum_b (max|x_b| / 254) * sum_{i in b} |w_i|
//     (each activation moves by at most half its block's int8 step) plus that rounding bound.
// Ragged row counts (1, 3, 7, 33 rows: the four-row tails; 63-577 rows over 1-8 threads: the row
// chunks of the decode pool, bit-equal to one thread), odd and even block
// counts per row, 1-9 tokens (the gemv path up to 4, the prefill path above).
#include <ropex/backends/eigen/ops.hpp>
#include <ropex/model/tensor.hpp>
#include <ropex/quant/dequantize.hpp>
#include <ropex/quant/dot.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace ropex;
using quant::GgmlType;

namespace {

// A random finite f16 in +-[2^-10, 2^-3]: exactly representable, so scales are sane.
uint16_t random_half(std::mt19937& rng, bool allow_negative) {
  const uint16_t e = uint16_t(5 + rng() % 8), m = uint16_t(rng() % 1024);
  const uint16_t sign = allow_negative && (rng() & 1) ? 0x8000 : 0;
  return uint16_t(sign | (e << 10) | m);
}

// Offsets of the f16 fields of each block type (blocks.hpp).
std::vector<size_t> half_fields(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: return {0};
    case GgmlType::Q4_1: case GgmlType::Q5_1: case GgmlType::Q4_K: case GgmlType::Q5_K: return {0, 2};
    case GgmlType::Q2_K: return {80, 82};
    case GgmlType::Q3_K: return {108};
    case GgmlType::Q6_K: return {208};
    default: return {};
  }
}

struct RandomTensor {
  std::vector<std::byte> bytes;
  model::TensorView view;
  RandomTensor(GgmlType t, int64_t rows, int64_t in, std::mt19937& rng) {
    const auto bt = quant::block_traits(t);
    const int64_t nblocks = rows * in / bt.block_size;
    bytes.resize(size_t(nblocks * bt.type_size));
    for (auto& b : bytes) b = std::byte(rng() & 0xff);
    for (int64_t b = 0; b < nblocks; ++b)
      for (size_t off : half_fields(t)) {
        const uint16_t h = random_half(rng, t == GgmlType::Q4_0 || t == GgmlType::Q8_0 || off == 0);
        std::memcpy(bytes.data() + b * bt.type_size + off, &h, 2);
      }
    view.name = "w", view.dtype = *model::dtype_from_ggml(t), view.shape = {rows, in};
    view.data = bytes.data(), view.nbytes = bytes.size(), view.source = "random";
  }
};

struct Ref {
  std::vector<double> y;      // [n, rows] double reference
  std::vector<double> bound;  // fp32 rounding bound
  std::vector<double> fast;   // + int8 activation bound
};

Ref reference(const model::TensorView& w, const std::vector<float>& x, int64_t n) {
  const int64_t rows = w.shape[0], in = w.shape[1];
  std::vector<float> row(static_cast<size_t>(in));
  Ref r{std::vector<double>(size_t(n * rows)), std::vector<double>(size_t(n * rows)), std::vector<double>(size_t(n * rows))};
  for (int64_t o = 0; o < rows; ++o) {
    w.to_float(row.data(), size_t(o * in), size_t(in));
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x.data() + t * in;
      double s = 0, a = 0, f = 0;
      for (int64_t b = 0; b < in; b += 32) {
        float amax = 0;
        double wabs = 0;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xt[b + i])), wabs += std::fabs(double(row[size_t(b + i)]));
        f += wabs * double(amax) / 254.0;
      }
      for (int64_t i = 0; i < in; ++i) s += double(row[size_t(i)]) * xt[i], a += std::fabs(double(row[size_t(i)]) * xt[i]);
      const size_t k = size_t(t * rows + o);
      r.y[k] = s, r.bound[k] = double(in) * 0x1p-24 * a + 1e-30;
      r.fast[k] = f * 1.0001 + 2 * r.bound[k];
    }
  }
  return r;
}

const GgmlType kTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                           GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

}  // namespace

TEST_CASE("quantized matmul: exact and fast modes vs dequantize-then-dot, every block type") {
  std::mt19937 rng(12345);
  std::normal_distribution<float> nd;
  using Ops = backends::ops<backends::cpu>;
  const Ops fast_ops{backends::QuantMode::fast};
  for (GgmlType t : kTypes) {
    const int64_t bs = quant::block_traits(t).block_size;
    for (int64_t blocks : {1, 2, 3, 6}) {
      const int64_t in = bs * blocks;
      for (int64_t rows : {1, 3, 7, 33}) {
        RandomTensor w(t, rows, in, rng);
        for (int64_t n : {1, 2, 3, 4, 5, 9}) {
          std::vector<float> x(size_t(n * in));
          for (auto& v : x) v = nd(rng);
          const Ref ref = reference(w.view, x, n);
          std::vector<float> y(size_t(n * rows), std::nanf("")), yf(y.size(), std::nanf(""));
          Ops::matmul(w.view, x.data(), n, y.data());
          fast_ops.matmul(std::cref(w.view), x.data(), n, yf.data());
          double worst = 0, worst_fast = 0;
          for (size_t k = 0; k < y.size(); ++k) {
            worst = std::max(worst, std::fabs(double(y[k]) - ref.y[k]) / ref.bound[k]);
            worst_fast = std::max(worst_fast, std::fabs(double(yf[k]) - ref.y[k]) / ref.fast[k]);
          }
          INFO(quant::ggml_type_name(t) << " rows " << rows << " in " << in << " tokens " << n << ": exact error / bound "
                                        << worst << ", fast error / bound " << worst_fast);
          CHECK(worst <= 1.0);
          CHECK(worst_fast <= 1.0);
          // accumulate adds onto y
          std::vector<float> acc(y.size(), 1.0f);
          Ops::matmul(w.view, x.data(), n, acc.data(), /*accumulate=*/true);
          double worst_acc = 0;
          for (size_t k = 0; k < y.size(); ++k)
            worst_acc = std::max(worst_acc, std::fabs(double(acc[k]) - 1.0 - ref.y[k]) / (ref.bound[k] + 1e-6));
          CHECK(worst_acc <= 1.0);
        }
      }
    }
  }
}

TEST_CASE("dot_row: fused kernels vs the dequantizing fallback on one row") {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (GgmlType t : kTypes) {
    const int64_t in = quant::block_traits(t).block_size * 5;  // odd block count
    RandomTensor w(t, 1, in, rng);
    std::vector<float> x(static_cast<size_t>(in));
    for (auto& v : x) v = nd(rng) * 3.0f;
    quant::PreparedX px;
    px.prepare(x.data(), in, false);
    const Ref ref = reference(w.view, x, 1);
    const float got = quant::dot_row(t, w.view.data, px, false);
    INFO(quant::ggml_type_name(t) << ": " << got << " vs " << ref.y[0] << " (bound " << ref.bound[0] << ")");
    CHECK(std::fabs(double(got) - ref.y[0]) <= ref.bound[0]);
    quant::PreparedX pq;
    pq.prepare(x.data(), in, true);
    const float got8 = quant::dot_row(t, w.view.data, pq, true);
    INFO("fast: " << got8 << " (bound " << ref.fast[0] << ")");
    CHECK(std::fabs(double(got8) - ref.y[0]) <= ref.fast[0]);
  }
}

TEST_CASE("PreparedX: int8 activations per 32-block") {
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[size_t(i)] = float(i - 20) * (i < 32 ? 0.5f : -3.0f);
  quant::PreparedX px;
  px.prepare(x.data(), 64, true);
  CHECK(px.d[0] == doctest::Approx(10.0 / 127.0));
  CHECK(px.d[1] == doctest::Approx(3.0 * 43.0 / 127.0));
  int32_t s = 0;
  for (int i = 0; i < 32; ++i) {
    CHECK(std::abs(px.q[size_t(i)]) <= 127);
    CHECK(std::fabs(px.q[size_t(i)] * px.d[0] - x[size_t(i)]) <= px.d[0] / 2 * 1.0001);
    s += px.q[size_t(i)];
  }
  CHECK(s == px.qsum[0]);
  std::vector<float> zero(32, 0.0f);
  px.prepare(zero.data(), 32, true);  // an all-zero block: scale 0, quants 0, no NaN
  CHECK(px.d[0] == 0.0f);
  CHECK(px.q[0] == 0);
}

// The decode products on the chunk pool: q|k|v-like groups of matrices large enough to be split
// into row chunks (64 rows, fewer per chunk for many threads) with a software prefetch running
// ahead of each row up to its chunk's end. Every row is the same dot as on one thread, so the
// threaded result must equal the one-thread result bit for bit, and the reference within bound.
TEST_CASE("decode products split over threads equal the one-thread result bit for bit") {
  std::mt19937 rng(99);
  std::normal_distribution<float> nd;
  using Ops = backends::ops<backends::cpu>;
  const int restore = backends::cpu_threads();
  for (GgmlType t : {GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K}) {
    const int64_t in = 512;
    RandomTensor a(t, 577, in, rng), b(t, 193, in, rng), c(t, 63, in, rng);  // ragged chunk tails
    for (bool fast : {false, true}) {
      const Ops ops{fast ? backends::QuantMode::fast : backends::QuantMode::exact};
      for (int64_t n : {1, 3}) {
        std::vector<float> x(size_t(n * in));
        for (auto& v : x) v = nd(rng);
        auto run = [&](int threads) {
          backends::set_cpu_threads(threads);
          std::vector<float> ya(size_t(n * 577), std::nanf("")), yb(size_t(n * 193), std::nanf("")),
              yc(size_t(n * 63), std::nanf(""));
          ops.matmul(x.data(), n, {{a.view, ya.data()}, {b.view, yb.data()}, {c.view, yc.data()}});
          ya.insert(ya.end(), yb.begin(), yb.end());
          ya.insert(ya.end(), yc.begin(), yc.end());
          return ya;
        };
        const std::vector<float> one = run(1);
        for (int threads : {2, 3, 8}) {
          const std::vector<float> many = run(threads);
          INFO(quant::ggml_type_name(t) << (fast ? " fast" : " exact") << " tokens " << n << " threads " << threads);
          CHECK(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)) == 0);
        }
        const Ref ref = reference(a.view, x, n);  // the first matrix against the double reference
        double worst = 0;
        for (int64_t tk = 0; tk < n; ++tk)
          for (int64_t r = 0; r < 577; ++r) {
            const size_t k = size_t(tk * 577 + r);
            worst = std::max(worst, std::fabs(double(one[k]) - ref.y[k]) / (fast ? ref.fast[k] : ref.bound[k]));
          }
        CHECK(worst <= 1.0);
      }
    }
  }
  backends::set_cpu_threads(restore);
}
