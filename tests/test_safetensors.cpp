// Safetensors reader: dtype conversion against float64 formulas, round trips, a file written by the
// official Python package, sharded indexes, and every malformed header refused with file + field.
#include <ropex/model/safetensors.hpp>

#include <doctest/doctest.h>
#include "test_util.hpp"
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;
using namespace ropex::model;

namespace {

using ropex::test::error_of;
using ropex::test::TempDir;

// Runs f; returns the ropex::Error message ("" if nothing was thrown, a marker for other types).


// IEEE binary16 value from its bits, in float64, straight from the definition.
double half_reference(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double sign = s ? -1.0 : 1.0;
  if (e == 0) return sign * std::ldexp(m / 1024.0, -14);
  if (e == 31) return m ? NAN : sign * INFINITY;
  return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}
// bfloat16: 1 sign, 8 exponent (bias 127), 7 mantissa bits.
double bf16_reference(uint16_t b) {
  const int s = b >> 15, e = (b >> 7) & 255, m = b & 127;
  const double sign = s ? -1.0 : 1.0;
  if (e == 0) return sign * std::ldexp(m / 128.0, -126);
  if (e == 255) return m ? NAN : sign * INFINITY;
  return sign * std::ldexp(1.0 + m / 128.0, e - 127);
}

bool same_value(double ref, float got) {
  if (std::isnan(ref)) return std::isnan(got);
  return double(got) == ref && std::signbit(got) == std::signbit(ref);
}

template <class T>
std::vector<std::byte> as_bytes(const std::vector<T>& v) {
  std::vector<std::byte> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// A raw safetensors file from a header string and a data section (for malformed cases).
void write_raw(const fs::path& p, const std::string& header, size_t data_bytes, uint64_t declared_len = UINT64_MAX) {
  std::ofstream out(p, std::ios::binary);
  const uint64_t n = declared_len == UINT64_MAX ? header.size() : declared_len;
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  std::string zeros(data_bytes, '\0');
  out << zeros;
}

}  // namespace

TEST_CASE("half_to_float and bfloat16_to_float are exact for all 65536 bit patterns") {
  int bad_h = 0, bad_b = 0;
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const auto u = uint16_t(bits);
    if (!same_value(half_reference(u), half_to_float(u))) ++bad_h;
    if (!same_value(bf16_reference(u), bfloat16_to_float(u))) ++bad_b;
  }
  CHECK(bad_h == 0);
  CHECK(bad_b == 0);
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(bfloat16_to_float(0x3f80) == 1.0f);
  CHECK(dtype_size(DType::bf16) == 2);
  CHECK(dtype_name(DType::f16) == "F16");
}

