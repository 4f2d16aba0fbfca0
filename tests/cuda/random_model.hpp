// A random-weight LLaMA checkpoint (fp32 safetensors + config.json) of a given shape, and random
// token ids: the GPU tests' models where no fixture has the shape (head_dim 128, GQA, many layers).
#pragma once
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace ropex::test {

// Writes a random-weight LLaMA checkpoint (fp32 safetensors + config.json) with the given shape.
// `extra`: config keys added or replaced (a Mistral model: model_type and sliding_window).
inline std::filesystem::path write_random_llama(const std::filesystem::path& dir, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t head_dim,
                            int64_t inter, int64_t layers, int64_t vocab, uint64_t seed,
                            const nlohmann::json& extra = nlohmann::json::object()) {
  std::filesystem::create_directories(dir);
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", hidden},
                        {"intermediate_size", inter}, {"num_hidden_layers", layers}, {"num_attention_heads", heads},
                        {"num_key_value_heads", kv_heads}, {"head_dim", head_dim}, {"vocab_size", vocab},
                        {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
                        {"tie_word_embeddings", false}, {"hidden_act", "silu"}};
  cfg.update(extra);
  std::ofstream(dir / "config.json") << cfg.dump(2);
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes{{"model.embed_tokens.weight", {vocab, hidden}}};
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    shapes.push_back({p + "input_layernorm.weight", {hidden}});
    shapes.push_back({p + "self_attn.q_proj.weight", {heads * head_dim, hidden}});
    shapes.push_back({p + "self_attn.k_proj.weight", {kv_heads * head_dim, hidden}});
    shapes.push_back({p + "self_attn.v_proj.weight", {kv_heads * head_dim, hidden}});
    shapes.push_back({p + "self_attn.o_proj.weight", {hidden, heads * head_dim}});
    shapes.push_back({p + "post_attention_layernorm.weight", {hidden}});
    shapes.push_back({p + "mlp.gate_proj.weight", {inter, hidden}});
    shapes.push_back({p + "mlp.up_proj.weight", {inter, hidden}});
    shapes.push_back({p + "mlp.down_proj.weight", {hidden, inter}});
  }
  shapes.push_back({"model.norm.weight", {hidden}});
  shapes.push_back({"lm_head.weight", {vocab, hidden}});
  std::mt19937_64 gen(seed);
  nlohmann::json header = nlohmann::json::object();
  std::vector<float> data;
  for (const auto& [name, shape] : shapes) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    // Norm weights near 1; embeddings O(1); linear layers uniform with variance 1/fan_in, so
    // activations stay O(1) and the logits spread enough for top-1 to be meaningful.
    const bool norm = shape.size() == 1, emb = name == "model.embed_tokens.weight";
    const float a = norm ? 0.2f : emb ? 1.7f : std::sqrt(3.f / float(shape[1])) * (name == "lm_head.weight" ? 4.f : 1.f);
    std::uniform_real_distribution<float> u(-a, a);
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {data.size() * 4, (data.size() + size_t(n)) * 4}}};
    for (int64_t i = 0; i < n; ++i) data.push_back((norm ? 1.f : 0.f) + u(gen));
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::ofstream out(dir / "model.safetensors", std::ios::binary);
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(h.data(), std::streamsize(h.size()));
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size() * 4));
  return dir;
}

inline std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int32_t> u(0, int32_t(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = u(gen);
  return t;
}

}  // namespace ropex::test
