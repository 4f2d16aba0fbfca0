// Which config.json keys ropex honours, which it may skip, per model_type — the guard behind
// "no key that changes the math is ignored". A key in neither list is an error naming it: a
// checkpoint from a newer or different architecture is refused, never run with a key dropped.
//
// The lists follow transformers' config classes (LlamaConfig, MistralConfig, Qwen2Config,
// Qwen3Config, Phi3Config) and PretrainedConfig's generic fields; docs/models.md prints them.
#pragma once
#include <ropex/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <string>
#include <string_view>

namespace ropex::model::config_keys {

/// Read by every family (LlamaConfig::from_json and rope_scaling_from_config).
inline constexpr std::array<std::string_view, 17> common_honoured{
    "model_type",    "vocab_size",          "hidden_size",          "intermediate_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
    "rms_norm_eps",  "tie_word_embeddings", "bos_token_id",         "eos_token_id",
    "hidden_act",    "rope_theta",          "rope_scaling",         "rope_parameters",
    "partial_rotary_factor"};

/// Keys only some families' HF classes read. The forward honours them for these families:
struct FamilyKeys {
  std::string_view model_type;
  std::array<std::string_view, 8> honoured;  // empty entries unused
};
inline constexpr std::array<FamilyKeys, 5> family_honoured{{
    {"llama", {"head_dim", "attention_bias", "mlp_bias"}},
    {"mistral", {"head_dim", "sliding_window"}},
    {"qwen2", {"use_sliding_window", "sliding_window", "max_window_layers", "layer_types"}},
    {"qwen3", {"head_dim", "attention_bias", "use_sliding_window", "sliding_window", "max_window_layers",
               "layer_types"}},
    {"phi3", {"sliding_window", "original_max_position_embeddings"}},
}};

/// Keys that never change a forward pass in inference (training, generation defaults, export
/// metadata), or that transformers itself ignores for these families. Skipped silently.
inline constexpr std::array<std::string_view, 52> skippable{
    // export / loading metadata
    "architectures", "torch_dtype", "dtype", "transformers_version", "_name_or_path", "auto_map",
    "_attn_implementation", "_attn_implementation_autoset", "model_name", "name_or_path",
    // inference switches with no effect on the logits
    "use_cache", "output_attentions", "output_hidden_states", "return_dict", "use_return_dict", "torchscript",
    // training only
    "initializer_range", "attention_dropout", "resid_pdrop", "embd_pdrop", "hidden_dropout", "dropout",
    "tie_encoder_decoder", "gradient_checkpointing", "use_bfloat16", "tf_legacy_loss", "pruned_heads",
    // Llama's tensor-parallel pre-training slice count: HF no longer reads it (numerics only)
    "pretraining_tp",
    // token ids the forward never uses
    "pad_token_id", "sep_token_id", "decoder_start_token_id",
    // task heads and tokenizer hints (not the causal-LM forward)
    "id2label", "label2id", "num_labels", "problem_type", "finetuning_task", "tokenizer_class", "prefix",
    "task_specific_params",
    // generation defaults (sampling settings, not the model)
    "max_length", "min_length", "do_sample", "temperature", "top_k", "top_p", "num_beams",
    "repetition_penalty",
    // decoder-only already; the flags only restate it
    "is_decoder", "is_encoder_decoder", "add_cross_attention",
    // nanotron exports (SmolLM): transformers ignores both; the stored weights are in HF's layout
    "is_llama_config", "rope_interleaved"};

/// Keys with a specific reason to refuse (the message says why), checked before the generic one.
inline const char* refusal_reason(std::string_view key) {
  if (key == "quantization_config") return "quantized HF checkpoints (GPTQ/AWQ/bitsandbytes...) are not supported";
  if (key == "attn_logit_softcapping" || key == "final_logit_softcapping") return "logit softcapping is not supported";
  if (key == "text_config") return "multimodal configs are not supported (the text model's config is nested)";
  if (key == "kv_lora_rank" || key == "q_lora_rank" || key == "qk_rope_head_dim")
    return "multi-head latent attention (DeepSeek MLA) is not supported";
  if (key == "use_mrope" || key == "mrope_section") return "multimodal RoPE (mrope) is not supported";
  if (key == "sliding_window_pattern") return "alternating local/global layers are not supported";
  return nullptr;
}

inline bool is_known_model_type(std::string_view t) {
  return std::any_of(family_honoured.begin(), family_honoured.end(), [&](const auto& f) { return f.model_type == t; });
}

/// Throws for the first key of `j` that `model_type` neither honours nor may skip.
inline void check(const nlohmann::json& j, std::string_view model_type, std::string_view source) {
  const FamilyKeys* fam = nullptr;
  for (const auto& f : family_honoured)
    if (f.model_type == model_type) fam = &f;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    auto in = [&](const auto& list) { return std::find(list.begin(), list.end(), k) != list.end(); };
    if (in(common_honoured) || (fam && in(fam->honoured)) || in(skippable)) continue;
    // Generic PretrainedConfig values that only matter when set (null/false/empty: nothing to do).
    if (it->is_null() || (it->is_boolean() && !it->get<bool>())) continue;
    if (const char* why = refusal_reason(k)) throw make_error(source, k, why);
    throw make_error(source, k,
                     "not a key ropex honours for model_type \"" + std::string(model_type) +
                         "\"; it may change the forward, so the model is refused (docs/models.md lists the keys)");
  }
}

}  // namespace ropex::model::config_keys
