// GGUF reader (llama.cpp's model files), versions 2 and 3, memory-mapped.
//
// File layout (ggml docs/gguf.md; gguf-py gguf/gguf_reader.py), all little-endian:
//   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x   { string key | u32 value_type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to general.alignment (default 32) | data section (tensor offsets count from here)
//   string = u64 length + bytes (no NUL); array value = u32 elem_type | u64 count | elements
// Version 1 (u32 counts and lengths) and big-endian files are refused.
//
// Every count and length is checked against the bytes left in the file before anything is
// allocated or read, so a malformed file gives one ropex::Error naming the file and the field
// ("model.gguf: tensor 'blk.0.attn_q.weight': offset 123 not aligned to 32"), never a read outside
// the mapping or a huge allocation. Tensors: 1..4 dims, each >= 1; a supported type (by name
// otherwise); ne[0] a multiple of the type's block size; byte size without overflow; offset
// aligned and the bytes inside the data section; no two tensors overlap; names and keys unique.
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/mapped_file.hpp>
#include <ropex/model/tensor.hpp>
#include <ropex/quant/dequantize.hpp>
#include <ropex/quant/ggml_type.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ropex::model {

/// Metadata value types (gguf-py constants.py GGUFValueType).
enum class GgufValueType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9,
  u64 = 10, i64 = 11, f64 = 12,
};

/// "u32", "string", ...; "" for a number that is not a value type.
constexpr std::string_view gguf_value_type_name(GgufValueType t) {
  constexpr std::string_view names[] = {"u8",     "i8",     "u16",   "i16", "u32", "i32", "f32",
                                        "bool",   "string", "array", "u64", "i64", "f64"};
  return uint32_t(t) < std::size(names) ? names[uint32_t(t)] : std::string_view{};
}

/// Bytes of a fixed-size scalar value type; 0 for string and array.
constexpr size_t gguf_scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::u8: case GgufValueType::i8: case GgufValueType::boolean: return 1;
    case GgufValueType::u16: case GgufValueType::i16: return 2;
    case GgufValueType::u32: case GgufValueType::i32: case GgufValueType::f32: return 4;
    case GgufValueType::u64: case GgufValueType::i64: case GgufValueType::f64: return 8;
    default: return 0;
  }
}

constexpr bool gguf_is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::u8: case GgufValueType::i8: case GgufValueType::u16: case GgufValueType::i16:
    case GgufValueType::u32: case GgufValueType::i32: case GgufValueType::u64: case GgufValueType::i64:
      return true;
    default: return false;
  }
}

/// One metadata value. Strings and scalar arrays point into the file's bytes (zero copy).
struct GgufValue {
  GgufValueType type = GgufValueType::u8;
  uint64_t bits = 0;       ///< scalars: the stored bytes, zero-extended (floats as their bit pattern)
  std::string_view str;    ///< type == string
  // type == array:
  GgufValueType elem_type = GgufValueType::u8;
  uint64_t count = 0;                       ///< number of elements
  const std::byte* elems = nullptr;         ///< scalar elements: count * gguf_scalar_size(elem_type) bytes
  std::vector<std::string_view> strings;    ///< elem_type == string
  std::vector<GgufValue> arrays;            ///< elem_type == array (nested arrays)

  bool is_integer() const { return gguf_is_integer(type); }
  bool is_float() const { return type == GgufValueType::f32 || type == GgufValueType::f64; }

  /// The integer as (negative?, magnitude); only for integer types.
  std::pair<bool, uint64_t> integer() const {
    switch (type) {
      case GgufValueType::i8: return signed_parts(int8_t(uint8_t(bits)));
      case GgufValueType::i16: return signed_parts(int16_t(uint16_t(bits)));
      case GgufValueType::i32: return signed_parts(int32_t(uint32_t(bits)));
      case GgufValueType::i64: return signed_parts(int64_t(bits));
      default: return {false, bits};
    }
  }
  /// The integer if it fits T, else nothing (also nothing for non-integer types).
  template <class T>
  std::optional<T> integer_as() const {
    if (!is_integer()) return std::nullopt;
    const auto [neg, mag] = integer();
    if (neg) {
      if constexpr (std::is_signed_v<T>) {
        if (mag <= uint64_t(std::numeric_limits<T>::max()) + 1) return T(-int64_t(mag - 1) - 1);
      }
      return std::nullopt;
    }
    if (mag > uint64_t(std::numeric_limits<T>::max())) return std::nullopt;
    return T(mag);
  }
  /// f32 or f64 value as double (exact); nothing for other types.
  std::optional<double> floating() const {
    if (type == GgufValueType::f32) return double(std::bit_cast<float>(uint32_t(bits)));
    if (type == GgufValueType::f64) return std::bit_cast<double>(bits);
    return std::nullopt;
  }

