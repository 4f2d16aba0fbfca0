// Scaling laws of RoPE-based extrapolation (Liu et al., arXiv 2310.05209, ICLR 2024).
//
// Notation (../docs/scaling-laws.md, equation numbers as in OpenLMLab/scaling-rope):
//   d        rotary dimensions per head, pairs n = 0 .. d/2-1
//   beta     rotary base; theta_n = beta^(-2n/d); period T_n = 2*pi / theta_n = 2*pi * beta^(2n/d)
//   T_train  pre-training context, trained with the pre-training base beta_pt (the paper: 10000)
//   T_tune   context of the continued training with the new base beta (T_tune >= T_train)
//
// Two layers:
//   ropex::law::*   ROPEX_HD constexpr scalar formulas, no checks, no exceptions, no allocation:
//                   callable from CUDA kernels and in constant expressions.
//   ropex::*        the same laws for host code: inputs validated (ropex::Error naming the field),
//                   still constexpr, so the paper's values are static_assert-ed below.
#pragma once
#include <ropex/config.hpp>
#include <ropex/detail/cxmath.hpp>
#include <ropex/error.hpp>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace ropex {

/// Which case of Theorem 3 a tuned base falls in (checked in this order: 16b first).
enum class Regime : int {
  larger_base,         ///< beta > beta_0: hard bound T_extra = 2*pi*beta^(d_extra/d)            (16b)
  tune_length,         ///< beta_1 < beta <= beta_0: bound T_tune, critical dim grows to d'_extra (16c)
  small_base_quarter,  ///< beta_2 < beta <= beta_1 = 2*T_tune/pi: slowest pair sees >= 1/4 period (16d)
  small_base_half,     ///< beta_3 < beta <= beta_2 = T_tune/pi: slowest pair sees >= 1/2 period  (16d)
  small_base_full,     ///< beta <= beta_3 = T_tune/(2*pi): every pair sees a full period        (16d)
};

/// Stable snake_case name of a regime (used in JSON/CSV output).
ROPEX_HD constexpr const char* regime_name(Regime r) {
  switch (r) {
    case Regime::larger_base: return "larger_base";
    case Regime::tune_length: return "tune_length";
    case Regime::small_base_quarter: return "small_base_quarter";
    case Regime::small_base_half: return "small_base_half";
    case Regime::small_base_full: return "small_base_full";
  }
  return "unknown";
}

/// The paper's equation that gives a regime's bound.
ROPEX_HD constexpr const char* regime_equation(Regime r) {
  switch (r) {
    case Regime::larger_base: return "16b";
    case Regime::tune_length: return "16c";
    default: return "16c+16d";
  }
}

/// The small-base thresholds of eq. 16d for a tuning length (the slowest pair's period ~ 2*pi*beta).
struct SmallBaseThresholds {
  double beta_1;  ///< 2*T_tune/pi:   a quarter period fits in T_tune
  double beta_2;  ///< T_tune/pi:     half a period fits
  double beta_3;  ///< T_tune/(2*pi): a full period fits
};

/// Everything Theorem 3 says about one (d, T_train, beta, T_tune, beta_pt).
struct ExtrapolationLimit {
  Regime regime;
  double limit;                         ///< predicted extrapolation bound, tokens
  bool hard_bound;                      ///< true: perplexity explodes past `limit` (16b, 16c); false:
                                        ///< small base, degrades smoothly past T_tune (16d)
  int critical_dimension;               ///< d_extra (eq. 13) of the pre-trained model
  bool updated_applies;                 ///< beta <= beta_0, so 16c's d'_extra is meaningful
  int updated_critical_dimension;       ///< d'_extra (16c) when updated_applies, else d_extra
  double critical_base;                 ///< beta_0 (16a)
  double larger_base_limit;             ///< 2*pi*beta^(d_extra/d) (16b), whichever regime applies
  SmallBaseThresholds thresholds;       ///< beta_1, beta_2, beta_3 (16d)
};

/// Inputs of the laws, for callers who prefer names to positions:
///   extrapolation_limit({.head_dim = 128, .train_len = 4096, .base = 1e6, .tune_len = 16384})
struct LawInputs {
  int head_dim = 128;
  double train_len = 4096;
  double base = 10000;
  double tune_len = 0;  ///< 0: no continued training, T_tune = T_train
  double pretrain_base = 10000;
};

