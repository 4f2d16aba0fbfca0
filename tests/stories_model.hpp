// stories260K (../shared/data, vocab 512, no tokenizer of its own) in a directory next to a
// byte-level BPE tokenizer.json whose ids all lie below 512, so text-driven commands can run it.
#pragma once
#include <ropex/tokenizer/bpe.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

namespace ropex::test {

inline const std::string stories_bin = std::string(ROPEX_SHARED_DATA) + "/stories260K.bin";

/// Copies stories260K.bin into `dir` with the tokenizer; returns the model file's path.
inline std::filesystem::path stories_with_byte_tokenizer(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  fs::copy_file(stories_bin, dir / "stories260K.bin", fs::copy_options::overwrite_existing);
  nlohmann::json vocab = nlohmann::json::object();
  const auto& table = ropex::tokenizer::ByteLevelTable::get();
  for (int b = 0; b < 256; ++b) vocab[table.to_unicode[size_t(b)]] = b;
  vocab["Ġt"] = 256;
  vocab["he"] = 257;
  vocab["Ġthe"] = 258;
  const nlohmann::json tj = {
      {"added_tokens", nlohmann::json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array({"Ġ t", "h e", "Ġt he"})}}}};
  std::ofstream(dir / "tokenizer.json") << tj.dump();
  return dir / "stories260K.bin";
}

}  // namespace ropex::test
