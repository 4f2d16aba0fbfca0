// Safetensors reader (memory-mapped) and a small writer.
//
// File layout (https://github.com/huggingface/safetensors):
//   [u64 little-endian N][N bytes of JSON header][data section]
//   header = {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [begin, end]}, ...,
//             "__metadata__": {...}}   offsets are relative to the start of the data section.
// Every field is checked before a pointer is formed: a malformed file gives one ropex::Error that
// names the file and the field, never a read outside the mapping.
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/json_file.hpp>
#include <ropex/io/mapped_file.hpp>
#include <ropex/io/json_brief.hpp>
#include <ropex/model/tensor.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ropex::model {

/// Largest JSON header we accept. Real headers are ~100 KB for a 70B model; the cap keeps a
/// corrupt length from making us parse gigabytes.
inline constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;

namespace detail {

inline std::optional<DType> parse_dtype(std::string_view s) {
  if (s == "F32") return DType::f32;
  if (s == "F16") return DType::f16;
  if (s == "BF16") return DType::bf16;
  return std::nullopt;
}

// A non-negative JSON integer that fits int64, or nothing (floats, bools, negatives, huge).
inline std::optional<uint64_t> json_size(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return u;
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    if (i < 0) return std::nullopt;
    return uint64_t(i);
  }
  return std::nullopt;
}

}  // namespace detail

/// Parses and validates the header of a safetensors file held in `file` (the whole file's bytes)
/// and returns one view per tensor, in the order of their data offsets. Views point into `file`.
/// `source` names the file in error messages. Checks: 8-byte length within the file and
/// <= kMaxSafetensorsHeader; header is a JSON object; each entry has a supported dtype, a shape
/// of non-negative integers whose byte size does not overflow, data_offsets [begin, end] with
/// begin <= end <= data size and end - begin == numel * dtype size; no two tensors overlap.
/// `__metadata__` is ignored.
inline std::vector<TensorView> parse_safetensors(std::span<const std::byte> file, std::string_view source) {
  using nlohmann::json;
  if (file.size() < 8)
    throw make_error(source, "header length",
                     "file is " + std::to_string(file.size()) + " bytes, too short for the 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);  // little-endian host (static_assert in tensor.hpp)
  const uint64_t after = file.size() - 8;
  if (n > after)
    throw make_error(source, "header length",
                     std::to_string(n) + " bytes runs past the end of the file (" + std::to_string(file.size()) +
                         " bytes): truncated or not a safetensors file");
  if (n > kMaxSafetensorsHeader)
    throw make_error(source, "header length",
                     std::to_string(n) + " bytes exceeds the " + std::to_string(kMaxSafetensorsHeader) + "-byte limit");
  const char* hbegin = reinterpret_cast<const char*>(file.data() + 8);
  // Strict: depth-limited, no NUL byte (nlohmann would stop there), no key twice.
  const json header = parse_json_strict(std::string_view(hbegin, n), std::string(source) + ": header");
  if (!header.is_object()) throw make_error(source, "header", "must be a JSON object");

  const std::byte* data = file.data() + 8 + n;
  const uint64_t data_size = after - n;
  std::vector<TensorView> views;
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // parallel to views
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string field = "tensor '" + name + "'";
    if (!entry.is_object()) throw make_error(source, field, "entry must be a JSON object");
    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) throw make_error(source, field + ".dtype", "missing or not a string");
    auto dtype = detail::parse_dtype(dt->get_ref<const std::string&>());
    if (!dtype)
      throw make_error(source, field,
                       "unsupported dtype " + dt->get<std::string>() + " (ropex reads F32, F16, BF16)");
    auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) throw make_error(source, field + ".shape", "missing or not an array");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      auto v = detail::json_size(d);
      if (!v) throw make_error(source, field + ".shape", "dimensions must be non-negative integers, got " + io::json_brief(d));
      if (__builtin_mul_overflow(numel, *v, &numel))
        throw make_error(source, field + ".shape", "element count overflows: " + io::json_brief(*sh));
      shape.push_back(int64_t(*v));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, uint64_t(dtype_size(*dtype)), &nbytes))
      throw make_error(source, field + ".shape", "byte size overflows: " + io::json_brief(*sh));
    auto off = entry.find("data_offsets");
    if (off == entry.end() || !off->is_array() || off->size() != 2)
      throw make_error(source, field + ".data_offsets", "missing or not a [begin, end] pair");
    auto b = detail::json_size((*off)[0]), e = detail::json_size((*off)[1]);
    if (!b || !e) throw make_error(source, field + ".data_offsets", "must be non-negative integers, got " + io::json_brief(*off));
    if (*b > *e) throw make_error(source, field + ".data_offsets", "begin > end: " + io::json_brief(*off));
    if (*e > data_size)
      throw make_error(source, field + ".data_offsets",
                       io::json_brief(*off) + " runs past the data section (" + std::to_string(data_size) +
                           " bytes): truncated file?");
    if (*e - *b != nbytes)
      throw make_error(source, field,
                       "shape " + io::json_brief(*sh) + " x " + std::string(dtype_name(*dtype)) + " needs " +
                           std::to_string(nbytes) + " bytes but data_offsets " + io::json_brief(*off) + " span " +
                           std::to_string(*e - *b));
    views.push_back(TensorView{name, *dtype, std::move(shape), data + *b, size_t(nbytes), std::string(source)});
    spans.emplace_back(*b, *e);
  }
  // Non-overlapping: sort by begin, each must start at or after the previous end.
  std::vector<size_t> order(views.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return spans[a] < spans[b];
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const auto& prev = spans[order[k - 1]];
    const auto& cur = spans[order[k]];
    if (cur.first < prev.second)
      throw make_error(source, "tensor '" + views[order[k]].name + "'.data_offsets",
                       "[" + std::to_string(cur.first) + ", " + std::to_string(cur.second) + "] overlaps tensor '" +
                           views[order[k - 1]].name + "' at [" + std::to_string(prev.first) + ", " +
                           std::to_string(prev.second) + "]");
  }
  std::vector<TensorView> sorted;
  sorted.reserve(views.size());
  for (size_t i : order) sorted.push_back(std::move(views[i]));
  return sorted;
}

