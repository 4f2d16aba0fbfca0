// NumPy .npy files: header parsing, a float32 writer (logits out) and a float reader (references in).
//
// Format (numpy/lib/format.py, versions 1.0-3.0):
//   "\x93NUMPY" | u8 major | u8 minor | header length (u16 for 1.0, u32 for 2.0/3.0) |
//   header: a Python dict literal  {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
//           padded with spaces and ended by '\n' so the data starts at a multiple of 64 |
//   data: C-order elements.
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/output_file.hpp>
#include <ropex/io/mapped_file.hpp>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ropex::io {

/// What an .npy header says.
struct NpyHeader {
  std::string descr;           ///< e.g. "<f4", "<i8"
  bool fortran_order = false;
  std::vector<size_t> shape;
  size_t data_offset = 0;      ///< bytes before the first element
  size_t numel() const {
    size_t n = 1;
    for (size_t d : shape) n *= d;
    return n;
  }
};

/// True when `bytes` starts with the .npy magic string.
inline bool is_npy(std::span<const std::byte> bytes) {
  return bytes.size() >= 6 && std::memcmp(bytes.data(), "\x93NUMPY", 6) == 0;
}

namespace detail {

// A tiny reader for the dict literal numpy writes; strict enough to refuse garbage clearly.
struct NpyDictReader {
  std::string_view s;
  size_t i = 0;
  std::string_view source;
  [[noreturn]] void fail(const std::string& what) const {
    throw make_error(source, "npy header", what + " in " + std::string(s.substr(0, 200)));
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  std::string quoted() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) fail("expected a quoted string");
    const char q = s[i++];
    const size_t start = i;
    while (i < s.size() && s[i] != q) ++i;
    if (i >= s.size()) fail("unterminated string");
    return std::string(s.substr(start, i++ - start));
  }
  bool boolean() {
    ws();
    if (s.substr(i, 4) == "True") { i += 4; return true; }
    if (s.substr(i, 5) == "False") { i += 5; return false; }
    fail("expected True or False");
  }
  size_t integer() {
    ws();
    if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i]))) fail("expected a non-negative integer");
    size_t v = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      const size_t digit = size_t(s[i++] - '0');
      if (v > (SIZE_MAX - digit) / 10) fail("dimension too large");
      v = v * 10 + digit;
    }
    if (i < s.size() && s[i] == 'L') ++i;  // Python 2 longs
    return v;
  }
};

}  // namespace detail

/// Parses the magic, version and header dict of an .npy file held in `file`. Checks the data
/// section holds exactly numel * itemsize bytes for the descriptors ropex knows (itemsize from
/// the descr's trailing digits). Errors name `source`.
inline NpyHeader parse_npy_header(std::span<const std::byte> file, std::string_view source) {
  if (!is_npy(file)) throw make_error(source, "", "not an .npy file (missing \\x93NUMPY magic)");
  if (file.size() < 10) throw make_error(source, "npy header", "truncated");
  const auto major = static_cast<uint8_t>(file[6]);
  size_t hlen, hstart;
  if (major == 1) {
    uint16_t n;
    std::memcpy(&n, file.data() + 8, 2);
    hlen = n;
    hstart = 10;
  } else if (major == 2 || major == 3) {
    if (file.size() < 12) throw make_error(source, "npy header", "truncated");
    uint32_t n;
    std::memcpy(&n, file.data() + 8, 4);
    hlen = n;
    hstart = 12;
  } else {
    throw make_error(source, "npy version", "unsupported format version " + std::to_string(major));
  }
  if (hlen > file.size() - hstart)
    throw make_error(source, "npy header", "header length " + std::to_string(hlen) + " runs past the end of the file");
  detail::NpyDictReader r{std::string_view(reinterpret_cast<const char*>(file.data() + hstart), hlen), 0, source};
  NpyHeader h;
  h.data_offset = hstart + hlen;
  bool got_descr = false, got_order = false, got_shape = false;
  r.expect('{');
  while (!r.eat('}')) {
    const std::string key = r.quoted();
    r.expect(':');
    if (key == "descr") {
      h.descr = r.quoted();
      got_descr = true;
    } else if (key == "fortran_order") {
      h.fortran_order = r.boolean();
      got_order = true;
    } else if (key == "shape") {
      r.expect('(');
      h.shape.clear();
      while (!r.eat(')')) {
        h.shape.push_back(r.integer());
        if (!r.eat(',')) {
          r.expect(')');
          break;
        }
      }
      got_shape = true;
    } else {
      r.fail("unknown key '" + key + "'");
    }
    if (!r.eat(',')) {
      r.expect('}');
      break;
    }
  }
  if (!got_descr || !got_order || !got_shape) r.fail("needs descr, fortran_order and shape");
  size_t numel = 1;
  for (size_t d : h.shape)
    if (__builtin_mul_overflow(numel, d, &numel)) r.fail("shape overflows");
  // itemsize from the descr ("<f4" -> 4); unknown descrs are left for the caller to refuse.
  size_t item = 0;
  auto one_of = [](std::string_view set, char c) { return set.find(c) != std::string_view::npos; };
  if (h.descr.size() == 3 && one_of("<>|=", h.descr[0]) && one_of("fiu", h.descr[1]) && one_of("1248", h.descr[2]))
    item = size_t(h.descr[2] - '0');
  size_t bytes = 0;
  if (item > 0 && __builtin_mul_overflow(numel, item, &bytes))
    throw make_error(source, "shape", "needs more bytes than a size_t can count");
  if (item > 0 && bytes != file.size() - h.data_offset)
    throw make_error(source, "npy data",
                     "shape needs " + std::to_string(bytes) + " bytes of '" + h.descr + "' but the file has " +
                         std::to_string(file.size() - h.data_offset) + (bytes > file.size() - h.data_offset ? " (truncated)" : ""));
  return h;
}