  /// Element i of an array as a value of its own (scalars and strings; nested arrays copied).
  GgufValue at(size_t i) const {
    GgufValue v;
    v.type = elem_type;
    if (elem_type == GgufValueType::string) {
      v.str = strings.at(i);
    } else if (elem_type == GgufValueType::array) {
      v = arrays.at(i);
    } else {
      if (i >= count) throw std::out_of_range("GgufValue::at");
      const size_t sz = gguf_scalar_size(elem_type);
      std::memcpy(&v.bits, elems + i * sz, sz);  // little-endian host (tensor.hpp)
    }
    return v;
  }

  /// "u32 4096", "string \"llama\"", "array[49152] of string" (error messages).
  std::string describe() const {
    std::string s(gguf_value_type_name(type));
    if (type == GgufValueType::array) return "array[" + std::to_string(count) + "] of " + std::string(gguf_value_type_name(elem_type));
    if (type == GgufValueType::string) return s + " \"" + std::string(str.substr(0, 40)) + (str.size() > 40 ? "...\"" : "\"");
    if (type == GgufValueType::boolean) return s + (bits ? " true" : " false");
    if (is_integer()) {
      const auto [neg, mag] = integer();
      return s + (neg ? " -" : " ") + std::to_string(mag);
    }
    return s + " " + std::to_string(*floating());
  }

 private:
  template <class S>
  static std::pair<bool, uint64_t> signed_parts(S v) {
    return v < 0 ? std::pair{true, uint64_t(0) - uint64_t(int64_t(v))} : std::pair{false, uint64_t(v)};
  }
};

/// The key/value section, in file order, with typed accessors whose errors name file and key.
class GgufMetadata {
 public:
  GgufMetadata() = default;
  GgufMetadata(std::string source) : source_(std::move(source)) {}

  const std::vector<std::pair<std::string_view, GgufValue>>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  const std::string& source() const { return source_; }

  /// The value stored under `key`, or nullptr.
  const GgufValue* find(std::string_view key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &entries_[it->second].second;
  }
  bool contains(std::string_view key) const { return find(key) != nullptr; }

  /// The value under `key`; throws "<file>: key '<key>': missing".
  const GgufValue& get(std::string_view key) const {
    if (const auto* v = find(key)) return *v;
    throw make_error(source_, field(key), "missing");
  }

  // Integer getters accept a value stored as any integer type, when it fits the asked type.
  uint8_t get_u8(std::string_view key) const { return get_int<uint8_t>(key, "u8"); }
  int8_t get_i8(std::string_view key) const { return get_int<int8_t>(key, "i8"); }
  uint16_t get_u16(std::string_view key) const { return get_int<uint16_t>(key, "u16"); }
  int16_t get_i16(std::string_view key) const { return get_int<int16_t>(key, "i16"); }
  uint32_t get_u32(std::string_view key) const { return get_int<uint32_t>(key, "u32"); }
  int32_t get_i32(std::string_view key) const { return get_int<int32_t>(key, "i32"); }
  uint64_t get_u64(std::string_view key) const { return get_int<uint64_t>(key, "u64"); }
  int64_t get_i64(std::string_view key) const { return get_int<int64_t>(key, "i64"); }

  /// An f32 or f64 value as double (an f64 asked as f32 is rounded to nearest).
  double get_f64(std::string_view key) const {
    const auto& v = get(key);
    if (auto f = v.floating()) return *f;
    throw wrong_type(key, v, "a float (f32 or f64)");
  }
  float get_f32(std::string_view key) const { return float(get_f64(key)); }
  bool get_bool(std::string_view key) const {
    const auto& v = get(key);
    if (v.type != GgufValueType::boolean) throw wrong_type(key, v, "bool");
    return v.bits != 0;
  }
  std::string_view get_string(std::string_view key) const {
    const auto& v = get(key);
    if (v.type != GgufValueType::string) throw wrong_type(key, v, "string");
    return v.str;
  }
  /// An array value (any element type).
  const GgufValue& get_array(std::string_view key) const {
    const auto& v = get(key);
    if (v.type != GgufValueType::array) throw wrong_type(key, v, "array");
    return v;
  }
  /// An array of strings (tokenizer.ggml.tokens, tokenizer.ggml.merges).
  const std::vector<std::string_view>& get_string_array(std::string_view key) const {
    const auto& v = get(key);
    if (v.type != GgufValueType::array || v.elem_type != GgufValueType::string)
      throw wrong_type(key, v, "array of string");
    return v.strings;
  }

