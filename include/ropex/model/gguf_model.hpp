// A GGUF model file (llama.cpp) as a LLaMA-family model: its metadata as a LlamaConfig and its
// tensors under the Hugging Face names the Llama forward reads. Checkpoint::open("x.gguf") calls
// gguf_model(); the tensors stay in the file, in their stored type (quantized blocks included).
//
// Architectures (general.architecture) and what each is in ropex:
//   llama  -> model_type llama (Llama 1/2/3, Mistral, SmolLM2 convert to it), RopeLayout::interleaved
//   qwen2  -> qwen2 (q/k/v biases), RopeLayout::half
//   qwen3  -> qwen3 (per-head q/k norm), RopeLayout::half
//   phi3   -> phi3 (fused attn_qkv and gate|up in ffn_up; LongRoPE factors as tensors), RopeLayout::half
// The layout is llama.cpp's rope mode per architecture (llama_model_rope_type: LLAMA_ROPE_TYPE_NORM
// for llama, LLAMA_ROPE_TYPE_NEOX for qwen2/qwen3/phi3). llama.cpp's converter permutes the rows
// of each head of Q and K for `llama` (convert_hf_to_gguf.py LlamaModel.permute, biases too): HF
// row i of the first half goes to row 2i, row i of the second half to row 2i+1. Rotating pairs
// (2i, 2i+1) of the permuted rows is rotating HF's pairs (i, i + d/2) by the same angle, and q.k is
// the same sum in another order, so the interleaved layout on the stored weights is HF's math
// exactly; nothing is un-permuted.
//
// Tensor names (ggml order ne = [in, out] is HF's [out, in] reversed):
//   token_embd -> model.embed_tokens   output_norm -> model.norm   output -> lm_head (absent: tied)
//   blk.N.attn_norm -> model.layers.N.input_layernorm     blk.N.ffn_norm -> ...post_attention_layernorm
//   blk.N.attn_q / attn_k / attn_v / attn_output (.weight, .bias) -> ...self_attn.q/k/v/o_proj
//   blk.N.attn_q_norm / attn_k_norm -> ...self_attn.q_norm / k_norm
//   blk.N.ffn_gate / ffn_up / ffn_down -> ...mlp.gate/up/down_proj
//   phi3: blk.N.attn_qkv -> ...self_attn.qkv_proj, blk.N.ffn_up ([2*ff, hidden], gate then up)
//         -> ...mlp.gate_up_proj; rope_factors_long / rope_factors_short -> LongRoPE factors
//   llama: rope_freqs (Llama 3.1's per-pair frequency divisors) -> the rope's per-pair factors
// Every metadata key is honoured, known not to change the forward, or refused by name
// (gguf_keys below), as config_keys.hpp does for config.json.
#pragma once
#include <ropex/error.hpp>
#include <ropex/model/config.hpp>
#include <ropex/model/gguf.hpp>
#include <ropex/model/tensor.hpp>
#include <ropex/rope/scaling.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ropex::model {