/// The .npy header (magic, version, length, dict padded to 64 bytes) of a C-order array of `descr`
/// ("<f4", "<i4"): format 1.0, or 2.0 for huge headers.
inline std::string npy_header(std::string_view descr, const std::vector<size_t>& shape) {
  std::string dict = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (";
  for (size_t k = 0; k < shape.size(); ++k) {
    dict += std::to_string(shape[k]);
    dict += (shape.size() == 1 || k + 1 < shape.size()) ? "," : "";
    if (k + 1 < shape.size()) dict += ' ';
  }
  dict += "), }";
  // Pad with spaces so magic + version + length + dict + '\n' is a multiple of 64.
  const bool v2 = dict.size() + 11 + 64 > 65535;
  const size_t prefix = v2 ? 12 : 10;
  while ((prefix + dict.size() + 1) % 64 != 0) dict += ' ';
  dict += '\n';
  std::string h("\x93NUMPY", 6);
  h += char(v2 ? 2 : 1);
  h += char(0);
  const uint32_t n = uint32_t(dict.size());
  h.append(reinterpret_cast<const char*>(&n), v2 ? 4 : 2);  // little-endian length
  return h + dict;
}

/// Writes a float32 C-order array as .npy; numpy.load reads it. Atomic (output_file.hpp): the
/// target is replaced only when the whole file is on disk; `inputs` are refused as targets.
inline void write_npy_f32(const std::filesystem::path& path, const float* data, const std::vector<size_t>& shape,
                          std::string_view flag = "", const std::vector<std::filesystem::path>& inputs = {}) {
  size_t numel = 1;
  for (size_t d : shape) numel *= d;
  OutputFile out(path, std::string(flag), inputs);
  out.write(npy_header("<f4", shape));
  if (numel) out.write(data, numel * sizeof(float));
  out.commit();
}

/// A float array read from .npy.
struct NpyF32 {
  std::vector<size_t> shape;
  std::vector<float> data;
};

/// Reads a little-endian C-order float32 ('<f4') or float64 ('<f8', rounded to float) .npy.
inline NpyF32 read_npy_f32(const std::filesystem::path& path) {
  const auto file = MappedFile::open(path);
  const std::string src = path.string();
  const NpyHeader h = parse_npy_header(file.bytes(), src);
  if (h.fortran_order) throw make_error(src, "fortran_order", "Fortran-order arrays are not supported (save C order)");
  if (h.descr != "<f4" && h.descr != "<f8")
    throw make_error(src, "descr", "dtype '" + h.descr + "' is not supported (expected '<f4' or '<f8')");
  NpyF32 a;
  a.shape = h.shape;
  a.data.resize(h.numel());
  const std::byte* p = file.data() + h.data_offset;
  if (h.descr == "<f4") {
    if (!a.data.empty()) std::memcpy(a.data.data(), p, a.data.size() * 4);
  } else {
    for (size_t i = 0; i < a.data.size(); ++i) {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      a.data[i] = static_cast<float>(d);
    }
  }
  return a;
}

}  // namespace ropex::io
