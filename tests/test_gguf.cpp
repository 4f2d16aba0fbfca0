// GGUF reader: a file written by gguf-py's GGUFWriter (every metadata type, one tensor per
// supported type), the real SmolLM2-135M Q4_1 model when scripts/fetch_models.sh has fetched it,
// and hand-made malformed files, each refused with one error naming the file and the field.
#include <ropex/io/npy.hpp>
#include <ropex/model/gguf.hpp>

#include <doctest/doctest.h>
#include "test_util.hpp"
#include <nlohmann/json.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace ropex::model;
using ropex::quant::GgmlType;
using ropex::test::error_of;

namespace {

const fs::path kRoot = fs::path(ROPEX_SOURCE_DIR);
const fs::path kGgufDir = kRoot / "tests" / "fixtures" / "gguf";
const fs::path kQuantDir = kRoot / "tests" / "fixtures" / "quant";

std::vector<std::byte> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in, "cannot open " << p);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
  return b;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  REQUIRE_MESSAGE(in, "cannot open " << p);
  return nlohmann::json::parse(in);
}

bool same(float want, float got) {
  if (std::isnan(want)) return std::isnan(got);
  return std::bit_cast<uint32_t>(want) == std::bit_cast<uint32_t>(got);
}

GgmlType type_by_name(const std::string& n) {
  for (uint32_t t = 0; t < 64; ++t)
    if (ropex::quant::ggml_type_name(t) == n) return GgmlType(t);
  FAIL("unknown type name " << n);
  return GgmlType::F32;
}

// ---- a GGUF writer for hand-made (and broken) files --------------------------------------------
struct Bytes {
  std::vector<std::byte> b;
  template <class T>
  Bytes& put(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& str(std::string_view s) {
    put<uint64_t>(s.size());
    for (char ch : s) b.push_back(std::byte(ch));
    return *this;
  }
  Bytes& append(const Bytes& o) {
    b.insert(b.end(), o.b.begin(), o.b.end());
    return *this;
  }
};

// Value types (GGUF spec numbers).
enum : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 };

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type = 0;
  uint64_t offset = 0;
};

struct Builder {
  uint32_t magic = 0x46554747, version = 3;
  std::optional<uint64_t> n_tensors, n_kv;  // overrides of the true counts
  std::vector<Bytes> kvs;
  std::vector<TensorSpec> tensors;
  uint64_t alignment = 32;  // used for padding; set general.alignment separately
  std::vector<std::byte> data;
  std::vector<size_t> boundaries;  // offsets where each section / entry ends (filled by build)

  Builder& kv(std::string_view key, uint32_t type, const Bytes& value) {
    Bytes e;
    e.str(key).put<uint32_t>(type).append(value);
    kvs.push_back(e);
    return *this;
  }
  template <class T>
  Builder& kv_scalar(std::string_view key, uint32_t type, T v) { return kv(key, type, Bytes().put<T>(v)); }
  Builder& kv_str(std::string_view key, std::string_view s) { return kv(key, STR, Bytes().str(s)); }
  Builder& tensor(std::string name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    tensors.push_back({std::move(name), std::move(ne), type, offset});
    return *this;
  }
  std::vector<std::byte> build() {
    Bytes f;
    boundaries.clear();
    f.put(magic);
    boundaries.push_back(f.b.size());
    f.put(version);
    boundaries.push_back(f.b.size());
    f.put<uint64_t>(n_tensors.value_or(tensors.size()));
    boundaries.push_back(f.b.size());
    f.put<uint64_t>(n_kv.value_or(kvs.size()));
    boundaries.push_back(f.b.size());
    for (const auto& k : kvs) {
      f.append(k);
      boundaries.push_back(f.b.size());
    }
    for (const auto& t : tensors) {
      f.str(t.name).put<uint32_t>(uint32_t(t.ne.size()));
      for (uint64_t d : t.ne) f.put(d);
      f.put(t.type).put(t.offset);
      boundaries.push_back(f.b.size());
    }
    while (f.b.size() % alignment) f.b.push_back(std::byte{0});
    boundaries.push_back(f.b.size());
    f.b.insert(f.b.end(), data.begin(), data.end());
    return f.b;
  }
};

