// Checkpoint: a LLaMA model's config and weights, opened from disk without copying them.
//   HF directory:  config.json + model.safetensors, or + model.safetensors.index.json and shards
//   llama2.c file: *.bin (legacy or version-1 header)
//   GGUF file:     *.gguf (llama.cpp; architectures llama, qwen2, qwen3, phi3; gguf_model.hpp),
//                  quantized tensors kept in their ggml block type
// Tensors are always exposed under Hugging Face LLaMA names; open() checks every tensor the
// config implies is present with its expected shape, so the model can index weights blindly.
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/json_file.hpp>
#include <ropex/io/mapped_file.hpp>
#include <ropex/model/config.hpp>
#include <ropex/model/finite.hpp>
#include <ropex/model/gguf.hpp>
#include <ropex/model/gguf_model.hpp>
#include <ropex/model/llama2c.hpp>
#include <ropex/model/safetensors.hpp>
#include <ropex/model/tensor.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
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

/// Every weight a LLaMA-family forward pass reads, with HF names and shapes (lm_head only when untied):
///   embed_tokens [vocab, hidden]; per layer: input_layernorm [hidden], q_proj [heads*head_dim, hidden],
///   k_proj, v_proj [kv_heads*head_dim, hidden], o_proj [hidden, heads*head_dim],
///   post_attention_layernorm [hidden], gate_proj, up_proj [inter, hidden], down_proj [hidden, inter];
///   norm [hidden]; lm_head [vocab, hidden]. The family's flags add: q/k/v_proj.bias (qkv_bias),
///   o_proj.bias (o_bias), gate/up/down_proj.bias (mlp_bias), q_norm / k_norm [head_dim] (qk_norm).
///   Fused checkpoints (Phi-3) store qkv_proj [q+2kv, hidden] and gate_up_proj [2*inter, hidden]; the
///   Checkpoint exposes their row blocks under the names above, so this list is the same.
inline std::vector<ExpectedTensor> expected_tensors(const LlamaConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim,
                f = c.intermediate_size, v = c.vocab_size, hd = c.head_dim;
  std::vector<ExpectedTensor> e;
  e.push_back({"model.embed_tokens.weight", {v, h}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    e.push_back({p + "input_layernorm.weight", {h}});
    e.push_back({p + "self_attn.q_proj.weight", {q, h}});
    e.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    e.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    e.push_back({p + "self_attn.o_proj.weight", {h, q}});
    if (c.qkv_bias) {
      e.push_back({p + "self_attn.q_proj.bias", {q}});
      e.push_back({p + "self_attn.k_proj.bias", {kv}});
      e.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    if (c.o_bias) e.push_back({p + "self_attn.o_proj.bias", {h}});
    if (c.qk_norm) {
      e.push_back({p + "self_attn.q_norm.weight", {hd}});
      e.push_back({p + "self_attn.k_norm.weight", {hd}});
    }
    e.push_back({p + "post_attention_layernorm.weight", {h}});
    e.push_back({p + "mlp.gate_proj.weight", {f, h}});
    e.push_back({p + "mlp.up_proj.weight", {f, h}});
    e.push_back({p + "mlp.down_proj.weight", {h, f}});
    if (c.mlp_bias) {
      e.push_back({p + "mlp.gate_proj.bias", {f}});
      e.push_back({p + "mlp.up_proj.bias", {f}});
      e.push_back({p + "mlp.down_proj.bias", {h}});
    }
  }
  e.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) e.push_back({"lm_head.weight", {v, h}});
  return e;
}

/// Rows [row0, row0 + rows) of a 2-D tensor, as a view under another name (no copy). Any dtype:
/// a row of a block type is whole blocks.
inline TensorView row_block(const TensorView& t, std::string name, int64_t row0, int64_t rows) {
  TensorView b = t;
  const size_t row_bytes = dtype_bytes(t.dtype, size_t(t.shape.at(1)));
  b.name = std::move(name);
  b.shape = {rows, t.shape[1]};
  b.data = t.data + size_t(row0) * row_bytes;
  b.nbytes = size_t(rows) * row_bytes;
  return b;
}

class Checkpoint {
 public:
  /// Opens an HF model directory, a llama2.c .bin file or a GGUF file (*.gguf, or any file that
  /// starts with the GGUF magic). Throws ropex::Error naming the file and field/key/tensor for
  /// anything malformed, missing, unsupported or of the wrong shape.
  static Checkpoint open(const std::filesystem::path& p) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto st = fs::status(p, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) throw make_error(p.string(), "", ec.message());
    if (!fs::exists(st)) throw make_error(p.string(), "", "no such file or directory");
    Checkpoint ck;
    ck.path_ = p;
    if (fs::is_directory(st)) {
      ck.open_hf_dir(p);
    } else if (p.extension() == ".gguf" || starts_with_gguf_magic(p)) {
      ck.gguf_ = std::make_unique<GgufFile>(GgufFile::open(p));
      GgufModel m = gguf_model(*ck.gguf_);
      ck.config_ = std::move(m.config);
      ck.stored_name_ = std::move(m.gguf_name);
      for (auto& t : m.tensors) ck.add(std::move(t), p.string());
      ck.format_ = "gguf";
      ck.weights_source_ = p.string();
    } else if (p.extension() == ".bin") {
      auto f = load_llama2c(p);
      ck.config_ = f.model.config;
      for (auto& t : f.model.tensors) ck.add(std::move(t), p.string());
      ck.files_.push_back(std::move(f.file));
      ck.format_ = "llama2.c";
      ck.weights_source_ = p.string();
    } else {
      throw make_error(p.string(), "",
                       "expected a Hugging Face model directory (config.json + model.safetensors), a "
                       "llama2.c .bin checkpoint or a GGUF .gguf file");
    }
    if (ck.config_.fused_qkv) ck.split_fused();
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
  /// "safetensors", "llama2.c" or "gguf".
  const std::string& format() const { return format_; }

  /// The GGUF file behind a "gguf" checkpoint (its metadata holds the tokenizer:
  /// tokenizer.ggml.model, .tokens, .merges, .token_type, ...), else nullptr.
  const GgufFile* gguf() const { return gguf_.get(); }

  /// Throws ropex::Error naming the file and tensor (its GGUF name too) when any tensor holds a NaN
  /// or inf, so a bad checkpoint is named at load rather than surfacing as NaN logits. Reads every
  /// weight once (decoding block types); the CLI's --no-weight-check skips it.
  void check_weights_finite() {
    for (const auto& [name, t] : tensors_)
      if (const auto at = first_nonfinite(t))
        throw make_error(t.source, label(name),
                         "element " + std::to_string(*at) + " is not finite (NaN or inf): the checkpoint is corrupt");
    weights_checked_ = true;
  }
  /// Whether check_weights_finite() has passed.
  bool weights_checked() const { return weights_checked_; }

  /// Whether any tensor is stored in a ggml block type (Q4_0..Q6_K): such tensors decode on the
  /// CPU a row at a time; a backend that uploads per-element dtypes must refuse them.
  bool has_quantized() const {
    for (const auto& [n, t] : tensors_)
      if (is_quantized(t.dtype)) return true;
    return false;
  }

 private:
  static bool starts_with_gguf_magic(const std::filesystem::path& p) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) return false;  // never open (and wait on) a FIFO
    std::ifstream in(p, std::ios::binary);
    char m[4] = {};
    return in.read(m, 4) && std::string_view(m, 4) == "GGUF";
  }

  // How a tensor is named in a message: its HF name, and for a GGUF file the file's own name
  // ("'blk.0.attn_q.weight' (model.layers.0.self_attn.q_proj.weight)").
  std::string label(const std::string& hf) const {
    if (format_ != "gguf") return "tensor '" + hf + "'";
    auto it = stored_name_.find(hf);
    const std::string g = it != stored_name_.end() ? it->second : gguf_tensor_name(hf, config_.fused_qkv);
    return g.empty() ? "tensor '" + hf + "'" : "tensor '" + g + "' (" + hf + ")";
  }
  // " (ggml ne [in, out])" after an HF shape, for GGUF files, whose tools print ne.
  std::string ne_note(const std::vector<int64_t>& shape) const {
    if (format_ != "gguf") return "";
    return " (ggml ne " + shape_string(std::vector<int64_t>(shape.rbegin(), shape.rend())) + ")";
  }

  void open_hf_dir(const std::filesystem::path& dir) {
    namespace fs = std::filesystem;
    const auto cfg_path = dir / "config.json";
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(cfg_path, ec))) throw make_error(dir.string(), "config.json", "not found");
    const nlohmann::json cj = read_json_file(cfg_path);  // regular file, depth-limited, no duplicate keys
    config_ = LlamaConfig::from_json(cj, cfg_path.string());
    format_ = "safetensors";
    const auto single = dir / "model.safetensors";
    const auto index = dir / "model.safetensors.index.json";
    // error_code overloads: the throwing ones report a symlink loop as a bare "filesystem error"
    // Present in any form (a FIFO, a dangling link, a loop): the opener then names what is wrong.
    if (fs::exists(fs::symlink_status(single, ec))) {
      shards_.push_back(SafetensorsFile::open(single));
      weights_source_ = single.string();
    } else if (fs::exists(fs::symlink_status(index, ec))) {
      shards_ = open_safetensors_index(index);
      weights_source_ = index.string();
    } else {
      throw make_error(dir.string(), "model.safetensors", "not found (nor model.safetensors.index.json)");
    }
    for (const auto& s : shards_)
      for (const auto& t : s.tensors()) add(t, s.path().string());
  }

  // Phi-3 stores q|k|v and gate|up as one matrix each: expose their row blocks under the LLaMA
  // names (views into the same bytes). A fused tensor of the wrong shape is named as such.
  void split_fused() {
    const LlamaConfig& c = config_;
    const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim,
                  f = c.intermediate_size;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      auto fused = [&](const std::string& name, std::vector<int64_t> shape) -> const TensorView& {
        auto it = tensors_.find(name);
        if (it == tensors_.end())
          throw make_error(weights_source_, label(name),
                           "missing (model_type " + c.model_type + " stores fused projections; expected shape " +
                               shape_string(shape) + ne_note(shape) + ")");
        if (it->second.shape != shape)
          throw make_error(it->second.source, label(name),
                           "shape " + shape_string(it->second.shape) + ne_note(it->second.shape) + " does not match " +
                               shape_string(shape) + ne_note(shape) + " implied by the config");
        return it->second;
      };
      const TensorView qkv = fused(p + "self_attn.qkv_proj.weight", {q + 2 * kv, h});
      for (const char* n : {"q_proj", "k_proj", "v_proj"})
        if (auto s = stored_name_.find(p + "self_attn.qkv_proj.weight"); s != stored_name_.end())
          stored_name_[p + "self_attn." + n + ".weight"] = s->second;
      for (const char* n : {"gate_proj", "up_proj"})
        if (auto s = stored_name_.find(p + "mlp.gate_up_proj.weight"); s != stored_name_.end())
          stored_name_[p + "mlp." + n + ".weight"] = s->second;
      add(row_block(qkv, p + "self_attn.q_proj.weight", 0, q), qkv.source);
      add(row_block(qkv, p + "self_attn.k_proj.weight", q, kv), qkv.source);
      add(row_block(qkv, p + "self_attn.v_proj.weight", q + kv, kv), qkv.source);
      const TensorView gu = fused(p + "mlp.gate_up_proj.weight", {2 * f, h});
      add(row_block(gu, p + "mlp.gate_proj.weight", 0, f), gu.source);
      add(row_block(gu, p + "mlp.up_proj.weight", f, f), gu.source);
    }
  }

  void add(TensorView t, const std::string& src) {
    const std::string name = t.name;
    if (!tensors_.emplace(name, std::move(t)).second) throw make_error(src, "tensor '" + name + "'", "appears twice");
  }

  void check_expected() const {
    const auto expected = expected_tensors(config_);
    for (const auto& e : expected) {
      auto it = tensors_.find(e.name);
      if (it == tensors_.end()) {
        const bool fused_here = e.name.find("q_proj.weight") != std::string::npos &&
                                has(e.name.substr(0, e.name.find("q_proj.weight")) + "qkv_proj.weight");
        throw make_error(weights_source_, label(e.name),
                         fused_here ? "missing: the checkpoint stores a fused qkv_proj (Phi-3 layout) but model_type is \"" +
                                          config_.model_type + "\""
                                    : "missing (expected shape " + shape_string(e.shape) + ne_note(e.shape) + ")");
      }
      if (it->second.shape != e.shape)
        throw make_error(it->second.source, label(e.name),
                         "shape " + shape_string(it->second.shape) + ne_note(it->second.shape) + " does not match " +
                             shape_string(e.shape) + ne_note(e.shape) + " implied by the config");
    }
    // A weight the forward would not read means the config describes another architecture (a
    // bias, a norm, a fused projection it does not know): refused, never dropped.
    std::set<std::string, std::less<>> used;
    for (const auto& e : expected) used.insert(e.name);
    for (const auto& [name, t] : tensors_) {
      if (used.count(name) || name == "lm_head.weight" || name.ends_with("rotary_emb.inv_freq")) continue;
      if (config_.fused_qkv && (name.ends_with("self_attn.qkv_proj.weight") || name.ends_with("mlp.gate_up_proj.weight")))
        continue;
      throw make_error(t.source, label(name),
                       "not used by a model_type \"" + config_.model_type +
                           "\" forward with this config (the config and the weights disagree)");
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
  std::unique_ptr<GgufFile> gguf_;                                     // a "gguf" checkpoint's file
  std::map<std::string, std::string, std::less<>> stored_name_;        // HF name -> GGUF tensor name
  std::map<std::string, TensorView, std::less<>> tensors_;
  bool weights_checked_ = false;
};

}  // namespace ropex::model
