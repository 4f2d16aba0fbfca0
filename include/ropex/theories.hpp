// The published theories of how far a RoPE model's context reaches, next to Liu et al.'s law.
//
//   Men et al., "Base of RoPE Bounds Context Length" (arXiv 2405.14591, NeurIPS 2024): the
//     discrimination sum B_m = sum_{i<d/2} cos(m * theta_i) must stay >= 0 for every relative
//     distance m of the context; its first negative m is the context a base supports, and the
//     smallest such base for a target length is their lower bound (exact solver below).
//   Cut-points other methods place on the pairs: YaRN / NTK-by-parts (arXiv 2309.00071), Llama 3
//     scaling (arXiv 2407.21783), HoPE (arXiv 2410.21216), p-RoPE (arXiv 2410.06205), and Liu et
//     al.'s critical dimension (scaling_law.hpp) for comparison.
//   Numeric bounds: where bf16 / fp16 / fp32 stop representing consecutive positions, where the
//     fastest pair's angle computed in that dtype is off by more than a tolerance, and the slowest
//     pair's period (the length after which its angle aliases).
//
// Notation as scaling_law.hpp: d rotary dims, pairs i = 0 .. d/2-1, theta_i = b^(-2i/d).
// Two layers, like scaling_law.hpp:
//   ropex::theory::*  ROPEX_HD scalar formulas, unchecked (constexpr where no cos/sin is needed).
//   ropex::*          host API: inputs validated (ropex::Error naming the field), plus the Men
//                     solvers, which scan and allocate (host only). docs/theories.md has the math.
#pragma once
#include <ropex/config.hpp>
#include <ropex/detail/cxmath.hpp>
#include <ropex/error.hpp>
#include <ropex/rope/frequencies.hpp>
#include <ropex/scaling_law.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ropex {

/// Floating-point formats a RoPE angle or position is held in.
enum class Dtype : int { bf16, fp16, fp32 };

ROPEX_HD constexpr const char* dtype_name(Dtype t) {
  switch (t) {
    case Dtype::bf16: return "bf16";
    case Dtype::fp16: return "fp16";
    case Dtype::fp32: return "fp32";
  }
  return "unknown";
}

/// Significand precision p (stored mantissa bits + 1): bf16 8, fp16 11, fp32 24.
ROPEX_HD constexpr int dtype_precision(Dtype t) {
  return t == Dtype::bf16 ? 8 : (t == Dtype::fp16 ? 11 : 24);
}

