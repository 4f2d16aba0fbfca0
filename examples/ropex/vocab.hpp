// The words every ropex subcommand shares (docs/cli.md):
//   --model  a path (model directory, GGUF file, llama2.c .bin) or a built-in preset name, tried in
//            that order; what it resolved to is reported (text and JSON "inputs")
//   --config a config.json, a GGUF file, or a directory holding config.json
//   --json / --csv print to stdout; --out writes a file (io/output_file.hpp)
//   "inputs": {"name": {"value": v, "origin": "flag --x" | "default ..." | "file:key" | "preset ..."}}
#pragma once
#include "cli.hpp"
#include "gguf_config.hpp"

#include <ropex/error.hpp>
#include <ropex/presets.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace ropex::cli {

// Optimal-string-alignment edit distance, for "did you mean" (a dozen lines; no Debian package ships
// a C++ one, and CLI11 has none).
inline size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

/// The candidate closest to `word` when it is close enough to be a typo (at most a third of its
/// letters wrong, at least 2 allowed, or a prefix of exactly one candidate), else "".
inline std::string closest_match(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  if (!best.empty() || word.size() < 2) return best;
  std::vector<std::string> prefixed;
  for (const auto& c : candidates)
    if (c.rfind(word, 0) == 0) prefixed.push_back(c);
  return prefixed.size() == 1 ? prefixed.front() : "";
}

inline std::vector<std::string> preset_names() {
  std::vector<std::string> v;
  for (const auto& p : model_presets) v.emplace_back(p.name);
  return v;
}

/// What a --model argument named.
struct ModelArg {
  enum class Kind { directory, gguf, llama2c, preset } kind = Kind::preset;
  std::string arg;                     ///< as typed
  const ModelPreset* preset = nullptr; ///< Kind::preset

  bool is_path() const { return kind != Kind::preset; }
  const char* kind_name() const {
    switch (kind) {
      case Kind::directory: return "model directory";
      case Kind::gguf: return "GGUF file";
      case Kind::llama2c: return "llama2.c checkpoint";
      case Kind::preset: return "built-in preset";
    }
    return "";
  }
  /// {"value": arg, "origin": "flag --model", "resolved": "GGUF file"}
  nlohmann::ordered_json json() const {
    return {{"value", arg}, {"origin", "flag --model"}, {"resolved", kind_name()}};
  }
};

/// Resolves --model: an existing path first (directory, GGUF file, llama2.c .bin), then a preset
/// name; anything else is a usage error naming the flag, with the closest preset when there is one.
inline ModelArg resolve_model_arg(const std::string& arg) {
  namespace fs = std::filesystem;
  if (arg.empty())
    throw UsageError("--model: empty; give a model directory, a GGUF file, a llama2.c .bin or a preset (" +
                     model_preset_names() + ")");
  ModelArg m;
  m.arg = arg;
  std::error_code ec;
  const auto st = fs::status(arg, ec);
  if (fs::exists(st)) {
    if (fs::is_directory(st)) m.kind = ModelArg::Kind::directory;
    else if (is_gguf_file(arg)) m.kind = ModelArg::Kind::gguf;
    else if (fs::path(arg).extension() == ".bin") m.kind = ModelArg::Kind::llama2c;
    else
      throw UsageError("--model: " + arg + ": expected a model directory, a GGUF file or a llama2.c .bin" +
                       (fs::path(arg).extension() == ".json" ? " (a config.json goes to --config)" : ""));
    return m;
  }
  if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory)
    throw UsageError("--model: " + arg + ": " + ec.message());
  for (const auto& p : model_presets)
    if (p.name == arg) {
      m.preset = &p;
      return m;
    }
  const std::string near = closest_match(arg, preset_names());
  throw UsageError("--model: " + arg + ": no such file or directory, and not a preset" +
                   (near.empty() ? " (presets: " + model_preset_names() + ")" : "; did you mean '" + near + "'?"));
}

/// --model for subcommands that run weights: a preset (law inputs only) is refused by name.
inline ModelArg resolve_model_path(const std::string& arg, const std::string& subcommand) {
  ModelArg m = resolve_model_arg(arg);
  if (!m.is_path())
    throw UsageError("--model: " + arg + " is a built-in preset (the scaling law's inputs, no weights); " + subcommand +
                     " needs a model directory, a GGUF file or a llama2.c .bin (scripts/fetch_models.sh fetches "
                     ".models/SmolLM2-135M-Instruct.Q4_1.gguf)");
  return m;
}

/// The files a model path reads (the file itself, or every file of the directory: config,
/// shards, index, tokenizer), for refusing an output that would overwrite one.
inline std::vector<std::filesystem::path> model_files(const std::string& path) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files{path};
  std::error_code ec;
  const fs::path dir = fs::is_directory(path, ec) ? fs::path(path) : fs::path(path).parent_path();
  if (fs::is_directory(path, ec)) {
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) files.push_back(it->path());
  } else {  // a .bin or .gguf also reads tokenizer files beside it
    for (const char* t : {"tokenizer.json", "tokenizer.model", "tokenizer.bin", "tok512.bin"})
      files.push_back((dir.empty() ? fs::path(".") : dir) / t);
  }
  return files;
}

/// {"value": v, "origin": o}: one entry of a JSON "inputs" object.
template <class V>
nlohmann::ordered_json input_json(const V& value, const std::string& origin) {
  return {{"value", value}, {"origin", origin}};
}

/// An option's origin: "flag --x" when given, else `fallback` ("default 32").
inline std::string flag_origin(const CLI::Option* o, const std::string& fallback) {
  return o && *o ? "flag " + o->get_name() : fallback;
}

}  // namespace ropex::cli