  /// Adds an entry; false if the key is already present.
  bool add(std::string_view key, GgufValue value) {
    if (!index_.emplace(key, entries_.size()).second) return false;
    entries_.emplace_back(key, std::move(value));
    return true;
  }

 private:
  static std::string field(std::string_view key) { return "key '" + std::string(key) + "'"; }
  Error wrong_type(std::string_view key, const GgufValue& v, std::string_view want) const {
    return make_error(source_, field(key), "expected " + std::string(want) + ", got " + v.describe());
  }
  template <class T>
  T get_int(std::string_view key, std::string_view name) const {
    const auto& v = get(key);
    if (!v.is_integer()) throw wrong_type(key, v, "an integer");
    if (auto x = v.integer_as<T>()) return *x;
    throw make_error(source_, field(key), v.describe() + " is out of range for " + std::string(name));
  }

  std::string source_;
  std::vector<std::pair<std::string_view, GgufValue>> entries_;
  std::unordered_map<std::string_view, size_t> index_;
};

/// One tensor of a GGUF file: a typed view of its bytes in the mapping.
struct GgufTensor {
  std::string name;
  quant::GgmlType type = quant::GgmlType::F32;
  std::vector<int64_t> ne;        ///< ggml order: ne[0] = row length (contiguous), then rows, ...
  uint64_t offset = 0;            ///< from the start of the data section
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  std::string source;             ///< file it came from, for error messages

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;  // the reader checked this does not overflow
    return n;
  }
  int64_t row_length() const { return ne.empty() ? 0 : ne[0]; }
  int64_t n_rows() const { return ne.empty() ? 0 : numel() / ne[0]; }
  size_t row_bytes() const { return size_t(quant::quantized_bytes(type, row_length())); }
  /// The bytes of row r (no bounds check; r < n_rows()).
  const std::byte* row(int64_t r) const { return data + size_t(r) * row_bytes(); }

  /// Decodes rows [first_row, first_row + count) to float32 into dst (count * row_length()
  /// floats). Throws ropex::Error naming file and tensor when the range is outside the tensor.
  void rows_to_float(float* dst, int64_t first_row, int64_t count) const {
    const int64_t n = n_rows();
    if (first_row < 0 || count < 0 || first_row > n || count > n - first_row)
      throw make_error(source, "tensor '" + name + "'",
                       "rows [" + std::to_string(first_row) + ", " + std::to_string(first_row) + "+" +
                           std::to_string(count) + ") are outside its " + std::to_string(n) + " rows");
    quant::dequantize(type, row(first_row), count * row_length(), dst);
  }
};

/// What parse_gguf found. Views (strings, tensor data) point into the parsed bytes.
struct GgufContents {
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;  ///< where the data section starts in the file
  GgufMetadata metadata;
  std::vector<GgufTensor> tensors;  ///< in file order
};

/// Default data alignment when general.alignment is absent (gguf-py GGUF_DEFAULT_ALIGNMENT).
inline constexpr uint64_t kGgufDefaultAlignment = 32;
/// Arrays nested deeper than this are refused (bounds the parser's recursion).
inline constexpr int kGgufMaxArrayDepth = 8;
/// Most dimensions a tensor may have (GGML_MAX_DIMS).
inline constexpr uint32_t kGgufMaxDims = 4;

namespace detail {

/// Reads little-endian fields with bounds checks; `what` names the field only when an error is built.
class GgufCursor {
 public:
  GgufCursor(std::span<const std::byte> file, std::string_view source) : file_(file), source_(source) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return file_.size() - pos_; }
  const std::byte* here() const { return file_.data() + pos_; }