/// Both inverses of 16b for a target context T (see base_for_context).
struct BaseForContext {
  double target;             ///< T, tokens
  int critical_dimension;    ///< d_extra used by the exact inverse
  double base;               ///< exact inverse of 16b: (T/2pi)^(d/d_extra)
  double base_ceiling_free;  ///< 16a-shaped, without the ceil: beta_pt^(log_{T_train/2pi}(T/2pi))
};

/// One row of the per-pair period table.
struct PairPeriod {
  int pair;                   ///< n; dims (n, n + d/2) in the half layout, (2n, 2n+1) interleaved
  double theta;               ///< beta^(-2n/d), radians per token
  double period;              ///< 2*pi/theta, tokens
  bool full_period_in_train;  ///< a whole period fits in positions 0..T_train-1
  bool full_period_in_tune;   ///< ... in 0..T_tune-1
};

// ------------------------------------------------------------------------------------------------
// Unchecked ROPEX_HD formulas.
namespace law {

/// Number of pairs n whose full period fits in T tokens under base b:
///   x = (d/2) * log_b(T / (2*pi));   count = ceil(x), clamped to [0, d/2].
/// Pair n has period 2*pi*b^(2n/d) < T exactly when n < x. When x is an integer k (within 1e-12
/// relative, so compile-time and run-time logs agree), ceil keeps k: pair k's period is exactly T,
/// and positions 0..T-1 reach only the angle 2*pi*(T-1)/T, one token short of a full turn, so
/// counting it as unseen is right.
ROPEX_HD constexpr int pairs_with_full_period(int d, double T, double b) {
  const double x = (d / 2) * cx::log_base(b, T / cx::two_pi);
  // Clamp before any integer conversion: a base just above 1 makes x astronomically large.
  if (!(x > -1.0)) return 0;  // NaN too
  if (x >= d / 2) return d / 2;
  const long long k = cx::round_int(x);
  const double tol = 1e-12 * (cx::abs(x) > 1.0 ? cx::abs(x) : 1.0);
  const long long c = cx::abs(x - static_cast<double>(k)) <= tol ? k : cx::ceil_int(x);
  return c < 0 ? 0 : (c > d / 2 ? d / 2 : static_cast<int>(c));
}

/// Critical dimension (Lemma 1, eq. 12-13): d_extra = 2*ceil((d/2) * log_{beta_pt}(T_train/2pi)),
/// capped at d. The paper fixes beta_pt = 10000 (log_10000); we take it as a parameter.
ROPEX_HD constexpr int critical_dimension(int d, double T_train, double pretrain_base = 10000) {
  return 2 * pairs_with_full_period(d, T_train, pretrain_base);
}

/// Critical base (16a): beta_0 = beta_pt^(log_{T_train/2pi}(T_tune/2pi)); beta_pt when T_tune = T_train.
ROPEX_HD constexpr double critical_base(double T_train, double T_tune, double pretrain_base = 10000) {
  if (T_tune == T_train) return pretrain_base;
  return cx::pow(pretrain_base, cx::log(T_tune / cx::two_pi) / cx::log(T_train / cx::two_pi));
}

/// Larger-base bound (16b): T_extra = 2*pi*beta^(d_extra/d), the period under beta of pair d_extra/2.
ROPEX_HD constexpr double larger_base_limit(int d, double T_train, double base,
                                            double pretrain_base = 10000) {
  const int d_extra = critical_dimension(d, T_train, pretrain_base);
  return cx::two_pi * cx::pow(base, static_cast<double>(d_extra) / d);
}

/// Updated critical dimension (16c): d'_extra = 2*ceil((d/2) * log_beta(T_tune/2pi)), capped at d.
ROPEX_HD constexpr int updated_critical_dimension(int d, double base, double T_tune) {
  return 2 * pairs_with_full_period(d, T_tune, base);
}

/// Small-base thresholds (16d).
ROPEX_HD constexpr SmallBaseThresholds small_base_thresholds(double T_tune) {
  return {2.0 * T_tune / cx::pi, T_tune / cx::pi, T_tune / cx::two_pi};
}

/// The terms of Theorem 3 that do not depend on the tuning base: d_extra (eq. 13), beta_0 (16a) and
/// the thresholds (16d) of one (d, T_train, T_tune, beta_pt). A sweep over bases computes them once.
struct ModelTerms {
  int d;
  double T_tune;
  int critical_dimension;
  double critical_base;
  SmallBaseThresholds thresholds;
};

ROPEX_HD constexpr ModelTerms model_terms(int d, double T_train, double T_tune, double pretrain_base = 10000) {
  return {d, T_tune, critical_dimension(d, T_train, pretrain_base), critical_base(T_train, T_tune, pretrain_base),
          small_base_thresholds(T_tune)};
}

/// Theorem 3, all regimes, for one base under the model's terms.
ROPEX_HD constexpr ExtrapolationLimit extrapolation_limit(const ModelTerms& m, double base) {
  const int d = m.d;
  const double T_tune = m.T_tune;
  ExtrapolationLimit r{};
  r.critical_dimension = m.critical_dimension;
  r.critical_base = m.critical_base;
  r.larger_base_limit = cx::two_pi * cx::pow(base, static_cast<double>(r.critical_dimension) / d);
  r.thresholds = m.thresholds;
  if (base > r.critical_base) {  // 16b
    r.regime = Regime::larger_base;
    r.limit = r.larger_base_limit;
    r.hard_bound = true;
    r.updated_applies = false;
    r.updated_critical_dimension = r.critical_dimension;
    return r;
  }
  r.limit = T_tune;  // 16c
  r.updated_applies = true;
  r.updated_critical_dimension = updated_critical_dimension(d, base, T_tune);
  if (base <= r.thresholds.beta_3) r.regime = Regime::small_base_full;
  else if (base <= r.thresholds.beta_2) r.regime = Regime::small_base_half;
  else if (base <= r.thresholds.beta_1) r.regime = Regime::small_base_quarter;
  else r.regime = Regime::tune_length;
  r.hard_bound = r.regime == Regime::tune_length;
  return r;
}

/// Theorem 3, all regimes. T_tune = T_train means no continued training.
ROPEX_HD constexpr ExtrapolationLimit extrapolation_limit(int d, double T_train, double base,
                                                          double T_tune, double pretrain_base = 10000) {
  return extrapolation_limit(model_terms(d, T_train, T_tune, pretrain_base), base);
}

/// Base for a target context T: the exact inverse of 16b, beta = (T/2pi)^(d/d_extra), and the
/// ceiling-free form beta_pt^(log_{T_train/2pi}(T/2pi)) (16a with T_tune = T, i.e. d_extra taken
/// without its ceil). The exact inverse is smaller: d_extra >= its ceiling-free value.
ROPEX_HD constexpr BaseForContext base_for_context(double target, int d, double T_train,
                                                   double pretrain_base = 10000) {
  BaseForContext r{};
  r.target = target;
  r.critical_dimension = critical_dimension(d, T_train, pretrain_base);
  r.base = cx::pow(target / cx::two_pi, static_cast<double>(d) / r.critical_dimension);
  r.base_ceiling_free = critical_base(T_train, target, pretrain_base);
  return r;
}

/// Row n of the period table under base beta.
ROPEX_HD constexpr PairPeriod pair_period(int n, int d, double base, double T_train, double T_tune) {
  PairPeriod p{};
  p.pair = n;
  p.theta = cx::pow(base, -2.0 * n / d);
  p.period = cx::two_pi / p.theta;
  p.full_period_in_train = n < pairs_with_full_period(d, T_train, base);
  p.full_period_in_tune = n < pairs_with_full_period(d, T_tune, base);
  return p;
}

}  // namespace law