// A valid little file: two metadata keys, an F32 [4, 2] tensor and a Q8_0 [32] tensor.
Builder valid() {
  Builder b;
  b.kv_str("general.architecture", "llama").kv_scalar<uint32_t>("llama.block_count", U32, 2);
  b.tensor("a", {4, 2}, 0, 0).tensor("q", {32}, 8, 32);
  b.data.assign(32 + 34, std::byte{0});
  for (int i = 0; i < 8; ++i) {
    const float v = float(i) + 0.5f;
    std::memcpy(b.data.data() + 4 * i, &v, 4);
  }
  b.data[32] = std::byte{0x00};  // Q8_0 d = 1.0 (0x3c00)
  b.data[33] = std::byte{0x3c};
  for (int i = 0; i < 32; ++i) b.data[34 + i] = std::byte(uint8_t(i - 16));
  return b;
}

std::string parse_error(const std::vector<std::byte>& f) {
  return error_of([&] { parse_gguf(std::span(f), "test.gguf"); });
}
std::string parse_error(Builder b) { return parse_error(b.build()); }

// A parse result with the bytes it points into (a moved vector keeps its buffer).
struct Parsed {
  std::vector<std::byte> bytes;
  GgufContents c;
};
Parsed parse(Builder& b) {
  Parsed p;
  p.bytes = b.build();
  p.c = parse_gguf(std::span(p.bytes), "t");
  return p;
}

}  // namespace

TEST_CASE("tiny.gguf written by gguf-py: metadata of every type") {
  const auto f = GgufFile::open(kGgufDir / "tiny.gguf");
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  const auto& m = f.metadata();
  CHECK(m.get_string("general.architecture") == "llama");
  CHECK(m.get_u8("t.u8") == 200);
  CHECK(m.get_i8("t.i8") == -100);
  CHECK(m.get_u16("t.u16") == 60000);
  CHECK(m.get_i16("t.i16") == -30000);
  CHECK(m.get_u32("t.u32") == 4000000000u);
  CHECK(m.get_i32("t.i32") == -2000000000);
  CHECK(m.get_u64("t.u64") == 18000000000000000000ull);
  CHECK(m.get_i64("t.i64") == -9000000000000000000ll);
  CHECK(m.get_f32("t.f32") == 0.1f);
  CHECK(m.get("t.f32").type == GgufValueType::f32);
  CHECK(m.get_f64("t.f64") == 0.1);
  CHECK(m.get("t.f64").type == GgufValueType::f64);
  CHECK(m.get_bool("t.bool_true"));
  CHECK_FALSE(m.get_bool("t.bool_false"));
  CHECK(m.get_string("t.string") == "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c");
  CHECK(m.get_u32("llama.block_count") == 2);
  CHECK(m.get_f32("llama.rope.freq_base") == 10000.0f);

  const auto& ai = m.get_array("t.arr_i32");
  REQUIRE(ai.count == 3);
  CHECK(ai.elem_type == GgufValueType::i32);
  CHECK(ai.at(1).integer_as<int32_t>() == -2);
  const auto& au = m.get_array("t.arr_u8");
  CHECK(au.at(2).integer_as<uint8_t>() == 255);
  const auto& af = m.get_array("t.arr_f32");
  CHECK(af.at(1).floating() == -1.25);
  CHECK(m.get_array("t.arr_f64").at(0).floating() == 0.1);
  const auto& ab = m.get_array("t.arr_bool");
  CHECK(ab.at(0).bits == 1);
  CHECK(ab.at(1).bits == 0);
  const auto& as = m.get_string_array("t.arr_str");
  REQUIRE(as.size() == 3);
  CHECK(as[0] == "a");
  CHECK(as[1] == "");
  CHECK(as[2] == "bc");
  const auto& an = m.get_array("t.arr_nested");
  REQUIRE(an.count == 3);
  CHECK(an.elem_type == GgufValueType::array);
  CHECK(an.arrays[0].count == 2);
  CHECK(an.arrays[0].at(1).integer_as<int64_t>() == 2);
  CHECK(an.arrays[1].strings.at(1) == "yz");
  REQUIRE(an.arrays[2].elem_type == GgufValueType::array);
  CHECK(an.arrays[2].arrays.at(0).at(0).integer_as<int>() == 3);
}