TEST_CASE("write_safetensors / SafetensorsFile round trip F32, F16, BF16 with block conversion") {
  TempDir dir("st_roundtrip");
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uf(-3.f, 3.f);
  std::uniform_int_distribution<int> ub(0, 65535);
  std::vector<float> f32(6 * 11);
  for (auto& x : f32) x = uf(rng);
  std::vector<uint16_t> f16(4 * 33), bf16(5 * 7 * 3);
  for (auto& x : f16) x = uint16_t(ub(rng));
  for (auto& x : bf16) x = uint16_t(ub(rng));
  // Odd-sized tensor first so the F16/BF16 data is not 4-byte aligned.
  std::vector<uint16_t> odd = {0x3c00, 0xc000, 0x0400};
  const auto path = dir / "m.safetensors";
  write_safetensors(path,
                    {{"odd", DType::f16, {3}, as_bytes(odd)},
                     {"w.f32", DType::f32, {6, 11}, as_bytes(f32)},
                     {"w.f16", DType::f16, {4, 33}, as_bytes(f16)},
                     {"w.bf16", DType::bf16, {5, 7, 3}, as_bytes(bf16)}},
                    {{"format", "pt"}});
  const auto st = SafetensorsFile::open(path);
  REQUIRE(st.tensors().size() == 4);
  CHECK(st.path() == path);

  const TensorView* a = st.find("w.f32");
  REQUIRE(a != nullptr);
  CHECK(a->shape == std::vector<int64_t>{6, 11});
  CHECK(a->numel() == f32.size());
  CHECK(a->source == path.string());
  std::vector<float> out(a->numel());
  a->to_float(out.data(), 0, out.size());
  CHECK(out == f32);

  // F16 / BF16 converted in uneven blocks, compared with the float64 reference.
  for (auto named : {std::pair{"w.f16", &half_reference}, std::pair{"w.bf16", &bf16_reference}}) {
    const auto name = named.first;  // not structured bindings: clang 14 cannot capture them in doctest's lambdas
    const auto ref = named.second;
    const TensorView* t = st.find(name);
    REQUIRE(t != nullptr);
    const auto& src = std::string(name) == "w.f16" ? f16 : bf16;
    std::vector<float> got(t->numel(), -12345.f);
    for (size_t off = 0; off < got.size(); off += 13) {
      const size_t n = std::min<size_t>(13, got.size() - off);
      t->to_float(got.data() + off, off, n);
    }
    int mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (!same_value(ref(src[i]), got[i])) ++mismatches;
    CHECK_MESSAGE(mismatches == 0, name);
  }
  const TensorView* o = st.find("odd");
  REQUIRE(o != nullptr);
  CHECK(o->at(0) == 1.0f);
  CHECK(o->at(1) == -2.0f);
  CHECK(o->at(2) == std::ldexp(1.0f, -14));
  CHECK(o->as_f32() == nullptr);  // not F32
  CHECK(st.find("nope") == nullptr);

  // A block past the end is refused with the tensor named.
  float sink[4];
  const std::string msg = error_of([&] { o->to_float(sink, 2, 2); });
  CHECK_HAS(msg, path.string());
  CHECK_HAS(msg, "tensor 'odd'");
}

TEST_CASE("a file written by the Python safetensors package reads back exactly") {
  const fs::path dir = fs::path(ROPEX_SOURCE_DIR) / "tests/fixtures/safetensors";
  const auto st = SafetensorsFile::open(dir / "torch_saved.safetensors");
  std::ifstream in(dir / "torch_saved.json");
  REQUIRE(in);
  const auto expected = nlohmann::json::parse(in);
  CHECK(st.tensors().size() == expected.size());
  for (const auto& item : expected.items()) {
    const std::string name = item.key();
    const auto& e = item.value();
    CAPTURE(name);
    const TensorView* t = st.find(name);
    REQUIRE(t != nullptr);
    CHECK(t->shape == e["shape"].get<std::vector<int64_t>>());
    const std::string dt = e["dtype"];
    CHECK(t->dtype == (dt == "float32" ? DType::f32 : dt == "float16" ? DType::f16 : DType::bf16));
    std::vector<float> got(t->numel());
    t->to_float(got.data(), 0, got.size());
    REQUIRE(got.size() == e["values"].size());
    for (size_t i = 0; i < got.size(); ++i) {
      const auto& v = e["values"][i];
      const double want = v.is_string() ? (v == "inf" ? INFINITY : -INFINITY) : v.get<double>();
      CHECK(double(got[i]) == want);
    }
  }
}

