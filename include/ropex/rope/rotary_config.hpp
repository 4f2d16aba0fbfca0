// RotaryConfig: a checkpoint's rotary settings — head dim, rotary dim, base — read from any of the
// config.json styles in the wild, each value with the key it came from.
//
//   head dim     "head_dim" | hidden_size / num_attention_heads | n_embd / n_head (GPT-J, CodeGen)
//                | qk_nope_head_dim + qk_rope_head_dim (DeepSeek-V2/V3 MLA: the query/key head)
//   rotary dim   partial_rotary_factor (HF: int(head_dim * factor); top level or in the rope dict)
//                | rotary_pct (GPT-NeoX: int(head_dim * pct)) | rotary_dim (GPT-J, CodeGen)
//                | qk_rope_head_dim (MLA: the decoupled rope part of the head)
//                | none of these: the whole head rotates
//   base         rope_theta (legacy top level) | rope_parameters.rope_theta | rotary_emb_base
//                (GPT-NeoX) | none: 10000, transformers' default, reported as a default
//
// Two keys that give different values are refused naming both; a nested "text_config"
// (multimodal checkpoints) is refused rather than followed, so a number is never read from a
// sub-model the user did not name. The variant (rope_scaling / rope_parameters) is parsed by
// rope_scaling_from_config (scaling.hpp), whose base and partial factor this header overrides.
#pragma once
#include <ropex/error.hpp>
#include <ropex/rope/scaling.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ropex {

struct RotaryConfig {
  std::string source;             ///< file name used in errors and origins
  int head_dim = 0;               ///< per-head query/key dimension
  std::string head_dim_key;       ///< "head_dim", "hidden_size/num_attention_heads", ...
  int rotary_dim = 0;             ///< dims that rotate: the scaling law's d
  std::string rotary_dim_key;     ///< "rotary_pct", "qk_rope_head_dim", ... or head_dim_key (whole head)
  bool partial = false;           ///< a partial-rotary key was present
  double base = 10000;            ///< rotary base of the released checkpoint
  std::string base_key;           ///< "rope_theta", "rope_parameters.rope_theta", "rotary_emb_base"
  bool base_is_default = false;   ///< no base key: transformers' default 10000
  std::int64_t max_position_embeddings = 0;  ///< 0 when absent
  RopeScaling rope;               ///< variant and its parameters (base / partial factor set from above)
};

