// rotary_config_from_json: head dim, rotary dim and base from every config.json style, each with
// the key it came from; conflicting keys and nested text configs refused naming the keys.
#include <ropex/io/json_file.hpp>
#include <ropex/rope/rotary_config.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace {

ropex::RotaryConfig fixture(const std::string& model) {
  const auto path = std::filesystem::path(ROPEX_SOURCE_DIR) / "tests/fixtures/configs" / model / "config.json";
  return ropex::rotary_config_from_json(ropex::read_json_file(path), path.string());
}

ropex::RotaryConfig parse(const char* text) { return ropex::rotary_config_from_json(nlohmann::json::parse(text), "cfg.json"); }

std::string error_of(const char* text) {
  try {
    parse(text);
  } catch (const ropex::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("real configs: rotary dim, head dim and base with their source keys") {
  SUBCASE("GPT-NeoX (Pythia): rotary_pct x head, rotary_emb_base") {
    const auto r = fixture("pythia-160m");
    CHECK(r.head_dim == 768 / 12);
    CHECK(r.head_dim_key == "hidden_size/num_attention_heads");
    CHECK(r.rotary_dim == static_cast<int>(64 * 0.25));
    CHECK(r.rotary_dim_key == "rotary_pct");
    CHECK(r.partial);
    CHECK(r.base == 10000);
    CHECK(r.base_key == "rotary_emb_base");
    CHECK_FALSE(r.base_is_default);
  }
  SUBCASE("DeepSeek-V2-Lite (MLA): the rope part of the head") {
    const auto r = fixture("DeepSeek-V2-Lite");
    CHECK(r.rotary_dim == 64);
    CHECK(r.rotary_dim_key == "qk_rope_head_dim");
    CHECK(r.head_dim == 128 + 64);  // attention's q/k head: nope + rope parts
    CHECK(r.head_dim_key == "qk_nope_head_dim+qk_rope_head_dim");
    CHECK(r.base_key == "rope_theta");
    CHECK(r.rope.type == ropex::RopeType::yarn);
    CHECK(r.rope.factor == 40);
    CHECK(r.max_position_embeddings == 163840);
  }
  SUBCASE("GPT-J: rotary_dim, n_embd/n_head, no base key") {
    const auto r = fixture("gpt-j-6b");
    CHECK(r.head_dim == 4096 / 16);
    CHECK(r.head_dim_key == "n_embd/n_head");
    CHECK(r.rotary_dim == 64);
    CHECK(r.rotary_dim_key == "rotary_dim");
    CHECK(r.base == 10000);
    CHECK(r.base_is_default);
    CHECK(r.base_key.find("default") != std::string::npos);
  }
  SUBCASE("Qwen2.5-7B: whole head rotates") {
    const auto r = fixture("Qwen2.5-7B");
    CHECK(r.head_dim == 3584 / 28);
    CHECK(r.rotary_dim == r.head_dim);
    CHECK_FALSE(r.partial);
    CHECK(r.rotary_dim_key == "hidden_size/num_attention_heads");
    CHECK(r.base == 1e6);
  }
  SUBCASE("Gemma-2-2B: explicit head_dim (not hidden/heads = 288)") {
    const auto r = fixture("gemma-2-2b");
    CHECK(r.head_dim == 256);
    CHECK(r.head_dim_key == "head_dim");
    CHECK(r.rotary_dim == 256);
  }
  SUBCASE("Llama-3.1-8B: legacy rope_scaling is the variant, rope_theta the base") {
    const auto r = fixture("Llama-3.1-8B");
    CHECK(r.rope.type == ropex::RopeType::llama3);
    CHECK(r.base == 500000);
    CHECK(r.rope.original_max_position_embeddings == 8192);
  }
}

TEST_CASE("partial_rotary_factor in either HF format") {
  // Phi-2 style: HF int(head_dim * factor) = int(80 * 0.4) = 32
  const auto top = parse(R"({"hidden_size": 2560, "num_attention_heads": 32, "partial_rotary_factor": 0.4,
                             "rope_theta": 10000.0})");
  CHECK(top.head_dim == 80);
  CHECK(top.rotary_dim == 32);
  CHECK(top.rotary_dim_key == "partial_rotary_factor");
  const auto rp = parse(R"({"head_dim": 128, "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0,
                            "partial_rotary_factor": 0.25}})");
  CHECK(rp.rotary_dim == 32);
  CHECK(rp.rotary_dim_key == "rope_parameters.partial_rotary_factor");
  CHECK(rp.base == 5e6);
  CHECK(rp.base_key == "rope_parameters.rope_theta");
  // agreeing keys are accepted and both named
  const auto both = parse(R"({"head_dim": 64, "rotary_pct": 0.25, "partial_rotary_factor": 0.25})");
  CHECK(both.rotary_dim == 16);
  CHECK(both.rotary_dim_key.find("rotary_pct") != std::string::npos);
  CHECK(both.rotary_dim_key.find("partial_rotary_factor") != std::string::npos);
}

TEST_CASE("conflicts and nested configs are refused naming the keys") {
  auto names = [](const std::string& err, std::initializer_list<const char*> keys) {
    CAPTURE(err);
    CHECK(err.rfind("cfg.json: ", 0) == 0);
    for (const char* k : keys) CHECK(err.find(k) != std::string::npos);
  };
  names(error_of(R"({"head_dim": 64, "rotary_pct": 0.25, "partial_rotary_factor": 0.5})"),
        {"partial_rotary_factor", "rotary_pct", "conflicting"});
  names(error_of(R"({"head_dim": 64, "rotary_dim": 32, "rotary_pct": 0.25})"), {"rotary_pct", "rotary_dim"});
  names(error_of(R"({"head_dim": 64, "rope_theta": 10000, "rotary_emb_base": 20000})"),
        {"rope_theta", "rotary_emb_base", "conflicting"});
  names(error_of(R"({"head_dim": 64, "rope_theta": 10000, "rope_parameters": {"rope_type": "default",
                     "rope_theta": 500000}})"),
        {"rope_theta", "rope_parameters.rope_theta"});
  names(error_of(R"({"model_type": "llava", "text_config": {"hidden_size": 4096, "num_attention_heads": 32}})"),
        {"text_config"});
  names(error_of(R"({"head_dim": 64, "rotary_dim": 128})"), {"rotary_dim", "exceeds"});
  names(error_of(R"({"head_dim": 64, "rotary_dim": 31})"), {"rotary_dim", "even"});
  names(error_of(R"({"head_dim": 64, "rotary_pct": 1.5})"), {"rotary_pct"});
  names(error_of(R"({"hidden_size": 4096})"), {"num_attention_heads"});
  names(error_of(R"({"head_dim": 64, "rotary_emb_base": 0.5})"), {"rotary_emb_base"});
}