// ------------------------------------------------------------------------------------------------
// Checked host API.
namespace detail {

inline std::string law_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

constexpr void check_head_dim(int d) {
  if (d <= 0 || d % 2 != 0)
    throw make_error("", "head_dim", "must be a positive even number, got " + std::to_string(d));
}

constexpr void check_finite(std::string_view field, double v) {
  if (!cx::isfinite(v)) throw make_error("", field, "must be a finite number, got " + law_number(v));
}

constexpr void check_base(std::string_view field, double b) {
  check_finite(field, b);
  if (!(b > 1.0)) throw make_error("", field, "must be > 1, got " + law_number(b));
}

// A context must exceed one period of the fastest pair (2*pi tokens) for log(T/2pi) to be positive.
constexpr void check_length(std::string_view field, double T) {
  check_finite(field, T);
  if (!(T > cx::two_pi))
    throw make_error("", field, "must be > 2*pi (6.283...) tokens, got " + law_number(T));
}

// A law's value past the double range is refused, never printed as inf (or a JSON null).
constexpr double check_result(std::string_view field, double v, std::string_view formula) {
  if (!cx::isfinite(v))
    throw make_error("", field, std::string(formula) + " overflows a double (> 1.8e308) for these inputs");
  return v;
}

constexpr double checked_tune_len(double T_train, double T_tune) {
  if (T_tune == 0) return T_train;
  check_length("tune_len", T_tune);
  if (T_tune < T_train)
    throw make_error("", "tune_len", "must be >= train_len (" + law_number(T_train) + "), got " +
                                         law_number(T_tune));
  return T_tune;
}

}  // namespace detail

