// theories.hpp against independent computations written out here: Men et al.'s bound against a
// brute-force loop over its own definition (eq. 9-11), a case where bisection over the base gives the
// wrong answer, the cut-points against per-pair loops and frequencies.hpp / scaling_law.hpp, and the
// numeric bounds against float rounding itself.
#include <ropex/scaling_law.hpp>
#include <ropex/theories.hpp>

#include <doctest/doctest.h>
#include "test_util.hpp"

#include <cmath>
#include <cstdint>
#include <random>

namespace {

using ropex::test::error_of;
constexpr double kTwoPi = 6.283185307179586;

// B_m typed out from the paper: sum_{i<d/2} cos(m * b^(-2i/d)), long double, no incremental update.
long double brute_sum(int d, double b, std::int64_t m, int static_pairs = 0) {
  long double s = static_pairs;
  for (int i = 0; i < d / 2; ++i) s += std::cos(static_cast<long double>(m) * std::pow(static_cast<long double>(b), -2.0L * i / d));
  return s;
}

// First m in [0, cap) with B_m < 0, else cap.
std::int64_t brute_length(int d, double b, std::int64_t cap, int static_pairs = 0) {
  for (std::int64_t m = 0; m < cap; ++m)
    if (brute_sum(d, b, m, static_pairs) < 0) return m;
  return cap;
}

}  // namespace

TEST_CASE("men_context_length equals a brute-force loop over the definition (d = 8, 16, 32, 128)") {
  std::mt19937_64 rng(11);
  struct Case { int d; double lo, hi; std::int64_t cap; int n; };
  for (const Case c : {Case{8, 2, 1e6, 20000, 30}, Case{16, 2, 1e7, 20000, 30}, Case{32, 10, 1e6, 100000, 6},
                       Case{128, 1e3, 1e5, 20000, 6}}) {
    std::uniform_real_distribution<double> lb(std::log(c.lo), std::log(c.hi));
    for (int k = 0; k < c.n; ++k) {
      const double b = std::exp(lb(rng));
      const auto r = ropex::men_context_length(c.d, b, c.cap);
      const std::int64_t want = brute_length(c.d, b, c.cap);
      INFO("d=" << c.d << " b=" << b);
      REQUIRE(r.length == want);
      CHECK(r.bounded == (want < c.cap));
      if (r.bounded) {
        CHECK(r.value_at_length < 0);
        CHECK(std::fabs(r.value_at_length - static_cast<double>(brute_sum(c.d, b, want))) < 1e-9);
      }
    }
  }
  // The values printed for LLaMA-2's base: B_0 = d/2, and the first negative distance for base 10000.
  CHECK(ropex::men_sum(128, 10000, 0) == doctest::Approx(64.0));
  CHECK(ropex::men_context_length(128, 10000, 100000).length == brute_length(128, 10000, 100000));
}

TEST_CASE("men_context_length: static (non-rotating) pairs add cos(0) = 1 each") {
  // Pythia: 8 rotating pairs of a 32-pair head: B_m >= 24 - 8 > 0, never negative.
  const auto r = ropex::men_context_length(16, 10000, 1000, 24);
  CHECK_FALSE(r.bounded);
  CHECK(r.length == 1000);
  // One static pair: the brute force with the +1 agrees.
  for (double b : {50.0, 300.0, 2000.0})
    CHECK(ropex::men_context_length(16, b, 50000, 1).length == brute_length(16, b, 50000, 1));
}

TEST_CASE("men_base_for_context: smallest base, checked against a brute-force base scan (d = 8, 16, 32)") {
  struct Case { int d; std::int64_t L; };
  for (const Case c : {Case{8, 64}, Case{16, 100}, Case{16, 300}, Case{32, 300}}) {
    INFO("d=" << c.d << " L=" << c.L);
    const auto r = ropex::men_base_for_context(c.d, c.L);
    // The result is feasible and the bracket's lower end is refuted, by the brute force.
    CHECK(brute_length(c.d, r.base, c.L) >= c.L);
    CHECK(brute_length(c.d, r.infeasible_below, c.L) < c.L);
    CHECK(r.base - r.infeasible_below <= 1e-11 * r.base);
    CHECK(brute_sum(c.d, r.infeasible_below, r.witness) < 0);
    // No base of an independent 1e-3 log grid below the result is feasible.
    for (double b = 2; b < r.base * (1 - 1e-9); b *= 1.001) {
      if (brute_length(c.d, b, c.L) >= c.L) {
        FAIL("brute force finds a feasible base " << b << " below " << r.base);
        break;
      }
    }
  }
}

TEST_CASE("men_base_for_context: the feasible set is not monotone, bisection gives the wrong base") {
  // d = 128, L = 131072 (the 128K of Men et al.'s Table 2): base 1e7 supports it, the larger
  // 1.26e7 does not (brute force), so the feasible set has holes above a feasible base.
  const std::int64_t L = 131072;
  CHECK(brute_length(128, 1.0e7, L) >= L);
  CHECK(brute_length(128, 1.26e7, L) < L);
  // Bisection on [2, 1.6e7] (feasible at the top) with the exact predicate ...
  auto ok = [&](double b) { return ropex::men_context_length(128, b, L).length >= L; };
  REQUIRE(ok(1.6e7));
  double lo = 2, hi = 1.6e7;
  for (int k = 0; k < 60; ++k) {
    const double mid = std::sqrt(lo * hi);
    (ok(mid) ? hi : lo) = mid;
  }
  // ... lands on a boundary far above the smallest feasible base the solver finds.
  const auto r = ropex::men_base_for_context(128, L);
  CHECK(brute_length(128, r.base, L) >= L);
  CHECK(r.base < 0.7 * hi);
  CHECK(r.base == doctest::Approx(4.869e6).epsilon(1e-3));  // Su's recomputation: 4.9e6; the paper: 7.8e6
}

