// LlamaConfig: the hyper-parameters of a LLaMA-family model, read from a Hugging Face config.json.
// Every field is range-checked here, once, so the model code can trust it (an out-of-range head
// count would otherwise become an out-of-bounds read deep inside attention).
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/json_brief.hpp>
#include <ropex/model/config_keys.hpp>
#include <ropex/rope/scaling.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ropex::model {

/// The model families one LLaMA forward runs, as HF's `model_type` names them. What each adds to
/// the LLaMA decoder is a flag below (docs/models.md has the table and how to add a family).
enum class ModelFamily { llama, mistral, qwen2, qwen3, phi3 };

struct LlamaConfig {
  ModelFamily family = ModelFamily::llama;
  std::string model_type = "llama";
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0,
          num_attention_heads = 0, num_key_value_heads = 0, head_dim = 0, max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1, eos_token_id = 2;  ///< -1: the config has none
  std::vector<int64_t> eos_token_ids;          ///< every id that ends a generation (eos_token_id may be a list)
  RopeScaling rope;
  RopeLayout rope_layout = RopeLayout::half;  ///< HF checkpoints: half; llama2.c .bin: interleaved

  // ---- what a family changes in the forward (all false / empty: LLaMA-2)
  bool qkv_bias = false;   ///< q/k/v projections have biases (Qwen2 always; Llama/Qwen3 attention_bias)
  bool o_bias = false;     ///< o_proj has a bias (Llama/Qwen3 attention_bias)
  bool mlp_bias = false;   ///< gate/up/down have biases (Llama mlp_bias)
  bool qk_norm = false;    ///< RMSNorm over each head's q and k before RoPE (Qwen3)
  bool fused_qkv = false;  ///< checkpoint stores qkv_proj and gate_up_proj fused (Phi-3)
  /// Keys each query sees per layer, itself included: 0 = all earlier keys (full causal
  /// attention), W > 0 = a sliding window of the W most recent (Mistral sliding_window; Qwen2/3
  /// use_sliding_window + max_window_layers or layer_types; Phi-3 sliding_window). Empty = all full.
  std::vector<int64_t> layer_window;

  int64_t window(int64_t layer) const { return layer_window.empty() ? 0 : layer_window[size_t(layer)]; }

  /// Rotated dimensions per head: int(head_dim * partial_rotary_factor), as HF computes it.
  int rotary_dim() const { return static_cast<int>(static_cast<double>(head_dim) * rope.partial_rotary_factor); }

