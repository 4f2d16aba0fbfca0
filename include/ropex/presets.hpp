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
  int head_dim;                      ///< ROTARY dims per head: the law's d (partial rotary / MLA: the rope part)
  double train_len;                  ///< T_train: pre-training context
  double pretrain_base;              ///< beta_pt: base during pre-training
  double base;                       ///< beta: base of the released model (rope_theta)
  double tune_len;                   ///< T_tune: continued-training context (= train_len if none)
  std::int64_t max_position_embeddings;  ///< config.json max_position_embeddings
  std::string_view scaling;          ///< HF rope_type of the released model ("default", "llama3")
  double factor;                     ///< rope_scaling.factor (1 when none)
  std::string_view note;             ///< one line: where the numbers come from
  std::string_view source;           ///< short citation of T_train / beta_pt / T_tune (shown as the origin)
  // The released config.json's shape, to recognise a config as this model ("" / 0: no public
  // config, never matched). A config matches when every one of these and the rope settings agree.
  std::string_view model_type;
  int hidden_size, num_attention_heads, num_key_value_heads, num_hidden_layers, vocab_size;
};

/// All built-in presets (docs/presets.md lists the sources).
inline constexpr auto model_presets = std::to_array<ModelPreset>({
    // name, hf_id, d, T_train, beta_pt, beta, T_tune, max_pos, scaling, factor, note, source,
    // model_type, hidden, heads, kv_heads, layers, vocab
    {"llama2-7b", "meta-llama/Llama-2-7b-hf", 128, 4096, 10000, 10000, 4096, 4096, "default", 1,
     "Touvron et al. 2023 (arXiv 2307.09288): 4K context, base 10000", "Llama 2 report, arXiv 2307.09288 sec. 2.2",
     "llama", 4096, 32, 32, 32, 32000},
    {"llama2-13b", "meta-llama/Llama-2-13b-hf", 128, 4096, 10000, 10000, 4096, 4096, "default", 1,
     "Touvron et al. 2023: 4K context; hidden 5120 / 40 heads", "Llama 2 report, arXiv 2307.09288 sec. 2.2",
     "llama", 5120, 40, 40, 40, 32000},
    {"llama2-70b", "meta-llama/Llama-2-70b-hf", 128, 4096, 10000, 10000, 4096, 4096, "default", 1,
     "Touvron et al. 2023: 4K context; hidden 8192 / 64 heads", "Llama 2 report, arXiv 2307.09288 sec. 2.2",
     "llama", 8192, 64, 8, 80, 32000},
    {"codellama-7b", "codellama/CodeLlama-7b-hf", 128, 4096, 10000, 1000000, 16384, 16384, "default", 1,
     "Roziere et al. 2023 (arXiv 2308.12950) sec. 2.4: from Llama 2, tuned at 16K with base 1e6",
     "Code Llama report, arXiv 2308.12950 sec. 2.4", "llama", 4096, 32, 32, 32, 32016},
    {"llama2-long", "(not released; Llama 2 Long 7B)", 128, 4096, 10000, 500000, 32768, 32768, "default", 1,
     "Xiong et al. 2023 (arXiv 2309.16039): RoPE ABF base 500000, 7B/13B continued at 32K",
     "Llama 2 Long, arXiv 2309.16039", "", 0, 0, 0, 0, 0},
    {"llama3-8b", "meta-llama/Meta-Llama-3-8B", 128, 8192, 500000, 500000, 8192, 8192, "default", 1,
     "Meta Llama 3 (2024): pre-trained at 8K with rope_theta 500000",
     "Llama 3 herd, arXiv 2407.21783 sec. 3.2 (Table 3) and 3.4", "llama", 4096, 32, 8, 32, 128256},
    {"llama3-70b", "meta-llama/Meta-Llama-3-70B", 128, 8192, 500000, 500000, 8192, 8192, "default", 1,
     "Meta Llama 3 (2024): pre-trained at 8K with rope_theta 500000; hidden 8192 / 64 heads",
     "Llama 3 herd, arXiv 2407.21783 sec. 3.2 (Table 3) and 3.4", "llama", 8192, 64, 8, 80, 128256},
    {"llama3.1-8b", "meta-llama/Llama-3.1-8B", 128, 8192, 500000, 500000, 131072, 131072, "llama3", 8,
     "Llama 3 herd (arXiv 2407.21783): 8K pre-training, long-context stage to 128K, llama3 scaling x8",
     "Llama 3 herd, arXiv 2407.21783 sec. 3.4.2", "llama", 4096, 32, 8, 32, 128256},
    {"llama3.1-70b", "meta-llama/Llama-3.1-70B", 128, 8192, 500000, 500000, 131072, 131072, "llama3", 8,
     "Llama 3 herd (arXiv 2407.21783): 8K pre-training, long-context stage to 128K, llama3 scaling x8",
     "Llama 3 herd, arXiv 2407.21783 sec. 3.4.2", "llama", 8192, 64, 8, 80, 128256},
    {"mistral-7b", "mistralai/Mistral-7B-v0.1", 128, 8192, 10000, 10000, 8192, 32768, "default", 1,
     "Jiang et al. 2023 (arXiv 2310.06825) Table 1: context_len 8192, base 10000 (sliding window 4096)",
     "Mistral 7B report, arXiv 2310.06825 Table 1", "mistral", 4096, 32, 8, 32, 32000},
    {"qwen2-0.5b", "Qwen/Qwen2-0.5B", 64, 4096, 10000, 1000000, 32768, 131072, "default", 1,
     "Qwen2 report (arXiv 2407.10671), long-context training: 4K -> 32K, base 1e4 -> 1e6",
     "Qwen2 report, arXiv 2407.10671, long-context training", "qwen2", 896, 14, 2, 24, 151936},
    {"qwen2-1.5b", "Qwen/Qwen2-1.5B", 128, 4096, 10000, 1000000, 32768, 131072, "default", 1,
     "Qwen2 report (arXiv 2407.10671), long-context training: 4K -> 32K, base 1e4 -> 1e6",
     "Qwen2 report, arXiv 2407.10671, long-context training", "qwen2", 1536, 12, 2, 28, 151936},
    {"qwen2-7b", "Qwen/Qwen2-7B", 128, 4096, 10000, 1000000, 32768, 131072, "default", 1,
     "Qwen2 report (arXiv 2407.10671), long-context training: 4K -> 32K at the end of pre-training, base 1e4 -> 1e6",
     "Qwen2 report, arXiv 2407.10671, long-context training", "qwen2", 3584, 28, 4, 28, 152064},
    {"qwen2-72b", "Qwen/Qwen2-72B", 128, 4096, 10000, 1000000, 32768, 131072, "default", 1,
     "Qwen2 report (arXiv 2407.10671), long-context training: 4K -> 32K, base 1e4 -> 1e6",
     "Qwen2 report, arXiv 2407.10671, long-context training", "qwen2", 8192, 64, 8, 80, 152064},
    {"qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", 64, 4096, 10000, 1000000, 32768, 32768, "default", 1,
     "Qwen2.5 report (arXiv 2412.15115) sec. 3.3: 4K, then 32K at the end of pre-training with base 1e4 -> 1e6 (ABF)",
     "Qwen2.5 report, arXiv 2412.15115 sec. 3.3", "qwen2", 896, 14, 2, 24, 151936},
    {"qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B", 128, 4096, 10000, 1000000, 32768, 131072, "default", 1,
     "Qwen2.5 report (arXiv 2412.15115) sec. 3.3: 4K, then 32K with base 1e4 -> 1e6 (ABF)",
     "Qwen2.5 report, arXiv 2412.15115 sec. 3.3", "qwen2", 1536, 12, 2, 28, 151936},
    {"qwen2.5-3b", "Qwen/Qwen2.5-3B", 128, 4096, 10000, 1000000, 32768, 32768, "default", 1,
     "Qwen2.5 report (arXiv 2412.15115) sec. 3.3: 4K, then 32K with base 1e4 -> 1e6 (ABF)",
     "Qwen2.5 report, arXiv 2412.15115 sec. 3.3", "qwen2", 2048, 16, 2, 36, 151936},
    {"qwen2.5-7b", "Qwen/Qwen2.5-7B", 128, 4096, 10000, 1000000, 32768, 131072, "default", 1,
     "Qwen2.5 report (arXiv 2412.15115) sec. 3.3: 4K, then 32K with base 1e4 -> 1e6 (ABF)",
     "Qwen2.5 report, arXiv 2412.15115 sec. 3.3", "qwen2", 3584, 28, 4, 28, 152064},
    {"qwen2.5-14b", "Qwen/Qwen2.5-14B", 128, 4096, 10000, 1000000, 32768, 131072, "default", 1,
     "Qwen2.5 report (arXiv 2412.15115) sec. 3.3: 4K, then 32K with base 1e4 -> 1e6 (ABF)",
     "Qwen2.5 report, arXiv 2412.15115 sec. 3.3", "qwen2", 5120, 40, 8, 48, 152064},
    {"qwen2.5-32b", "Qwen/Qwen2.5-32B", 128, 4096, 10000, 1000000, 32768, 131072, "default", 1,
     "Qwen2.5 report (arXiv 2412.15115) sec. 3.3: 4K, then 32K with base 1e4 -> 1e6 (ABF)",
     "Qwen2.5 report, arXiv 2412.15115 sec. 3.3", "qwen2", 5120, 40, 8, 64, 152064},
    {"qwen2.5-72b", "Qwen/Qwen2.5-72B", 128, 4096, 10000, 1000000, 32768, 131072, "default", 1,
     "Qwen2.5 report (arXiv 2412.15115) sec. 3.3: 4K, then 32K with base 1e4 -> 1e6 (ABF)",
     "Qwen2.5 report, arXiv 2412.15115 sec. 3.3", "qwen2", 8192, 64, 8, 80, 152064},
    {"qwen3-0.6b", "Qwen/Qwen3-0.6B", 128, 4096, 10000, 1000000, 32768, 40960, "default", 1,
     "Qwen3 report (arXiv 2505.09388) sec. 3.2: stages 1-2 at 4K, stage 3 at 32K with base 1e4 -> 1e6 (ABF)",
     "Qwen3 report, arXiv 2505.09388 sec. 3.2", "qwen3", 1024, 16, 8, 28, 151936},
    {"qwen3-8b", "Qwen/Qwen3-8B", 128, 4096, 10000, 1000000, 32768, 40960, "default", 1,
     "Qwen3 report (arXiv 2505.09388) sec. 3.2: stages 1-2 at 4K, stage 3 at 32K with base 1e4 -> 1e6 (ABF)",
     "Qwen3 report, arXiv 2505.09388 sec. 3.2", "qwen3", 4096, 32, 8, 36, 151936},
    {"phi3-mini-4k", "microsoft/Phi-3-mini-4k-instruct", 96, 4096, 10000, 10000, 4096, 4096, "default", 1,
     "Phi-3 report (arXiv 2404.14219) sec. 2: default context length 4K; base 10000 from config.json (the report states none)",
     "Phi-3 report, arXiv 2404.14219 sec. 2", "phi3", 3072, 32, 32, 32, 32064},
    {"smollm2-1.7b", "HuggingFaceTB/SmolLM2-1.7B", 64, 2048, 10000, 130000, 8192, 8192, "default", 1,
     "SmolLM2 report (arXiv 2502.02737): pre-trained at 2K with base 10000, context extended to 8K with base 130000",
     "SmolLM2 report, arXiv 2502.02737, context-length extension", "llama", 2048, 32, 32, 24, 49152},
    {"gemma2-2b", "google/gemma-2-2b", 256, 8192, 10000, 10000, 8192, 8192, "default", 1,
     "Gemma 2 report (arXiv 2408.00118) Table 1: 8192-token context, head size 256; base 10000 from config.json",
     "Gemma 2 report, arXiv 2408.00118 Table 1", "gemma2", 2304, 8, 4, 26, 256000},
    {"gemma2-9b", "google/gemma-2-9b", 256, 8192, 10000, 10000, 8192, 8192, "default", 1,
     "Gemma 2 report (arXiv 2408.00118) Table 1: 8192-token context, head size 256; base 10000 from config.json",
     "Gemma 2 report, arXiv 2408.00118 Table 1", "gemma2", 3584, 16, 8, 42, 256000},
    {"deepseek-v2-lite", "deepseek-ai/DeepSeek-V2-Lite", 64, 4096, 10000, 10000, 32768, 163840, "yarn", 40,
     "DeepSeek-V2 report (arXiv 2405.04434) sec. 3.1.4: 4K pre-training, YaRN x40 trained 1000 steps at 32K; rope part of the MLA head 64",
     "DeepSeek-V2 report, arXiv 2405.04434 sec. 3.1.4 and App. B", "deepseek_v2", 2048, 16, 16, 27, 102400},
    {"deepseek-v2", "deepseek-ai/DeepSeek-V2", 64, 4096, 10000, 10000, 32768, 163840, "yarn", 40,
     "DeepSeek-V2 report (arXiv 2405.04434) sec. 3.1.4: 4K pre-training, YaRN x40 trained 1000 steps at 32K; rope part of the MLA head 64",
     "DeepSeek-V2 report, arXiv 2405.04434 sec. 3.1.4", "deepseek_v2", 5120, 128, 128, 60, 102400},
    {"pythia-160m", "EleutherAI/pythia-160m", 16, 2048, 10000, 10000, 2048, 2048, "default", 1,
     "Biderman et al. 2023 (arXiv 2304.01373): 2048-token sequences; rotary_pct 0.25 of head 64, rotary_emb_base 10000",
     "Pythia report, arXiv 2304.01373", "gpt_neox", 768, 12, 12, 12, 50304},
});

/// True when a preset's shape fields are filled, so a config.json can be matched to it.
constexpr bool preset_matchable(const ModelPreset& p) { return !p.model_type.empty() && p.hidden_size > 0; }

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