namespace gguf_keys {

/// Architectures ropex runs, as general.architecture names them.
inline constexpr std::array<std::string_view, 4> architectures{"llama", "qwen2", "qwen3", "phi3"};

/// `{arch}.` keys every supported architecture honours (read by gguf_model()).
inline constexpr std::array<std::string_view, 15> honoured{
    "block_count",        "context_length",
    "embedding_length",   "feed_forward_length",
    "attention.head_count", "attention.head_count_kv",
    "attention.layer_norm_rms_epsilon", "attention.key_length",
    "attention.value_length", "rope.dimension_count",
    "rope.freq_base",     "rope.scaling.type",
    "rope.scaling.factor", "rope.scaling.original_context_length",
    "vocab_size"};

/// `{arch}.` keys honoured for some architectures (or only at a value that changes nothing).
///   attention.sliding_window: phi3 (every layer; 0 = none). Elsewhere only 0.
///   rope.scaling.attn_factor: phi3 (must equal LongRoPE's own attention factor). Elsewhere only 1.
///   rope.scaling.yarn_beta_fast / yarn_beta_slow: with rope.scaling.type yarn.
///   expert_count / expert_used_count: only 0 (a dense model).
inline constexpr std::array<std::string_view, 6> conditional{
    "attention.sliding_window", "rope.scaling.attn_factor", "rope.scaling.yarn_beta_fast",
    "rope.scaling.yarn_beta_slow", "expert_count", "expert_used_count"};

/// `{arch}.` keys that never change the forward: skipped.
///   rope.scaling.finetuned: whether the model was tuned at its scaling (a fact, not a setting)
inline constexpr std::array<std::string_view, 1> skippable{"rope.scaling.finetuned"};

/// Whole prefixes that never change the forward: general.* (names, license, file type,
/// quantization version; general.alignment is the reader's), tokenizer.* (the tokenizer; the bos,
/// eos, eot and eom ids are read here), quantize.* (imatrix provenance). split.* is read: only a
/// one-file model (split.count 1) is supported.
inline constexpr std::array<std::string_view, 3> skippable_prefixes{"general.", "tokenizer.", "quantize."};

inline bool in(const auto& list, std::string_view k) { return std::find(list.begin(), list.end(), k) != list.end(); }

/// Throws for the first key that `arch` neither honours nor may skip; the message names the key.
inline void check(const GgufMetadata& md, std::string_view arch) {
  const std::string src = md.source();
  const std::string prefix = std::string(arch) + ".";
  for (const auto& entry : md.entries()) {  // (clang 14 lambdas cannot capture structured bindings)
    const auto& key = entry.first;
    const auto& value = entry.second;
    const std::string field = "key '" + std::string(key) + "'";
    if (std::any_of(skippable_prefixes.begin(), skippable_prefixes.end(), [&](auto p) { return key.starts_with(p); }))
      continue;
    if (key.starts_with("split.")) {
      if (key == "split.count") {
        const auto n = value.integer_as<uint64_t>();
        if (!n || *n != 1)
          throw make_error(src, field, value.describe() + ": models split across several .gguf files are not supported");
      }
      continue;
    }
    if (key.starts_with(prefix)) {
      const std::string_view k = key.substr(prefix.size());
      if (in(honoured, k) || in(conditional, k) || in(skippable, k)) continue;
      if (k == "rope.scaling.yarn_log_multiplier" || k == "rope.scaling.yarn_ext_factor" ||
          k == "rope.scaling.yarn_attn_factor")
        throw make_error(src, field, "YaRN settings beyond factor, original context and beta are not supported");
      if (k == "attention.layer_norm_epsilon") throw make_error(src, field, "LayerNorm (not RMSNorm) is not supported");
      if (k == "logit_scale" || k == "attn_logit_softcapping" || k == "final_logit_softcapping")
        throw make_error(src, field, "scaled or soft-capped logits are not supported");
      if (k == "rope.dimension_sections") throw make_error(src, field, "multimodal RoPE (mrope) is not supported");
    }
    throw make_error(src, field,
                     "not a key ropex honours for architecture " + std::string(arch) +
                         "; it may change the forward, so the model is refused (docs/gguf.md lists the keys)");
  }
}

}  // namespace gguf_keys

/// What a GGUF file is as a LLaMA-family model.
struct GgufModel {
  LlamaConfig config;
  std::vector<TensorView> tensors;                   ///< under HF names; data in the file's mapping
  std::map<std::string, std::string, std::less<>> gguf_name;  ///< HF name -> the file's tensor name
};

/// The file's tensor name for a HF name (the inverse of the mapping above), for messages about
/// a tensor that is missing; "" when there is none. fused_phi3: q/k/v and gate/up live in
/// attn_qkv and ffn_up.
inline std::string gguf_tensor_name(std::string_view hf, bool fused_phi3 = false) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  constexpr std::string_view layers = "model.layers.";
  if (!hf.starts_with(layers)) return "";
  const auto dot = hf.find('.', layers.size());
  if (dot == std::string_view::npos) return "";
  const std::string n(hf.substr(layers.size(), dot - layers.size()));
  const std::string_view rest = hf.substr(dot + 1);
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 13> map{{
      {"input_layernorm", "attn_norm"},    {"post_attention_layernorm", "ffn_norm"},
      {"self_attn.q_proj", "attn_q"},      {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},      {"self_attn.o_proj", "attn_output"},
      {"self_attn.q_norm", "attn_q_norm"}, {"self_attn.k_norm", "attn_k_norm"},
      {"self_attn.qkv_proj", "attn_qkv"},  {"mlp.gate_proj", "ffn_gate"},
      {"mlp.up_proj", "ffn_up"},           {"mlp.down_proj", "ffn_down"},
      {"mlp.gate_up_proj", "ffn_up"}}};
  for (const auto& [h, g] : map) {
    if (rest.starts_with(h) && rest.size() > h.size() && rest[h.size()] == '.') {
      if (fused_phi3 && (h == "mlp.gate_proj" || h == "mlp.up_proj")) return "blk." + n + ".ffn_up.weight";
      if (fused_phi3 && (h == "self_attn.q_proj" || h == "self_attn.k_proj" || h == "self_attn.v_proj"))
        return "blk." + n + ".attn_qkv.weight";
      return "blk." + n + "." + std::string(g) + std::string(rest.substr(h.size()));
    }
  }
  return "";
}