// ------------------------------------------------------------------------------------------------
// Unchecked ROPEX_HD formulas.
namespace theory {

/// Men et al. eq. 9: B_m = sum_{i<d/2} cos(m * b^(-2i/d)), plus `static_pairs` pairs that do not
/// rotate (a partially rotary head: their q.k term is cos(0) = 1 each, as in the theorem's proof).
/// Direct evaluation in double; the solvers below use it for spot checks.
ROPEX_HD inline double men_sum(int d, double base, double m, int static_pairs = 0) {
  double s = static_pairs;
  for (int i = 0; i < d / 2; ++i) s += std::cos(m * std::pow(base, -2.0 * i / d));
  return s;
}

/// Fractional pair index whose period 2*pi*b^(2i/d) equals T: i = (d/2) * log_b(T / 2pi).
/// (YaRN's corr_dim(r) is this with T = L0 / r; Liu's d_extra/2 is its ceil with T = T_train.)
ROPEX_HD constexpr double pair_with_period(int d, double base, double T) {
  return (d / 2) * cx::log_base(base, T / cx::two_pi);
}

/// Period of the slowest pair i = d/2-1: 2*pi*b^((d-2)/d). Past it that pair's angle aliases.
ROPEX_HD constexpr double slowest_period(int d, double base) {
  return cx::two_pi * cx::pow(base, static_cast<double>(d - 2) / d);
}

/// The base whose slowest period is T: b = (T/2pi)^(d/(d-2)) (d > 2).
ROPEX_HD constexpr double base_for_slowest_period(int d, double T) {
  return cx::pow(T / cx::two_pi, static_cast<double>(d) / (d - 2));
}

/// p-RoPE (Barbero et al., arXiv 2410.06205): keep the fraction p of the highest frequencies,
/// pairs 0 .. floor(p*d/2)-1; the lowest (1-p) are not rotated.
ROPEX_HD constexpr int p_rope_kept_pairs(int d, double p) {
  return static_cast<int>(p * (d / 2) + 1e-9);
}

/// Largest N such that every integer 0..N is exact in a format of precision p: 2^p.
/// Positions up to 2^p are consecutive; 2^p + 1 rounds (bf16 256, fp16 2048, fp32 2^24).
ROPEX_HD constexpr double exact_position_limit(int p) {
  double v = 1;
  for (int k = 0; k < p; ++k) v *= 2;
  return v;
}

/// First position at which the fastest pair's angle pos * theta_0 (theta_0 = 1) rounded to a format
/// of precision p can be off by more than `tol` radians: on [2^e, 2^(e+1)) the rounding error is up
/// to ulp/2 = 2^(e-p), which exceeds tol first at e = p + 1 + floor(log2 tol): 2^(p+1+floor(log2 tol)).
ROPEX_HD constexpr double angle_error_position(int p, double tol) {
  int fl = 0;  // floor(log2 tol), exact by repeated doubling / halving
  double t = 1;
  while (t > tol) { t *= 0.5; --fl; }
  while (t * 2 <= tol) { t *= 2; ++fl; }
  const int e = p + 1 + fl;
  double v = 1;
  for (int k = 0; k < (e > 0 ? e : -e); ++k) v = e > 0 ? v * 2 : v * 0.5;
  return v;
}

}  // namespace theory

// ------------------------------------------------------------------------------------------------
// Results.

/// Men et al.'s bound for one base (the inverse problem): the first relative distance m whose
/// discrimination sum is negative. A context of `length` tokens has distances 0..length-1 >= 0.
struct MenLength {
  bool bounded;              ///< a negative B_m was found below the scan cap
  std::int64_t length;       ///< first m with B_m < 0 (= tokens supported); the cap when unbounded
  std::int64_t cap;          ///< distances scanned: 0 .. cap-1
  double value_at_length;    ///< B_m at m = length (negative when bounded)
};

/// Men et al.'s lower bound for one target (the forward problem).
struct MenBase {
  std::int64_t target;       ///< L: distances 0 .. L-1 must have B_m >= 0
  double base;               ///< smallest base found with B_m >= 0 for all m < L (verified by a full scan)
  double infeasible_below;   ///< a base just below `base` that is refuted by an explicit m (bracket)
  std::int64_t witness;      ///< that m: B_m(infeasible_below) < 0
  double grid_step;          ///< relative step of the first (coarse) scan over bases
  std::int64_t bases_tried;  ///< grid and refinement bases evaluated
  std::int64_t full_scans;   ///< bases that needed a scan over m (the rest refuted by a known m)
};

/// Dimension cut-points of the methods that split the pairs by period, for one model.
struct CutPoints {
  // YaRN / NTK-by-parts: pairs whose period fits beta_fast times into L0 are kept, those that do not
  // fit beta_slow times are interpolated; the ramp runs between (HF: floor / ceil, clamped).
  double yarn_low_fractional, yarn_high_fractional;  ///< corr_dim(beta_fast), corr_dim(beta_slow)
  double yarn_low, yarn_high;                        ///< HF's truncated, clamped ramp ends
  double yarn_fast_period, yarn_slow_period;         ///< L0/beta_fast, L0/beta_slow tokens
  // Llama 3 scaling: periods below L0/high_freq_factor unchanged, above L0/low_freq_factor / factor.
  double llama3_high_freq_wavelen, llama3_low_freq_wavelen;
  int llama3_pairs_kept;         ///< pairs with period < L0/high_freq_factor
  int llama3_pairs_scaled;       ///< pairs with period > L0/low_freq_factor
  // HoPE: pairs that complete a full period inside T_train are kept (rotating), the rest made static.
  int hope_pairs_kept;
  // p-RoPE: the fraction p of highest frequencies kept.
  double p_rope_p;
  int p_rope_pairs_kept;
  // Liu et al.: d_extra / 2, the pairs that complete a period in T_train at the pre-training base.
  int liu_critical_pairs;
};

