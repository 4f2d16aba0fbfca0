// `--config model.gguf` (or `--model` a GGUF or llama2.c file) for predict / base / periods / theories / rope: a GGUF file's RoPE facts as a
// RotaryConfig whose keys are the file's own ("model.gguf:llama.rope.freq_base"), and its shape as
// the config.json fields preset matching compares. The metadata goes through gguf_model(), so every
// key that changes the RoPE math is honoured or refused as when the model runs.
#pragma once
#include <ropex/model/gguf.hpp>
#include <ropex/model/gguf_model.hpp>
#include <ropex/model/llama2c.hpp>
#include <ropex/io/json_file.hpp>
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

/// The config.json fields preset matching compares, from a loaded config.
inline nlohmann::json shape_json(const model::LlamaConfig& c) {
  return {{"model_type", c.model_type},
          {"hidden_size", c.hidden_size},
          {"num_attention_heads", c.num_attention_heads},
          {"num_key_value_heads", c.num_key_value_heads},
          {"num_hidden_layers", c.num_hidden_layers},
          {"vocab_size", c.vocab_size}};
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
  g.shape = shape_json(c);
  if (const auto* v = md.find("general.name"); v && v->type == model::GgufValueType::string) g.name = std::string(v->str);
  return g;
}


/// A llama2.c .bin's RoPE facts: head = dim / n_heads from its header, the base llama2.c fixes
/// (10000), max_position_embeddings = seq_len. Shape fields as config.json names them.
inline GgufRotary llama2c_rotary(const std::string& path) {
  const auto f = model::load_llama2c(path);
  const auto& c = f.model.config;
  GgufRotary g;
  RotaryConfig& rc = g.rc;
  rc.source = path;
  rc.head_dim = rc.rotary_dim = int(c.head_dim);
  rc.head_dim_key = rc.rotary_dim_key = "dim / n_heads (llama2.c header)";
  rc.base = c.rope.base;
  rc.base_is_default = true;
  rc.base_key = "the base llama2.c fixes (10000)";
  rc.max_position_embeddings = c.max_position_embeddings;
  rc.rope = c.rope;
  g.shape = shape_json(c);
  return g;
}


/// The RoPE facts of whatever --config (or a --model path) names: a directory (its config.json), a
/// GGUF file, a llama2.c .bin or a config.json. `path` is the file read; `shape` the config.json
/// fields preset matching compares.
struct RotarySource {
  std::string path;
  nlohmann::json shape;
  RotaryConfig rc;
};

inline RotarySource read_rotary_source(const std::string& arg) {
  namespace fs = std::filesystem;
  RotarySource s;
  s.path = arg;
  std::error_code ec;  // the throwing overloads report a symlink loop as a bare "filesystem error"
  const auto st = fs::status(arg, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) throw make_error(arg, "", ec.message());
  if (fs::is_directory(st)) {
    s.path = (fs::path(arg) / "config.json").string();
    if (!fs::exists(fs::status(s.path, ec))) throw make_error(arg, "", "directory has no config.json");
  } else if (is_gguf_file(arg) || (fs::path(arg).extension() == ".bin" && fs::is_regular_file(st))) {
    GgufRotary g = is_gguf_file(arg) ? gguf_rotary(arg) : llama2c_rotary(arg);
    s.shape = std::move(g.shape);
    s.rc = std::move(g.rc);
    return s;
  }
  s.shape = read_json_file(s.path);
  s.rc = rotary_config_from_json(s.shape, s.path);
  return s;
}

}  // namespace ropex::cli