  template <class What>
  void need(uint64_t n, const What& what) const {
    if (n > left())
      throw make_error(source_, what(),
                       "truncated: needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) +
                           ", the file has " + std::to_string(left()) + " left (" + std::to_string(file_.size()) +
                           " bytes in all)");
  }
  template <class T, class What>
  T read(const What& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, here(), sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  template <class What>
  std::string_view read_string(const What& what) {
    const uint64_t len = read<uint64_t>([&] { return what() + " length"; });
    if (len > left())
      throw make_error(source_, what(),
                       "string length " + std::to_string(len) + " runs past the end of the file (" +
                           std::to_string(left()) + " bytes left at offset " + std::to_string(pos_) + ")");
    std::string_view s(reinterpret_cast<const char*>(here()), size_t(len));
    pos_ += len;
    return s;
  }
  void skip(uint64_t n) { pos_ += n; }  // after need(n)
  std::string_view source() const { return source_; }

 private:
  std::span<const std::byte> file_;
  std::string_view source_;
  uint64_t pos_ = 0;
};

// Fewest bytes one value of type t can take (bounds an array's count before allocating).
constexpr uint64_t gguf_min_value_size(GgufValueType t) {
  if (t == GgufValueType::string) return 8;       // u64 length
  if (t == GgufValueType::array) return 4 + 8;    // elem type + count
  return gguf_scalar_size(t);
}

// `field` names the value in errors ("key 'general.name'", "key 'x'[3]").
inline GgufValue read_gguf_value(GgufCursor& c, GgufValueType type, const std::string& field, int depth) {
  const auto what = [&] { return field; };
  GgufValue v;
  v.type = type;
  if (gguf_value_type_name(type).empty())
    throw make_error(c.source(), what(), "value type " + std::to_string(uint32_t(type)) + " is not a GGUF type (0..12)");
  if (type == GgufValueType::string) {
    v.str = c.read_string(what);
    return v;
  }
  if (type != GgufValueType::array) {
    const size_t sz = gguf_scalar_size(type);
    c.need(sz, what);
    std::memcpy(&v.bits, c.here(), sz);
    c.skip(sz);
    if (type == GgufValueType::boolean && v.bits > 1)
      throw make_error(c.source(), what(), "bool must be 0 or 1, got " + std::to_string(v.bits));
    return v;
  }
  if (depth >= kGgufMaxArrayDepth)
    throw make_error(c.source(), what(), "arrays nested deeper than " + std::to_string(kGgufMaxArrayDepth));
  const auto et = GgufValueType(c.read<uint32_t>([&] { return what() + " element type"; }));
  if (gguf_value_type_name(et).empty())
    throw make_error(c.source(), what(), "array element type " + std::to_string(uint32_t(et)) + " is not a GGUF type (0..12)");
  v.elem_type = et;
  v.count = c.read<uint64_t>([&] { return what() + " count"; });
  const uint64_t min_size = gguf_min_value_size(et);
  if (v.count > c.left() / min_size)
    throw make_error(c.source(), what(),
                     "array count " + std::to_string(v.count) + " of " + std::string(gguf_value_type_name(et)) +
                         " needs at least " + std::to_string(min_size) + " bytes each, the file has " +
                         std::to_string(c.left()) + " left");
  if (et == GgufValueType::string) {
    v.strings.reserve(size_t(v.count));
    for (uint64_t i = 0; i < v.count; ++i)
      v.strings.push_back(c.read_string([&] { return what() + "[" + std::to_string(i) + "]"; }));
  } else if (et == GgufValueType::array) {
    v.arrays.reserve(size_t(v.count));
    for (uint64_t i = 0; i < v.count; ++i) {
      // A nested array is written without a value-type word: element type, count, elements
      // (gguf_writer.py _pack_val with add_vtype=False).
      v.arrays.push_back(read_gguf_value(c, GgufValueType::array, field + "[" + std::to_string(i) + "]", depth + 1));
    }
  } else {
    v.elems = c.here();
    c.skip(v.count * min_size);  // count <= left / size checked above
    if (et == GgufValueType::boolean)
      for (uint64_t i = 0; i < v.count; ++i)
        if (uint8_t(v.elems[i]) > 1)
          throw make_error(c.source(), what() + "[" + std::to_string(i) + "]",
                           "bool must be 0 or 1, got " + std::to_string(uint8_t(v.elems[i])));
  }
  return v;
}

}  // namespace detail

