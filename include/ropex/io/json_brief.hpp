// Short, safe rendering of a JSON value for error messages.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace ropex::io {

/// Scalars as JSON text (strings cut at 80 chars); arrays/objects as "an array of N" / "an object":
/// a hostile file may nest 10^7 levels deep, and dump() recurses once per level.
inline std::string json_brief(const nlohmann::json& j) {
  if (j.is_array()) {
    bool flat = j.size() <= 16;
    for (const auto& e : j) flat = flat && e.is_primitive();
    if (flat) return j.dump();
    return "an array of " + std::to_string(j.size());
  }
  if (j.is_object()) return "an object";
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

}  // namespace ropex::io
