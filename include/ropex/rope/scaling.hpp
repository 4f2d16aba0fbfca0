// RopeScaling: a model's RoPE settings as one value, parsed from a Hugging Face config.json.
//
// Two formats exist in the wild and both are read:
//   legacy (transformers < 4.5x):  "rope_theta": 500000, "rope_scaling": {"type"|"rope_type": "llama3", ...}
//   current:                       "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000, ...}
// The per-pair math lives in frequencies.hpp; this header owns validation and vectors.
#pragma once
#include <ropex/error.hpp>
#include <ropex/rope/frequencies.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ropex {

/// Name of a rope type as HF writes it ("default", "linear", ..., plus ropex's "ntk").
inline const char* to_string(RopeType t) {
  switch (t) {
    case RopeType::default_rope: return "default";
    case RopeType::linear: return "linear";
    case RopeType::ntk: return "ntk";
    case RopeType::dynamic: return "dynamic";
    case RopeType::yarn: return "yarn";
    case RopeType::llama3: return "llama3";
    case RopeType::longrope: return "longrope";
  }
  return "?";
}

/// Parses a rope type name; "su" (early Phi-3 configs) is LongRoPE. nullopt when unknown.
inline std::optional<RopeType> rope_type_from_string(std::string_view s) {
  if (s == "default" || s == "none") return RopeType::default_rope;
  if (s == "linear") return RopeType::linear;
  if (s == "ntk" || s == "ntk-aware") return RopeType::ntk;
  if (s == "dynamic") return RopeType::dynamic;
  if (s == "yarn") return RopeType::yarn;
  if (s == "llama3") return RopeType::llama3;
  if (s == "longrope" || s == "su") return RopeType::longrope;
  return std::nullopt;
}

inline const char* to_string(RopeLayout l) {
  return l == RopeLayout::half ? "half" : "interleaved";
}

/// Ranges the RoPE settings must lie in, by what each value means (docs/rope-variants.md lists them).
/// Finite is not enough: a factor of 1e-310 divides theta into inf and an mscale of 1e308 scales the
/// attention logits past float range, and the forward prints NaN.
struct RopeBounds {
  /// rope_theta: the slowest pair's period is ~base tokens; past 2^53 no position count is exact.
  static constexpr double max_base = 9007199254740992.0;
  /// factor (linear, ntk, dynamic, yarn, llama3, longrope) and LongRoPE's per-pair factors: a ratio of
  /// context lengths (target / trained), so 1/1000 .. 10^6.
  static constexpr double min_factor = 1e-3, max_factor = 1e6;
  /// YaRN mscale / mscale_all_dim: multiply 0.1*ln(factor) in the attention factor; 0 = absent.
  static constexpr double max_mscale = 100;
  /// attention_factor: multiplies cos and sin, so q.k by its square; real configs use ~1 to ~1.5.
  static constexpr double max_attention_factor = 100;
  /// llama3 low_freq_factor / high_freq_factor: divide L0 into wavelength bands.
  static constexpr double max_freq_factor = 1e6;
  /// yarn beta_fast / beta_slow: rotation counts within L0.
  static constexpr double max_beta = 1e6;
};

/// A model's RoPE settings: variant, base and every variant parameter, owning LongRoPE's factors.
struct RopeScaling {
  RopeType type = RopeType::default_rope;
  double base = 10000.0;  // rope_theta
  double factor = 1.0;
  double partial_rotary_factor = 1.0;
  std::int64_t max_position_embeddings = 0;
  std::int64_t original_max_position_embeddings = 0;  // yarn / llama3 / longrope (0: = max_position)
  double beta_fast = 32, beta_slow = 1;
  double mscale = 0, mscale_all_dim = 0;
  bool truncate = true;
  double attention_factor_override = 0;  // config's explicit "attention_factor", 0 = derive
  double low_freq_factor = 1, high_freq_factor = 4;
  std::vector<double> short_factor, long_factor;