  /// Reads a HF config.json of a supported family (model_type llama, mistral, qwen2, qwen3, phi3).
  /// `source` names it in errors ("config.json: num_attention_heads: ..."). Defaults are those of
  /// transformers' config class for the model_type (e.g. LlamaConfig: rms_norm_eps 1e-6,
  /// max_position_embeddings 2048, bos 1, eos 2; MistralConfig: sliding_window 4096). Every key is
  /// either honoured, known not to change the forward (config_keys.hpp), or an error naming it.
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

namespace detail {

inline bool config_bool(const nlohmann::json& j, const char* key, std::string_view source, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw make_error(source, key, "must be true or false, got " + io::json_brief(*it));
  return it->get<bool>();
}

// Every id of a token-id key: an integer, a list of integers, or null/absent (-> fallback).
inline std::vector<int64_t> config_token_ids(const nlohmann::json& j, const char* key, std::string_view source,
                                             int64_t vocab, std::vector<int64_t> fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  std::vector<int64_t> ids;
  if (!it->is_array()) return {config_token_id(j, key, source, vocab, 0)};
  for (size_t i = 0; i < it->size(); ++i) {
    nlohmann::json wrap = {{key, (*it)[i]}};
    try {
      ids.push_back(config_int(wrap, key, source, 0, vocab - 1));
    } catch (const Error&) {
      throw make_error(source, std::string(key) + "[" + std::to_string(i) + "]",
                       "must be a token id in [0, " + std::to_string(vocab - 1) + "], got " + io::json_brief((*it)[i]));
    }
  }
  return ids;
}

}  // namespace detail

inline LlamaConfig LlamaConfig::from_json(const nlohmann::json& j, std::string_view source) {
  using detail::config_bool;
  using detail::config_int;
  if (!j.is_object()) throw make_error(source, "", "config must be a JSON object");
  LlamaConfig c;
  // ---- which family: decides the defaults and which keys are honoured
  {
    auto it = j.find("model_type");
    if (it == j.end() || !it->is_string())
      throw make_error(source, "model_type",
                       "missing or not a string (ropex needs it to know which keys change the forward)");
    c.model_type = it->get<std::string>();
    if (!config_keys::is_known_model_type(c.model_type))
      throw make_error(source, "model_type",
                       "\"" + c.model_type + "\" is not supported (supported: llama, mistral, qwen2, qwen3, phi3)");
    c.family = c.model_type == "mistral" ? ModelFamily::mistral
               : c.model_type == "qwen2" ? ModelFamily::qwen2
               : c.model_type == "qwen3" ? ModelFamily::qwen3
               : c.model_type == "phi3"  ? ModelFamily::phi3
                                         : ModelFamily::llama;
  }
  config_keys::check(j, c.model_type, source);
  const ModelFamily fam = c.family;

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
  c.head_dim = fam == ModelFamily::qwen3 && !(j.contains("head_dim") && !j["head_dim"].is_null())
                   ? 128  // Qwen3Config's default head_dim (not hidden / heads)
                   : head_dim_from_config(j, source);
  // Defaults of each HF config class where a key is absent.
  const int64_t default_max_pos = fam == ModelFamily::llama     ? 2048
                                  : fam == ModelFamily::mistral ? 4096 * 32
                                  : fam == ModelFamily::phi3    ? 4096
                                                                : 32768;
  c.max_position_embeddings = config_int(j, "max_position_embeddings", source, 1, int64_t(1) << 40, default_max_pos);
  c.rms_norm_eps = fam == ModelFamily::phi3 ? 1e-5 : 1e-6;
  if (auto it = j.find("rms_norm_eps"); it != j.end() && !it->is_null()) {
    if (!it->is_number()) throw make_error(source, "rms_norm_eps", "must be a number, got " + io::json_brief(*it));
    c.rms_norm_eps = it->get<double>();
    if (!(c.rms_norm_eps > 0.0 && c.rms_norm_eps < 1.0))
      throw make_error(source, "rms_norm_eps", "must be in (0, 1), got " + io::json_brief(*it));
  }
  c.tie_word_embeddings = config_bool(j, "tie_word_embeddings", source, false);
  // Token ids: LlamaConfig/MistralConfig default bos 1 / eos 2, Phi3Config 1 / 32000, Qwen none.
  const bool qwen = fam == ModelFamily::qwen2 || fam == ModelFamily::qwen3;
  const int64_t def_bos = qwen ? -1 : 1, def_eos = qwen ? -1 : (fam == ModelFamily::phi3 ? 32000 : 2);
  auto in_vocab = [&](int64_t id) { return id >= 0 && id < c.vocab_size ? id : -1; };
  const auto bos = detail::config_token_ids(j, "bos_token_id", source, c.vocab_size, {in_vocab(def_bos)});
  c.bos_token_id = bos.empty() ? -1 : bos[0];
  c.eos_token_ids = detail::config_token_ids(j, "eos_token_id", source, c.vocab_size, {in_vocab(def_eos)});
  std::erase(c.eos_token_ids, int64_t(-1));
  c.eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids[0];

  // What the LLaMA forward pass does not implement is refused, not silently ignored.
  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null() && *it != "silu")
    throw make_error(source, "hidden_act", "only \"silu\" (SwiGLU) is supported, got " + io::json_brief(*it));

