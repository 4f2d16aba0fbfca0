// Token id files for the CLI: a 1-D .npy of int32/int64, or text of whitespace/comma-separated ids.
// Also brings in write_npy_f32 (logits out) from npy.hpp.
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/mapped_file.hpp>
#include <ropex/io/npy.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ropex::io {

/// Parses token ids from a file's bytes: .npy (detected by its magic; 1-D, C order, '<i4' or
/// '<i8') or text ("1 2 3", "1,2,3", newlines, any mix). Ids must be in [0, 2^31). Errors name
/// `source` and, for text, the line.
inline std::vector<int32_t> parse_tokens(std::span<const std::byte> bytes, std::string_view source) {
  std::vector<int32_t> ids;
  if (is_npy(bytes)) {
    const NpyHeader h = parse_npy_header(bytes, source);
    if (h.descr != "<i4" && h.descr != "<i8")
      throw make_error(source, "descr",
                       "dtype '" + h.descr + "' is not supported: token ids must be little-endian int32 or int64 ('<i4' / '<i8')");
    if (h.fortran_order) throw make_error(source, "fortran_order", "must be False (C order)");
    if (h.shape.size() != 1)
      throw make_error(source, "shape", "expected a 1-D array of token ids, got " + std::to_string(h.shape.size()) + " dimensions");
    const size_t n = h.shape[0], item = h.descr == "<i4" ? 4 : 8;
    const std::byte* p = bytes.data() + h.data_offset;
    ids.reserve(n);
    for (size_t k = 0; k < n; ++k) {
      int64_t v;
      if (item == 4) {
        int32_t v32;
        std::memcpy(&v32, p + 4 * k, 4);
        v = v32;
      } else {
        std::memcpy(&v, p + 8 * k, 8);
      }
      if (v < 0 || v > std::numeric_limits<int32_t>::max())
        throw make_error(source, "token " + std::to_string(k), "id " + std::to_string(v) + " is out of range [0, 2^31)");
      ids.push_back(static_cast<int32_t>(v));
    }
  } else {
    const std::string_view s(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    size_t line = 1;
    for (size_t i = 0; i < s.size();) {
      const char c = s[i];
      if (c == '\n') { ++line; ++i; continue; }
      if (c == ' ' || c == '\t' || c == '\r' || c == ',') { ++i; continue; }
      if (c < '0' || c > '9') {
        std::string shown(1, c);
        if (c < 0x20 || c >= 0x7f) {  // show control / non-ASCII bytes as \xNN
          const char* hex = "0123456789abcdef";
          const auto u = static_cast<unsigned char>(c);
          shown = std::string("\\x") + hex[u >> 4] + hex[u & 15];
        }
        throw make_error(source, "line " + std::to_string(line),
                         "unexpected '" + shown + "': expected non-negative integer token ids separated by whitespace or commas");
      }
      int64_t v = 0;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        v = v * 10 + (s[i++] - '0');
        if (v > std::numeric_limits<int32_t>::max())
          throw make_error(source, "line " + std::to_string(line), "token id is out of range [0, 2^31)");
      }
      if (i < s.size() && !(s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n' || s[i] == ','))
        throw make_error(source, "line " + std::to_string(line),
                         "unexpected character after token id " + std::to_string(v));
      ids.push_back(static_cast<int32_t>(v));
    }
  }
  if (ids.empty()) throw make_error(source, "", "no token ids");
  return ids;
}

/// Reads token ids from `path` (see parse_tokens).
inline std::vector<int32_t> read_tokens(const std::filesystem::path& path) {
  const auto f = MappedFile::open(path);
  return parse_tokens(f.bytes(), path.string());
}

}  // namespace ropex::io
