// One exception type for bad input: the message names the file (or flag) and the field.
#pragma once
#include <stdexcept>
#include <string>
#include <string_view>

namespace ropex {

/// Thrown for every invalid input (file, JSON field, argument). what() reads
/// "<source>: <field>: <problem>", e.g. "config.json: rope_scaling.factor: must be >= 1, got 0.5".
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Builds an Error whose message names where the bad value came from.
inline Error make_error(std::string_view source, std::string_view field, std::string_view problem) {
  std::string msg;
  if (!source.empty()) { msg += source; msg += ": "; }
  if (!field.empty()) { msg += field; msg += ": "; }
  msg += problem;
  return Error(msg);
}

}  // namespace ropex
