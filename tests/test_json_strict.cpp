// User-supplied JSON is read strictly (io/json_file.hpp): deep nesting, NUL bytes, duplicate keys,
// FIFOs and two disagreeing RoPE formats are each one clear error naming the file — never a stack
// overflow, a hang, or a silently chosen value.
#include <doctest/doctest.h>

#include <ropex/io/json_file.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/rope/scaling.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ropex::Error& e) {
    return e.what();
  }
  return "(no error)";
}

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("ropex_json_strict_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

const std::string kConfig = R"({"model_type": "llama", "vocab_size": 40, "hidden_size": 16, "intermediate_size": 24,
  "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 64, "rope_theta": 10000.0})";

}  // namespace

TEST_CASE("parse_json_strict: depth, NUL bytes, duplicate keys") {
  CHECK(ropex::parse_json_strict(kConfig, "c.json")["vocab_size"] == 40);
  // 127 levels pass, 128 are refused; 200,000 (a few hundred KB) is refused, not a stack overflow.
  const auto nest = [](int depth) { return std::string(size_t(depth), '[') + std::string(size_t(depth), ']'); };
  CHECK_NOTHROW(ropex::parse_json_strict(nest(ropex::kMaxJsonDepth), "d.json"));
  CHECK(error_of([&] { ropex::parse_json_strict(nest(ropex::kMaxJsonDepth + 1), "d.json"); }) ==
        "d.json: nested deeper than 128 levels");
  const std::string deep = "{\"max_position_embeddings\": " + nest(200000) + "}";
  CHECK(error_of([&] { ropex::parse_json_strict(deep, "d.json"); }) == "d.json: nested deeper than 128 levels");
  std::string with_nul = kConfig;
  with_nul.insert(with_nul.size() - 1, std::string("\0, \"rope_theta\": 5", 17));
  CHECK(error_of([&] { ropex::parse_json_strict(with_nul, "n.json"); }).starts_with("n.json: NUL byte at offset "));
  CHECK(error_of([&] { ropex::parse_json_strict(R"({"a": {"b": 1, "b": 2}})", "k.json"); }) ==
        "k.json: key \"b\" appears twice in one object");
  // The same key in sibling objects is fine.
  CHECK_NOTHROW(ropex::parse_json_strict(R"({"a": {"b": 1}, "c": {"b": 2}, "l": [{"b": 1}, {"b": 2}]})", "k.json"));
  CHECK(error_of([&] { ropex::parse_json_strict("{\"a\": ", "m.json"); }).starts_with("m.json: malformed JSON: "));
}

TEST_CASE("config.json: deep, NUL, duplicate, FIFO and directory inputs are refused with the file named") {
  TempDir tmp;
  const fs::path dir = tmp.path / "model";
  fs::create_directories(dir);
  const fs::path cfg = dir / "config.json";
  auto open_error = [&] { return error_of([&] { ropex::model::Checkpoint::open(dir); }); };

  write(cfg, "{\"model_type\": \"llama\", \"eos_token_id\": " + std::string(200000, '[') + std::string(200000, ']') + "}");
  CHECK(open_error() == cfg.string() + ": nested deeper than 128 levels");

  std::string dup = kConfig;
  dup.insert(1, "\"rope_theta\": 500000.0, ");
  write(cfg, dup);
  CHECK(open_error() == cfg.string() + ": key \"rope_theta\" appears twice in one object");

  fs::remove(cfg);
  REQUIRE(::mkfifo(cfg.c_str(), 0600) == 0);  // a FIFO with no writer: opening must not block
  CHECK(open_error() == cfg.string() + ": not a regular file");
  fs::remove(cfg);
  fs::create_directories(cfg);
  CHECK(open_error().find("config.json") != std::string::npos);
}

TEST_CASE("both RoPE formats in one config: agreeing copies pass, disagreeing ones are refused") {
  json j = json::parse(kConfig);
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 4.0}, {"rope_theta", 10000.0}};
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4.0}, {"rope_theta", 10000.0}};
  CHECK(ropex::rope_scaling_from_config(j, "c.json").factor == 4.0);
  j["rope_scaling"]["factor"] = 8.0;
  CHECK(error_of([&] { ropex::rope_scaling_from_config(j, "c.json"); }) ==
        "c.json: rope_scaling: disagrees with rope_parameters (both RoPE formats present with different values)");
  // A key only one of them sets counts as a difference (transformers reads rope_scaling alone).
  // (rope_theta here: a scaled type without its factor is refused on its own, naming factor)
  j["rope_parameters"]["rope_theta"] = 20000.0;
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4.0}};
  CHECK(error_of([&] { ropex::rope_scaling_from_config(j, "c.json"); }).find("disagrees") != std::string::npos);
}

TEST_CASE("safetensors header: NUL padding and duplicate tensor names are refused") {
  TempDir tmp;
  auto file = [&](const std::string& header) {
    std::string h = header;
    const uint64_t n = h.size();
    std::string bytes(8, '\0');
    std::memcpy(bytes.data(), &n, 8);
    const fs::path p = tmp.path / "model.safetensors";
    write(p, bytes + h + std::string(16, '\0'));
    return p;
  };
  const std::string ok = R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})";
  CHECK_NOTHROW(ropex::model::SafetensorsFile::open(file(ok)));
  const fs::path nul = file(ok + std::string("\0{\"b\": 1}", 9));
  CHECK(error_of([&] { ropex::model::SafetensorsFile::open(nul); }).starts_with(nul.string() + ": header: NUL byte"));
  const fs::path dup = file(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})");
  CHECK(error_of([&] { ropex::model::SafetensorsFile::open(dup); }) ==
        dup.string() + ": header: key \"a\" appears twice in one object");
}