/// Numeric bounds of one format.
struct NumericBounds {
  Dtype dtype;
  int precision;               ///< p
  double exact_positions;      ///< 2^p: every position 0..2^p exact, 2^p+1 is not
  double angle_error_position; ///< first position where the fastest pair's angle errs by > tol
  double tolerance;            ///< tol, radians
};

// ------------------------------------------------------------------------------------------------
// Checked host API.
namespace detail {

inline void check_theory_head_dim(int d) {
  if (d < 2 || d % 2 != 0)
    throw make_error("", "head_dim", "must be an even number >= 2, got " + std::to_string(d));
}

inline void check_static_pairs(int s) {
  if (s < 0) throw make_error("", "static_pairs", "must be >= 0, got " + std::to_string(s));
}

// Scans B_m over m = 0, 1, 2, ... for one base.
//
// Method: angles advance by one rotation per step, (c, s) <- (c, s) * (cos theta_i, sin theta_i) in
// double, and are re-anchored every kBlock steps from cos/sin of the exact product m0*theta_i in long
// double (theta_i = b^(-2i/d) by powl). Within a block each term drifts by at most ~4*kBlock*2^-53
// (~5e-13), so the computed sum is within ~d/2 * 5e-13 < 3e-10 (d <= 1024) of B_m. A
// value below kMargin in magnitude is therefore re-evaluated directly in long double before its sign
// decides anything: a negative B_m found here is negative (to long double accuracy of the angles),
// and one passed over is >= -3e-10.
class MenScanner {
 public:
  static constexpr int kBlock = 1024;
  static constexpr double kMargin = 1e-9;

  MenScanner(int d, double base, int static_pairs)
      : n_(d / 2), d_(d), static_(static_pairs), base_(base), th_(d / 2), thd_(d / 2), c_(d / 2), s_(d / 2),
        ct_(d / 2), st_(d / 2) {
    for (int i = 0; i < n_; ++i) {
      thd_[i] = std::pow(base, -2.0 * i / d);
      ct_[i] = std::cos(thd_[i]);  // one step; its rounding adds ~kBlock * 2^-53 per block
      st_[i] = std::sin(thd_[i]);
    }
  }

  /// B_m in long double from the exact angle (slow; for spot checks and near-zero values).
  long double exact(std::int64_t m) {
    init_long();
    long double s = static_;
    for (int i = 0; i < n_; ++i) s += cosl(static_cast<long double>(m) * th_[i]);
    return s;
  }

  /// B_m in double from cos(m * theta_i) (fast spot check); near zero falls back to exact().
  bool negative_at(std::int64_t m) {
    double s = static_;
    const double md = static_cast<double>(m);
    for (int i = 0; i < n_; ++i) s += std::cos(md * thd_[i]);
    if (s < -kMargin) return true;
    if (s > kMargin) return false;
    return exact(m) < 0;
  }