/// Parses and validates a whole GGUF file held in `file`; `source` names it in errors.
/// The result's strings and tensor data point into `file`.
inline GgufContents parse_gguf(std::span<const std::byte> file, std::string_view source) {
  using detail::GgufCursor;
  GgufCursor c(file, source);
  GgufContents out;
  out.metadata = GgufMetadata(std::string(source));
  const auto fixed = [](const char* f) { return [f] { return std::string(f); }; };

  const uint32_t magic = c.read<uint32_t>(fixed("header.magic"));
  if (magic != 0x46554747u)  // "GGUF" (gguf-py constants.py GGUF_MAGIC)
    throw make_error(source, "header.magic", "not a GGUF file (the first 4 bytes are not \"GGUF\")");
  const uint32_t version = c.read<uint32_t>(fixed("header.version"));
  if (version != 2 && version != 3) {
    const uint32_t swapped = (version >> 24) | ((version >> 8) & 0xff00u) | ((version << 8) & 0xff0000u) | (version << 24);
    if (swapped == 2 || swapped == 3)
      throw make_error(source, "header.version", "big-endian GGUF files are not supported");
    if (version == 1)
      throw make_error(source, "header.version", "version 1 (32-bit counts) is not supported; ropex reads versions 2 and 3");
    throw make_error(source, "header.version", "version " + std::to_string(version) + " is not supported; ropex reads versions 2 and 3");
  }
  out.version = version;
  const uint64_t n_tensors = c.read<uint64_t>(fixed("header.tensor_count"));
  const uint64_t n_kv = c.read<uint64_t>(fixed("header.kv_count"));
  // Smallest entries: key (8-byte length) + type (4) + a 1-byte value; tensor info with one dim:
  // name length 8 + n_dims 4 + ne 8 + type 4 + offset 8.
  if (n_kv > c.left() / 13)
    throw make_error(source, "header.kv_count",
                     std::to_string(n_kv) + " entries cannot fit in the " + std::to_string(c.left()) + " bytes left");
  if (n_tensors > c.left() / 32)
    throw make_error(source, "header.tensor_count",
                     std::to_string(n_tensors) + " tensors cannot fit in the " + std::to_string(c.left()) + " bytes left");

  for (uint64_t i = 0; i < n_kv; ++i) {
    const auto kv_field = [&] { return "kv " + std::to_string(i) + " key"; };
    const std::string_view key = c.read_string(kv_field);
    const auto key_field = [&] { return "key '" + std::string(key) + "'"; };
    const auto type = GgufValueType(c.read<uint32_t>([&] { return key_field() + " type"; }));
    GgufValue v = detail::read_gguf_value(c, type, key_field(), 0);
    if (!out.metadata.add(key, std::move(v))) throw make_error(source, key_field(), "duplicate key");
  }

  if (const GgufValue* a = out.metadata.find("general.alignment")) {
    const auto al = a->integer_as<uint32_t>();
    if (!a->is_integer()) throw make_error(source, "key 'general.alignment'", "expected an integer, got " + a->describe());
    if (!al || *al == 0 || (*al & (*al - 1)) != 0)
      throw make_error(source, "key 'general.alignment'", "must be a power of two >= 1, got " + a->describe());
    out.alignment = *al;
  } else {
    out.alignment = kGgufDefaultAlignment;
  }

  struct Info { std::string_view name; uint64_t offset; };
  std::vector<Info> infos;
  infos.reserve(size_t(n_tensors));
  std::unordered_map<std::string_view, size_t> names;
  out.tensors.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const std::string_view name = c.read_string([&] { return "tensor " + std::to_string(i) + " name"; });
    const auto tf = [&] { return "tensor '" + std::string(name) + "'"; };
    if (!names.emplace(name, size_t(i)).second) throw make_error(source, tf(), "duplicate tensor name");
    const uint32_t n_dims = c.read<uint32_t>([&] { return tf() + " n_dims"; });
    if (n_dims < 1 || n_dims > kGgufMaxDims)
      throw make_error(source, tf(), "n_dims " + std::to_string(n_dims) + " must be 1.." + std::to_string(kGgufMaxDims));
    GgufTensor t;
    t.name = std::string(name);
    t.source = std::string(source);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = c.read<uint64_t>([&] { return tf() + " ne[" + std::to_string(d) + "]"; });
      if (ne < 1 || ne > uint64_t(std::numeric_limits<int64_t>::max()))
        throw make_error(source, tf(), "ne[" + std::to_string(d) + "] = " + std::to_string(ne) + " must be >= 1 and < 2^63");
      if (__builtin_mul_overflow(numel, ne, &numel) || numel > uint64_t(std::numeric_limits<int64_t>::max()))
        throw make_error(source, tf(), "element count of " + shape_string(t.ne) + " x " + std::to_string(ne) + " overflows");
      t.ne.push_back(int64_t(ne));
    }
    const uint32_t type = c.read<uint32_t>([&] { return tf() + " type"; });
    t.type = quant::GgmlType(type);
    if (!quant::is_supported(t.type)) {
      const auto tname = quant::ggml_type_name(type);
      throw make_error(source, tf(),
                       tname.empty() ? "type " + std::to_string(type) + " is not a ggml type"
                                     : "type " + std::string(tname) + " is not supported (ropex reads " +
                                           std::string(quant::kSupportedTypes) + ")");
    }
    const quant::BlockTraits bt = quant::block_traits(t.type);
    if (t.ne[0] % bt.block_size != 0)
      throw make_error(source, tf(),
                       "row length ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                           std::string(quant::ggml_type_name(t.type)) + " block size " + std::to_string(bt.block_size));
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel / uint64_t(bt.block_size), uint64_t(bt.type_size), &nbytes) ||
        nbytes > uint64_t(std::numeric_limits<int64_t>::max()))
      throw make_error(source, tf(), "byte size of " + shape_string(t.ne) + " overflows");
    t.nbytes = size_t(nbytes);
    t.offset = c.read<uint64_t>([&] { return tf() + " offset"; });
    if (t.offset % out.alignment != 0)
      throw make_error(source, tf(), "offset " + std::to_string(t.offset) + " not aligned to " + std::to_string(out.alignment));
    out.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment (gguf.cpp: GGML_PAD).
  const uint64_t pos = c.pos();
  const uint64_t data_offset = pos + (out.alignment - pos % out.alignment) % out.alignment;
  out.data_offset = data_offset;
  if (data_offset > file.size() && !out.tensors.empty())
    throw make_error(source, "data section",
                     "truncated: starts at offset " + std::to_string(data_offset) + " (aligned to " +
                         std::to_string(out.alignment) + ") past the end of the file (" + std::to_string(file.size()) +
                         " bytes)");
  const uint64_t data_size = data_offset < file.size() ? file.size() - data_offset : 0;
  for (auto& t : out.tensors) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      throw make_error(source, "tensor '" + t.name + "'",
                       "bytes [" + std::to_string(t.offset) + ", " + std::to_string(t.offset) + "+" +
                           std::to_string(t.nbytes) + ") run past the data section (" + std::to_string(data_size) +
                           " bytes): truncated file?");
    t.data = file.data() + data_offset + t.offset;
  }
  // Non-overlapping: in offset order, each tensor starts at or after the previous one's end.
  std::vector<size_t> order(out.tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return out.tensors[a].offset < out.tensors[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const auto& prev = out.tensors[order[k - 1]];
    const auto& cur = out.tensors[order[k]];
    if (cur.offset < prev.offset + prev.nbytes)
      throw make_error(source, "tensor '" + cur.name + "'",
                       "bytes [" + std::to_string(cur.offset) + ", " + std::to_string(cur.offset + cur.nbytes) +
                           ") overlap tensor '" + prev.name + "' at [" + std::to_string(prev.offset) + ", " +
                           std::to_string(prev.offset + prev.nbytes) + ")");
  }
  return out;
}

