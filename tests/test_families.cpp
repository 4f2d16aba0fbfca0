// The LLaMA family as checkpoints ship it: Llama 3 biases, SmolLM2 (tied), Mistral and Qwen2
// sliding windows, Qwen2 q/k/v biases, Qwen3 per-head q/k norm, Phi-3 fused projections + longrope.
// Each family's logits match HF transformers (its own model class, eager, fp32 over bf16 weights;
// fixtures from scripts/make_family_fixtures.py) within 1e-3 from both config formats, in one
// prefill, in chunks and token by token through the KV cache; and switching the feature off in
// ropex moves the logits far past that bound (the feature is exercised, not incidental).
// Then the guard: keys and tensors ropex would not use are refused, naming file and key.
#include <doctest/doctest.h>

#include <ropex/io/npy.hpp>
#include <ropex/io/tokens.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using nlohmann::json;
using ropex::model::Checkpoint;
using ropex::model::Llama;
using ropex::model::LlamaConfig;

namespace {

const fs::path kFixtures = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "families";

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("ropex_families_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

// A model dir: the fixture's weights + the given config.
fs::path assemble(const TempDir& tmp, const std::string& name, const json& config) {
  static int counter = 0;
  const fs::path dir = tmp.path / (name + std::to_string(counter++));
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(2);
  fs::copy_file(kFixtures / name / "model.safetensors", dir / "model.safetensors");
  return dir;
}

double max_abs_diff(const float* a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::isnan(a[i]) ? INFINITY : std::abs(double(a[i]) - b[i]));
  return m;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ropex::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Logits of every token through the model, three ways: one prefill, 7-token chunks through a cache,
// and token by token (decode). All must match the reference.
void check_parity(const Checkpoint& ck, const std::vector<int32_t>& tokens, const std::vector<float>& ref,
                  const std::vector<float>& ref_decode) {
  Llama<> model(ck);
  auto cache = model.make_cache(int64_t(tokens.size()));
  const auto logits = model.logits(tokens, cache);
  const double err = max_abs_diff(logits.data(), ref);
  MESSAGE("max |ropex - HF| = " << err);
  CHECK(err <= 1e-3);

  Llama<> chunked(ck, 7);  // chunk boundaries fall inside and across the windows
  auto cache2 = chunked.make_cache(int64_t(tokens.size()));
  CHECK(max_abs_diff(chunked.logits(tokens, cache2).data(), ref) <= 1e-3);

  // Decode: a 5-token prompt, then one token per call (positions 5..47 against the cache), against
  // HF's own incremental decoding (for longrope the cached keys keep their short-factor rotation).
  Llama<> step(ck);
  auto cache3 = step.make_cache(int64_t(tokens.size()));
  const int64_t vocab = ck.config().vocab_size;
  std::vector<float> got;
  auto first = step.logits(std::span(tokens).first(5), cache3);
  got.insert(got.end(), first.data(), first.data() + first.size());
  for (size_t t = 5; t < tokens.size(); ++t) {
    auto row = step.logits(std::span(tokens).subspan(t, 1), cache3);
    REQUIRE(row.size() == vocab);
    got.insert(got.end(), row.data(), row.data() + row.size());
  }
  const double err_decode = max_abs_diff(got.data(), ref_decode);
  MESSAGE("decode: max |ropex - HF| = " << err_decode);
  CHECK(err_decode <= 1e-3);
}

}  // namespace

TEST_CASE("every family matches HF transformers (fp32 over bf16 weights, <= 1e-3), both config formats") {
  TempDir tmp;
  const std::vector<int32_t> tokens = ropex::io::read_tokens(kFixtures / "tokens.npy");
  REQUIRE(tokens.size() == 48);
  for (const std::string name : {"llama_bias", "smollm2", "mistral", "qwen2", "qwen3", "phi3"}) {
    const auto ref = ropex::io::read_npy_f32(kFixtures / (name + ".logits.npy"));
    REQUIRE(ref.shape == std::vector<size_t>{48, 128});
    const auto ref_decode = ropex::io::read_npy_f32(kFixtures / (name + ".decode.logits.npy"));
    REQUIRE(ref_decode.shape == ref.shape);
    for (const std::string format : {"current", "legacy"}) {
      INFO(name << " (" << format << " config)");
      const json cfg = format == "current" ? read_json(kFixtures / name / "config.json")
                                           : read_json(kFixtures / (name + ".legacy.config.json"));
      const Checkpoint ck = Checkpoint::open(assemble(tmp, name, cfg));
      check_parity(ck, tokens, ref.data, ref_decode.data);
    }
  }
}

TEST_CASE("each family's flags are read from its config as HF's class reads them") {
  auto cfg = [](const std::string& name) { return LlamaConfig::from_json(read_json(kFixtures / name / "config.json"), "config.json"); };
  const auto llama = cfg("llama_bias");
  CHECK((llama.qkv_bias && llama.o_bias && llama.mlp_bias && !llama.qk_norm && !llama.fused_qkv));
  CHECK(llama.eos_token_ids == std::vector<int64_t>{2, 3});
  CHECK(llama.eos_token_id == 2);
  CHECK(cfg("smollm2").tie_word_embeddings);
  CHECK(cfg("mistral").layer_window == std::vector<int64_t>{8, 8});
  const auto qwen2 = cfg("qwen2");
  CHECK((qwen2.qkv_bias && !qwen2.o_bias));
  CHECK(qwen2.layer_window == std::vector<int64_t>{0, 8});  // layers >= max_window_layers = 1 slide
  const auto qwen3 = cfg("qwen3");
  CHECK((qwen3.qk_norm && !qwen3.qkv_bias && qwen3.head_dim == 32 && qwen3.layer_window.empty()));
  const auto phi3 = cfg("phi3");
  CHECK((phi3.fused_qkv && phi3.rope.type == ropex::RopeType::longrope));
  CHECK(phi3.rope.original_max_position_embeddings == 16);
  CHECK(phi3.layer_window == std::vector<int64_t>{20, 20});

  SUBCASE("hub-style defaults: MistralConfig's 4096 window when the key is absent, none when null") {
    json j = read_json(kFixtures / "mistral" / "config.json");
    j.erase("sliding_window");
    CHECK(LlamaConfig::from_json(j, "c").layer_window == std::vector<int64_t>{4096, 4096});
    j["sliding_window"] = nullptr;
    CHECK(LlamaConfig::from_json(j, "c").layer_window.empty());
  }
  SUBCASE("Qwen2: the window needs use_sliding_window; max_window_layers picks the layers") {
    json j = read_json(kFixtures / "qwen2.legacy.config.json");
    CHECK(LlamaConfig::from_json(j, "c").layer_window == std::vector<int64_t>{0, 8});
    j["max_window_layers"] = 0;
    CHECK(LlamaConfig::from_json(j, "c").layer_window == std::vector<int64_t>{8, 8});
    j["use_sliding_window"] = false;  // Qwen2.5 hub files: sliding_window set, but off
    CHECK(LlamaConfig::from_json(j, "c").layer_window.empty());
  }
  SUBCASE("Phi-3: early exports' \"su\" rope type is longrope") {
    json j = read_json(kFixtures / "phi3.legacy.config.json");
    j["rope_scaling"]["type"] = "su";
    CHECK(LlamaConfig::from_json(j, "c").rope.type == ropex::RopeType::longrope);
  }
}

TEST_CASE("the feature matters: switched off in ropex, the logits leave HF's by far more than 1e-3") {
  TempDir tmp;
  const std::vector<int32_t> tokens = ropex::io::read_tokens(kFixtures / "tokens.npy");
  struct Case {
    const char* name;
    std::function<void(LlamaConfig&)> off;
  };
  const std::vector<Case> cases = {
      {"llama_bias", [](LlamaConfig& c) { c.qkv_bias = c.o_bias = false; }},
      {"llama_bias", [](LlamaConfig& c) { c.mlp_bias = false; }},
      {"mistral", [](LlamaConfig& c) { c.layer_window.clear(); }},
      {"qwen2", [](LlamaConfig& c) { c.qkv_bias = false; }},
      {"qwen2", [](LlamaConfig& c) { c.layer_window.clear(); }},
      {"qwen3", [](LlamaConfig& c) { c.qk_norm = false; }},
      {"phi3", [](LlamaConfig& c) { c.layer_window.clear(); }},
      {"phi3", [](LlamaConfig& c) { c.rope.long_factor = c.rope.short_factor; }},  // no short/long switch
  };
  for (const auto& c : cases) {
    INFO(c.name);
    const auto ref = ropex::io::read_npy_f32(kFixtures / (std::string(c.name) + ".logits.npy"));
    Checkpoint ck = Checkpoint::open(assemble(tmp, c.name, read_json(kFixtures / c.name / "config.json")));
    c.off(ck.config());
    Llama<> model(ck);
    auto cache = model.make_cache(48);
    const double err = max_abs_diff(model.logits(tokens, cache).data(), ref.data);
    MESSAGE(std::string(c.name) << " without the feature: max |ropex - HF| = " << err);
    CHECK(err > 0.05);
  }
}

TEST_CASE("a sliding window only reads the keys inside it (tiled kernel = reference, window edge cases)") {
  using namespace ropex::attention;
  for (const int64_t window : {1, 3, 64, 65, 200, 1000}) {
    for (const int64_t offset : {0, 37}) {
      AttentionShape s;
      s.n_queries = 150, s.n_keys = offset + 150, s.query_offset = offset, s.n_heads = 4, s.n_kv_heads = 2,
      s.head_dim = 16, s.causal = true, s.window = window, s.scale = 0.25;
      std::vector<float> q(size_t(s.n_queries * 4 * 16)), k(size_t(s.n_keys * 2 * 16)), v(k.size());
      uint32_t st = 12345;
      auto rnd = [&] { return float((st = st * 1664525u + 1013904223u) >> 8) / float(1 << 24) - 0.5f; };
      for (auto* vec : {&q, &k, &v})
        for (auto& x : *vec) x = rnd() * 4;
      const auto ref = attention_reference<float>(token_major<const float>(q.data(), 4, 16),
                                                  token_major<const float>(k.data(), 2, 16),
                                                  token_major<const float>(v.data(), 2, 16), s);
      std::vector<float> out(q.size(), NAN);
      ropex::backends::eigen::attention_tiled(token_major<const float>(q.data(), 4, 16),
                                              token_major<const float>(k.data(), 2, 16),
                                              token_major<const float>(v.data(), 2, 16),
                                              token_major<float>(out.data(), 4, 16), s);
      double err = 0;
      for (size_t i = 0; i < out.size(); ++i) err = std::max(err, std::abs(double(out[i]) - ref[i]));
      INFO("window " << window << " offset " << offset);
      CHECK(err < 1e-5);
      // Window 1: each query sees only itself, so its output is its own value row.
      if (window == 1)
        CHECK(std::abs(out[size_t(5 * 64 + 2 * 16 + 3)] - v[size_t((offset + 5) * 32 + 1 * 16 + 3)]) < 1e-6);
    }
  }
}

TEST_CASE("keys that would change the forward are refused, naming file and key") {
  const json base = read_json(kFixtures / "qwen2" / "config.json");
  struct Case {
    const char* key;
    json value;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"model_type", "gemma2", "model_type: \"gemma2\" is not supported"},
      {"model_type", nullptr, "model_type: missing"},
      {"attn_logit_softcapping", 50.0, "attn_logit_softcapping: logit softcapping is not supported"},
      {"quantization_config", {{"quant_method", "gptq"}}, "quantization_config: quantized"},
      {"use_mrope", true, "use_mrope: multimodal RoPE"},
      {"kv_lora_rank", 512, "kv_lora_rank: multi-head latent attention"},
      {"sliding_window_pattern", 6, "sliding_window_pattern: alternating"},
      {"attention_bias", true, "attention_bias: not a key ropex honours for model_type \"qwen2\""},
      {"qk_layernorm", true, "qk_layernorm: not a key ropex honours"},
      {"hidden_act", "gelu", "hidden_act: only \"silu\""},
      {"layer_types", {"full_attention", "chunked_attention"}, "layer_types[1]: only"},
      {"layer_types", {"full_attention"}, "layer_types: must be a list of num_hidden_layers = 2"},
      {"sliding_window", 0, "sliding_window: must be in [1,"},
      {"eos_token_id", {2, 500}, "eos_token_id[1]: must be a token id in [0, 127]"},
  };
  for (const auto& c : cases) {
    json j = base;
    j[c.key] = c.value;
    const std::string m = error_of([&] { LlamaConfig::from_json(j, "dir/config.json"); });
    INFO(c.key << " = " << c.value.dump());
    CHECK(m.find(std::string("dir/config.json: ") + c.expect) != std::string::npos);
    if (m.find(c.expect) == std::string::npos) MESSAGE(m);
  }
  // Keys that cannot change the forward (training, export metadata) are skipped, not refused; and
  // false/null values of generic switches are nothing to honour.
  json j = base;
  j["initializer_range"] = 0.5, j["torch_dtype"] = "float32", j["pretraining_tp"] = 4, j["qk_layernorm"] = false;
  CHECK_NOTHROW(LlamaConfig::from_json(j, "c"));
  // Mistral's HF class reads head_dim; Qwen2's does not (refused there, honoured here).
  json m = read_json(kFixtures / "mistral" / "config.json");
  m["head_dim"] = 32;
  CHECK(LlamaConfig::from_json(m, "c").head_dim == 32);
}