TEST_CASE("typed metadata accessors: any integer type in range, clear errors otherwise") {
  const auto f = GgufFile::open(kGgufDir / "tiny.gguf");
  const auto& m = f.metadata();
  CHECK(m.get_u32("t.u8") == 200);     // stored u8, read as u32
  CHECK(m.get_i64("t.u32") == 4000000000);
  CHECK(m.get_i16("t.i8") == -100);
  const std::string src = (kGgufDir / "tiny.gguf").string();
  CHECK(error_of([&] { m.get_u8("t.u16"); }) == src + ": key 't.u16': u16 60000 is out of range for u8");
  CHECK(error_of([&] { m.get_u32("t.i8"); }) == src + ": key 't.i8': i8 -100 is out of range for u32");
  CHECK_HAS(error_of([&] { m.get_i64("t.u64"); }), "u64 18000000000000000000 is out of range for i64");
  CHECK_HAS(error_of([&] { m.get_u64("t.i64"); }), "out of range for u64");
  CHECK(error_of([&] { m.get_u32("nope"); }) == src + ": key 'nope': missing");
  CHECK(error_of([&] { m.get_string("t.u32"); }) == src + ": key 't.u32': expected string, got u32 4000000000");
  CHECK_HAS(error_of([&] { m.get_u32("t.f32"); }), "key 't.f32': expected an integer, got f32");
  CHECK_HAS(error_of([&] { m.get_f32("t.u8"); }), "expected a float (f32 or f64), got u8 200");
  CHECK_HAS(error_of([&] { m.get_bool("t.u8"); }), "expected bool");
  CHECK_HAS(error_of([&] { m.get_string_array("t.arr_i32"); }), "expected array of string, got array[3] of i32");
  CHECK_HAS(error_of([&] { m.get_array("t.string"); }), "expected array");
}

TEST_CASE("tiny.gguf tensors: names, types, shapes, bytes and values from the quant fixtures") {
  const auto f = GgufFile::open(kGgufDir / "tiny.gguf");
  const auto listing = read_json(kGgufDir / "tiny.json")["tensors"];
  REQUIRE(f.tensors().size() == listing.size());
  for (size_t i = 0; i < listing.size(); ++i) {
    const auto& t = f.tensors()[i];
    const std::string want_type = listing[i]["type"];
    CAPTURE(t.name);
    CHECK(t.name == listing[i]["name"].get<std::string>());
    CHECK(t.type == type_by_name(want_type));
    CHECK(t.ne == listing[i]["ne"].get<std::vector<int64_t>>());
    CHECK(t.offset % f.alignment() == 0);
    CHECK(reinterpret_cast<uintptr_t>(t.data) % 32 == 0);  // mmap is page aligned, data section 32
    CHECK(t.nbytes == size_t(ropex::quant::quantized_bytes(t.type, t.numel())));
    std::vector<float> got(size_t(t.numel()));
    t.rows_to_float(got.data(), 0, t.n_rows());
    if (t.type == GgmlType::F32) {  // np.arange(24) * 0.5
      for (size_t k = 0; k < got.size(); ++k) CHECK(got[k] == 0.5f * float(k));
      continue;
    }
    // The script stored the first blocks of tests/fixtures/quant/<TYPE>.bin.
    const auto raw = read_bytes(kQuantDir / (want_type + ".bin"));
    REQUIRE(raw.size() >= t.nbytes);
    CHECK(std::memcmp(raw.data(), t.data, t.nbytes) == 0);
    const auto ref = ropex::io::read_npy_f32(kQuantDir / (want_type + ".npy"));
    REQUIRE(ref.data.size() >= got.size());
    size_t bad = 0;
    for (size_t k = 0; k < got.size(); ++k) bad += !same(ref.data[k], got[k]);
    CHECK(bad == 0);
  }
  const auto& q = f.tensor("t.q4_k");
  std::vector<float> row(size_t(q.row_length()));
  CHECK_HAS(error_of([&] { q.rows_to_float(row.data(), 1, 2); }), "tensor 't.q4_k': rows [1, 1+2) are outside its 2 rows");
  CHECK_HAS(error_of([&] { f.tensor("nope"); }), "tensor 'nope': missing");
}

