// `--config model.gguf` for predict / base / periods / rope: a GGUF file's RoPE facts as a
// RotaryConfig whose keys are the file's own ("model.gguf:llama.rope.freq_base"), and its shape as
// the config.json fields preset matching compares. The metadata goes through gguf_model(), so every
// key that changes the RoPE math is honoured or refused as when the model runs.
#pragma once
#include <ropex/model/gguf.hpp>
#include <ropex/model/gguf_model.hpp>
#include <ropex/rope/rotary_config.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace ropex::cli {

/// *.gguf, or a file that starts with the GGUF magic.
inline bool is_gguf_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;  // a symlink loop is not GGUF; the JSON reader then names the path
  if (!fs::is_regular_file(path, ec)) return false;
  if (fs::path(path).extension() == ".gguf") return true;
  std::ifstream in(path, std::ios::binary);
  char m[4] = {};
  return in.read(m, 4) && std::string_view(m, 4) == "GGUF";
}

struct GgufRotary {
  RotaryConfig rc;
  nlohmann::json shape;  ///< model_type, hidden_size, heads, kv heads, layers, vocab_size (config.json names)
  std::string name;      ///< general.name, "" when absent
};

inline GgufRotary gguf_rotary(const std::string& path) {
  const auto f = model::GgufFile::open(path);
  const auto m = model::gguf_model(f);
  const auto& md = f.metadata();
  const auto& c = m.config;
  const std::string a = std::string(md.get_string("general.architecture")) + ".";
  GgufRotary g;
  RotaryConfig& rc = g.rc;
  rc.source = path;
  rc.head_dim = int(c.head_dim);
  rc.head_dim_key = md.contains(a + "attention.key_length") ? a + "attention.key_length"
                                                            : a + "embedding_length / " + a + "attention.head_count";
  rc.rotary_dim = c.rotary_dim();
  // d comes from rope.dimension_count when the file has it (named as the origin even when it is the whole head)
  rc.partial = md.contains(a + "rope.dimension_count");
  rc.rotary_dim_key = rc.partial ? a + "rope.dimension_count" : rc.head_dim_key;
  rc.base = c.rope.base;
  rc.base_is_default = !md.contains(a + "rope.freq_base");
  rc.base_key = rc.base_is_default ? "the default 10000 (no " + a + "rope.freq_base)" : a + "rope.freq_base";
  rc.max_position_embeddings = c.max_position_embeddings;
  rc.rope = c.rope;
  g.shape = {{"model_type", c.model_type},
             {"hidden_size", c.hidden_size},
             {"num_attention_heads", c.num_attention_heads},
             {"num_key_value_heads", c.num_key_value_heads},
             {"num_hidden_layers", c.num_hidden_layers},
             {"vocab_size", c.vocab_size}};
  if (const auto* v = md.find("general.name"); v && v->type == model::GgufValueType::string) g.name = std::string(v->str);
  return g;
}

}  // namespace ropex::cli