  /// The L0 that yarn / llama3 / longrope measure against.
  std::int64_t original_length() const {
    return original_max_position_embeddings > 0 ? original_max_position_embeddings
                                                : max_position_embeddings;
  }

  /// A plain view for the per-pair math (pointers into this object's vectors).
  RopeParams params() const {
    RopeParams p;
    p.type = type;
    p.base = base;
    p.factor = factor;
    p.max_position_embeddings = static_cast<double>(max_position_embeddings);
    p.original_max_position_embeddings = static_cast<double>(original_length());
    p.beta_fast = beta_fast;
    p.beta_slow = beta_slow;
    p.mscale = mscale;
    p.mscale_all_dim = mscale_all_dim;
    p.truncate = truncate;
    p.attention_factor = attention_factor_override;
    p.low_freq_factor = low_freq_factor;
    p.high_freq_factor = high_freq_factor;
    p.short_factor = short_factor.empty() ? nullptr : short_factor.data();
    p.long_factor = long_factor.empty() ? nullptr : long_factor.data();
    return p;
  }

  /// Rotary dims of a head: int(head_dim * partial_rotary_factor), as HF truncates.
  int rotary_dim(int head_dim) const {
    return static_cast<int>(head_dim * partial_rotary_factor);
  }

  /// theta_i for i < rotary_dim/2, for a forward over `seq_len` tokens (max position + 1).
  /// Throws ropex::Error if rotary_dim is odd/zero or LongRoPE factors have the wrong length.
  std::vector<double> inv_freq(int rotary_dim, std::int64_t seq_len = 0) const {
    if (rotary_dim <= 0 || rotary_dim % 2 != 0)
      throw make_error("rope", "rotary_dim", "must be a positive even number, got " + std::to_string(rotary_dim));
    if (type == RopeType::longrope) {
      const auto want = static_cast<size_t>(rotary_dim / 2);
      if (short_factor.size() != want || long_factor.size() != want)
        throw make_error("rope_scaling", "short_factor/long_factor",
                         "need " + std::to_string(want) + " entries each (rotary_dim/2), got " +
                             std::to_string(short_factor.size()) + " and " + std::to_string(long_factor.size()));
    }
    const RopeParams p = params();
    std::vector<double> f(static_cast<size_t>(rotary_dim / 2));
    for (int i = 0; i < rotary_dim / 2; ++i) f[i] = ropex::inv_freq(p, i, rotary_dim, static_cast<double>(seq_len));
    return f;
  }

  /// The factor cos/sin are multiplied by (1 for most variants).
  double attention_factor(std::int64_t seq_len = 0) const {
    return ropex::attention_factor(params(), static_cast<double>(seq_len));
  }