TEST_CASE("SmolLM2-135M-Instruct Q4_1 (scripts/fetch_models.sh)") {
  const fs::path model = kRoot / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(model)) {
    MESSAGE("skipped: " << model.string() << " absent (run scripts/fetch_models.sh)");
    return;
  }
  const auto f = GgufFile::open(model);
  const auto& m = f.metadata();
  CHECK(m.get_string("general.architecture") == "llama");
  const uint32_t n_layer = m.get_u32("llama.block_count");
  CHECK(n_layer == 30);
  const int64_t n_embd = m.get_u32("llama.embedding_length");
  const int64_t n_head = m.get_u32("llama.attention.head_count");
  const int64_t n_kv = m.get_u32("llama.attention.head_count_kv");
  const int64_t n_ff = m.get_u32("llama.feed_forward_length");
  CHECK(n_head == 9);
  CHECK(n_kv == 3);
  CHECK(m.get_f32("llama.rope.freq_base") == 100000.0f);
  CHECK(m.get_u32("llama.context_length") == 8192);
  CHECK(m.get_string("tokenizer.ggml.model") == "gpt2");
  const auto& tokens = m.get_string_array("tokenizer.ggml.tokens");
  const int64_t n_vocab = m.get_u32("llama.vocab_size");
  CHECK(int64_t(tokens.size()) == n_vocab);
  CHECK(m.get_array("tokenizer.ggml.token_type").count == tokens.size());
  const auto& merges = m.get_string_array("tokenizer.ggml.merges");
  // Array lengths as gguf.GGUFReader counts them (smollm2_tensors.json).
  const auto listed = read_json(kGgufDir / "smollm2_tensors.json");
  for (const auto& [key, n] : listed["array_lengths"].items()) {
    CAPTURE(key);
    CHECK(m.get_array(key).count == n.get<uint64_t>());
  }
  CHECK(merges.size() == listed["array_lengths"]["tokenizer.ggml.merges"].get<size_t>());
  CHECK(tokens.at(m.get_u32("tokenizer.ggml.bos_token_id")) == "<|im_start|>");
  CHECK(merges.front().find(' ') != std::string_view::npos);  // "a b": two tokens, one space

  // Shapes from the hyperparameters (ggml order: ne[0] is the input dimension).
  const int64_t head_dim = n_embd / n_head;
  const auto want_ne = [&](const std::string& name) -> std::vector<int64_t> {
    const auto suffix = name.substr(name.find('.', 4) + 1);
    if (name == "token_embd.weight") return {n_embd, n_vocab};
    if (name == "output_norm.weight" || suffix == "attn_norm.weight" || suffix == "ffn_norm.weight") return {n_embd};
    if (suffix == "attn_q.weight" || suffix == "attn_output.weight") return {n_embd, n_embd};
    if (suffix == "attn_k.weight" || suffix == "attn_v.weight") return {n_embd, n_kv * head_dim};
    if (suffix == "ffn_gate.weight" || suffix == "ffn_up.weight") return {n_embd, n_ff};
    if (suffix == "ffn_down.weight") return {n_ff, n_embd};
    return {};
  };
  CHECK(f.tensors().size() == size_t(2 + 9 * n_layer));  // embeddings tied to the output
  // Every tensor's type and shape as gguf.GGUFReader lists them (smollm2_tensors.json).
  const auto& listing = listed["tensors"];
  REQUIRE(listing.size() == f.tensors().size());
  for (size_t i = 0; i < listing.size(); ++i) {
    const auto& t = f.tensors()[i];
    CAPTURE(t.name);
    CHECK(t.name == listing[i]["name"].get<std::string>());
    CHECK(t.type == type_by_name(listing[i]["type"]));
    CHECK(t.ne == listing[i]["ne"].get<std::vector<int64_t>>());
    CHECK(t.ne == want_ne(t.name));
  }
  // Dequantized values against gguf.quants.dequantize (smollm2_reference.*).
  const auto ref = ropex::io::read_npy_f32(kGgufDir / "smollm2_reference.npy");
  const auto picks = read_json(kGgufDir / "smollm2_reference.json")["picks"];
  size_t at = 0, bad = 0;
  for (const auto& p : picks) {
    const auto& t = f.tensor(p["tensor"].get<std::string>());
    std::vector<float> row(size_t(t.row_length()));
    t.rows_to_float(row.data(), p["row"].get<int64_t>(), 1);
    const int64_t first = p["first"], count = p["count"];
    for (int64_t k = 0; k < count; ++k) bad += !same(ref.data.at(at++), row[size_t(first + k)]);
  }
  CHECK(at == ref.data.size());
  CHECK(bad == 0);
  std::set<GgmlType> types;
  for (const auto& p : picks) types.insert(f.tensor(p["tensor"].get<std::string>()).type);
  CHECK(types == std::set<GgmlType>{GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::F32});
}