TEST_CASE("malformed safetensors files give one ropex::Error naming file and field") {
  TempDir dir("st_bad");
  const auto p = dir / "bad.safetensors";
  const std::string f = p.string();
  auto open_msg = [&] { return error_of([&] { SafetensorsFile::open(p); }); };
  const std::string good = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";

  SUBCASE("shorter than the length prefix") {
    std::ofstream(p, std::ios::binary) << "abc";
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "header length");
  }
  SUBCASE("header length past EOF") {
    write_raw(p, good, 16, 1'000'000);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "header length");
    CHECK_HAS(m, "past the end");
  }
  SUBCASE("header length above the 100 MB cap") {
    {  // a sparse file, so the length fits inside the file but exceeds the cap
      std::ofstream out(p, std::ios::binary);
      const uint64_t n = kMaxSafetensorsHeader + 1;
      out.write(reinterpret_cast<const char*>(&n), 8);
    }
    fs::resize_file(p, kMaxSafetensorsHeader + 64);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "exceeds");
  }
  SUBCASE("truncated data section") {
    write_raw(p, good, 10);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "tensor 'a'.data_offsets");
    CHECK_HAS(m, "past the data section");
  }
  SUBCASE("bad JSON") {
    write_raw(p, R"({"a": {"dtype": "F32", )", 0);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "header: malformed JSON");
  }
  SUBCASE("JSON that is not an object") {
    write_raw(p, "[1,2]", 0);
    CHECK_HAS(open_msg(), "must be a JSON object");
  }
  SUBCASE("unknown dtype") {
    write_raw(p, R"({"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}})", 2);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "tensor 'a'");
    CHECK_HAS(m, "unsupported dtype I8");
  }
  SUBCASE("dtype missing") {
    write_raw(p, R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8);
    CHECK_HAS(open_msg(), "tensor 'a'.dtype");
  }
  SUBCASE("shape x dtype size != byte span") {
    write_raw(p, R"({"a":{"dtype":"BF16","shape":[3,2],"data_offsets":[0,16]}})", 16);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "tensor 'a'");
    CHECK_HAS(m, "needs 12 bytes");
  }
  SUBCASE("negative dimension") {
    write_raw(p, R"({"a":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}})", 16);
    CHECK_HAS(open_msg(), "tensor 'a'.shape");
  }
  SUBCASE("fractional dimension") {
    write_raw(p, R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4);
    CHECK_HAS(open_msg(), "tensor 'a'.shape");
  }
  SUBCASE("element count overflow") {
    write_raw(p, R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", 16);
    auto m = open_msg();
    CHECK_HAS(m, "tensor 'a'.shape");
    CHECK_HAS(m, "overflow");
  }
  SUBCASE("byte size overflow") {
    write_raw(p, R"({"a":{"dtype":"F32","shape":[4611686018427387904,2],"data_offsets":[0,16]}})", 16);
    CHECK_HAS(open_msg(), "overflows");
  }
  SUBCASE("begin > end") {
    write_raw(p, R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 16);
    CHECK_HAS(open_msg(), "begin > end");
  }
  SUBCASE("offsets out of range") {
    write_raw(p, R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})", 16);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "tensor 'a'.data_offsets");
  }
  SUBCASE("offsets not a pair") {
    write_raw(p, R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", 16);
    CHECK_HAS(open_msg(), "tensor 'a'.data_offsets");
  }
  SUBCASE("negative offset") {
    write_raw(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 16);
    CHECK_HAS(open_msg(), "tensor 'a'.data_offsets");
  }
  SUBCASE("overlapping tensors") {
    write_raw(p,
              R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
              16);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "overlaps");
    CHECK_HAS(m, "'a'");
    CHECK_HAS(m, "'b'");
  }
  SUBCASE("deeply nested shape is refused by the parser's depth limit, briefly, not dumped") {
    std::string deep = std::string(20000, '[') + std::string(20000, ']');
    write_raw(p, R"({"a":{"dtype":"F32","shape":)" + deep + R"(,"data_offsets":[0,0]}})", 0);
    auto m = open_msg();
    CHECK_HAS(m, "header: nested deeper than 128 levels");
    CHECK(m.size() < 300);
  }
  SUBCASE("a shape nested within the depth limit is named briefly") {
    std::string deep = std::string(100, '[') + std::string(100, ']');
    write_raw(p, R"({"a":{"dtype":"F32","shape":)" + deep + R"(,"data_offsets":[0,0]}})", 0);
    auto m = open_msg();
    CHECK_HAS(m, "tensor 'a'.shape: dimensions must be non-negative integers, got an array of 1");
    CHECK(m.size() < 300);
  }
  SUBCASE("a directory is not a file") {
    auto m = error_of([&] { SafetensorsFile::open(dir.path); });
    CHECK_HAS(m, dir.path.string());
    CHECK_HAS(m, "not a regular file");
  }
  SUBCASE("empty file") {
    std::ofstream(p, std::ios::binary).close();
    CHECK_HAS(open_msg(), "too short");
  }
  SUBCASE("missing file") {
    auto m = error_of([&] { SafetensorsFile::open(dir / "nope.safetensors"); });
    CHECK_HAS(m, "nope.safetensors");
    CHECK_HAS(m, "cannot open");
  }
}

