// The decode kernels of backends/eigen/simd.hpp against double sums: F32 and BF16 rows, odd
// lengths (tails past the 8-wide body), row counts not a multiple of 4, strided rows.
#include <doctest/doctest.h>

#include <ropex/backends/eigen/simd.hpp>
#include <ropex/model/tensor.hpp>

#include <bit>
#include <cmath>
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

namespace simd = ropex::backends::eigen::simd;

namespace {
uint16_t to_bf16_bits(float x) { return uint16_t(std::bit_cast<uint32_t>(x) >> 16); }  // truncation: exact input
}  // namespace

TEST_CASE("simd::gemv: y = W x for F32 and BF16 rows, any length, any row count, strided") {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int64_t in : {1, 7, 8, 9, 16, 37, 128, 4100})
    for (int64_t rows : {1, 3, 4, 5, 9}) {
      const int64_t ld = in + 3;  // padding between rows
      std::vector<float> w(size_t(rows * ld)), x(static_cast<size_t>(in)), y(size_t(rows), NAN), yb(size_t(rows), NAN);
      std::vector<uint16_t> wb(w.size());
      for (auto& e : w) e = nd(rng);
      for (auto& e : x) e = nd(rng);
      for (size_t i = 0; i < w.size(); ++i) wb[i] = to_bf16_bits(w[i]);
      simd::gemv(w.data(), ld, in, rows, x.data(), y.data());
      simd::gemv(wb.data(), ld, in, rows, x.data(), yb.data());
      for (int64_t r = 0; r < rows; ++r) {
        double ref = 0, refb = 0, mag = 0;
        for (int64_t i = 0; i < in; ++i) {
          ref += double(w[size_t(r * ld + i)]) * x[size_t(i)];
          refb += ropex::model::bfloat16_to_float(wb[size_t(r * ld + i)]) * x[size_t(i)];
          mag += std::abs(double(w[size_t(r * ld + i)]) * x[size_t(i)]);
        }
        const double tol = 1e-6 * mag + 1e-7;  // float accumulation error bound, ~in * eps * sum|w x|
        CHECK(std::abs(y[size_t(r)] - ref) <= tol);
        CHECK(std::abs(yb[size_t(r)] - refb) <= tol);
      }
    }
}

TEST_CASE("simd::axpy_rows: acc += sum_c p[c] V[c, :], accumulating onto what is there") {
  std::mt19937 rng(12);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int64_t d : {1, 8, 13, 128})
    for (int64_t rows : {0, 1, 4, 7, 64}) {
      const int64_t ld = d + 5;
      std::vector<float> p(static_cast<size_t>(rows)), v(size_t(std::max<int64_t>(rows, 1) * ld)), acc(static_cast<size_t>(d));
      for (auto& e : p) e = nd(rng);
      for (auto& e : v) e = nd(rng);
      for (auto& e : acc) e = nd(rng);
      std::vector<double> ref(acc.begin(), acc.end());
      for (int64_t c = 0; c < rows; ++c)
        for (int64_t t = 0; t < d; ++t) ref[size_t(t)] += double(p[size_t(c)]) * v[size_t(c * ld + t)];
      simd::axpy_rows(p.data(), v.data(), ld, rows, d, acc.data());
      for (int64_t t = 0; t < d; ++t) CHECK(acc[size_t(t)] == doctest::Approx(ref[size_t(t)]).epsilon(1e-5).scale(1 + rows));
    }
}