TEST_CASE("hand-made files: valid ones parse, version 2 too") {
  auto b = valid();
  const auto bytes = b.build();
  const auto c = parse_gguf(std::span(bytes), "test.gguf");
  CHECK(c.version == 3);
  REQUIRE(c.tensors.size() == 2);
  float v[32];
  c.tensors[0].rows_to_float(v, 0, 2);
  CHECK(v[7] == 7.5f);
  c.tensors[1].rows_to_float(v, 0, 1);
  CHECK(v[0] == -16.0f);
  CHECK(v[31] == 15.0f);
  b.version = 2;
  CHECK(parse(b).c.version == 2);

  Builder e;  // no tensors, no metadata: valid and empty
  const auto eb = e.build();
  CHECK(parse_gguf(std::span(eb), "t").tensors.empty());

  Builder a64 = valid();  // general.alignment 64 (u32, or any integer type)
  a64.kv_scalar<uint32_t>("general.alignment", U32, 64);
  a64.alignment = 64;
  a64.tensors[1].offset = 64;
  a64.data.insert(a64.data.begin() + 32, 32, std::byte{0});
  CHECK(parse(a64).c.alignment == 64);
  a64.kvs.back() = Bytes().str("general.alignment").put<uint32_t>(U64).put<uint64_t>(64);
  CHECK(parse(a64).c.alignment == 64);
  a64.tensors[1].offset = 32;  // aligned to 32, not to 64
  CHECK(parse_error(a64) == "test.gguf: tensor 'q': offset 32 not aligned to 64");

  Builder a1 = valid();  // alignment 1: packed
  a1.kv_scalar<uint32_t>("general.alignment", U32, 1);
  a1.alignment = 1;
  CHECK(parse(a1).c.alignment == 1);
}

TEST_CASE("truncated at every section boundary, and at every byte") {
  auto b = valid();
  const auto full = b.build();
  const auto bounds = b.boundaries;
  // Boundaries: magic, version, tensor count, kv count, 2 kvs, 2 tensor infos, padding.
  // The counts are checked against the bytes left before the entries are read, so a cut
  // early enough is caught there first (each kv >= 13 bytes, each tensor info >= 32).
  const std::vector<std::string> field_at = {"header.version",  "header.tensor_count", "header.kv_count",
                                             "header.kv_count", "header.tensor_count", "tensor 0 name length",
                                             "tensor 1 name length", "data section",   "tensor 'a'"};
  REQUIRE(bounds.size() == 9);
  for (size_t k = 0; k < bounds.size(); ++k) {
    std::vector<std::byte> cut(full.begin(), full.begin() + ptrdiff_t(bounds[k]));
    const auto e = parse_error(cut);
    CAPTURE(bounds[k]);
    CHECK_HAS(e, "test.gguf: " + field_at[k]);
  }
  for (size_t n = 0; n < full.size(); ++n) {
    std::vector<std::byte> cut(full.begin(), full.begin() + ptrdiff_t(n));
    const auto e = parse_error(cut);
    CAPTURE(n);
    CHECK_HAS(e, "test.gguf: ");
    CHECK(e.find("<") != 0);  // a ropex::Error, not another exception or none
  }
  CHECK(parse_error(std::vector<std::byte>{}) ==
        "test.gguf: header.magic: truncated: needs 4 bytes at offset 0, the file has 0 left (0 bytes in all)");
}

TEST_CASE("header: magic, versions, endianness, huge counts") {
  auto b = valid();
  b.magic = 0x46554746;
  CHECK(parse_error(b) == "test.gguf: header.magic: not a GGUF file (the first 4 bytes are not \"GGUF\")");
  b = valid();
  b.version = 1;
  CHECK_HAS(parse_error(b), "test.gguf: header.version: version 1 (32-bit counts) is not supported");
  b.version = 4;
  CHECK(parse_error(b) == "test.gguf: header.version: version 4 is not supported; ropex reads versions 2 and 3");
  b.version = 0x03000000;
  CHECK(parse_error(b) == "test.gguf: header.version: big-endian GGUF files are not supported");
  b = valid();
  b.n_kv = uint64_t(1) << 62;
  CHECK_HAS(parse_error(b), "test.gguf: header.kv_count: 4611686018427387904 entries cannot fit");
  b = valid();
  b.n_tensors = UINT64_MAX;
  CHECK_HAS(parse_error(b), "test.gguf: header.tensor_count: 18446744073709551615 tensors cannot fit");
  b = valid();
  b.n_kv = 3;  // one more than written: the tensor infos are read as a kv and fail
  CHECK_HAS(parse_error(b), "test.gguf: ");
}