/// Critical dimension d_extra = 2*ceil((d/2) * log_{beta_pt}(T_train/(2*pi))) (Lemma 1, eq. 12-13),
/// capped at d: the dimensions whose pairs complete a full period inside the training context.
/// The paper's beta_pt is 10000 (it writes log_10000); ropex generalizes to any pre-training base.
/// An exact-integer inner value k gives 2k (ceil keeps it; see law::pairs_with_full_period).
/// Throws ropex::Error naming head_dim / train_len / pretrain_base.
constexpr int critical_dimension(int head_dim, double train_len, double pretrain_base = 10000) {
  detail::check_head_dim(head_dim);
  detail::check_length("train_len", train_len);
  detail::check_base("pretrain_base", pretrain_base);
  return law::critical_dimension(head_dim, train_len, pretrain_base);
}

/// Critical base beta_0 = beta_pt^(log_{T_train/2pi}(T_tune/2pi)) (16a): tuned at T_tune, a base
/// above beta_0 has the larger-base bound 16b, one at or below it extrapolates to T_tune (16c).
constexpr double critical_base(double train_len, double tune_len, double pretrain_base = 10000) {
  detail::check_length("train_len", train_len);
  tune_len = detail::checked_tune_len(train_len, tune_len);
  detail::check_base("pretrain_base", pretrain_base);
  return detail::check_result("critical_base", law::critical_base(train_len, tune_len, pretrain_base),
                              "beta_0 = pretrain_base^(log(tune_len/2pi)/log(train_len/2pi)) (16a)");
}

/// Larger-base bound T_extra = 2*pi*beta^(d_extra/d) (16b, Theorem 2), whatever the regime.
constexpr double larger_base_limit(int head_dim, double train_len, double base,
                                   double pretrain_base = 10000) {
  detail::check_base("base", base);
  return detail::check_result(
      "larger_base_limit",
      cx::two_pi * cx::pow(base, static_cast<double>(critical_dimension(head_dim, train_len, pretrain_base)) / head_dim),
      "2*pi*base^(d_extra/d) (16b)");
}

/// Updated critical dimension d'_extra = 2*ceil((d/2) * log_beta(T_tune/2pi)), capped at d (16c).
constexpr int updated_critical_dimension(int head_dim, double base, double tune_len) {
  detail::check_head_dim(head_dim);
  detail::check_base("base", base);
  detail::check_length("tune_len", tune_len);
  return law::updated_critical_dimension(head_dim, base, tune_len);
}

/// Small-base thresholds beta_1 = 2T/pi, beta_2 = T/pi, beta_3 = T/(2pi) for T = T_tune (16d).
constexpr SmallBaseThresholds small_base_thresholds(double tune_len) {
  detail::check_length("tune_len", tune_len);
  return law::small_base_thresholds(tune_len);
}

/// Extrapolation limit after tuning with `base` at `tune_len` (Theorem 3, eq. 16a-16d): the regime,
/// the bound in tokens and the numbers behind it. tune_len = 0 means T_tune = T_train.
constexpr ExtrapolationLimit extrapolation_limit(int head_dim, double train_len, double base,
                                                 double tune_len = 0, double pretrain_base = 10000) {
  detail::check_head_dim(head_dim);
  detail::check_length("train_len", train_len);
  detail::check_base("base", base);
  detail::check_base("pretrain_base", pretrain_base);
  tune_len = detail::checked_tune_len(train_len, tune_len);
  const ExtrapolationLimit r = law::extrapolation_limit(head_dim, train_len, base, tune_len, pretrain_base);
  detail::check_result("critical_base", r.critical_base,
                       "beta_0 = pretrain_base^(log(tune_len/2pi)/log(train_len/2pi)) (16a)");
  detail::check_result("larger_base_limit", r.larger_base_limit, "2*pi*base^(d_extra/d) (16b)");
  return r;
}

/// The base-independent terms of extrapolation_limit, checked and computed once for a sweep over
/// bases: `auto m = ropex::model_terms(128, 4096); for (double b : bases) ropex::extrapolation_limit(m, b);`
/// gives the same results as extrapolation_limit(128, 4096, b) for each b.
constexpr law::ModelTerms model_terms(int head_dim, double train_len, double tune_len = 0,
                                      double pretrain_base = 10000) {
  detail::check_head_dim(head_dim);
  detail::check_length("train_len", train_len);
  detail::check_base("pretrain_base", pretrain_base);
  tune_len = detail::checked_tune_len(train_len, tune_len);
  return law::model_terms(head_dim, train_len, tune_len, pretrain_base);
}

