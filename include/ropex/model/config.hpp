// LlamaConfig: the hyper-parameters of a LLaMA-family model, read from a Hugging Face config.json.
// Every field is range-checked here, once, so the model code can trust it (an out-of-range head
// count would otherwise become an out-of-bounds read deep inside attention).
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/json_brief.hpp>
#include <ropex/rope/scaling.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace ropex::model {

struct LlamaConfig {
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0,
          num_attention_heads = 0, num_key_value_heads = 0, head_dim = 0, max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1, eos_token_id = 2;
  RopeScaling rope;
  RopeLayout rope_layout = RopeLayout::half;  ///< HF checkpoints: half; llama2.c .bin: interleaved

  /// Rotated dimensions per head: int(head_dim * partial_rotary_factor), as HF computes it.
  int rotary_dim() const { return static_cast<int>(static_cast<double>(head_dim) * rope.partial_rotary_factor); }

  /// Reads a HF LLaMA config.json. `source` names it in errors ("config.json: num_attention_heads: ...").
  /// Defaults follow transformers' LlamaConfig: num_key_value_heads = num_attention_heads,
  /// head_dim = hidden_size / num_attention_heads, rms_norm_eps 1e-6, max_position_embeddings 2048,
  /// tie_word_embeddings false, bos 1, eos 2 (null keeps the default; a list gives its first id).
  static LlamaConfig from_json(const nlohmann::json& j, std::string_view source);
};

namespace detail {

// An integer field in [lo, hi]; absent or null -> fallback (or an error when there is none).
inline int64_t config_int(const nlohmann::json& j, const char* key, std::string_view source, int64_t lo, int64_t hi,
                          std::optional<int64_t> fallback = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    throw make_error(source, key, "missing");
  }
  int64_t v;
  if (it->is_number_unsigned()) {
    uint64_t u = it->get<uint64_t>();
    if (u > uint64_t(hi)) throw make_error(source, key, "must be <= " + std::to_string(hi) + ", got " + io::json_brief(*it));
    v = int64_t(u);
  } else if (it->is_number_integer()) {
    v = it->get<int64_t>();
  } else if (it->is_number_float()) {
    // Some exporters write 4096.0; accept exact integers only.
    double d = it->get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || d < double(lo) || d > double(hi))
      throw make_error(source, key, "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                        "], got " + io::json_brief(*it));
    v = int64_t(d);
  } else {
    throw make_error(source, key, "must be an integer, got " + io::json_brief(*it));
  }
  if (v < lo || v > hi)
    throw make_error(source, key,
                     "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
  return v;
}

// A token id: integer, null (-> fallback) or a list (-> its first integer; HF allows several eos).
inline int64_t config_token_id(const nlohmann::json& j, const char* key, std::string_view source, int64_t vocab,
                               int64_t fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  nlohmann::json one = *it;
  if (it->is_array()) {
    if (it->empty()) return fallback;
    one = (*it)[0];
  }
  nlohmann::json wrap = {{key, one}};
  return config_int(wrap, key, source, 0, vocab - 1);
}

}  // namespace detail

/// Per-head dimension of a HF config.json: "head_dim" when present, else
/// hidden_size / num_attention_heads (which must divide). Even and >= 2 (RoPE rotates pairs).
/// Any model's config works (only these fields are read); errors name source and field.
inline int64_t head_dim_from_config(const nlohmann::json& j, std::string_view source) {
  using detail::config_int;
  if (!j.is_object()) throw make_error(source, "", "config must be a JSON object");
  int64_t head_dim;
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    head_dim = config_int(j, "head_dim", source, 2, 1 << 16);
  } else {
    const int64_t hidden = config_int(j, "hidden_size", source, 1, int64_t(1) << 20);
    const int64_t heads = config_int(j, "num_attention_heads", source, 1, 4096);
    if (hidden % heads != 0)
      throw make_error(source, "num_attention_heads",
                       std::to_string(heads) + " does not divide hidden_size " + std::to_string(hidden) +
                           " (and config has no head_dim)");
    head_dim = hidden / heads;
  }
  if (head_dim < 2 || head_dim % 2 != 0)
    throw make_error(source, "head_dim", "must be even and >= 2 for RoPE, got " + std::to_string(head_dim));
  return head_dim;
}

