// constexpr log / exp / pow / ceil for the scaling laws.
//
// std::log and std::pow are not constexpr (portably) before C++26, yet the paper's numbers are
// worth checking at compile time. These functions evaluate a short series while constant-evaluated
// and call std:: at run time (std::is_constant_evaluated), so run-time results are the libm ones
// and compile-time results agree with them to ~1e-15 relative (tested in test_scaling_law.cpp).
// Arguments are assumed valid (finite, log/pow of positive x): callers validate first.
#pragma once
#include <ropex/config.hpp>

#include <cmath>
#include <limits>
#include <type_traits>

namespace ropex::cx {

inline constexpr double pi = 3.14159265358979323846;
inline constexpr double two_pi = 6.28318530717958647692;
inline constexpr double ln2 = 0.693147180559945309417;
// ln2 split so that k*ln2_hi is exact for |k| < 2^11 (Cody & Waite argument reduction).
inline constexpr double ln2_hi = 6.93147180369123816490e-01;
inline constexpr double ln2_lo = 1.90821492927058770002e-10;

namespace detail {

// ln(x) for x > 0: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
// ln m = 2*atanh(s), s = (m-1)/(m+1), |s| <= 0.172, so s^2 <= 0.0295 and ~12 terms reach 1e-17.
ROPEX_HD constexpr double log_series(double x) {
  int e = 0;
  constexpr double sqrt2 = 1.41421356237309504880;
  while (x >= sqrt2) { x *= 0.5; ++e; }            // exact: scaling by 2 loses no bits
  while (x < sqrt2 * 0.5) { x *= 2.0; --e; }
  const double s = (x - 1.0) / (x + 1.0), s2 = s * s;
  double term = s, sum = 0.0;
  for (int k = 1; k < 60; k += 2) {
    const double next = sum + term / k;
    if (next == sum) break;
    sum = next;
    term *= s2;
  }
  return e * ln2_hi + (2.0 * sum + e * ln2_lo);
}

// e^x: x = k*ln2 + r with |r| <= ln2/2, Taylor series for e^r, then scale by 2^k exactly.
ROPEX_HD constexpr double exp_series(double x) {
  if (x != x) return x;
  if (x > 709.8) return std::numeric_limits<double>::infinity();
  if (x < -745.2) return 0.0;
  const double kd = x / ln2;
  const long k = static_cast<long>(kd < 0 ? kd - 0.5 : kd + 0.5);
  const double kf = static_cast<double>(k);
  const double r = (x - kf * ln2_hi) - kf * ln2_lo;
  double term = 1.0, sum = 1.0;
  for (int n = 1; n < 40; ++n) {
    term *= r / n;
    const double next = sum + term;
    if (next == sum) break;
    sum = next;
  }
  for (long i = 0; i < k; ++i) sum *= 2.0;
  for (long i = 0; i > k; --i) sum *= 0.5;
  return sum;
}

}  // namespace detail

/// Natural logarithm, constexpr; std::log at run time. x > 0.
ROPEX_HD constexpr double log(double x) {
  if (std::is_constant_evaluated()) return detail::log_series(x);
  return std::log(x);
}

/// e^x, constexpr; std::exp at run time.
ROPEX_HD constexpr double exp(double x) {
  if (std::is_constant_evaluated()) return detail::exp_series(x);
  return std::exp(x);
}

/// x^y for x > 0, constexpr (as exp(y ln x)); std::pow at run time.
ROPEX_HD constexpr double pow(double x, double y) {
  if (std::is_constant_evaluated()) return detail::exp_series(y * detail::log_series(x));
  return std::pow(x, y);
}

/// log_b(x) = ln x / ln b.
ROPEX_HD constexpr double log_base(double b, double x) { return cx::log(x) / cx::log(b); }

/// Largest magnitude ceil_int / round_int return: a double -> long long cast outside the
/// integer range is undefined behaviour, so values beyond +-2^62 saturate there (NaN gives 0).
inline constexpr long long int_limit = 1LL << 62;

namespace detail {
ROPEX_HD constexpr bool in_int_range(double x) { return x > -0x1p62 && x < 0x1p62; }  // false for NaN
ROPEX_HD constexpr long long saturate_int(double x) { return x != x ? 0 : (x > 0 ? int_limit : -int_limit); }
}  // namespace detail

/// Smallest integer >= x (std::ceil is not constexpr in C++20); saturates past +-2^62.
ROPEX_HD constexpr long long ceil_int(double x) {
  if (!detail::in_int_range(x)) return detail::saturate_int(x);
  const long long t = static_cast<long long>(x);  // truncates toward zero
  return (static_cast<double>(t) < x) ? t + 1 : t;
}

/// Nearest integer (halves away from zero); saturates past +-2^62.
ROPEX_HD constexpr long long round_int(double x) {
  if (!detail::in_int_range(x)) return detail::saturate_int(x);
  return static_cast<long long>(x < 0 ? x - 0.5 : x + 0.5);
}

/// |x|, constexpr.
ROPEX_HD constexpr double abs(double x) { return x < 0 ? -x : x; }

/// Finite (not NaN, not +-inf), constexpr (std::isfinite is not constexpr in C++20).
ROPEX_HD constexpr bool isfinite(double x) {
  return x == x && x - x == 0.0;  // NaN != NaN; inf - inf is NaN
}

}  // namespace ropex::cx