  /// First m in [from, cap) with B_m < 0, or cap. `fast` anchors the blocks in double (angle error
  /// up to ~m * 2^-53 per term) instead of long double: a search for refutations, whose hits the
  /// caller confirms with exact().
  std::int64_t first_negative(std::int64_t cap, std::int64_t from = 0, bool fast = false) {
    for (std::int64_t m0 = from; m0 < cap; m0 += kBlock) {
      if (fast) {
        const double md = static_cast<double>(m0);
        for (int i = 0; i < n_; ++i) {
          c_[i] = std::cos(md * thd_[i]);
          s_[i] = std::sin(md * thd_[i]);
        }
      } else {
        init_long();
        for (int i = 0; i < n_; ++i) {
          const long double a = static_cast<long double>(m0) * th_[i];
          c_[i] = static_cast<double>(cosl(a));
          s_[i] = static_cast<double>(sinl(a));
        }
      }
      const std::int64_t end = std::min<std::int64_t>(cap, m0 + kBlock);
      double* c = c_.data();
      double* s = s_.data();
      const double* ct = ct_.data();
      const double* st = st_.data();
      for (std::int64_t m = m0; m < end; ++m) {
        double a0 = static_, a1 = 0, a2 = 0, a3 = 0;  // four partial sums (pairwise-style, vectorizable)
        int i = 0;
        for (; i + 4 <= n_; i += 4) { a0 += c[i]; a1 += c[i + 1]; a2 += c[i + 2]; a3 += c[i + 3]; }
        for (; i < n_; ++i) a0 += c[i];
        const double sum = (a0 + a1) + (a2 + a3);
        if (sum < kMargin && (sum < -kMargin || exact(m) < 0)) return m;
        for (int k = 0; k < n_; ++k) {
          const double cn = c[k] * ct[k] - s[k] * st[k];
          s[k] = c[k] * st[k] + s[k] * ct[k];
          c[k] = cn;
        }
      }
    }
    return cap;
  }

 private:
  void init_long() {  // theta_i in long double, computed once and only when needed (powl is slow)
    if (long_ready_) return;
    for (int i = 0; i < n_; ++i) th_[i] = powl(static_cast<long double>(base_), -2.0L * i / d_);
    long_ready_ = true;
  }
  int n_, d_, static_;
  double base_;
  bool long_ready_ = false;
  std::vector<long double> th_;
  std::vector<double> thd_, c_, s_, ct_, st_;
};

}  // namespace detail

/// Men et al.'s discrimination sum B_m (eq. 9) for one distance, in long double from the exact angle.
inline double men_sum(int head_dim, double base, std::int64_t m, int static_pairs = 0) {
  detail::check_theory_head_dim(head_dim);
  detail::check_base("base", base);
  detail::check_static_pairs(static_pairs);
  if (m < 0) throw make_error("", "m", "must be >= 0, got " + std::to_string(m));
  detail::MenScanner sc(head_dim, base, static_pairs);
  return static_cast<double>(sc.exact(m));
}

/// The context a base supports under Men et al.'s condition (the inverse of their eq. 11): the first
/// distance m with B_m < 0, scanning m = 0 .. cap-1 exactly (MenScanner: every m, no sampling).
/// Their eq. 10 states L_theta = sup{L : B_m >= 0 for m in [0, L]} = length - 1 (distances, not
/// tokens); a context of `length` tokens has distances 0..length-1, all with B_m >= 0.
/// With static_pairs >= d/2 the sum can never be negative: unbounded at once.
inline MenLength men_context_length(int head_dim, double base, std::int64_t cap, int static_pairs = 0) {
  detail::check_theory_head_dim(head_dim);
  detail::check_base("base", base);
  detail::check_static_pairs(static_pairs);
  if (cap < 1) throw make_error("", "cap", "must be >= 1, got " + std::to_string(cap));
  MenLength r{false, cap, cap, 0.0};
  if (static_pairs >= head_dim / 2) return r;  // B_m >= static_pairs - d/2 >= 0
  detail::MenScanner sc(head_dim, base, static_pairs);
  const std::int64_t m = sc.first_negative(cap);
  if (m < cap) {
    r.bounded = true;
    r.length = m;
    r.value_at_length = static_cast<double>(sc.exact(m));
  }
  return r;
}

/// Options of the forward solver.
struct MenSolverOptions {
  double grid_step = 1e-3;     ///< relative step of the coarse scan over bases (b_{k+1} = b_k (1+step))
  double base_min = 2;         ///< first base tried
  double base_max = 1e30;      ///< give up (throw) past this
  double fine_step = 1e-5;     ///< relative step of the second scan, over [hit / fine_span, hit) (0: none)
  double fine_span = 2;        ///< how far below the coarse hit the fine scan starts
  double rel_tol = 1e-12;      ///< refine the bracket to this relative width
  int refine_points = 64;      ///< sub-grid points per refinement level
};

