// Reading a JSON file with errors that name the file (missing, unreadable, malformed).
#pragma once
#include <ropex/error.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace ropex {

/// Parses the JSON file at `path`; throws ropex::Error "<path>: cannot open file" or
/// "<path>: malformed JSON: <parser message>" instead of nlohmann's exceptions.
inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::string name = path.string();
  if (std::filesystem::is_directory(path)) throw make_error(name, "", "is a directory, expected a JSON file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw make_error(name, "", "cannot open file");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    throw make_error(name, "", std::string("malformed JSON: ") + e.what());
  }
}

/// Parses JSON given on the command line (e.g. --rope-scaling '{"rope_type":"yarn"}').
inline nlohmann::json parse_json_arg(const std::string& text, const std::string& flag) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw make_error(flag, "", std::string("malformed JSON: ") + e.what());
  }
}

}  // namespace ropex