TEST_CASE("men_base_for_context: validation names the field") {
  CHECK(error_of([] { ropex::men_base_for_context(7, 100); }).find("head_dim") != std::string::npos);
  CHECK(error_of([] { ropex::men_base_for_context(16, 1); }).find("target") != std::string::npos);
  CHECK(error_of([] { ropex::men_context_length(16, 0.5, 10); }).find("base") != std::string::npos);
  CHECK(error_of([] { ropex::men_context_length(16, 100, 10, -1); }).find("static_pairs") != std::string::npos);
  ropex::MenSolverOptions o;
  o.grid_step = 0;
  CHECK(error_of([&] { ropex::men_base_for_context(16, 100, 0, o); }).find("grid_step") != std::string::npos);
}

TEST_CASE("cut_points: per-pair loops, frequencies.hpp's YaRN range and Liu's critical dimension") {
  for (const double base : {10000.0, 500000.0, 1e6}) {
    for (const int d : {64, 128}) {
      ropex::CutPointInputs in;
      in.head_dim = d;
      in.base = base;
      in.original_context = 8192;
      in.train_len = 4096;
      in.pretrain_base = 10000;
      const auto c = ropex::cut_points(in);
      int kept = 0, scaled = 0, hope = 0;
      for (int i = 0; i < d / 2; ++i) {
        const double period = kTwoPi * std::pow(base, 2.0 * i / d);
        kept += period < 8192 / 4.0;
        scaled += period > 8192 / 1.0;
        hope += period < 4096;
      }
      INFO("d=" << d << " base=" << base);
      CHECK(c.llama3_pairs_kept == kept);
      CHECK(c.llama3_pairs_scaled == scaled);
      CHECK(c.hope_pairs_kept == hope);
      CHECK(c.liu_critical_pairs * 2 == ropex::critical_dimension(d, 4096, 10000));
      // YaRN: corr_dim(r) = d ln(L0/(2 pi r)) / (2 ln base), floor / ceil.
      const double lo = d * std::log(8192 / (kTwoPi * 32)) / (2 * std::log(base));
      const double hi = d * std::log(8192 / (kTwoPi * 1)) / (2 * std::log(base));
      CHECK(c.yarn_low_fractional == doctest::Approx(lo).epsilon(1e-12));
      CHECK(c.yarn_high_fractional == doctest::Approx(hi).epsilon(1e-12));
      CHECK(c.yarn_low == std::max(0.0, std::floor(lo)));
      CHECK(c.yarn_high == std::min(d - 1.0, std::ceil(hi)));
      CHECK(c.p_rope_pairs_kept == static_cast<int>(0.75 * d / 2));
    }
  }
  // paper.md's YaRN example: d=128, base 1e4, L0 4096 -> low 20, high 46 = d_extra/2 of LLaMA-2.
  ropex::CutPointInputs in;
  const auto c = ropex::cut_points(in);
  CHECK(c.yarn_low == 20);
  CHECK(c.yarn_high == 46);
  CHECK(c.liu_critical_pairs == 46);
  CHECK(c.hope_pairs_kept == 46);
}

TEST_CASE("numeric bounds: positions and angles against float rounding") {
  // 2^24 + 1 is the first integer a float cannot hold.
  CHECK(ropex::numeric_bounds(ropex::Dtype::fp32).exact_positions == 16777216.0);
  CHECK(static_cast<double>(static_cast<float>(16777217.0)) != 16777217.0);
  CHECK(static_cast<double>(static_cast<float>(16777216.0)) == 16777216.0);
  CHECK(ropex::numeric_bounds(ropex::Dtype::bf16).exact_positions == 256);
  CHECK(ropex::numeric_bounds(ropex::Dtype::fp16).exact_positions == 2048);
  // fp32 angle of pair 0: the largest rounding error on [P/2, P) is <= tol, on [P, 2P) it exceeds it.
  for (const double tol : {1e-2, 1e-3, 0.2}) {
    const double P = ropex::numeric_bounds(ropex::Dtype::fp32, tol).angle_error_position;
    const float below = std::nextafter(static_cast<float>(P), 0.0f);  // last float under P
    const double ulp_below = static_cast<double>(static_cast<float>(P)) - static_cast<double>(below);
    const double ulp_at = static_cast<double>(std::nextafter(static_cast<float>(P), 1e30f)) - P;
    INFO("tol=" << tol << " P=" << P);
    CHECK(ulp_below / 2 <= tol);
    CHECK(ulp_at / 2 > tol);
  }
  CHECK(ropex::slowest_period(128, 10000) == doctest::Approx(kTwoPi * std::pow(10000.0, 126.0 / 128)).epsilon(1e-14));
  CHECK(ropex::slowest_period(128, ropex::base_for_slowest_period(128, 131072)) == doctest::Approx(131072).epsilon(1e-12));
  CHECK(error_of([] { ropex::numeric_bounds(ropex::Dtype::fp32, -1); }).find("tolerance") != std::string::npos);
}