/// Men et al.'s lower bound (their eq. 11, distances 0..L-1): the smallest base with B_m >= 0 for
/// every m < L. The feasible set is not monotone in the base (a feasible base can have an
/// infeasible larger one), so there is no bisection over the whole range. Method:
///   1. scan bases upward on a log grid from base_min with relative step grid_step; each base is
///      refuted by the last distances that refuted its neighbours (a negative B_m is a proof), else
///      by a full exact scan of m < L (MenScanner), which either refutes it (the new m joins the
///      list) or proves it feasible;
///   2. the first feasible grid base b_k brackets the answer in (b_{k-1}, b_k]; the bracket is cut
///      into refine_points sub-steps and scanned upward the same way, recursively, until it is
///      rel_tol wide. The returned base was proven feasible by a full scan; infeasible_below was
///      refuted by `witness`.
/// Guarantee: no grid or sub-grid base below the result is feasible. A feasible island narrower
/// than the grid step that lies below the first feasible grid base can be missed (docs/theories.md
/// measures this by halving the step); the result is the paper's quantity up to that resolution.
inline MenBase men_base_for_context(int head_dim, std::int64_t target, int static_pairs = 0,
                                    const MenSolverOptions& opt = {}) {
  detail::check_theory_head_dim(head_dim);
  detail::check_static_pairs(static_pairs);
  if (target < 2) throw make_error("", "target", "must be >= 2 tokens, got " + std::to_string(target));
  // Steps below these leave b * (1 + step) == b in double (1e-300: an endless scan) or make the scan
  // from base_min to base_max take billions of bases; the bracket refinement reaches rel_tol anyway.
  if (!(opt.grid_step >= 1e-6 && opt.grid_step <= 1))
    throw make_error("", "grid_step", "must be in [1e-6, 1], got " + detail::law_number(opt.grid_step));
  if (!(opt.fine_step == 0 || (opt.fine_step >= 1e-9 && opt.fine_step <= 1)))
    throw make_error("", "fine_step", "must be 0 (none) or in [1e-9, 1], got " + detail::law_number(opt.fine_step));
  detail::check_base("base_min", opt.base_min);
  if (!(opt.base_max > opt.base_min)) throw make_error("", "base_max", "must be > base_min");
  if (!(opt.refine_points >= 2)) throw make_error("", "refine_points", "must be >= 2");
  MenBase r{target, 0, 0, -1, opt.grid_step, 0, 0};
  if (static_pairs >= head_dim / 2) {  // never negative: any base works
    r.base = opt.base_min;
    return r;
  }
  constexpr std::int64_t kWindow = 800;
  std::vector<std::int64_t> known;  // distances that refuted recent bases, most recent first
  std::int64_t last_witness = -1;
  auto feasible = [&](double b) {
    ++r.bases_tried;
    detail::MenScanner sc(head_dim, b, static_pairs);
    // The distances that refuted nearby bases, at the same m first (cheap: d/2 cosines each) ...
    for (size_t k = 0; k < known.size(); ++k)
      if (known[k] < target && sc.negative_at(known[k])) {
        last_witness = known[k];
        std::rotate(known.begin(), known.begin() + static_cast<long>(k), known.begin() + static_cast<long>(k) + 1);
        return false;
      }
    // ... then a window around each: a dip of B_m drifts slowly in m as the base moves.
    for (size_t k = 0; k < known.size(); ++k) {
      const std::int64_t from = std::max<std::int64_t>(0, known[k] - kWindow);
      const std::int64_t to = std::min<std::int64_t>(target, known[k] + kWindow + 1);
      if (from >= to) continue;
      const std::int64_t m = sc.first_negative(to, from, true);
      if (m < to && sc.exact(m) < 0) {
        last_witness = m;
        known.erase(known.begin() + static_cast<long>(k));
        known.insert(known.begin(), m);
        return false;
      }
    }
    ++r.full_scans;
    const std::int64_t m = sc.first_negative(target);
    if (m >= target) return true;
    last_witness = m;
    known.insert(known.begin(), m);
    if (known.size() > 48) known.pop_back();
    return false;
  };
  // 1. coarse log grid.
  double lo = opt.base_min, hi = 0;
  std::int64_t lo_witness = -1;
  if (feasible(lo)) {
    r.base = lo;
    return r;
  }
  lo_witness = last_witness;
  for (double b = lo * (1 + opt.grid_step);; b *= (1 + opt.grid_step)) {
    if (b > opt.base_max)
      throw make_error("", "target", "no base <= " + detail::law_number(opt.base_max) + " keeps B_m >= 0 for " +
                                         std::to_string(target) + " distances");
    if (feasible(b)) {
      hi = b;
      break;
    }
    lo = b;
    lo_witness = last_witness;
  }
  // 1b. a fine grid over [hi / fine_span, hi): narrow feasible islands below the coarse hit.
  if (opt.fine_step > 0 && opt.fine_step < opt.grid_step) {
    const double start = std::max(opt.base_min, hi / opt.fine_span);
    if (start < lo) {
      lo = start;  // re-established below: the first fine base is refuted or becomes hi
      lo_witness = -1;
    }
    bool first = true;
    for (double b = lo; b < hi; b *= (1 + opt.fine_step)) {
      if (feasible(b)) {
        if (first) break;  // start itself feasible: leave the coarse bracket alone (cannot happen: start <= lo)
        hi = b;
        break;
      }
      first = false;
      lo = b;
      lo_witness = last_witness;
    }
    r.grid_step = opt.fine_step;
  }
  // 2. refine the bracket (lo, hi] by upward sub-grid scans: either an interior sub-base is feasible
  //    (the first one becomes hi) or all are refuted (lo moves to the last): the width drops by at
  //    least (refine_points-1)/refine_points per level.
  while (hi - lo > opt.rel_tol * hi) {
    const double start = lo, width = hi - lo, step = width / opt.refine_points;
    double found = hi;
    for (int k = 1; k < opt.refine_points; ++k) {
      const double b = start + step * k;
      if (!(b > lo && b < hi)) continue;
      if (feasible(b)) {
        found = b;
        break;
      }
      lo = b;
      lo_witness = last_witness;
    }
    hi = found;
    if (!(hi - lo < width)) break;  // no representable sub-step left
  }
  r.base = hi;
  r.infeasible_below = lo;
  r.witness = lo_witness;
  return r;
}

