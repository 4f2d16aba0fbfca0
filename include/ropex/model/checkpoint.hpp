// Checkpoint: a LLaMA model's config and weights, opened from disk without copying them.
//   HF directory:  config.json + model.safetensors, or + model.safetensors.index.json and shards
//   llama2.c file: *.bin (legacy or version-1 header)
// Tensors are always exposed under Hugging Face LLaMA names; open() checks every tensor the
// config implies is present with its expected shape, so the model can index weights blindly.
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/mapped_file.hpp>
#include <ropex/model/config.hpp>
#include <ropex/model/llama2c.hpp>
#include <ropex/model/safetensors.hpp>
#include <ropex/model/tensor.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ropex::model {

/// A tensor name and the shape the config implies for it.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

/// Every weight a LLaMA forward pass reads, with HF names and shapes (lm_head only when untied):
///   embed_tokens [vocab, hidden]; per layer: input_layernorm [hidden], q_proj [heads*head_dim, hidden],
///   k_proj, v_proj [kv_heads*head_dim, hidden], o_proj [hidden, heads*head_dim],
///   post_attention_layernorm [hidden], gate_proj, up_proj [inter, hidden], down_proj [hidden, inter];
///   norm [hidden]; lm_head [vocab, hidden].
inline std::vector<ExpectedTensor> expected_tensors(const LlamaConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim,
                f = c.intermediate_size, v = c.vocab_size;
  std::vector<ExpectedTensor> e;
  e.push_back({"model.embed_tokens.weight", {v, h}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    e.push_back({p + "input_layernorm.weight", {h}});
    e.push_back({p + "self_attn.q_proj.weight", {q, h}});
    e.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    e.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    e.push_back({p + "self_attn.o_proj.weight", {h, q}});
    e.push_back({p + "post_attention_layernorm.weight", {h}});
    e.push_back({p + "mlp.gate_proj.weight", {f, h}});
    e.push_back({p + "mlp.up_proj.weight", {f, h}});
    e.push_back({p + "mlp.down_proj.weight", {h, f}});
  }
  e.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) e.push_back({"lm_head.weight", {v, h}});
  return e;
}

class Checkpoint {
 public:
  /// Opens an HF model directory or a llama2.c .bin file. Throws ropex::Error naming the file and
  /// field/tensor for anything malformed, missing, or of the wrong shape.
  static Checkpoint open(const std::filesystem::path& p) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) throw make_error(p.string(), "", "no such file or directory");
    Checkpoint ck;
    ck.path_ = p;
    if (fs::is_directory(st)) {
      ck.open_hf_dir(p);
    } else if (p.extension() == ".bin") {
      auto f = load_llama2c(p);
      ck.config_ = f.model.config;
      for (auto& t : f.model.tensors) ck.add(std::move(t), p.string());
      ck.files_.push_back(std::move(f.file));
      ck.format_ = "llama2.c";
      ck.weights_source_ = p.string();
    } else {
      throw make_error(p.string(), "",
                       "expected a Hugging Face model directory (config.json + model.safetensors) or a "
                       "llama2.c .bin checkpoint");
    }
    ck.check_expected();
    return ck;
  }

  const LlamaConfig& config() const { return config_; }
  LlamaConfig& config() { return config_; }  ///< mutable: the CLI overrides rope settings

  bool has(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

  /// The tensor called `name`; throws ropex::Error naming the checkpoint and tensor if absent.
  const TensorView& tensor(std::string_view name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end())
      throw make_error(weights_source_, "tensor '" + std::string(name) + "'", "not in checkpoint");
    return it->second;
  }

  /// All tensors by name (including ones the model does not use).
  const std::map<std::string, TensorView, std::less<>>& tensors() const { return tensors_; }
  const std::filesystem::path& path() const { return path_; }
  /// "safetensors" or "llama2.c".
  const std::string& format() const { return format_; }

 private:
  void open_hf_dir(const std::filesystem::path& dir) {
    namespace fs = std::filesystem;
    const auto cfg_path = dir / "config.json";
    if (!fs::is_regular_file(cfg_path)) throw make_error(dir.string(), "config.json", "not found");
    nlohmann::json cj;
    {
      std::ifstream in(cfg_path, std::ios::binary);
      if (!in) throw make_error(cfg_path.string(), "", "cannot open");
      try {
        cj = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        throw make_error(cfg_path.string(), "", std::string("invalid JSON: ") + e.what());
      }
    }
    config_ = LlamaConfig::from_json(cj, cfg_path.string());
    format_ = "safetensors";
    const auto single = dir / "model.safetensors";
    const auto index = dir / "model.safetensors.index.json";
    if (fs::is_regular_file(single)) {
      shards_.push_back(SafetensorsFile::open(single));
      weights_source_ = single.string();
    } else if (fs::is_regular_file(index)) {
      shards_ = open_safetensors_index(index);
      weights_source_ = index.string();
    } else {
      throw make_error(dir.string(), "model.safetensors", "not found (nor model.safetensors.index.json)");
    }
    for (const auto& s : shards_)
      for (const auto& t : s.tensors()) add(t, s.path().string());
  }

  void add(TensorView t, const std::string& src) {
    const std::string name = t.name;
    if (!tensors_.emplace(name, std::move(t)).second) throw make_error(src, "tensor '" + name + "'", "appears twice");
  }

  void check_expected() const {
    for (const auto& e : expected_tensors(config_)) {
      auto it = tensors_.find(e.name);
      if (it == tensors_.end())
        throw make_error(weights_source_, "tensor '" + e.name + "'",
                         "missing (expected shape " + shape_string(e.shape) + ")");
      if (it->second.shape != e.shape)
        throw make_error(it->second.source, "tensor '" + e.name + "'",
                         "shape " + shape_string(it->second.shape) + " does not match " + shape_string(e.shape) +
                             " implied by the config");
    }
    // A tied checkpoint may still carry lm_head (some exporters save it); it must then fit too.
    if (config_.tie_word_embeddings)
      if (auto it = tensors_.find("lm_head.weight"); it != tensors_.end()) {
        const std::vector<int64_t> want{config_.vocab_size, config_.hidden_size};
        if (it->second.shape != want)
          throw make_error(it->second.source, "tensor 'lm_head.weight'",
                           "shape " + shape_string(it->second.shape) + " does not match " + shape_string(want));
      }
  }

  std::filesystem::path path_;
  std::string format_;
  std::string weights_source_;  // the file named when a tensor is missing
  LlamaConfig config_;
  std::vector<io::MappedFile> files_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, TensorView, std::less<>> tensors_;
};

}  // namespace ropex::model