namespace detail {

// An unsigned integer key in [lo, hi]; absent -> fallback, or "missing" when there is none.
inline int64_t gguf_int(const GgufMetadata& md, const std::string& key, int64_t lo, int64_t hi,
                        std::optional<int64_t> fallback = std::nullopt) {
  if (!md.contains(key)) {
    if (fallback) return *fallback;
    throw make_error(md.source(), "key '" + key + "'", "missing (ropex needs it to build the model)");
  }
  const int64_t v = md.get_i64(key);
  if (v < lo || v > hi)
    throw make_error(md.source(), "key '" + key + "'",
                     "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
  return v;
}

inline double gguf_float(const GgufMetadata& md, const std::string& key, std::optional<double> fallback = std::nullopt) {
  if (!md.contains(key)) {
    if (fallback) return *fallback;
    throw make_error(md.source(), "key '" + key + "'", "missing (ropex needs it to build the model)");
  }
  const double v = md.get_f64(key);
  if (!std::isfinite(v)) throw make_error(md.source(), "key '" + key + "'", "must be finite, got " + std::to_string(v));
  return v;
}

// A small F32/F16/BF16 1-D tensor's values (rope factor lists).
inline std::vector<double> gguf_vector(const GgufTensor& t, int64_t want) {
  if (t.ne.size() != 1 || t.ne[0] != want)
    throw make_error(t.source, "tensor '" + t.name + "'",
                     "ne " + shape_string(t.ne) + " must be [" + std::to_string(want) + "] (rope.dimension_count / 2)");
  if (quant::block_traits(t.type).block_size != 1)
    throw make_error(t.source, "tensor '" + t.name + "'", "must be F32, F16 or BF16");
  std::vector<float> f(static_cast<size_t>(want));
  t.rows_to_float(f.data(), 0, 1);
  std::vector<double> d(f.begin(), f.end());
  for (size_t i = 0; i < d.size(); ++i)
    if (!(std::isfinite(d[i]) && d[i] > 0))
      throw make_error(t.source, "tensor '" + t.name + "'",
                       "element " + std::to_string(i) + " must be a positive finite factor, got " + std::to_string(d[i]));
  return d;
}

}  // namespace detail

/// Reads `f` as a LLaMA-family model. Throws ropex::Error naming the file and the key or tensor
/// for an unsupported architecture, a missing or out-of-range key, a key that would change the
/// forward and is not honoured, or a tensor the forward would not read. Shapes against the
/// config are checked by Checkpoint (with the file's tensor names in the message).
inline GgufModel gguf_model(const GgufFile& f) {
  using detail::gguf_float;
  using detail::gguf_int;
  const GgufMetadata& md = f.metadata();
  const std::string src = f.path().string();
  const std::string arch(md.get_string("general.architecture"));
  if (!gguf_keys::in(gguf_keys::architectures, arch))
    throw make_error(src, "key 'general.architecture'",
                     "\"" + arch + "\" is not supported (ropex runs llama, qwen2, qwen3, phi3)");
  gguf_keys::check(md, arch);
  const std::string a = arch + ".";
  auto has_tensor = [&](const std::string& n) { return f.find(n) != nullptr; };

  GgufModel m;
  LlamaConfig& c = m.config;
  c.model_type = arch;
  c.family = arch == "qwen2" ? ModelFamily::qwen2 : arch == "qwen3" ? ModelFamily::qwen3
           : arch == "phi3"  ? ModelFamily::phi3  : ModelFamily::llama;

  constexpr int64_t kMaxDim = int64_t(1) << 20;
  c.num_hidden_layers = gguf_int(md, a + "block_count", 1, 4096);
  c.hidden_size = gguf_int(md, a + "embedding_length", 1, kMaxDim);
  c.intermediate_size = gguf_int(md, a + "feed_forward_length", 1, kMaxDim);
  c.num_attention_heads = gguf_int(md, a + "attention.head_count", 1, 4096);
  c.num_key_value_heads = gguf_int(md, a + "attention.head_count_kv", 1, c.num_attention_heads, c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw make_error(src, "key '" + a + "attention.head_count_kv'",
                     std::to_string(c.num_key_value_heads) + " does not divide attention.head_count " +
                         std::to_string(c.num_attention_heads));
  // head_dim: attention.key_length, else embedding_length / head_count (llama.cpp's n_embd_head_k).
  if (md.contains(a + "attention.key_length")) {
    c.head_dim = gguf_int(md, a + "attention.key_length", 2, 1 << 16);
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      throw make_error(src, "key '" + a + "attention.head_count'",
                       std::to_string(c.num_attention_heads) + " does not divide embedding_length " +
                           std::to_string(c.hidden_size) + " (and there is no attention.key_length)");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0)
    throw make_error(src, "key '" + a + "attention.key_length'", "head dim must be even for RoPE, got " + std::to_string(c.head_dim));
  if (md.contains(a + "attention.value_length") && gguf_int(md, a + "attention.value_length", 1, 1 << 16) != c.head_dim)
    throw make_error(src, "key '" + a + "attention.value_length'",
                     "must equal the key length " + std::to_string(c.head_dim) + " (ropex's attention uses one head dim)");
  c.max_position_embeddings = gguf_int(md, a + "context_length", 1, int64_t(1) << 40);
  c.rms_norm_eps = gguf_float(md, a + "attention.layer_norm_rms_epsilon");
  if (!(c.rms_norm_eps > 0.0 && c.rms_norm_eps < 1.0))
    throw make_error(src, "key '" + a + "attention.layer_norm_rms_epsilon'", "must be in (0, 1), got " + std::to_string(c.rms_norm_eps));

  // ---- vocabulary and special tokens
  if (md.contains("tokenizer.ggml.tokens")) {
    c.vocab_size = int64_t(md.get_string_array("tokenizer.ggml.tokens").size());
    if (c.vocab_size < 1) throw make_error(src, "key 'tokenizer.ggml.tokens'", "is empty");
    if (md.contains(a + "vocab_size") && gguf_int(md, a + "vocab_size", 1, INT32_MAX) != c.vocab_size)
      throw make_error(src, "key '" + a + "vocab_size'",
                       std::to_string(md.get_i64(a + "vocab_size")) + " differs from the " + std::to_string(c.vocab_size) +
                           " entries of tokenizer.ggml.tokens");
  } else {
    c.vocab_size = gguf_int(md, a + "vocab_size", 1, INT32_MAX);
  }
  auto token_id = [&](const std::string& key) -> int64_t {
    if (!md.contains(key)) return -1;
    return gguf_int(md, key, 0, c.vocab_size - 1);
  };
  c.bos_token_id = token_id("tokenizer.ggml.bos_token_id");
  c.eos_token_ids.clear();
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
    if (const int64_t id = token_id(k); id >= 0 && std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end())
      c.eos_token_ids.push_back(id);
  c.eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids[0];
  c.tie_word_embeddings = !has_tensor("output.weight");

  // ---- what the family changes; biases follow the tensors present (checked per layer later)
  switch (c.family) {
    case ModelFamily::qwen2: c.qkv_bias = true; break;
    case ModelFamily::qwen3:
      c.qk_norm = true;
      c.qkv_bias = has_tensor("blk.0.attn_q.bias");
      c.o_bias = has_tensor("blk.0.attn_output.bias");
      break;
    case ModelFamily::phi3: c.fused_qkv = true; break;
    default:
      c.qkv_bias = has_tensor("blk.0.attn_q.bias");
      c.o_bias = has_tensor("blk.0.attn_output.bias");
      c.mlp_bias = has_tensor("blk.0.ffn_gate.bias");
      break;
  }
  // llama.cpp's rope mode: NORM (interleaved pairs) for llama, NEOX (half split) for the rest.
  c.rope_layout = c.family == ModelFamily::llama ? RopeLayout::interleaved : RopeLayout::half;

  // ---- sliding window
  if (md.contains(a + "attention.sliding_window")) {
    const int64_t w = gguf_int(md, a + "attention.sliding_window", 0, int64_t(1) << 40);
    if (w > 0) {
      if (c.family != ModelFamily::phi3)
        throw make_error(src, "key '" + a + "attention.sliding_window'",
                         std::to_string(w) + ": a sliding window is honoured for phi3 only (llama.cpp's " + arch +
                             " graph has no window, HF's has one)");
      c.layer_window.assign(size_t(c.num_hidden_layers), w);
    }
  }
  for (const char* k : {"expert_count", "expert_used_count"})
    if (md.contains(a + k) && md.get_i64(a + k) != 0)
      throw make_error(src, "key '" + a + k + "'", "mixture-of-experts models are not supported");

  // ---- RoPE
  RopeScaling& r = c.rope;
  r.base = gguf_float(md, a + "rope.freq_base", 10000.0);
  if (!(r.base > 1.0)) throw make_error(src, "key '" + a + "rope.freq_base'", "must be > 1, got " + std::to_string(r.base));
  r.max_position_embeddings = c.max_position_embeddings;
  const int64_t n_rot = gguf_int(md, a + "rope.dimension_count", 2, c.head_dim, c.head_dim);
  if (n_rot % 2 != 0)
    throw make_error(src, "key '" + a + "rope.dimension_count'", "must be even, got " + std::to_string(n_rot));
  r.partial_rotary_factor = double(n_rot) / double(c.head_dim);
  if (c.rotary_dim() != n_rot)  // HF's int(head_dim * factor) must give n_rot back
    r.partial_rotary_factor = std::nextafter(r.partial_rotary_factor, 2.0);
  if (c.rotary_dim() != n_rot)
    throw make_error(src, "key '" + a + "rope.dimension_count'", "cannot be represented as a rotary fraction of the head");
  const std::string type_key = a + "rope.scaling.type";
  const std::string type = md.contains(type_key) ? std::string(md.get_string(type_key)) : "none";
  auto orig_ctx = [&] { return gguf_int(md, a + "rope.scaling.original_context_length", 1, int64_t(1) << 40); };
  auto factor = [&] {
    const double v = gguf_float(md, a + "rope.scaling.factor");
    if (!(v > 0)) throw make_error(src, "key '" + a + "rope.scaling.factor'", "must be > 0, got " + std::to_string(v));
    return v;
  };
  const bool phi3_factors = c.family == ModelFamily::phi3 && (has_tensor("rope_factors_long.weight") || has_tensor("rope_factors_short.weight"));
  if (phi3_factors && type != "none" && type != "longrope")
    throw make_error(src, "key '" + type_key + "'", "\"" + type + "\" next to LongRoPE factor tensors");
  if (phi3_factors) {
    // Phi-3 LongRoPE (convert_hf_to_gguf.py Phi3MiniModel): the short and long per-pair factors as
    // tensors, the pre-training context as original_context_length, the target as context_length.
    r.type = RopeType::longrope;
    r.original_max_position_embeddings = orig_ctx();
    r.short_factor = detail::gguf_vector(f.tensor("rope_factors_short.weight"), n_rot / 2);
    r.long_factor = detail::gguf_vector(f.tensor("rope_factors_long.weight"), n_rot / 2);
  } else if (type == "none") {
    if (md.contains(a + "rope.scaling.factor") && factor() != 1.0)
      throw make_error(src, "key '" + a + "rope.scaling.factor'", "set without rope.scaling.type");
  } else if (type == "linear") {
    r.type = RopeType::linear;
    r.factor = factor();
  } else if (type == "yarn") {
    r.type = RopeType::yarn;
    r.factor = factor();
    r.original_max_position_embeddings = orig_ctx();
    r.beta_fast = gguf_float(md, a + "rope.scaling.yarn_beta_fast", 32.0);
    r.beta_slow = gguf_float(md, a + "rope.scaling.yarn_beta_slow", 1.0);
  } else {
    throw make_error(src, "key '" + type_key + "'",
                     "\"" + type + "\" is not supported (none, linear, yarn; phi3 LongRoPE by its factor tensors)");
  }
  if (r.type != RopeType::yarn)
    for (const char* k : {"rope.scaling.yarn_beta_fast", "rope.scaling.yarn_beta_slow"})
      if (md.contains(a + k)) throw make_error(src, "key '" + a + k + "'", "set without rope.scaling.type yarn");
  if (has_tensor("rope_freqs.weight")) {
    // Llama 3.1 (convert_hf_to_gguf.py LlamaModel.generate_extra_tensors): one divisor per pair,
    // theta_i = base^(-2i/d) / rope_freqs[i] (llama.cpp's freq_factors). That is LongRoPE's
    // formula with the same list short and long and no attention factor.
    if (c.family != ModelFamily::llama || r.type != RopeType::default_rope)
      throw make_error(src, "tensor 'rope_freqs.weight'", "per-pair frequency factors are supported for llama with no rope.scaling.type");
    r.type = RopeType::longrope;
    r.short_factor = r.long_factor = detail::gguf_vector(f.tensor("rope_freqs.weight"), n_rot / 2);
    r.original_max_position_embeddings = c.max_position_embeddings;
    r.attention_factor_override = 1.0;
  }
  if (const std::string k = a + "rope.scaling.attn_factor"; md.contains(k)) {
    const double v = gguf_float(md, k);
    const double want = r.type == RopeType::longrope ? r.attention_factor(c.max_position_embeddings) : 1.0;
    if (std::abs(v - want) > 1e-6 * std::max(1.0, std::abs(want)))
      throw make_error(src, "key '" + k + "'",
                       std::to_string(v) + " differs from the attention factor " + std::to_string(want) +
                           " ropex computes for this rope (" + std::string(to_string(r.type)) + "); not supported");
  }
  r.validate(src);  // the same ranges as a config.json (RopeBounds): a factor of 1e-310 is no scaling

  // ---- tensors under HF names
  const bool phi3 = c.family == ModelFamily::phi3;
  for (const GgufTensor& t : f.tensors()) {
    const std::string& g = t.name;
    if (g == "rope_factors_long.weight" || g == "rope_factors_short.weight" || g == "rope_freqs.weight") {
      if (g == "rope_freqs.weight" ? c.family != ModelFamily::llama : !phi3)
        throw make_error(src, "tensor '" + g + "'", "not used by architecture " + arch);
      continue;  // read into the rope above
    }
    std::string hf;
    if (g == "token_embd.weight") hf = "model.embed_tokens.weight";
    else if (g == "output_norm.weight") hf = "model.norm.weight";
    else if (g == "output.weight") hf = "lm_head.weight";
    else if (g.starts_with("blk.")) {
      const auto dot = g.find('.', 4);
      const std::string n = dot == std::string::npos ? "" : g.substr(4, dot - 4);
      const bool number = !n.empty() && n.size() < 6 && std::all_of(n.begin(), n.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
      if (!number || std::stoll(n) >= c.num_hidden_layers)
        throw make_error(src, "tensor '" + g + "'",
                         "block number outside block_count " + std::to_string(c.num_hidden_layers));
      const std::string rest = g.substr(dot + 1);  // "attn_q.weight"
      const auto sep = rest.rfind('.');
      const std::string base = rest.substr(0, sep), suffix = sep == std::string::npos ? "" : rest.substr(sep);
      static const std::map<std::string, std::string, std::less<>> names{
          {"attn_norm", "input_layernorm"},  {"ffn_norm", "post_attention_layernorm"},
          {"attn_q", "self_attn.q_proj"},    {"attn_k", "self_attn.k_proj"},
          {"attn_v", "self_attn.v_proj"},    {"attn_output", "self_attn.o_proj"},
          {"attn_q_norm", "self_attn.q_norm"}, {"attn_k_norm", "self_attn.k_norm"},
          {"ffn_gate", "mlp.gate_proj"},     {"ffn_up", "mlp.up_proj"},
          {"ffn_down", "mlp.down_proj"},     {"attn_qkv", "self_attn.qkv_proj"}};
      auto it = names.find(base);
      if (it != names.end() && (suffix == ".weight" || suffix == ".bias")) {
        std::string h = it->second;
        if (phi3 && base == "ffn_up") h = "mlp.gate_up_proj";  // gate|up fused, gate first (ggml_swiglu)
        if (base == "attn_qkv" && !phi3) h.clear();           // fused q|k|v: phi3 only
        if (!h.empty()) hf = "model.layers." + n + "." + h + suffix;
      }
    }
    if (hf.empty())
      throw make_error(src, "tensor '" + g + "'",
                       "not a tensor ropex maps for architecture " + arch + " (the forward would not use it)");
    const auto dt = dtype_from_ggml(t.type);
    if (!dt) throw make_error(src, "tensor '" + g + "'", "type " + quant::ggml_type_label(uint32_t(t.type)) + " is not supported");
    TensorView v;
    v.name = hf;
    v.dtype = *dt;
    v.shape.assign(t.ne.rbegin(), t.ne.rend());  // ggml ne [in, out] -> HF [out, in]
    v.data = t.data;
    v.nbytes = t.nbytes;
    v.source = src;
    m.gguf_name[hf] = g;
    m.tensors.push_back(std::move(v));
  }
  return m;
}

}  // namespace ropex::model