TEST_CASE("metadata: string lengths, array counts, types, duplicates, alignment") {
  auto b = valid();
  b.kvs[0] = Bytes().put<uint64_t>(UINT64_MAX - 3);
  CHECK_HAS(parse_error(b), "test.gguf: kv 0 key: string length 18446744073709551612 runs past the end of the file");
  b = valid();
  b.kv("s", STR, Bytes().put<uint64_t>(1ull << 40));
  CHECK_HAS(parse_error(b), "test.gguf: key 's': string length 1099511627776 runs past the end");
  b = valid();
  b.kv("arr", ARR, Bytes().put<uint32_t>(U64).put<uint64_t>(1ull << 60));
  CHECK_HAS(parse_error(b), "test.gguf: key 'arr': array count 1152921504606846976 of u64 needs at least 8 bytes each");
  b = valid();
  b.kv("arr", ARR, Bytes().put<uint32_t>(STR).put<uint64_t>(1ull << 59));
  CHECK_HAS(parse_error(b), "key 'arr': array count 576460752303423488 of string");
  b = valid();
  b.kv("arr", ARR, Bytes().put<uint32_t>(STR).put<uint64_t>(2).str("ok").put<uint64_t>(9999));
  CHECK_HAS(parse_error(b), "test.gguf: key 'arr'[1]: string length 9999 runs past");
  b = valid();
  b.kv("x", 13, Bytes().put<uint32_t>(0));
  CHECK_HAS(parse_error(b), "test.gguf: key 'x': value type 13 is not a GGUF type");
  b = valid();
  b.kv("x", ARR, Bytes().put<uint32_t>(99).put<uint64_t>(0));
  CHECK_HAS(parse_error(b), "test.gguf: key 'x': array element type 99 is not a GGUF type");
  b = valid();
  b.kv_scalar<uint8_t>("flag", BOOL, 2);
  CHECK(parse_error(b) == "test.gguf: key 'flag': bool must be 0 or 1, got 2");
  b = valid();
  b.kv("flags", ARR, Bytes().put<uint32_t>(BOOL).put<uint64_t>(2).put<uint8_t>(1).put<uint8_t>(7));
  CHECK(parse_error(b) == "test.gguf: key 'flags'[1]: bool must be 0 or 1, got 7");
  b = valid();
  b.kv_scalar<uint32_t>("llama.block_count", U32, 3);
  CHECK(parse_error(b) == "test.gguf: key 'llama.block_count': duplicate key");
  b = valid();  // nesting deeper than the limit
  Bytes deep;
  for (int i = 0; i < 20; ++i) deep.put<uint32_t>(ARR).put<uint64_t>(1);
  deep.put<uint32_t>(U8).put<uint64_t>(0);
  b.kv("deep", ARR, deep);
  CHECK_HAS(parse_error(b), "arrays nested deeper than 8");
  b = valid();  // empty string and empty array are fine
  b.kv_str("empty", "").kv("none", ARR, Bytes().put<uint32_t>(U32).put<uint64_t>(0));
  const auto kept = b.build();  // the parse result points into these bytes
  const auto c = parse_gguf(std::span(kept), "t");
  CHECK(c.metadata.get_string("empty").empty());
  CHECK(c.metadata.get_array("none").count == 0);

  for (uint32_t bad : {0u, 3u, 48u}) {
    b = valid();
    b.kv_scalar<uint32_t>("general.alignment", U32, bad);
    CHECK(parse_error(b) == "test.gguf: key 'general.alignment': must be a power of two >= 1, got u32 " + std::to_string(bad));
  }
  b = valid();
  b.kv_scalar<int32_t>("general.alignment", I32, -32);
  CHECK_HAS(parse_error(b), "key 'general.alignment': must be a power of two >= 1, got i32 -32");
  b = valid();
  b.kv_str("general.alignment", "32");
  CHECK_HAS(parse_error(b), "key 'general.alignment': expected an integer, got string");
}