/// Dimension cut-points for one model: d rotary dims, `base` the model's rotary base, L0 the
/// original (pre-training) context the methods are configured with, T_train and pretrain_base for
/// HoPE / Liu, yarn betas and llama3 factors as the published defaults, p for p-RoPE.
struct CutPointInputs {
  int head_dim = 128;
  double base = 10000;
  double original_context = 4096;  ///< L0 of YaRN / Llama 3 (original_max_position_embeddings)
  double train_len = 4096;
  double pretrain_base = 10000;
  double beta_fast = 32, beta_slow = 1;
  double low_freq_factor = 1, high_freq_factor = 4;
  double p = 0.75;  ///< p-RoPE's kept fraction (the paper trains p = 0.25 and 0.75)
};

inline CutPoints cut_points(const CutPointInputs& in) {
  detail::check_theory_head_dim(in.head_dim);
  detail::check_base("base", in.base);
  detail::check_base("pretrain_base", in.pretrain_base);
  detail::check_length("original_context", in.original_context);
  detail::check_length("train_len", in.train_len);
  if (!(in.beta_fast > in.beta_slow && in.beta_slow > 0))
    throw make_error("", "beta_fast", "must exceed beta_slow > 0");
  if (!(in.high_freq_factor > in.low_freq_factor && in.low_freq_factor > 0))
    throw make_error("", "high_freq_factor", "must exceed low_freq_factor > 0");
  if (!(in.p >= 0 && in.p <= 1)) throw make_error("", "p", "must be in [0, 1], got " + detail::law_number(in.p));
  const int d = in.head_dim;
  CutPoints c{};
  RopeParams yp;  // frequencies.hpp's YaRN range (HF's floor / ceil / clamp), not re-derived here
  yp.type = RopeType::yarn;
  yp.base = in.base;
  yp.original_max_position_embeddings = in.original_context;
  yp.beta_fast = in.beta_fast;
  yp.beta_slow = in.beta_slow;
  c.yarn_low_fractional = yarn_correction_dim(in.beta_fast, d, in.base, in.original_context);
  c.yarn_high_fractional = yarn_correction_dim(in.beta_slow, d, in.base, in.original_context);
  const YarnRange yr = yarn_range(yp, d);
  c.yarn_low = yr.low;
  c.yarn_high = yr.high;
  c.yarn_fast_period = in.original_context / in.beta_fast;
  c.yarn_slow_period = in.original_context / in.beta_slow;
  c.llama3_high_freq_wavelen = in.original_context / in.high_freq_factor;
  c.llama3_low_freq_wavelen = in.original_context / in.low_freq_factor;
  // period < T for pair n  <=>  n < pair_with_period(T): law::pairs_with_full_period counts them.
  c.llama3_pairs_kept = law::pairs_with_full_period(d, c.llama3_high_freq_wavelen, in.base);
  // period > T: pairs not counted as "< T" minus the one whose period is exactly T (measure zero).
  {
    const int le = law::pairs_with_full_period(d, c.llama3_low_freq_wavelen, in.base);
    const double x = theory::pair_with_period(d, in.base, c.llama3_low_freq_wavelen);
    const bool exact_hit = x >= 0 && x < d / 2 && std::fabs(x - std::round(x)) <= 1e-12 * std::max(1.0, std::fabs(x));
    c.llama3_pairs_scaled = d / 2 - le - (exact_hit ? 1 : 0);
  }
  c.hope_pairs_kept = law::pairs_with_full_period(d, in.train_len, in.base);
  c.p_rope_p = in.p;
  c.p_rope_pairs_kept = theory::p_rope_kept_pairs(d, in.p);
  c.liu_critical_pairs = law::critical_dimension(d, in.train_len, in.pretrain_base) / 2;
  return c;
}