TEST_CASE("parse_safetensors accepts metadata, zero-size tensors and header padding") {
  // Built in memory: 8-byte length, header padded with spaces, 8 data bytes.
  std::string h = R"({"__metadata__":{"k":"v"},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[8,8]},)"
                  R"("s":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}   )";
  std::vector<std::byte> file(8 + h.size() + 8);
  const uint64_t n = h.size();
  std::memcpy(file.data(), &n, 8);
  std::memcpy(file.data() + 8, h.data(), h.size());
  const uint16_t vals[4] = {0x3c00, 0x4000, 0x4200, 0x4400};  // 1, 2, 3, 4
  std::memcpy(file.data() + 8 + h.size(), vals, 8);
  const auto views = parse_safetensors(file, "mem");
  REQUIRE(views.size() == 2);
  CHECK(views[0].name == "s");  // ordered by offset
  CHECK(views[1].name == "z");
  CHECK(views[1].numel() == 0);
  float got[4];
  views[0].to_float(got, 0, 4);
  CHECK(got[0] == 1.f);
  CHECK(got[3] == 4.f);
}

TEST_CASE("open_safetensors_index: shards, and errors naming index and shard") {
  TempDir dir("st_shards");
  std::vector<float> a = {1, 2, 3, 4}, b = {5, 6};
  write_safetensors(dir / "model-00001-of-00002.safetensors", {{"a", DType::f32, {2, 2}, as_bytes(a)}});
  write_safetensors(dir / "model-00002-of-00002.safetensors", {{"b", DType::f32, {2}, as_bytes(b)}});
  const auto index = dir / "model.safetensors.index.json";
  auto write_index = [&](const nlohmann::json& wm) {
    std::ofstream(index) << nlohmann::json{{"metadata", {{"total_size", 24}}}, {"weight_map", wm}}.dump();
  };

  write_index({{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}});
  {
    const auto shards = open_safetensors_index(index);
    REQUIRE(shards.size() == 2);
    const TensorView* tb = shards[1].find("b");
    REQUIRE(tb != nullptr);
    CHECK(tb->at(1) == 6.f);
    CHECK(shards[0].find("a")->at(3) == 4.f);
  }
  SUBCASE("missing shard file") {
    write_index({{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00009-of-00009.safetensors"}});
    auto m = error_of([&] { open_safetensors_index(index); });
    CHECK_HAS(m, index.string());
    CHECK_HAS(m, "weight_map.b");
    CHECK_HAS(m, "model-00009-of-00009.safetensors");
    CHECK_HAS(m, "does not exist");
  }
  SUBCASE("tensor named in the index but absent from its shard") {
    write_index({{"a", "model-00001-of-00002.safetensors"}, {"c", "model-00002-of-00002.safetensors"}});
    auto m = error_of([&] { open_safetensors_index(index); });
    CHECK_HAS(m, index.string());
    CHECK_HAS(m, "tensor 'c'");
    CHECK_HAS(m, "model-00002-of-00002.safetensors");
  }
  SUBCASE("same tensor in two shards") {
    write_safetensors(dir / "dup.safetensors", {{"a", DType::f32, {2, 2}, as_bytes(a)}, {"d", DType::f32, {2}, as_bytes(b)}});
    write_index({{"a", "model-00001-of-00002.safetensors"}, {"d", "dup.safetensors"}});
    auto m = error_of([&] { open_safetensors_index(index); });
    CHECK_HAS(m, "tensor 'a'");
    CHECK_HAS(m, "also present in another shard");
    CHECK_HAS(m, index.string());
  }
  SUBCASE("shard outside the directory") {
    write_index({{"a", "../elsewhere.safetensors"}});
    CHECK_HAS(error_of([&] { open_safetensors_index(index); }), "plain file name");
  }
  SUBCASE("bad index JSON") {
    std::ofstream(index) << "{\"weight_map\": {";
    auto m = error_of([&] { open_safetensors_index(index); });
    CHECK_HAS(m, index.string());
    CHECK_HAS(m, "malformed JSON");
  }
  SUBCASE("no weight_map") {
    std::ofstream(index) << "{}";
    CHECK_HAS(error_of([&] { open_safetensors_index(index); }), "weight_map");
  }
}
