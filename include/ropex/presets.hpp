// Built-in model presets for the scaling laws: the RoPE facts of well-known checkpoints.
//
// Each preset records the two stages the paper's Theorem 3 talks about: pre-training at T_train with
// base beta_pt, then (optionally) continued training at T_tune with base beta. A model trained from
// scratch with its final base has beta = beta_pt and T_tune = T_train. Values come from each model's
// Hugging Face config.json and its paper; ../docs/presets.md cites every number.
#pragma once
#include <ropex/error.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ropex {

struct ModelPreset {
  std::string_view name;             ///< CLI name, e.g. "llama2-7b"
  std::string_view hf_id;            ///< Hugging Face repository the config values come from
  int head_dim;                      ///< rotary dims per head (hidden_size / num_attention_heads)
  double train_len;                  ///< T_train: pre-training context
  double pretrain_base;              ///< beta_pt: base during pre-training
  double base;                       ///< beta: base of the released model (rope_theta)
  double tune_len;                   ///< T_tune: continued-training context (= train_len if none)
  std::int64_t max_position_embeddings;  ///< config.json max_position_embeddings
  std::string_view scaling;          ///< HF rope_type of the released model ("default", "llama3")
  double factor;                     ///< rope_scaling.factor (1 when none)
  std::string_view note;             ///< one line: where the numbers come from
};

/// All built-in presets (docs/presets.md lists the sources).
inline constexpr std::array<ModelPreset, 9> model_presets{{
    {"llama2-7b", "meta-llama/Llama-2-7b-hf", 128, 4096, 10000, 10000, 4096, 4096, "default", 1,
     "Touvron et al. 2023 (arXiv 2307.09288): 4K context, base 10000"},
    {"llama2-13b", "meta-llama/Llama-2-13b-hf", 128, 4096, 10000, 10000, 4096, 4096, "default", 1,
     "Touvron et al. 2023: 4K context; hidden 5120 / 40 heads"},
    {"llama2-70b", "meta-llama/Llama-2-70b-hf", 128, 4096, 10000, 10000, 4096, 4096, "default", 1,
     "Touvron et al. 2023: 4K context; hidden 8192 / 64 heads"},
    {"codellama-7b", "codellama/CodeLlama-7b-hf", 128, 4096, 10000, 1000000, 16384, 16384, "default", 1,
     "Roziere et al. 2023 (arXiv 2308.12950) sec. 2.4: from Llama 2, tuned at 16K with base 1e6"},
    {"llama2-long", "(not released; Llama 2 Long 7B)", 128, 4096, 10000, 500000, 32768, 32768, "default", 1,
     "Xiong et al. 2023 (arXiv 2309.16039): RoPE ABF base 500000, 7B/13B continued at 32K"},
    {"llama3-8b", "meta-llama/Meta-Llama-3-8B", 128, 8192, 500000, 500000, 8192, 8192, "default", 1,
     "Meta Llama 3 (2024): pre-trained at 8K with rope_theta 500000"},
    {"llama3.1-8b", "meta-llama/Llama-3.1-8B", 128, 8192, 500000, 500000, 131072, 131072, "llama3", 8,
     "Llama 3 herd (arXiv 2407.21783): 8K pre-training, long-context stage to 128K, llama3 scaling x8"},
    {"mistral-7b", "mistralai/Mistral-7B-v0.1", 128, 8192, 10000, 10000, 8192, 32768, "default", 1,
     "Jiang et al. 2023 (arXiv 2310.06825) Table 1: context_len 8192, base 10000 (sliding window 4096)"},
    {"qwen2-7b", "Qwen/Qwen2-7B", 128, 4096, 10000, 1000000, 32768, 131072, "default", 1,
     "Qwen2 report (arXiv 2407.10671), long-context training: 4K -> 32K at the end of pre-training, base 1e4 -> 1e6"},
}};

/// Comma-separated preset names, for help text and error messages.
inline std::string model_preset_names() {
  std::string s;
  for (const auto& p : model_presets) {
    if (!s.empty()) s += ", ";
    s += p.name;
  }
  return s;
}

/// The preset called `name`; throws ropex::Error listing the valid names otherwise.
inline const ModelPreset& model_preset(std::string_view name) {
  for (const auto& p : model_presets)
    if (p.name == name) return p;
  throw make_error("--model", name, "unknown model preset; valid: " + model_preset_names());
}

}  // namespace ropex