TEST_CASE("weights the config does not describe are refused, never dropped") {
  TempDir tmp;
  SUBCASE("Qwen2 weights (q/k/v biases) under a llama config") {
    json cfg = read_json(kFixtures / "qwen2" / "config.json");
    cfg = json{{"model_type", "llama"}, {"vocab_size", 128}, {"hidden_size", 64}, {"intermediate_size", 96},
               {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}};
    const std::string m = error_of([&] { Checkpoint::open(assemble(tmp, "qwen2", cfg)); });
    CHECK(m.find("model.safetensors: tensor 'model.layers.0.self_attn.k_proj.bias': not used by a model_type \"llama\"") !=
          std::string::npos);
  }
  SUBCASE("Phi-3 weights under a llama config: the fused projection is named") {
    json cfg = read_json(kFixtures / "phi3" / "config.json");
    cfg["model_type"] = "llama";
    cfg.erase("original_max_position_embeddings");
    cfg.erase("sliding_window");
    cfg.erase("embd_pdrop"), cfg.erase("resid_pdrop");
    const std::string m = error_of([&] { Checkpoint::open(assemble(tmp, "phi3", cfg)); });
    CHECK(m.find("tensor 'model.layers.0.self_attn.q_proj.weight': missing: the checkpoint stores a fused qkv_proj") !=
          std::string::npos);
  }
  SUBCASE("Qwen3 without its norms") {
    json cfg = read_json(kFixtures / "llama_bias" / "config.json");
    cfg["model_type"] = "qwen3";
    cfg["head_dim"] = 16;
    cfg.erase("mlp_bias");
    const std::string m = error_of([&] { Checkpoint::open(assemble(tmp, "llama_bias", cfg)); });
    CHECK(m.find("self_attn.q_norm.weight': missing") != std::string::npos);
  }
}