  /// Throws ropex::Error naming `source` and the field when a value is out of range (RopeBounds).
  void validate(std::string_view source) const {
    using B = RopeBounds;
    auto bad = [&](const char* field, const std::string& why) { return make_error(source, field, why); };
    auto in = [](double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; };
    if (!std::isfinite(base) || base <= 1.0 || base > B::max_base)
      throw bad("rope_theta", "base must be a finite number > 1 and <= 2^53, got " + fmt(base));
    if (!std::isfinite(partial_rotary_factor) || partial_rotary_factor <= 0 || partial_rotary_factor > 1)
      throw bad("partial_rotary_factor", "must be in (0, 1], got " + fmt(partial_rotary_factor));
    if (type == RopeType::default_rope) return;
    if (!in(factor, B::min_factor, B::max_factor))
      throw bad("rope_scaling.factor", "must be a finite number > 0 in [0.001, 1e6] (a ratio of context lengths), got " + fmt(factor));
    if ((type == RopeType::yarn || type == RopeType::llama3 || type == RopeType::longrope) &&
        original_length() <= 0)
      throw bad("rope_scaling.original_max_position_embeddings",
                std::string("needed by ") + to_string(type) + " (or max_position_embeddings)");
    if (type == RopeType::longrope && original_length() < 2)  // ln L0 divides the attention factor
      throw bad("rope_scaling.original_max_position_embeddings",
                "longrope needs it >= 2, got " + std::to_string(original_length()));
    if (type == RopeType::dynamic && max_position_embeddings <= 0)
      throw bad("max_position_embeddings", "needed by dynamic NTK scaling");
    if (type == RopeType::ntk && factor <= 1.0 && factor != 1.0)
      throw bad("rope_scaling.factor", "NTK alpha must be >= 1, got " + fmt(factor));
    if (attention_factor_override != 0 && !in(attention_factor_override, 0x1p-1022, B::max_attention_factor))
      throw bad("rope_scaling.attention_factor", "must be in (0, 100] (0 or absent: derived), got " +
                                                      fmt(attention_factor_override));
    if (type == RopeType::yarn) {
      if (!in(beta_fast, 0x1p-1022, B::max_beta) || !in(beta_slow, 0x1p-1022, B::max_beta))
        throw bad("rope_scaling.beta_fast", "beta_fast and beta_slow must be in (0, 1e6], got " + fmt(beta_fast) +
                                                " and " + fmt(beta_slow));
      if (!in(mscale, 0, B::max_mscale))
        throw bad("rope_scaling.mscale", "must be in [0, 100] (0: absent), got " + fmt(mscale));
      if (!in(mscale_all_dim, 0, B::max_mscale))
        throw bad("rope_scaling.mscale_all_dim", "must be in [0, 100] (0: absent), got " + fmt(mscale_all_dim));
    }
    if (type == RopeType::llama3) {
      if (!in(low_freq_factor, 0x1p-1022, B::max_freq_factor))
        throw bad("rope_scaling.low_freq_factor", "must be in (0, 1e6], got " + fmt(low_freq_factor));
      if (!in(high_freq_factor, 0x1p-1022, B::max_freq_factor))
        throw bad("rope_scaling.high_freq_factor", "must be in (0, 1e6], got " + fmt(high_freq_factor));
      if (!(low_freq_factor < high_freq_factor))
        throw bad("rope_scaling.low_freq_factor", "must be < high_freq_factor, got " + fmt(low_freq_factor) +
                                                      " >= " + fmt(high_freq_factor));
    }
    if (type == RopeType::longrope) {
      if (short_factor.empty() || long_factor.empty())
        throw bad("rope_scaling.short_factor", "longrope needs short_factor and long_factor lists");
      for (double v : short_factor)
        if (!in(v, B::min_factor, B::max_factor))
          throw bad("rope_scaling.short_factor", "entries must be in [0.001, 1e6], got " + fmt(v));
      for (double v : long_factor)
        if (!in(v, B::min_factor, B::max_factor))
          throw bad("rope_scaling.long_factor", "entries must be in [0.001, 1e6], got " + fmt(v));
    }
  }

  static std::string fmt(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
  }
};

namespace detail {

inline double json_number(const nlohmann::json& j, std::string_view source, const std::string& field) {
  if (!j.is_number()) throw make_error(source, field, "expected a number, got " + std::string(j.type_name()));
  const double v = j.get<double>();
  if (!std::isfinite(v)) throw make_error(source, field, "must be finite");
  return v;
}

inline std::int64_t json_length(const nlohmann::json& j, std::string_view source, const std::string& field) {
  const double v = json_number(j, source, field);
  if (v < 0 || v > 9.0e15 || v != std::floor(v))
    throw make_error(source, field, "expected a non-negative integer, got " + RopeScaling::fmt(v));
  return static_cast<std::int64_t>(v);
}

inline std::vector<double> json_number_list(const nlohmann::json& j, std::string_view source,
                                            const std::string& field) {
  if (!j.is_array()) throw make_error(source, field, "expected a list of numbers");
  std::vector<double> out;
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) out.push_back(json_number(j[i], source, field + "[" + std::to_string(i) + "]"));
  return out;
}

