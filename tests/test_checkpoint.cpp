// Checkpoint loading: LlamaConfig from config.json (both rope formats, defaults, range checks), HF
// directories (single file and sharded), llama2.c .bin (legacy and version 1, synthetic files and
// the real stories260K), and every malformed input refused with file + field in the message.
#include <ropex/model/checkpoint.hpp>

#include <doctest/doctest.h>
#include "test_util.hpp"
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ropex::model;

namespace {

using ropex::test::error_of;
using ropex::test::TempDir;



json tiny_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", 40},
          {"hidden_size", 16},
          {"intermediate_size", 24},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"head_dim", 8},  // != hidden / heads on purpose
          {"max_position_embeddings", 128},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"hidden_act", "silu"},
          {"attention_bias", false},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

// Tensor k of the expected list holds values 1000*k + i (F32), or bf16-truncated 1000*k + i for
// odd k, so a mixed-up name or offset shows as a wrong value.
float tag_value(size_t k, size_t i) { return float(1000 * k + i); }
// bf16 keeps 8 significant bits: truncating integer n to bf16 clears all bits below its top 8.
// (Integer arithmetic on purpose: GCC 12.2 at -O1/-O2 drops a float->bits mask->float round trip
// on an int-to-float value in this loop; see the H2 report.)
float bf16_round_down(uint64_t n) {
  int bits = 0;
  while ((n >> bits) > 0) ++bits;
  if (bits > 8) n &= ~((uint64_t(1) << (bits - 8)) - 1);
  return float(n);
}