/// One mapped .safetensors file and its validated tensors.
class SafetensorsFile {
 public:
  /// Maps and validates `path` (errors name the path).
  static SafetensorsFile open(const std::filesystem::path& path) {
    SafetensorsFile f;
    f.file_ = io::MappedFile::open(path);
    f.tensors_ = parse_safetensors(f.file_.bytes(), path.string());
    f.by_name_.reserve(f.tensors_.size());
    for (size_t i = 0; i < f.tensors_.size(); ++i) f.by_name_.emplace(f.tensors_[i].name, i);
    return f;
  }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  /// The tensor called `name`, or nullptr. Hashed: an index of N entries loads in O(N).
  const TensorView* find(std::string_view name) const {
    const auto it = by_name_.find(std::string(name));
    return it == by_name_.end() ? nullptr : &tensors_[it->second];
  }
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  io::MappedFile file_;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> by_name_;  // name -> index in tensors_
};

/// Opens a sharded checkpoint from its `model.safetensors.index.json`: {"weight_map": {tensor:
/// shard file name}}. Each shard is opened once. Errors name the index and the shard: a shard file
/// that is missing, a tensor the index puts in a shard that lacks it, a tensor found in two shards.
inline std::vector<SafetensorsFile> open_safetensors_index(const std::filesystem::path& index_path) {
  using nlohmann::json;
  const std::string src = index_path.string();
  const json index = read_json_file(index_path);
  if (!index.is_object()) throw make_error(src, "", "must be a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) throw make_error(src, "weight_map", "missing or not an object");
  if (wm->empty()) throw make_error(src, "weight_map", "is empty");
  const auto dir = index_path.parent_path();
  std::vector<SafetensorsFile> shards;
  std::map<std::string, size_t> shard_of_file;
  for (const auto& [tensor, file] : wm->items()) {
    if (!file.is_string()) throw make_error(src, "weight_map." + tensor, "shard name must be a string");
    const std::string& shard = file.get_ref<const std::string&>();
    // Shards live next to the index: refuse paths so an index cannot point elsewhere.
    if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
        shard == "." || shard == "..")
      throw make_error(src, "weight_map." + tensor, "shard '" + shard + "' must be a plain file name");
    auto it = shard_of_file.find(shard);
    if (it == shard_of_file.end()) {
      const auto shard_path = dir / shard;
      std::error_code ec;  // the throwing overload reports a symlink loop as a bare "filesystem error"
      if (!std::filesystem::exists(std::filesystem::symlink_status(shard_path, ec)))
        throw make_error(src, "weight_map." + tensor, "shard file " + shard_path.string() + " does not exist");
      shards.push_back(SafetensorsFile::open(shard_path));
      it = shard_of_file.emplace(shard, shards.size() - 1).first;
    }
    if (!shards[it->second].find(tensor))
      throw make_error(src, "weight_map." + tensor,
                       "tensor '" + tensor + "' is not in shard " + shards[it->second].path().string());
  }
  std::set<std::string_view> seen;
  for (const auto& s : shards)
    for (const auto& t : s.tensors())
      if (!seen.insert(t.name).second)
        throw make_error(s.path().string(), "tensor '" + t.name + "'", "also present in another shard of " + src);
  return shards;
}

/// A tensor to write: raw little-endian element bytes.
struct TensorData {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

/// Writes a safetensors file (tensors packed in the given order, header padded with spaces to a
/// multiple of 8 so F32 data is aligned). For tests, fixtures and tools.
inline void write_safetensors(const std::filesystem::path& path, const std::vector<TensorData>& tensors,
                              const nlohmann::json& metadata = nlohmann::json::object()) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::ofstream out(path, std::ios::binary);
  if (!out) throw make_error(path.string(), "", "cannot open for writing");
  const uint64_t n = h.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(h.data(), std::streamsize(h.size()));
  for (const auto& t : tensors) out.write(reinterpret_cast<const char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
  if (!out) throw make_error(path.string(), "", "write failed");
}

}  // namespace ropex::model