/// Reads one rope dict (HF `rope_scaling` or `rope_parameters`) into `r`; `prefix` names it in errors.
inline void read_rope_dict(RopeScaling& r, const nlohmann::json& d, std::string_view source,
                           const std::string& prefix) {
  if (!d.is_object()) throw make_error(source, prefix, "expected a JSON object");
  auto has = [&](const char* k) { return d.contains(k) && !d[k].is_null(); };
  auto field = [&](const char* k) { return prefix + "." + k; };
  const char* type_key = has("rope_type") ? "rope_type" : (has("type") ? "type" : nullptr);
  if (type_key) {
    if (!d[type_key].is_string()) throw make_error(source, field(type_key), "expected a string");
    const auto name = d[type_key].get<std::string>();
    const auto t = rope_type_from_string(name);
    if (!t)
      throw make_error(source, field(type_key),
                       "unknown rope type \"" + name +
                           "\" (known: default, linear, ntk, dynamic, yarn, llama3, longrope)");
    r.type = *t;
  }
  if (has("rope_theta")) r.base = json_number(d["rope_theta"], source, field("rope_theta"));
  if (has("partial_rotary_factor"))
    r.partial_rotary_factor = json_number(d["partial_rotary_factor"], source, field("partial_rotary_factor"));
  if (has("factor")) r.factor = json_number(d["factor"], source, field("factor"));
  if (has("original_max_position_embeddings"))
    r.original_max_position_embeddings =
        json_length(d["original_max_position_embeddings"], source, field("original_max_position_embeddings"));
  if (has("beta_fast")) r.beta_fast = json_number(d["beta_fast"], source, field("beta_fast"));
  if (has("beta_slow")) r.beta_slow = json_number(d["beta_slow"], source, field("beta_slow"));
  if (has("mscale")) r.mscale = json_number(d["mscale"], source, field("mscale"));
  if (has("mscale_all_dim")) r.mscale_all_dim = json_number(d["mscale_all_dim"], source, field("mscale_all_dim"));
  if (has("truncate")) {
    if (!d["truncate"].is_boolean()) throw make_error(source, field("truncate"), "expected true or false");
    r.truncate = d["truncate"].get<bool>();
  }
  if (has("attention_factor"))
    r.attention_factor_override = json_number(d["attention_factor"], source, field("attention_factor"));
  if (has("low_freq_factor")) r.low_freq_factor = json_number(d["low_freq_factor"], source, field("low_freq_factor"));
  if (has("high_freq_factor"))
    r.high_freq_factor = json_number(d["high_freq_factor"], source, field("high_freq_factor"));
  if (has("short_factor")) r.short_factor = json_number_list(d["short_factor"], source, field("short_factor"));
  if (has("long_factor")) r.long_factor = json_number_list(d["long_factor"], source, field("long_factor"));
  // HF: a longrope config without an explicit factor uses max/original (longrope_scale); keep 1.
  if (r.type == RopeType::longrope && !has("factor")) r.factor = 1.0;
  // The other scaled variants have no meaningful default factor (transformers requires the key);
  // taking 1 would silently run unscaled RoPE under a scaled name.
  if (type_key && !has("factor") &&
      (r.type == RopeType::linear || r.type == RopeType::ntk || r.type == RopeType::dynamic ||
       r.type == RopeType::yarn || r.type == RopeType::llama3))
    throw make_error(source, field("factor"), std::string("required by ") + to_string(r.type) + " scaling");
}

}  // namespace detail