std::vector<TensorData> tagged_tensors(const LlamaConfig& c) {
  std::vector<TensorData> out;
  const auto expected = expected_tensors(c);
  for (size_t k = 0; k < expected.size(); ++k) {
    TensorData t{expected[k].name, k % 2 ? DType::bf16 : DType::f32, expected[k].shape, {}};
    size_t n = 1;
    for (auto d : t.shape) n *= size_t(d);
    t.bytes.resize(n * dtype_size(t.dtype));
    for (size_t i = 0; i < n; ++i) {
      float v = tag_value(k, i);
      if (t.dtype == DType::f32) {
        std::memcpy(t.bytes.data() + 4 * i, &v, 4);
      } else {
        uint32_t b;
        std::memcpy(&b, &v, 4);
        uint16_t h = uint16_t(b >> 16);
        std::memcpy(t.bytes.data() + 2 * i, &h, 2);
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

void write_json(const fs::path& p, const json& j) { std::ofstream(p) << j.dump(2); }

void check_tagged(const Checkpoint& ck) {
  const auto expected = expected_tensors(ck.config());
  for (size_t k = 0; k < expected.size(); ++k) {
    CAPTURE(expected[k].name);
    const TensorView& t = ck.tensor(expected[k].name);
    CHECK(t.shape == expected[k].shape);
    for (size_t i : {size_t(0), t.numel() / 2, t.numel() - 1}) {
      const float want = k % 2 == 1 ? bf16_round_down(1000 * k + i) : tag_value(k, i);
      CHECK(t.at(i) == want);
    }
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------
TEST_CASE("LlamaConfig::from_json reads both rope formats, head_dim, GQA and defaults") {
  SUBCASE("legacy rope_theta + rope_scaling") {
    json j = tiny_config();
    j["rope_theta"] = 500000.0;
    j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
    const auto c = LlamaConfig::from_json(j, "config.json");
    CHECK(c.vocab_size == 40);
    CHECK(c.hidden_size == 16);
    CHECK(c.intermediate_size == 24);
    CHECK(c.num_hidden_layers == 2);
    CHECK(c.num_attention_heads == 4);
    CHECK(c.num_key_value_heads == 2);
    CHECK(c.head_dim == 8);
    CHECK(c.max_position_embeddings == 128);
    CHECK(c.rms_norm_eps == 1e-5);
    CHECK_FALSE(c.tie_word_embeddings);
    CHECK(c.rope.type == ropex::RopeType::linear);
    CHECK(c.rope.factor == 2.0);
    CHECK(c.rope.base == 500000.0);
    CHECK(c.rope_layout == ropex::RopeLayout::half);
    CHECK(c.rotary_dim() == 8);
  }
  SUBCASE("rope_parameters (transformers 5)") {
    json j = tiny_config();
    j.erase("rope_theta");
    j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 20000.0}, {"factor", 4.0},
                            {"original_max_position_embeddings", 32}};
    const auto c = LlamaConfig::from_json(j, "config.json");
    CHECK(c.rope.type == ropex::RopeType::yarn);
    CHECK(c.rope.factor == 4.0);
    CHECK(c.rope.base == 20000.0);
    CHECK(c.rope.original_max_position_embeddings == 32);
  }
  SUBCASE("defaults: kv heads = heads, head_dim = hidden/heads, eps, tie, token ids") {
    json j = {{"model_type", "llama"}, {"vocab_size", 32000}, {"hidden_size", 4096}, {"intermediate_size", 11008},
              {"num_hidden_layers", 32}, {"num_attention_heads", 32}};
    const auto c = LlamaConfig::from_json(j, "config.json");
    CHECK(c.num_key_value_heads == 32);
    CHECK(c.head_dim == 128);
    CHECK(c.rms_norm_eps == 1e-6);
    CHECK(c.max_position_embeddings == 2048);
    CHECK(c.rope.max_position_embeddings == 2048);
    CHECK(c.rope.base == 10000.0);
    CHECK_FALSE(c.tie_word_embeddings);
    CHECK(c.bos_token_id == 1);
    CHECK(c.eos_token_id == 2);
  }
  SUBCASE("token ids: null keeps the default, a list gives every id (eos_token_id: the first)") {
    json j = tiny_config();
    j["bos_token_id"] = nullptr;
    j["eos_token_id"] = {7, 9};
    const auto c = LlamaConfig::from_json(j, "config.json");
    CHECK(c.bos_token_id == 1);
    CHECK(c.eos_token_id == 7);
    CHECK(c.eos_token_ids == std::vector<int64_t>{7, 9});
  }
  SUBCASE("partial_rotary_factor") {
    json j = tiny_config();
    j["partial_rotary_factor"] = 0.5;
    CHECK(LlamaConfig::from_json(j, "config.json").rotary_dim() == 4);
  }
}

TEST_CASE("LlamaConfig::from_json refuses out-of-range values, naming file and field") {
  struct Case {
    const char* field;
    json value;
    const char* expect;  // extra text the message must contain
  };
  const std::vector<Case> cases = {
      {"num_attention_heads", 0, "num_attention_heads"},
      {"num_attention_heads", -4, "num_attention_heads"},
      {"num_attention_heads", "4", "must be an integer"},
      {"num_key_value_heads", 3, "does not divide"},
      {"num_key_value_heads", 8, "num_key_value_heads"},
      {"hidden_size", 0, "hidden_size"},
      {"hidden_size", 1.5, "hidden_size"},
      {"hidden_size", 1e300, "hidden_size"},
      {"intermediate_size", nullptr, "intermediate_size: missing"},
      {"num_hidden_layers", -1, "num_hidden_layers"},
      {"vocab_size", 0, "vocab_size"},
      {"vocab_size", 18446744073709551615ull, "vocab_size"},
      {"head_dim", 7, "head_dim"},
      {"head_dim", 0, "head_dim"},
      {"max_position_embeddings", 0, "max_position_embeddings"},
      {"rms_norm_eps", -1e-5, "rms_norm_eps"},
      {"rms_norm_eps", "small", "rms_norm_eps"},
      {"tie_word_embeddings", "yes", "tie_word_embeddings"},
      {"bos_token_id", 40, "bos_token_id"},
      {"eos_token_id", -1, "eos_token_id"},
      {"hidden_act", "gelu", "hidden_act"},
      {"attention_bias", "yes", "attention_bias: must be true or false"},
      {"rope_theta", "big", "rope_theta"},
      {"rope_scaling", {{"type", "warp"}, {"factor", 2.0}}, "rope_scaling.type"},
      {"partial_rotary_factor", 0.1, "partial_rotary_factor"},
      {"rope_scaling", {{"type", "longrope"}, {"short_factor", {1.0, 1.0}}, {"long_factor", {1.0, 2.0, 3.0, 4.0}}},
       "rope_scaling.short_factor: needs rotary_dim/2 = 4 entries, got 2"},
      {"num_hidden_layers", {{"deep", {{{{{{1}}}}}}}}, "num_hidden_layers: must be an integer, got an object"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.field);
    CAPTURE(c.value.dump());
    json j = tiny_config();
    j[c.field] = c.value;
    const auto m = error_of([&] { LlamaConfig::from_json(j, "dir/config.json"); });
    CHECK_HAS(m, "dir/config.json: ");
    CHECK_HAS(m, c.expect);
  }
  SUBCASE("heads must divide hidden when head_dim is absent") {
    json j = tiny_config();
    j.erase("head_dim");
    j["num_attention_heads"] = 6;
    j["num_key_value_heads"] = 6;
    const auto m = error_of([&] { LlamaConfig::from_json(j, "config.json"); });
    CHECK_HAS(m, "config.json: num_attention_heads: 6 does not divide hidden_size 16");
  }
  CHECK_HAS(error_of([] { LlamaConfig::from_json(json::array(), "c.json"); }), "c.json: ");
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("Checkpoint::open reads an HF directory: single file and sharded") {
  TempDir dir("ck_hf");
  const json cj = tiny_config();
  const auto cfg = LlamaConfig::from_json(cj, "config.json");
  const auto tensors = tagged_tensors(cfg);
  CHECK(tensors.size() == 1 + 2 * 9 + 1 + 1);

  SUBCASE("model.safetensors") {
    write_json(dir / "config.json", cj);
    write_safetensors(dir / "model.safetensors", tensors);
    const auto ck = Checkpoint::open(dir.path);
    CHECK(ck.format() == "safetensors");
    CHECK(ck.config().head_dim == 8);
    CHECK(ck.config().num_key_value_heads == 2);
    CHECK(ck.has("lm_head.weight"));
    CHECK_FALSE(ck.has("model.layers.2.mlp.up_proj.weight"));
    CHECK(ck.tensor("model.layers.0.self_attn.q_proj.weight").shape == std::vector<int64_t>{32, 16});
    CHECK(ck.tensor("model.layers.1.self_attn.k_proj.weight").shape == std::vector<int64_t>{16, 16});
    check_tagged(ck);
    auto m = error_of([&] { ck.tensor("model.layers.9.mlp.up_proj.weight"); });
    CHECK_HAS(m, (dir / "model.safetensors").string());
    CHECK_HAS(m, "model.layers.9.mlp.up_proj.weight");
    // Movable: views stay valid after the move.
    Checkpoint moved = std::move(const_cast<Checkpoint&>(ck));
    check_tagged(moved);
    moved.config().rope.base = 5e5;  // mutable config for CLI overrides
    CHECK(moved.config().rope.base == 5e5);
  }
  SUBCASE("sharded") {
    write_json(dir / "config.json", cj);
    std::vector<TensorData> s1(tensors.begin(), tensors.begin() + 7), s2(tensors.begin() + 7, tensors.end());
    write_safetensors(dir / "model-00001-of-00002.safetensors", s1);
    write_safetensors(dir / "model-00002-of-00002.safetensors", s2);
    json wm;
    for (auto& t : s1) wm[t.name] = "model-00001-of-00002.safetensors";
    for (auto& t : s2) wm[t.name] = "model-00002-of-00002.safetensors";
    write_json(dir / "model.safetensors.index.json", {{"metadata", json::object()}, {"weight_map", wm}});
    const auto ck = Checkpoint::open(dir.path);
    check_tagged(ck);
    CHECK_HAS(ck.tensor("model.norm.weight").source, "model-00002-of-00002.safetensors");
    CHECK_HAS(ck.tensor("model.embed_tokens.weight").source, "model-00001-of-00002.safetensors");
  }
  SUBCASE("tied embeddings: no lm_head needed") {
    json tied = cj;
    tied["tie_word_embeddings"] = true;
    write_json(dir / "config.json", tied);
    auto t = tensors;
    t.pop_back();  // lm_head is last in expected_tensors
    write_safetensors(dir / "model.safetensors", t);
    const auto ck = Checkpoint::open(dir.path);
    CHECK(ck.config().tie_word_embeddings);
    CHECK_FALSE(ck.has("lm_head.weight"));
  }
}

TEST_CASE("Checkpoint::open refuses bad HF directories with file + tensor/field") {
  TempDir dir("ck_hf_bad");
  const json cj = tiny_config();
  const auto cfg = LlamaConfig::from_json(cj, "config.json");
  auto tensors = tagged_tensors(cfg);
  const std::string st = (dir / "model.safetensors").string();
  auto open_msg = [&] { return error_of([&] { Checkpoint::open(dir.path); }); };

  SUBCASE("missing tensor") {
    write_json(dir / "config.json", cj);
    tensors.erase(tensors.begin() + 3);
    write_safetensors(dir / "model.safetensors", tensors);
    auto m = open_msg();
    CHECK_HAS(m, st);
    CHECK_HAS(m, "tensor 'model.layers.0.self_attn.k_proj.weight'");
    CHECK_HAS(m, "missing");
  }
  SUBCASE("untied model without lm_head") {
    write_json(dir / "config.json", cj);
    tensors.pop_back();
    write_safetensors(dir / "model.safetensors", tensors);
    auto m = open_msg();
    CHECK_HAS(m, st);
    CHECK_HAS(m, "lm_head.weight");
  }
  SUBCASE("wrong shape") {
    write_json(dir / "config.json", cj);
    tensors[2].shape = {16, 32};  // q_proj transposed
    write_safetensors(dir / "model.safetensors", tensors);
    auto m = open_msg();
    CHECK_HAS(m, st);
    CHECK_HAS(m, "tensor 'model.layers.0.self_attn.q_proj.weight'");
    CHECK_HAS(m, "[16, 32] does not match [32, 16]");
  }
  SUBCASE("config says more layers than stored") {
    json more = cj;
    more["num_hidden_layers"] = 3;
    write_json(dir / "config.json", more);
    write_safetensors(dir / "model.safetensors", tensors);
    CHECK_HAS(open_msg(), "model.layers.2.");
  }
  SUBCASE("config out of range") {
    json bad = cj;
    bad["num_key_value_heads"] = 3;
    write_json(dir / "config.json", bad);
    write_safetensors(dir / "model.safetensors", tensors);
    auto m = open_msg();
    CHECK_HAS(m, (dir / "config.json").string());
    CHECK_HAS(m, "num_key_value_heads");
  }
  SUBCASE("config.json is not JSON") {
    std::ofstream(dir / "config.json") << "{\"vocab_size\": 40,";
    auto m = open_msg();
    CHECK_HAS(m, (dir / "config.json").string());
    CHECK_HAS(m, "malformed JSON");
  }
  SUBCASE("no config.json") {
    write_safetensors(dir / "model.safetensors", tensors);
    CHECK_HAS(open_msg(), "config.json: not found");
  }
  SUBCASE("no weights") {
    write_json(dir / "config.json", cj);
    CHECK_HAS(open_msg(), "model.safetensors: not found");
  }
  SUBCASE("truncated weights file") {
    write_json(dir / "config.json", cj);
    write_safetensors(dir / "model.safetensors", tensors);
    fs::resize_file(dir / "model.safetensors", fs::file_size(dir / "model.safetensors") - 5);
    auto m = open_msg();
    CHECK_HAS(m, st);
    CHECK_HAS(m, "lm_head.weight");  // the last tensor now runs past the data
  }
  SUBCASE("not a directory or .bin") {
    std::ofstream(dir / "weights.pt") << "x";
    CHECK_HAS(error_of([&] { Checkpoint::open(dir / "weights.pt"); }), "weights.pt: expected a Hugging Face");
    CHECK_HAS(error_of([&] { Checkpoint::open(dir / "absent"); }), "absent: no such file");
  }
}

// ------------------------------------------------------------------------------------------------
namespace {

// llama2.c dims for synthetic files: dim 8, hidden 12, 2 layers, 2 heads, 1 kv head, vocab 10, seq 4.
struct L2Dims {
  int32_t dim = 8, hidden = 12, layers = 2, heads = 2, kv_heads = 1, vocab = 10, seq = 4;
  int64_t head() const { return dim / heads; }
  int64_t kv_dim() const { return kv_heads * head(); }
};

// Layout per llama2.c export.py (legacy_export / version1_export), as (HF-name pattern, floats per
// layer, layer count) in file order. Written independently of the loader's table.
struct Seg {
  std::string name;  // "{}" = layer index, "" = skipped (legacy freq tables)
  int64_t per;
  int64_t reps;
};
std::vector<Seg> l2_layout(const L2Dims& d, int version, bool shared) {
  const int64_t D = d.dim, H = d.hidden, KV = d.kv_dim(), V = d.vocab, L = d.layers;
  const Seg emb{"model.embed_tokens.weight", V * D, 1}, an{"model.layers.{}.input_layernorm.weight", D, L},
      fn{"model.layers.{}.post_attention_layernorm.weight", D, L}, nm{"model.norm.weight", D, 1},
      q{"model.layers.{}.self_attn.q_proj.weight", D * D, L}, k{"model.layers.{}.self_attn.k_proj.weight", KV * D, L},
      v{"model.layers.{}.self_attn.v_proj.weight", KV * D, L}, o{"model.layers.{}.self_attn.o_proj.weight", D * D, L},
      w1{"model.layers.{}.mlp.gate_proj.weight", H * D, L}, w2{"model.layers.{}.mlp.down_proj.weight", D * H, L},
      w3{"model.layers.{}.mlp.up_proj.weight", H * D, L}, cls{"lm_head.weight", V * D, 1},
      freq{"", d.seq * d.head() / 2, 2};
  std::vector<Seg> s = version == 0 ? std::vector<Seg>{emb, an, q, k, v, o, fn, w1, w2, w3, nm, freq}
                                    : std::vector<Seg>{an, fn, nm, emb, q, k, v, o, w1, w2, w3};
  if (!shared) s.push_back(cls);
  return s;
}

// Writes a llama2.c file whose float k (counting from the first weight) has value k.
void write_l2(const fs::path& p, const L2Dims& d, int version, bool shared, int64_t extra_floats = 0) {
  std::ofstream out(p, std::ios::binary);
  const int32_t vocab = version == 0 && !shared ? -d.vocab : d.vocab;
  const int32_t params[7] = {d.dim, d.hidden, d.layers, d.heads, d.kv_heads, vocab, d.seq};
  if (version == 1) {
    char header[256] = {};
    const uint32_t magic = 0x616b3432;
    const int32_t ver = 1;
    std::memcpy(header, &magic, 4);
    std::memcpy(header + 4, &ver, 4);
    std::memcpy(header + 8, params, 28);
    header[36] = shared ? 1 : 0;
    out.write(header, 256);
  } else {
    out.write(reinterpret_cast<const char*>(params), 28);
  }
  int64_t total = extra_floats;
  for (const auto& s : l2_layout(d, version, shared)) total += s.per * s.reps;
  for (int64_t k = 0; k < total; ++k) {
    const float f = float(k);
    out.write(reinterpret_cast<const char*>(&f), 4);
  }
}

void check_l2_offsets(const Checkpoint& ck, const L2Dims& d, int version, bool shared) {
  int64_t k = 0;
  for (const auto& s : l2_layout(d, version, shared)) {
    for (int64_t l = 0; l < s.reps; ++l, k += s.per) {
      if (s.name.empty()) continue;
      std::string name = s.name;
      if (auto pos = name.find("{}"); pos != std::string::npos) name.replace(pos, 2, std::to_string(l));
      CAPTURE(name);
      REQUIRE(ck.has(name));
      const auto& t = ck.tensor(name);
      CHECK(t.numel() == size_t(s.per));
      CHECK(t.at(0) == float(k));
      CHECK(t.at(t.numel() - 1) == float(k + s.per - 1));
      REQUIRE(t.as_f32() != nullptr);
      CHECK(t.as_f32()[1] == float(k + 1));
    }
  }
  CHECK(ck.has("lm_head.weight") == !shared);
}

}  // namespace

TEST_CASE("llama2.c .bin: legacy and version-1 layouts map to HF names at the right offsets") {
  TempDir dir("ck_l2");
  const L2Dims d;
  for (int version : {0, 1})
    for (bool shared : {true, false}) {
      CAPTURE(version);
      CAPTURE(shared);
      const auto p = dir / ("m" + std::to_string(version) + (shared ? "s" : "u") + ".bin");
      write_l2(p, d, version, shared);
      const auto ck = Checkpoint::open(p);
      CHECK(ck.format() == "llama2.c");
      const auto& c = ck.config();
      CHECK(c.hidden_size == 8);
      CHECK(c.intermediate_size == 12);
      CHECK(c.num_hidden_layers == 2);
      CHECK(c.num_attention_heads == 2);
      CHECK(c.num_key_value_heads == 1);
      CHECK(c.head_dim == 4);
      CHECK(c.vocab_size == 10);
      CHECK(c.max_position_embeddings == 4);
      CHECK(c.tie_word_embeddings == shared);
      CHECK(c.rope_layout == ropex::RopeLayout::interleaved);
      CHECK(c.rope.base == 10000.0);
      CHECK(c.rope.type == ropex::RopeType::default_rope);
      CHECK(c.rms_norm_eps == 1e-5);
      CHECK(c.bos_token_id == 1);
      check_l2_offsets(ck, d, version, shared);
    }
}

TEST_CASE("llama2.c .bin: bad headers and sizes are refused with file + field") {
  TempDir dir("ck_l2_bad");
  const auto p = dir / "m.bin";
  const std::string f = p.string();
  auto open_msg = [&] { return error_of([&] { Checkpoint::open(p); }); };
  L2Dims d;
  SUBCASE("one float too many") {
    write_l2(p, d, 0, true, 1);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "file size");
    const int64_t floats = 10 * 8 + 2 * 8 + 2 * 64 + 2 * 32 + 2 * 32 + 2 * 64 + 2 * 8 + 3 * 2 * 96 + 8 + 2 * 4 * 2;
    CHECK_HAS(m, "implies " + std::to_string(28 + 4 * floats) + " bytes, file has " + std::to_string(28 + 4 * floats + 4));
  }
  SUBCASE("truncated") {
    write_l2(p, d, 1, false);
    fs::resize_file(p, fs::file_size(p) - 4);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "truncated");
  }
  SUBCASE("shorter than a header") {
    std::ofstream(p, std::ios::binary) << "abcd";
    CHECK_HAS(open_msg(), "shorter than the 28-byte llama2.c header");
  }
  SUBCASE("zero dim") {
    d.dim = 0;
    write_l2(p, d, 0, true);
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "header.dim");
  }
  SUBCASE("heads do not divide dim") {
    d.heads = 3;
    d.kv_heads = 3;
    write_l2(p, d, 0, true);
    CHECK_HAS(open_msg(), "header.n_heads: 3 does not divide dim 8");
  }
  SUBCASE("kv heads do not divide heads") {
    d.dim = 12;
    d.heads = 3;
    d.kv_heads = 2;
    write_l2(p, d, 0, true);
    CHECK_HAS(open_msg(), "header.n_kv_heads: 2 does not divide n_heads 3");
  }
  SUBCASE("odd head size") {
    d.dim = 6;
    d.heads = 2;
    write_l2(p, d, 0, true);
    CHECK_HAS(open_msg(), "must be even");
  }
  SUBCASE("negative layer count") {
    d.layers = -2;
    std::ofstream out(p, std::ios::binary);
    const int32_t params[7] = {8, 12, -2, 2, 1, 10, 4};
    out.write(reinterpret_cast<const char*>(params), 28);
    out.close();
    CHECK_HAS(open_msg(), "header.n_layers");
  }
  SUBCASE("INT32_MIN vocab") {
    std::ofstream out(p, std::ios::binary);
    const int32_t params[7] = {8, 12, 2, 2, 1, INT32_MIN, 4};
    out.write(reinterpret_cast<const char*>(params), 28);
    out.close();
    CHECK_HAS(open_msg(), "header.vocab_size");
  }
  SUBCASE("quantized version 2 is refused") {
    std::ofstream out(p, std::ios::binary);
    char header[256] = {};
    const uint32_t magic = 0x616b3432;
    const int32_t ver = 2;
    std::memcpy(header, &magic, 4);
    std::memcpy(header + 4, &ver, 4);
    out.write(header, 256);
    out.close();
    auto m = open_msg();
    CHECK_HAS(m, f);
    CHECK_HAS(m, "header.version");
    CHECK_HAS(m, "version 2 is not supported");
  }
  SUBCASE("bad shared_classifier flag") {
    write_l2(p, d, 1, true);
    std::fstream io(p, std::ios::binary | std::ios::in | std::ios::out);
    io.seekp(36);
    io.put(char(7));
    io.close();
    CHECK_HAS(open_msg(), "header.shared_classifier");
  }
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("stories260K.bin: header values and weights at computed offsets") {
  const fs::path path = fs::path(ROPEX_SHARED_DATA) / "stories260K.bin";
  if (!fs::exists(path)) {
    MESSAGE("skipping: " << path << " is absent");
    return;
  }
  const auto ck = Checkpoint::open(path);
  const auto& c = ck.config();
  CHECK(c.hidden_size == 64);
  CHECK(c.intermediate_size == 172);
  CHECK(c.num_hidden_layers == 5);
  CHECK(c.num_attention_heads == 8);
  CHECK(c.num_key_value_heads == 4);
  CHECK(c.vocab_size == 512);
  CHECK(c.max_position_embeddings == 512);
  CHECK(c.head_dim == 8);
  CHECK(c.tie_word_embeddings);
  CHECK(c.rope_layout == ropex::RopeLayout::interleaved);
  CHECK_FALSE(ck.has("lm_head.weight"));

  // Raw reads: float index -> value, straight from the file.
  std::ifstream in(path, std::ios::binary);
  auto raw = [&](int64_t float_index) {
    float v;
    in.seekg(28 + 4 * float_index);
    in.read(reinterpret_cast<char*>(&v), 4);
    REQUIRE(in);
    return v;
  };
  const int64_t D = 64, H = 172, L = 5, V = 512, KV = 32;
  const int64_t emb = 0, rms_att = emb + V * D, wq = rms_att + L * D, wk = wq + L * D * D, wv = wk + L * KV * D,
                wo = wv + L * KV * D, rms_ffn = wo + L * D * D, w1 = rms_ffn + L * D, w2 = w1 + L * H * D,
                w3 = w2 + L * D * H, rms_final = w3 + L * H * D, freqs = rms_final + D;
  CHECK(28 + 4 * (freqs + 2 * 512 * 4) == int64_t(fs::file_size(path)));
  struct Probe {
    std::string name;
    size_t elem;
    int64_t raw_index;
  };
  const std::vector<Probe> probes = {
      {"model.embed_tokens.weight", 0, emb},
      {"model.embed_tokens.weight", 511 * 64 + 63, emb + 511 * 64 + 63},
      {"model.layers.0.input_layernorm.weight", 5, rms_att + 5},
      {"model.layers.4.input_layernorm.weight", 63, rms_att + 4 * D + 63},
      {"model.layers.2.self_attn.q_proj.weight", 100, wq + 2 * D * D + 100},
      {"model.layers.3.self_attn.k_proj.weight", 31 * 64 + 1, wk + 3 * KV * D + 31 * 64 + 1},
      {"model.layers.1.self_attn.v_proj.weight", 7, wv + 1 * KV * D + 7},
      {"model.layers.4.self_attn.o_proj.weight", 4095, wo + 4 * D * D + 4095},
      {"model.layers.0.post_attention_layernorm.weight", 0, rms_ffn},
      {"model.layers.2.mlp.gate_proj.weight", 171 * 64, w1 + 2 * H * D + 171 * 64},
      {"model.layers.3.mlp.down_proj.weight", 63 * 172 + 171, w2 + 3 * D * H + 63 * 172 + 171},
      {"model.layers.4.mlp.up_proj.weight", 1234, w3 + 4 * H * D + 1234},
      {"model.norm.weight", 17, rms_final + 17},
  };
  for (const auto& p : probes) {
    CAPTURE(p.name);
    CAPTURE(p.elem);
    CHECK(ck.tensor(p.name).at(p.elem) == raw(p.raw_index));
  }
  // RMSNorm gains of a trained model sit near 1, embeddings near 0: a wrong offset would not.
  const auto& g = ck.tensor("model.norm.weight");
  double mean = 0;
  for (size_t i = 0; i < g.numel(); ++i) mean += g.at(i);
  mean /= double(g.numel());
  CHECK(mean > 0.2);
  CHECK(mean < 5.0);

  SUBCASE("a truncated copy is refused with expected and actual sizes") {
    TempDir dir("ck_stories");
    const auto cut = dir / "stories_cut.bin";
    fs::copy_file(path, cut);
    fs::resize_file(cut, 1'000'000);
    const auto m = error_of([&] { Checkpoint::open(cut); });
    CHECK_HAS(m, cut.string());
    CHECK_HAS(m, "implies 1056540 bytes, file has 1000000");
  }
}