TEST_CASE("tensor infos: dims, types, sizes, offsets, overlaps, names") {
  auto b = valid();
  b.tensors[0].ne = {};
  CHECK(parse_error(b) == "test.gguf: tensor 'a': n_dims 0 must be 1..4");
  b.tensors[0].ne = {1, 1, 1, 1, 8};
  CHECK(parse_error(b) == "test.gguf: tensor 'a': n_dims 5 must be 1..4");
  b.tensors[0].ne = {8, 1, 1, 1};  // 4 dims is fine
  CHECK(parse(b).c.tensors[0].ne.size() == 4);
  b.tensors[0].ne = {8, 0};
  CHECK_HAS(parse_error(b), "test.gguf: tensor 'a': ne[1] = 0 must be >= 1");
  b.tensors[0].ne = {1ull << 32, 1ull << 32};
  CHECK_HAS(parse_error(b), "test.gguf: tensor 'a': element count of [4294967296] x 4294967296 overflows");
  b.tensors[0].ne = {1ull << 62};
  CHECK_HAS(parse_error(b), "test.gguf: tensor 'a': byte size of [4611686018427387904] overflows");
  b.tensors[0].ne = {1ull << 40};
  CHECK_HAS(parse_error(b), "test.gguf: tensor 'a': bytes [0, 0+4398046511104) run past the data section (66 bytes)");

  b = valid();
  b.tensors[1].ne = {16};  // Q8_0 rows are whole blocks of 32
  CHECK(parse_error(b) == "test.gguf: tensor 'q': row length ne[0] = 16 is not a multiple of the Q8_0 block size 32");
  b.tensors[1].ne = {32, 2};  // two blocks, but the file holds one: runs past the data
  CHECK_HAS(parse_error(b), "tensor 'q': bytes [32, 32+68) run past the data section (66 bytes)");

  const std::pair<uint32_t, std::string> refused[] = {
      {16, "type IQ2_XXS is not supported"}, {23, "type IQ4_XS is not supported"},
      {34, "type TQ1_0 is not supported"},   {39, "type MXFP4 is not supported"},
      {15, "type Q8_K is not supported"},    {28, "type F64 is not supported"},
      {4, "type Q4_2 is not supported"},     {99, "type 99 is not a ggml type"}};
  for (const auto& [type, msg] : refused) {
    b = valid();
    b.tensors[1].type = type;
    CHECK(parse_error(b).find("test.gguf: tensor 'q': " + msg) == 0);
  }

  b = valid();
  b.tensors[1].offset = 33;
  CHECK(parse_error(b) == "test.gguf: tensor 'q': offset 33 not aligned to 32");
  b.tensors[1].offset = 0;  // on top of 'a'
  CHECK(parse_error(b) == "test.gguf: tensor 'q': bytes [0, 34) overlap tensor 'a' at [0, 32)");
  b = valid();
  b.tensors[0].ne = {16};  // 'a' grows into 'q'
  b.tensors[1].offset = 32;
  b.data.insert(b.data.end(), 64, std::byte{0});
  b.tensors[1].offset = 32;
  CHECK_HAS(parse_error(b), "overlap tensor 'a' at [0, 64)");
  b = valid();
  b.tensors[1].offset = UINT64_MAX - 31;  // aligned, far past the end, no wraparound
  CHECK_HAS(parse_error(b), "tensor 'q': bytes [18446744073709551584, 18446744073709551584+34) run past the data section");
  b = valid();
  b.tensors[1].name = "a";
  CHECK(parse_error(b) == "test.gguf: tensor 'a': duplicate tensor name");
  b = valid();
  b.tensors[0].name = std::string(3, '\0');  // odd names are kept as given
  CHECK(parse(b).c.tensors[0].name.size() == 3);
}

TEST_CASE("GgufFile::open names the path") {
  ropex::test::TempDir dir("gguf");
  CHECK_HAS(error_of([&] { GgufFile::open(dir / "missing.gguf"); }), "missing.gguf: cannot open");
  auto b = valid();
  b.tensors[1].offset = 64;
  const auto bytes = b.build();
  const auto p = dir / "bad.gguf";
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  CHECK(error_of([&] { GgufFile::open(p); }) ==
        p.string() + ": tensor 'q': bytes [64, 64+34) run past the data section (66 bytes): truncated file?");
}