  // ---- the family's flags
  switch (fam) {
    case ModelFamily::llama:  // LlamaAttention: bias=attention_bias on q, k, v and o; LlamaMLP: mlp_bias
      c.qkv_bias = c.o_bias = config_bool(j, "attention_bias", source, false);
      c.mlp_bias = config_bool(j, "mlp_bias", source, false);
      break;
    case ModelFamily::qwen2:  // Qwen2Attention: q, k, v biases always, o without
      c.qkv_bias = true;
      break;
    case ModelFamily::qwen3:  // Qwen3Attention: attention_bias on q, k, v, o; q_norm / k_norm per head
      c.qkv_bias = c.o_bias = config_bool(j, "attention_bias", source, false);
      c.qk_norm = true;
      break;
    case ModelFamily::phi3:  // Phi3: qkv_proj and gate_up_proj fused, no biases
      c.fused_qkv = true;
      break;
    case ModelFamily::mistral:
      break;
  }

  // ---- sliding-window attention, per layer
  auto window_value = [&]() {
    return config_int(j, "sliding_window", source, 1, int64_t(1) << 40);
  };
  auto has = [&](const char* k) { return j.contains(k) && !j[k].is_null(); };
  int64_t window = 0;
  if (fam == ModelFamily::mistral) {
    // MistralConfig: sliding_window defaults to 4096 when the key is absent; null turns it off.
    window = !j.contains("sliding_window") ? 4096 : (j["sliding_window"].is_null() ? 0 : window_value());
  } else if (fam == ModelFamily::phi3) {
    window = has("sliding_window") ? window_value() : 0;
  } else if (qwen) {
    // Qwen2Config: sliding_window only when use_sliding_window (default 4096), on layers >= max_window_layers.
    if (config_bool(j, "use_sliding_window", source, false))
      window = !j.contains("sliding_window") ? 4096 : (j["sliding_window"].is_null() ? 0 : window_value());
  }
  if (qwen && has("layer_types")) {
    const auto& lt = j["layer_types"];
    if (!lt.is_array() || int64_t(lt.size()) != c.num_hidden_layers)
      throw make_error(source, "layer_types",
                       "must be a list of num_hidden_layers = " + std::to_string(c.num_hidden_layers) + " strings");
    for (size_t l = 0; l < lt.size(); ++l) {
      const std::string field = "layer_types[" + std::to_string(l) + "]";
      if (lt[l] == "full_attention") {
        c.layer_window.push_back(0);
      } else if (lt[l] == "sliding_attention") {
        if (window == 0)
          throw make_error(source, field, "\"sliding_attention\" needs use_sliding_window true and a sliding_window");
        c.layer_window.push_back(window);
      } else {
        throw make_error(source, field, "only \"full_attention\" and \"sliding_attention\" are supported, got " +
                                            io::json_brief(lt[l]));
      }
    }
  } else if (window > 0) {
    const int64_t first = qwen ? config_int(j, "max_window_layers", source, 0, 1 << 20, 28) : 0;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) c.layer_window.push_back(l >= first ? window : 0);
  }
  if (std::all_of(c.layer_window.begin(), c.layer_window.end(), [](int64_t w) { return w == 0; })) c.layer_window.clear();

  // ---- RoPE
  nlohmann::json rope_json = nlohmann::json::object();  // only the keys the rope parser reads
  for (const char* k : {"max_position_embeddings", "rope_theta", "rope_scaling", "rope_parameters",
                        "partial_rotary_factor", "original_max_position_embeddings"})
    if (j.contains(k)) rope_json[k] = j[k];
  if (!has("max_position_embeddings")) rope_json["max_position_embeddings"] = c.max_position_embeddings;
  if (fam == ModelFamily::phi3) {
    // Phi3Config reads "su" and "yarn" as longrope (early Phi-3 exports) and has its own default L0.
    for (const char* d : {"rope_scaling", "rope_parameters"})
      if (rope_json.contains(d) && rope_json[d].is_object())
        for (const char* tk : {"rope_type", "type"})
          if (auto t = rope_json[d].find(tk); t != rope_json[d].end() && (*t == "su" || *t == "yarn")) *t = "longrope";
    if (!has("original_max_position_embeddings")) rope_json["original_max_position_embeddings"] = 4096;
  }
  c.rope = rope_scaling_from_config(rope_json, source);
  if (fam == ModelFamily::phi3 && c.rope.type != RopeType::default_rope && c.rope.type != RopeType::longrope)
    throw make_error(source, "rope_scaling", std::string("Phi-3 supports default and longrope only, got ") + to_string(c.rope.type));
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