inline LlamaConfig LlamaConfig::from_json(const nlohmann::json& j, std::string_view source) {
  using detail::config_int;
  if (!j.is_object()) throw make_error(source, "", "config must be a JSON object");
  LlamaConfig c;
  constexpr int64_t kMaxDim = int64_t(1) << 20;  // hidden/intermediate sizes: far above any real model
  c.vocab_size = config_int(j, "vocab_size", source, 1, std::numeric_limits<int32_t>::max());
  c.hidden_size = config_int(j, "hidden_size", source, 1, kMaxDim);
  c.intermediate_size = config_int(j, "intermediate_size", source, 1, kMaxDim);
  c.num_hidden_layers = config_int(j, "num_hidden_layers", source, 1, 4096);
  c.num_attention_heads = config_int(j, "num_attention_heads", source, 1, 4096);
  c.num_key_value_heads =
      config_int(j, "num_key_value_heads", source, 1, c.num_attention_heads, c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw make_error(source, "num_key_value_heads",
                     std::to_string(c.num_key_value_heads) + " does not divide num_attention_heads " +
                         std::to_string(c.num_attention_heads));
  c.head_dim = head_dim_from_config(j, source);
  c.max_position_embeddings = config_int(j, "max_position_embeddings", source, 1, int64_t(1) << 40, 2048);

  if (auto it = j.find("rms_norm_eps"); it != j.end() && !it->is_null()) {
    if (!it->is_number()) throw make_error(source, "rms_norm_eps", "must be a number, got " + io::json_brief(*it));
    c.rms_norm_eps = it->get<double>();
    if (!(c.rms_norm_eps > 0.0 && c.rms_norm_eps < 1.0))
      throw make_error(source, "rms_norm_eps", "must be in (0, 1), got " + io::json_brief(*it));
  }
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) throw make_error(source, "tie_word_embeddings", "must be true or false, got " + io::json_brief(*it));
    c.tie_word_embeddings = it->get<bool>();
  }
  c.bos_token_id = detail::config_token_id(j, "bos_token_id", source, c.vocab_size, 1);
  c.eos_token_id = detail::config_token_id(j, "eos_token_id", source, c.vocab_size, 2);

  // What the LLaMA forward pass does not implement is refused, not silently ignored.
  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null() && *it != "silu")
    throw make_error(source, "hidden_act", "only \"silu\" (SwiGLU) is supported, got " + io::json_brief(*it));
  for (const char* bias : {"attention_bias", "mlp_bias"})
    if (auto it = j.find(bias); it != j.end() && !it->is_null() && *it != false)
      throw make_error(source, bias, "biases are not supported (LLaMA has none), got " + io::json_brief(*it));

  if (j.contains("max_position_embeddings") && !j["max_position_embeddings"].is_null()) {
    c.rope = rope_scaling_from_config(j, source);
  } else {  // the rope parser sees the same default length as the model
    nlohmann::json with_default = j;
    with_default["max_position_embeddings"] = c.max_position_embeddings;
    c.rope = rope_scaling_from_config(with_default, source);
  }
  const double prf = c.rope.partial_rotary_factor;
  const int rd = c.rotary_dim();
  if (!(prf > 0.0 && prf <= 1.0) || rd < 2 || rd % 2 != 0)
    throw make_error(source, "partial_rotary_factor",
                     "head_dim " + std::to_string(c.head_dim) + " x " + std::to_string(prf) +
                         " must give an even rotary dimension >= 2");
  if (c.rope.type == RopeType::longrope)  // one factor per rotated pair, checked here so the error names the file
    for (const auto* list : {&c.rope.short_factor, &c.rope.long_factor})
      if (list->size() != size_t(rd / 2))
        throw make_error(source, list == &c.rope.short_factor ? "rope_scaling.short_factor" : "rope_scaling.long_factor",
                         "needs rotary_dim/2 = " + std::to_string(rd / 2) + " entries, got " + std::to_string(list->size()));
  return c;
}

}  // namespace ropex::model