/// extrapolation_limit for one base under terms from model_terms().
constexpr ExtrapolationLimit extrapolation_limit(const law::ModelTerms& terms, double base) {
  detail::check_base("base", base);
  return law::extrapolation_limit(terms, base);
}

/// extrapolation_limit with named inputs.
constexpr ExtrapolationLimit extrapolation_limit(const LawInputs& in) {
  return extrapolation_limit(in.head_dim, in.train_len, in.base, in.tune_len, in.pretrain_base);
}

/// Base that puts the 16b bound at `target` tokens: `base` is the exact inverse
/// (T/2pi)^(d/d_extra); `base_ceiling_free` is beta_pt^(log_{T_train/2pi}(T/2pi)), the 16a form.
constexpr BaseForContext base_for_context(double target, int head_dim, double train_len,
                                          double pretrain_base = 10000) {
  detail::check_length("target", target);
  detail::check_head_dim(head_dim);
  detail::check_length("train_len", train_len);
  detail::check_base("pretrain_base", pretrain_base);
  const BaseForContext r = law::base_for_context(target, head_dim, train_len, pretrain_base);
  detail::check_result("base", r.base, "(target/2pi)^(d/d_extra) (inverse of 16b)");
  detail::check_result("base_ceiling_free", r.base_ceiling_free,
                       "pretrain_base^(log(target/2pi)/log(train_len/2pi)) (16a form)");
  return r;
}

/// Per-pair table under `base`: theta_n, period, and whether a full period fits in T_train / T_tune
/// (the counts of `true` are d_extra/2 and d'_extra/2 when base is the pre-training / tuning base).
inline std::vector<PairPeriod> period_table(int head_dim, double base, double train_len,
                                            double tune_len = 0) {
  detail::check_head_dim(head_dim);
  detail::check_base("base", base);
  detail::check_length("train_len", train_len);
  tune_len = detail::checked_tune_len(train_len, tune_len);
  std::vector<PairPeriod> rows;
  rows.reserve(head_dim / 2);
  for (int n = 0; n < head_dim / 2; ++n)
    rows.push_back(law::pair_period(n, head_dim, base, train_len, tune_len));
  if (!rows.empty()) detail::check_result("period", rows.back().period, "2*pi*base^(2n/d)");
  return rows;
}

// ------------------------------------------------------------------------------------------------
// The paper's values, checked at compile time (paper.md; tolerances cover the series' rounding).
namespace detail {
constexpr bool near(double a, double b, double rel) { return cx::abs(a - b) <= rel * cx::abs(b); }
}  // namespace detail

static_assert(critical_dimension(128, 4096) == 92);    // LLaMA-2 (Lemma 1)
static_assert(critical_dimension(128, 2048) == 82);
static_assert(critical_dimension(128, 8192) == 100);
static_assert(critical_dimension(128, 16384) == 110);
static_assert(critical_dimension(128, 32768) == 120);
static_assert(critical_dimension(64, 2048) == 42);
static_assert(critical_dimension(64, 4096) == 46);
static_assert(critical_dimension(80, 2048) == 52);
static_assert(critical_dimension(96, 4096) == 68);
static_assert(updated_critical_dimension(128, 1304, 4096) == 116);  // 16c
static_assert(updated_critical_dimension(128, 2608, 4096) == 106);
static_assert(updated_critical_dimension(128, 500, 16384) == 128);
static_assert(detail::near(larger_base_limit(128, 4096, 1e6), 129026.78274161111, 1e-12));   // 16b
static_assert(detail::near(larger_base_limit(128, 4096, 5e5), 78399.72854675821, 1e-12));
static_assert(detail::near(critical_base(4096, 16384), 71738.43620009991, 1e-12));          // 16a
static_assert(detail::near(critical_base(4096, 32768), 192144.4559864089, 1e-12));
static_assert(detail::near(base_for_context(131072, 128, 4096).base, 1022121.8898931267, 1e-12));
static_assert(detail::near(base_for_context(131072, 128, 4096).base_ceiling_free, 1378414.2796983898, 1e-12));
static_assert(extrapolation_limit(128, 4096, 1e6).regime == Regime::larger_base);
static_assert(extrapolation_limit(128, 4096, 500, 16384).regime == Regime::small_base_full);

}  // namespace ropex