/// One mapped .gguf file and its validated metadata and tensors.
class GgufFile {
 public:
  /// Maps and validates `path` (errors name the path).
  static GgufFile open(const std::filesystem::path& path) {
    GgufFile f;
    f.file_ = io::MappedFile::open(path);
    f.contents_ = parse_gguf(f.file_.bytes(), path.string());
    return f;
  }
  uint32_t version() const { return contents_.version; }
  uint64_t alignment() const { return contents_.alignment; }
  /// Offset of the data section in the file.
  uint64_t data_offset() const { return contents_.data_offset; }
  const GgufMetadata& metadata() const { return contents_.metadata; }
  /// Tensors in file order.
  const std::vector<GgufTensor>& tensors() const { return contents_.tensors; }
  /// The tensor called `name`, or nullptr.
  const GgufTensor* find(std::string_view name) const {
    for (const auto& t : contents_.tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
  /// The tensor called `name`; throws "<file>: tensor '<name>': missing".
  const GgufTensor& tensor(std::string_view name) const {
    if (const auto* t = find(name)) return *t;
    throw make_error(path().string(), "tensor '" + std::string(name) + "'", "missing");
  }
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  io::MappedFile file_;  // the mapping never moves, so the views in contents_ survive a move
  GgufContents contents_;
};

}  // namespace ropex::model