namespace detail {

inline bool rc_has(const nlohmann::json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

// Largest head / rotary / hidden dimension read (as model/config.hpp's kMaxDim): far above any real
// model, and small enough that the int these become cannot wrap (4294967298 would read as 2).
inline constexpr double kMaxRotaryDim = 1 << 20;

// A positive integer up to `hi` (exact-integer floats such as 4096.0 accepted).
inline std::int64_t rc_int(const nlohmann::json& j, const char* key, std::string_view source, double hi = 9.0e15) {
  const auto& v = j[key];
  if (!v.is_number()) throw make_error(source, key, std::string("expected an integer, got ") + v.type_name());
  const double d = v.get<double>();
  if (!std::isfinite(d) || d != std::floor(d) || d < 1)
    throw make_error(source, key, "expected a positive integer, got " + v.dump());
  if (d > hi) throw make_error(source, key, "must be <= " + RopeScaling::fmt(hi) + ", got " + v.dump());
  return static_cast<std::int64_t>(d);
}

inline double rc_number(const nlohmann::json& j, const char* key, std::string_view source,
                        const std::string& field) {
  const auto& v = j[key];
  if (!v.is_number()) throw make_error(source, field, std::string("expected a number, got ") + v.type_name());
  const double d = v.get<double>();
  if (!std::isfinite(d)) throw make_error(source, field, "must be finite");
  return d;
}

struct KeyedValue {
  double value;
  std::string key;
};

// The rope dict of either HF format ("rope_parameters" wins if both, as in scaling.hpp's order).
inline std::vector<std::pair<const nlohmann::json*, std::string>> rope_dicts(const nlohmann::json& cfg) {
  std::vector<std::pair<const nlohmann::json*, std::string>> out;
  for (const char* k : {"rope_parameters", "rope_scaling"})
    if (rc_has(cfg, k) && cfg[k].is_object()) out.emplace_back(&cfg[k], k);
  return out;
}

// Every value a setting is given, by key; two that disagree are refused naming both keys.
inline KeyedValue agree(const std::vector<KeyedValue>& found, std::string_view source, std::string_view what,
                        double rel_tol = 0) {
  KeyedValue first = found.front();
  for (size_t i = 1; i < found.size(); ++i) {
    const double a = first.value, b = found[i].value;
    if (std::fabs(a - b) > rel_tol * std::fabs(a))
      throw make_error(source, first.key + " / " + found[i].key,
                       std::string("conflicting ") + std::string(what) + ": " + RopeScaling::fmt(a) + " vs " +
                           RopeScaling::fmt(b));
    first.key += " = " + found[i].key;
  }
  return first;
}

}  // namespace detail

/// Reads head dim, rotary dim and base (each with its source key) and the RoPE variant from a
/// parsed config.json. Throws ropex::Error "<source>: <key>: <problem>" on missing, malformed or
/// conflicting values and on a nested text_config.
inline RotaryConfig rotary_config_from_json(const nlohmann::json& cfg, std::string_view source = "config.json") {
  using detail::rc_has;
  using detail::rc_int;
  if (!cfg.is_object()) throw make_error(source, "", "expected a JSON object at the top level");
  if (rc_has(cfg, "text_config"))
    throw make_error(source, "text_config",
                     "nested text-model config (multimodal checkpoint) is not read; pass the language model's "
                     "own config.json, or give --head-dim / --base");
  RotaryConfig r;
  r.source = std::string(source);

  // Head dim of the attention that RoPE acts on.
  const bool mla = rc_has(cfg, "qk_rope_head_dim");
  if (rc_has(cfg, "head_dim")) {
    r.head_dim = static_cast<int>(rc_int(cfg, "head_dim", source, detail::kMaxRotaryDim));
    r.head_dim_key = "head_dim";
  } else if (mla && rc_has(cfg, "qk_nope_head_dim")) {  // DeepSeek-V2/V3: q/k head = nope part + rope part
    r.head_dim = static_cast<int>(rc_int(cfg, "qk_nope_head_dim", source, detail::kMaxRotaryDim) +
                                  rc_int(cfg, "qk_rope_head_dim", source, detail::kMaxRotaryDim));
    r.head_dim_key = "qk_nope_head_dim+qk_rope_head_dim";
  } else {
    const bool gptj = !rc_has(cfg, "hidden_size") && rc_has(cfg, "n_embd");
    const char* hk = gptj ? "n_embd" : "hidden_size";
    const char* nk = gptj ? "n_head" : "num_attention_heads";
    if (!rc_has(cfg, hk)) throw make_error(source, "head_dim", std::string("missing (and no ") + hk + ")");
    if (!rc_has(cfg, nk)) throw make_error(source, nk, "missing (needed for head_dim = " + std::string(hk) + "/" + nk + ")");
    const std::int64_t hidden = rc_int(cfg, hk, source), heads = rc_int(cfg, nk, source);
    if (hidden % heads != 0)
      throw make_error(source, nk, std::to_string(heads) + " does not divide " + hk + " " + std::to_string(hidden));
    if (hidden / heads > detail::kMaxRotaryDim)
      throw make_error(source, hk, "head dim " + std::to_string(hidden / heads) + " exceeds 2^20");
    r.head_dim = static_cast<int>(hidden / heads);
    r.head_dim_key = std::string(hk) + "/" + nk;
  }

  // Rotary dim: every key that states it must agree.
  std::vector<detail::KeyedValue> rot;
  auto fraction = [&](const nlohmann::json& j, const char* key, const std::string& field) {
    const double f = detail::rc_number(j, key, source, field);
    if (!(f > 0 && f <= 1)) throw make_error(source, field, "must be in (0, 1], got " + RopeScaling::fmt(f));
    return static_cast<double>(static_cast<int>(r.head_dim * f));  // HF and NeoX truncate
  };
  if (rc_has(cfg, "partial_rotary_factor"))
    rot.push_back({fraction(cfg, "partial_rotary_factor", "partial_rotary_factor"), "partial_rotary_factor"});
  for (const auto& [d, name] : detail::rope_dicts(cfg))
    if (rc_has(*d, "partial_rotary_factor"))
      rot.push_back({fraction(*d, "partial_rotary_factor", name + ".partial_rotary_factor"),
                     name + ".partial_rotary_factor"});
  if (rc_has(cfg, "rotary_pct")) rot.push_back({fraction(cfg, "rotary_pct", "rotary_pct"), "rotary_pct"});
  if (rc_has(cfg, "rotary_dim")) rot.push_back({static_cast<double>(rc_int(cfg, "rotary_dim", source, detail::kMaxRotaryDim)), "rotary_dim"});
  if (mla) rot.push_back({static_cast<double>(rc_int(cfg, "qk_rope_head_dim", source, detail::kMaxRotaryDim)), "qk_rope_head_dim"});
  if (rot.empty()) {
    r.rotary_dim = r.head_dim;
    r.rotary_dim_key = r.head_dim_key;
  } else {
    const auto v = detail::agree(rot, source, "rotary dimensions");
    r.rotary_dim = static_cast<int>(v.value);
    r.rotary_dim_key = v.key;
    r.partial = true;
  }
  if (!r.partial && (r.head_dim < 2 || r.head_dim % 2 != 0))
    throw make_error(source, r.head_dim_key == "head_dim" ? std::string("head_dim") : "head_dim (" + r.head_dim_key + ")",
                     "must be even and >= 2 for RoPE, got " + std::to_string(r.head_dim));
  if (r.rotary_dim < 2 || r.rotary_dim % 2 != 0)
    throw make_error(source, r.rotary_dim_key,
                     "rotary dimension must be even and >= 2, got " + std::to_string(r.rotary_dim));
  if (r.rotary_dim > r.head_dim)
    throw make_error(source, r.rotary_dim_key,
                     "rotary dimension " + std::to_string(r.rotary_dim) + " exceeds the head dim " +
                         std::to_string(r.head_dim) + " (" + r.head_dim_key + ")");

  // Base: every key that states it must agree (to float rounding of the written number).
  std::vector<detail::KeyedValue> base;
  if (rc_has(cfg, "rope_theta")) base.push_back({detail::rc_number(cfg, "rope_theta", source, "rope_theta"), "rope_theta"});
  for (const auto& [d, name] : detail::rope_dicts(cfg))
    if (rc_has(*d, "rope_theta"))
      base.push_back({detail::rc_number(*d, "rope_theta", source, name + ".rope_theta"), name + ".rope_theta"});
  if (rc_has(cfg, "rotary_emb_base"))
    base.push_back({detail::rc_number(cfg, "rotary_emb_base", source, "rotary_emb_base"), "rotary_emb_base"});
  if (base.empty()) {
    r.base = 10000;
    r.base_key = "default 10000 (no rope_theta or rotary_emb_base)";
    r.base_is_default = true;
  } else {
    const auto v = detail::agree(base, source, "rotary base", 1e-12);
    r.base = v.value;
    r.base_key = v.key;
  }
  if (!(r.base > 1)) throw make_error(source, r.base_key, "base must be > 1, got " + RopeScaling::fmt(r.base));

  // Variant and its parameters; the partial factor is already folded into rotary_dim.
  nlohmann::json for_scaling = cfg;
  for_scaling.erase("partial_rotary_factor");
  for (const char* k : {"rope_parameters", "rope_scaling"})
    if (rc_has(for_scaling, k) && for_scaling[k].is_object()) for_scaling[k].erase("partial_rotary_factor");
  r.rope = rope_scaling_from_config(for_scaling, source);
  r.rope.base = r.base;
  if (rc_has(cfg, "max_position_embeddings")) r.max_position_embeddings = rc_int(cfg, "max_position_embeddings", source);
  r.rope.max_position_embeddings = r.max_position_embeddings;
  return r;
}

}  // namespace ropex