/// Parses the RoPE settings of a Hugging Face config.json (either format) and validates them.
///   rope_theta: top level (legacy) or rope_parameters.rope_theta; default 10000.
///   partial_rotary_factor: top level or inside the rope dict.
///   original_max_position_embeddings: a top-level value wins (Phi-3), then the rope dict's, then
///   max_position_embeddings (HF's standardize_rope_params).
/// Throws ropex::Error "<source>: <field>: <problem>" for bad values.
inline RopeScaling rope_scaling_from_config(const nlohmann::json& config, std::string_view source = "config.json") {
  if (!config.is_object()) throw make_error(source, "", "expected a JSON object at the top level");
  RopeScaling r;
  auto has = [&](const char* k) { return config.contains(k) && !config[k].is_null(); };
  if (has("max_position_embeddings"))
    r.max_position_embeddings = detail::json_length(config["max_position_embeddings"], source, "max_position_embeddings");
  if (has("rope_theta")) r.base = detail::json_number(config["rope_theta"], source, "rope_theta");
  if (has("partial_rotary_factor"))
    r.partial_rotary_factor = detail::json_number(config["partial_rotary_factor"], source, "partial_rotary_factor");
  const RopeScaling top_level = r;  // before either rope dict
  if (has("rope_parameters")) {
    const auto& rp = config["rope_parameters"];
    if (rp.is_object() && !rp.contains("rope_theta") && !rp.contains("rope_type") && !rp.contains("type") &&
        !rp.empty() && rp.begin()->is_object())
      throw make_error(source, "rope_parameters", "per-layer-type RoPE parameters are not supported");
    detail::read_rope_dict(r, rp, source, "rope_parameters");
  }
  if (has("rope_scaling")) {
    // Both formats in one file: transformers takes rope_scaling whole, ignoring rope_parameters,
    // so a file whose two dicts disagree means two models. Agreeing copies are fine.
    if (has("rope_parameters")) {
      RopeScaling alone = top_level;
      detail::read_rope_dict(alone, config["rope_scaling"], source, "rope_scaling");
      const RopeParams a = alone.params(), b = r.params();
      const bool same = a.type == b.type && a.base == b.base && a.factor == b.factor &&
                        a.original_max_position_embeddings == b.original_max_position_embeddings &&
                        a.beta_fast == b.beta_fast && a.beta_slow == b.beta_slow && a.mscale == b.mscale &&
                        a.mscale_all_dim == b.mscale_all_dim && a.truncate == b.truncate &&
                        a.attention_factor == b.attention_factor && a.low_freq_factor == b.low_freq_factor &&
                        a.high_freq_factor == b.high_freq_factor && alone.short_factor == r.short_factor &&
                        alone.long_factor == r.long_factor &&
                        alone.partial_rotary_factor == r.partial_rotary_factor;
      if (!same)
        throw make_error(source, "rope_scaling",
                         "disagrees with rope_parameters (both RoPE formats present with different values)");
    }
    detail::read_rope_dict(r, config["rope_scaling"], source, "rope_scaling");
  }
  if (has("original_max_position_embeddings"))
    r.original_max_position_embeddings =
        detail::json_length(config["original_max_position_embeddings"], source, "original_max_position_embeddings");
  r.validate(source);
  return r;
}

/// Applies command-line overrides: a new base (`--rope-base`) and/or a rope dict in HF's
/// `rope_scaling` form (`--rope-scaling '{"rope_type":"yarn","factor":4}'`), which replaces the
/// variant and its parameters (the base is kept unless the dict has rope_theta).
inline void apply_rope_override(RopeScaling& r, std::optional<double> base, const nlohmann::json* scaling,
                                std::string_view source = "--rope-scaling") {
  if (scaling) {
    RopeScaling fresh;
    fresh.base = r.base;
    fresh.partial_rotary_factor = r.partial_rotary_factor;
    fresh.max_position_embeddings = r.max_position_embeddings;
    fresh.original_max_position_embeddings = r.original_max_position_embeddings;
    detail::read_rope_dict(fresh, *scaling, source, "rope_scaling");
    r = fresh;
  }
  if (base) {
    if (!std::isfinite(*base) || *base <= 1.0 || *base > RopeBounds::max_base)
      throw make_error("--rope-base", "", "base must be a finite number > 1 and <= 2^53, got " + RopeScaling::fmt(*base));
    r.base = *base;
  }
  r.validate(source);
}

}  // namespace ropex
