// RoPE frequencies for every scaling variant, one pair at a time.
//
// Pure ROPEX_HD scalar math (no Eigen, no CUDA, no allocation), so the CPU backend and the CUDA
// kernels evaluate exactly the same formulas. Notation follows ../docs/rope-variants.md:
//   d      rotary dimensions per head (head_dim * partial_rotary_factor), pairs i = 0 .. d/2-1
//   theta_i = base^(-2i/d)            the default frequency of pair i   (RoFormer, eq. 15)
//   T_i     = 2*pi / theta_i          the period (wavelength) of pair i, in tokens
// Each variant rewrites theta_i (inv_freq) and may scale cos/sin by an attention factor.
#pragma once
#include <ropex/config.hpp>

#include <cmath>
#include <cstdint>

namespace ropex {

inline constexpr double pi = 3.14159265358979323846;
inline constexpr double two_pi = 6.28318530717958647692;

/// The inverse-frequency rule of a RoPE variant (Hugging Face `rope_type` names, plus `ntk`).
enum class RopeType : int {
  default_rope,  ///< theta_i = base^(-2i/d); a new base is RoPE ABF / the paper's base tuning
  linear,        ///< Position Interpolation: theta_i / factor
  ntk,           ///< static NTK-aware: base' = base * factor^(d/(d-2))
  dynamic,       ///< dynamic NTK (HF): NTK with alpha grown from the current sequence length
  yarn,          ///< YaRN: per-pair ramp between theta_i and theta_i/factor, plus mscale
  llama3,        ///< Llama 3.1: wavelength bands (high kept, low / factor, smooth between)
  longrope,      ///< LongRoPE / Phi-3: per-pair rescale factors (short or long set)
};

/// Plain parameters of one variant (trivially copyable, so a kernel can take it by value).
/// Fields a variant does not use are ignored.
struct RopeParams {
  RopeType type = RopeType::default_rope;
  double base = 10000.0;                           // rope_theta
  double factor = 1.0;                             // s: linear / ntk / dynamic / yarn / llama3 / longrope
  double max_position_embeddings = 0;              // L0 of dynamic NTK; longrope's s = max/orig
  double original_max_position_embeddings = 0;     // L0 of yarn / llama3 / longrope
  double beta_fast = 32, beta_slow = 1;            // yarn
  double mscale = 0, mscale_all_dim = 0;           // yarn (DeepSeek style), 0 = absent
  bool truncate = true;                            // yarn: floor/ceil the correction range
  double attention_factor = 0;                     // explicit override, 0 = derive
  double low_freq_factor = 1, high_freq_factor = 4;  // llama3
  const double* short_factor = nullptr;            // longrope, d/2 entries
  const double* long_factor = nullptr;             // longrope, d/2 entries
};

/// Default RoPE frequency of pair i:  theta_i = base^(-2i/d).
ROPEX_HD inline double default_inv_freq(double base, int i, int d) {
  return std::pow(base, -2.0 * i / d);
}

/// Period (wavelength, in tokens) of a frequency: T = 2*pi / theta.
ROPEX_HD inline double period(double inv_freq) { return two_pi / inv_freq; }

/// Static NTK-aware base (bloc97): base' = base * alpha^(d/(d-2)).
ROPEX_HD inline double ntk_base(double base, double alpha, int d) {
  return base * std::pow(alpha, static_cast<double>(d) / (d - 2));
}

/// Dynamic NTK base as HF computes it for a sequence of `seq_len` tokens (seq_len = max position+1):
///   L = max(seq_len, L0);  base' = base * (s*L/L0 - (s-1))^(d/(d-2)).
/// Below L0 the expression is 1: the original frequencies come back (HF's reset).
ROPEX_HD inline double dynamic_ntk_base(double base, double factor, double L0, double seq_len, int d) {
  const double L = seq_len > L0 ? seq_len : L0;
  return base * std::pow(factor * L / L0 - (factor - 1.0), static_cast<double>(d) / (d - 2));
}

/// YaRN's correction dimension: the (fractional) pair index whose period fits `rotations` times
/// into L0:  corr_dim(r) = d * ln(L0 / (2*pi*r)) / (2 * ln base)   (YaRN, eq. 23).
ROPEX_HD inline double yarn_correction_dim(double rotations, int d, double base, double L0) {
  return d * std::log(L0 / (rotations * two_pi)) / (2.0 * std::log(base));
}

/// YaRN's ramp range [low, high] over pair indices (HF: floor/ceil when truncate, clamped to [0, d-1]).
struct YarnRange {
  double low, high;
};
ROPEX_HD inline YarnRange yarn_range(const RopeParams& p, int d) {
  double low = yarn_correction_dim(p.beta_fast, d, p.base, p.original_max_position_embeddings);
  double high = yarn_correction_dim(p.beta_slow, d, p.base, p.original_max_position_embeddings);
  if (p.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  if (low < 0) low = 0;
  if (high > d - 1) high = d - 1;
  if (low == high) high += 0.001;  // HF: avoid a zero-width ramp
  return {low, high};
}

/// YaRN's mscale: 0.1 * m * ln(s) + 1 for s > 1, else 1.
ROPEX_HD inline double yarn_mscale(double s, double m = 1.0) {
  return s <= 1.0 ? 1.0 : 0.1 * m * std::log(s) + 1.0;
}

/// LongRoPE's scale s: the explicit factor, else max_position_embeddings / original.
ROPEX_HD inline double longrope_scale(const RopeParams& p) {
  if (p.factor > 0 && p.factor != 1.0) return p.factor;
  if (p.original_max_position_embeddings > 0 && p.max_position_embeddings > 0)
    return p.max_position_embeddings / p.original_max_position_embeddings;
  return p.factor;
}

/// inv_freq of pair i (0 <= i < d/2) for a forward pass over `seq_len` tokens
/// (seq_len matters only for `dynamic` and `longrope`; pass max position + 1).
ROPEX_HD inline double inv_freq(const RopeParams& p, int i, int d, double seq_len = 0) {
  const double theta = default_inv_freq(p.base, i, d);
  switch (p.type) {
    case RopeType::default_rope:
      return theta;
    case RopeType::linear:  // Position Interpolation (Chen et al. 2023): positions / s
      return theta / p.factor;
    case RopeType::ntk:
      return default_inv_freq(ntk_base(p.base, p.factor, d), i, d);
    case RopeType::dynamic:
      return default_inv_freq(
          dynamic_ntk_base(p.base, p.factor, p.max_position_embeddings, seq_len, d), i, d);
    case RopeType::yarn: {  // YaRN (Peng et al. 2023), "NTK-by-parts" interpolation
      const YarnRange r = yarn_range(p, d);
      double ramp = (i - r.low) / (r.high - r.low);
      ramp = ramp < 0 ? 0 : (ramp > 1 ? 1 : ramp);
      const double keep = 1.0 - ramp;  // 1: extrapolate (high frequency), 0: interpolate
      return (theta / p.factor) * (1.0 - keep) + theta * keep;
    }
    case RopeType::llama3: {  // Llama 3.1 frequency bands
      const double L0 = p.original_max_position_embeddings;
      const double wavelen = two_pi / theta;
      if (wavelen < L0 / p.high_freq_factor) return theta;
      if (wavelen > L0 / p.low_freq_factor) return theta / p.factor;
      const double smooth =
          (L0 / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
      return (1.0 - smooth) * theta / p.factor + smooth * theta;
    }
    case RopeType::longrope: {  // LongRoPE: long factors once the sequence passes L0
      const bool is_long = seq_len > p.original_max_position_embeddings;
      const double* ext = is_long ? p.long_factor : p.short_factor;
      return ext ? theta / ext[i] : theta;
    }
  }
  return theta;
}

/// The factor HF multiplies cos and sin by (so q.k is scaled by its square).
///   yarn: mscale(s) or mscale(s, m)/mscale(s, m_all);  longrope: sqrt(1 + ln s / ln L0);  else 1.
ROPEX_HD inline double attention_factor(const RopeParams& p, double seq_len = 0) {
  (void)seq_len;
  if (p.attention_factor > 0) return p.attention_factor;
  switch (p.type) {
    case RopeType::yarn:
      if (p.mscale != 0 && p.mscale_all_dim != 0)
        return yarn_mscale(p.factor, p.mscale) / yarn_mscale(p.factor, p.mscale_all_dim);
      return yarn_mscale(p.factor);
    case RopeType::longrope: {
      const double s = longrope_scale(p);
      if (s <= 1.0) return 1.0;
      return std::sqrt(1.0 + std::log(s) / std::log(p.original_max_position_embeddings));
    }
    default:
      return 1.0;
  }
}

/// Rotation angle pos * theta reduced to [0, 2*pi) in double: exact enough at 1e6+ positions,
/// where a float32 product is off by up to ~0.03 rad (its spacing there is 0.0625).
/// A floor and a multiply-add instead of fmod: a GPU's double fmod is an iterative loop (with it the
/// cos/sin table pass took 12 us of a 160 us standalone RoPE on an H200); the two differ by ~1e-16 x angle.
ROPEX_HD inline double rope_angle(std::int64_t pos, double theta) {
  const double x = static_cast<double>(pos) * theta;
  double a = std::fma(-std::floor(x * (1.0 / two_pi)), two_pi, x);
  if (a < 0) a += two_pi;
  if (a >= two_pi) a -= two_pi;
  return a;
}

/// The pair (a, b) of head dims rotated together by frequency i, for rotary dim d.
///   half-rotated ("NeoX", HF):        a = i,    b = i + d/2   [x0 x1 .. | y0 y1 ..]  cos = cat(f, f)
///   interleaved ("GPT-J", Meta, ggml): a = 2i,   b = 2i + 1    [x0 y0 x1 y1 ..]
enum class RopeLayout : int { half, interleaved };
struct RopePair {
  int a, b;
};
ROPEX_HD inline RopePair rope_pair(RopeLayout layout, int i, int d) {
  return layout == RopeLayout::half ? RopePair{i, i + d / 2} : RopePair{2 * i, 2 * i + 1};
}

/// Rotate one pair by the angle whose (cos, sin) are given:  [a; b] <- [c -s; s c] [a; b].
template <class R>
ROPEX_HD inline void rotate_pair(R& a, R& b, R c, R s) {
  const R a0 = a, b0 = b;
  a = a0 * c - b0 * s;
  b = a0 * s + b0 * c;
}

// ---- Related position schemes (not inv_freq rules, but the same per-pair arithmetic) --------

/// xPos (Sun et al. 2022) per-pair decay at position n: zeta_i^(n/scale_base),
/// zeta_i = (2i + 0.4d) / (1.4d). Queries are multiplied by it and keys divided, so q.k decays
/// with distance. Returns the query scale; the key scale is its inverse.
ROPEX_HD inline double xpos_scale(int i, int d, double n, double scale_base = 512.0) {
  const double zeta = (2.0 * i + 0.4 * d) / (1.4 * d);
  return std::pow(zeta, n / scale_base);
}

/// Giraffe power scaling (Pal et al. 2023): theta_i / scale * (1 - 2i/d)^power,
/// which shrinks low frequencies more than high ones.
ROPEX_HD inline double giraffe_power_inv_freq(double base, int i, int d, double scale, double power) {
  const double f = default_inv_freq(base, i, d) / scale;
  return f * std::pow(1.0 - 2.0 * i / d, power);
}

/// Giraffe truncated basis: keep theta_i >= b, set frequencies in (a, b) to rho, drop those <= a.
ROPEX_HD inline double giraffe_truncated_inv_freq(double base, int i, int d, double a, double b,
                                                  double rho) {
  const double f = default_inv_freq(base, i, d);
  if (f >= b) return f;
  if (f > a) return rho;
  return 0.0;
}

/// ALiBi slope of head h (0-based) among n heads (Press et al. 2022): 2^(-8(h+1)/n) when n is a
/// power of two; otherwise the first 2^floor(log2 n) from that rule and the rest taken from the
/// odd positions of the 2m-head sequence.
ROPEX_HD inline double alibi_slope(int h, int n) {
  int m = 1;
  while (m * 2 <= n) m *= 2;
  if (h < m) return std::pow(2.0, -8.0 * (h + 1) / m);
  const int k = h - m;  // k-th extra head takes slope index 2k+1 of the 2m-head rule
  return std::pow(2.0, -8.0 * (2 * k + 1) / (2.0 * m));
}

}  // namespace ropex