/// bf16 / fp16 / fp32 position and angle bounds; tol in radians (> 0).
inline NumericBounds numeric_bounds(Dtype t, double tol = 1e-2) {
  detail::check_finite("tolerance", tol);
  if (!(tol > 0 && tol < 1e3)) throw make_error("", "tolerance", "must be in (0, 1000) radians, got " + detail::law_number(tol));
  const int p = dtype_precision(t);
  return {t, p, theory::exact_position_limit(p), theory::angle_error_position(p, tol), tol};
}

/// Slowest pair's period 2*pi*b^((d-2)/d) (its angle aliases past it), checked.
inline double slowest_period(int head_dim, double base) {
  detail::check_theory_head_dim(head_dim);
  detail::check_base("base", base);
  return theory::slowest_period(head_dim, base);
}

/// Base whose slowest period is `target` tokens: (T/2pi)^(d/(d-2)); head_dim >= 4.
inline double base_for_slowest_period(int head_dim, double target) {
  detail::check_theory_head_dim(head_dim);
  if (head_dim < 4) throw make_error("", "head_dim", "must be >= 4 for a slowest pair other than pair 0");
  detail::check_length("target", target);
  return theory::base_for_slowest_period(head_dim, target);
}

// Compile-time checks of the closed forms.
static_assert(theory::exact_position_limit(8) == 256);
static_assert(theory::exact_position_limit(11) == 2048);
static_assert(theory::exact_position_limit(24) == 16777216);
static_assert(theory::angle_error_position(24, 1e-2) == 262144);  // fp32: ulp/2 at 2^18 = 2^-6 > 0.01
static_assert(theory::angle_error_position(8, 1e-2) == 4);
static_assert(theory::p_rope_kept_pairs(128, 0.75) == 48);
static_assert(theory::p_rope_kept_pairs(256, 0.25) == 32);

}  // namespace ropex
