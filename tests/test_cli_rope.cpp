// `ropex rope`: JSON parsed and checked against the library; bad input gives exit 2 + one line.
#include "cli_runner.hpp"

#include <doctest/doctest.h>
#include <ropex/rope/scaling.hpp>

#include <cmath>
#include <string>

using ropex::test::run_cli;
using ropex::test::temp_file;

TEST_CASE("ropex rope --json reports the variant's inv_freq and attention factor") {
  const auto cfg = temp_file("yarn.json", R"({"hidden_size": 512, "num_attention_heads": 4,
    "max_position_embeddings": 32768, "rope_theta": 10000.0,
    "rope_scaling": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 4096}})");
  const auto r = run_cli("rope --config " + cfg + " --positions 20000 --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["rope_type"] == "yarn");
  CHECK(j["rotary_dim"] == 128);
  CHECK(j["inv_freq"].size() == 64);
  ropex::RopeParams p;
  p.type = ropex::RopeType::yarn;
  p.factor = 8;
  p.original_max_position_embeddings = 4096;
  CHECK(j["attention_factor"].get<double>() == doctest::Approx(0.1 * std::log(8.0) + 1));
  for (int i : {0, 20, 40, 63})
    CHECK(j["inv_freq"][i].get<double>() == doctest::Approx(ropex::inv_freq(p, i, 128)).epsilon(1e-12));
  // --rope-base / --rope-scaling override the file
  const auto r2 = run_cli("rope --config " + cfg + " --rope-base 500000 --rope-scaling '{\"rope_type\":\"linear\",\"factor\":2}' --json");
  REQUIRE_MESSAGE(r2.code == 0, r2.err);
  const auto j2 = nlohmann::json::parse(r2.out);
  CHECK(j2["rope_type"] == "linear");
  CHECK(j2["inv_freq"][1].get<double>() == doctest::Approx(std::pow(500000.0, -2.0 / 128) / 2));
  // human table
  const auto r3 = run_cli("rope --config " + cfg);
  CHECK(r3.code == 0);
  CHECK(r3.out.find("rope_type yarn") != std::string::npos);
}

TEST_CASE("ropex rope: bad input exits 2 with one clear line") {
  const auto bad_json = temp_file("bad.json", "{\"rope_theta\": ");
  const auto small_base = temp_file("base.json", R"({"hidden_size": 64, "num_attention_heads": 1, "rope_theta": 0.5})");
  const auto odd = temp_file("odd.json", R"({"head_dim": 63, "rope_theta": 10000})");
  const auto unknown = temp_file("unk.json", R"({"head_dim": 64, "rope_scaling": {"type": "magic", "factor": 2}})");
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"rope --config /no/such/config.json", "/no/such/config.json: cannot open"},
      {"rope --config " + bad_json, "malformed JSON"},
      {"rope --config " + small_base, "rope_theta"},
      {"rope --config " + odd, "head_dim: must be even"},
      {"rope --config " + unknown, "unknown rope type \"magic\""},
      {"rope --config " + odd + " --head-dim 64 --rope-base nan", "--rope-base"},
      {"rope --config " + odd + " --head-dim 64 --rope-scaling '{oops'", "--rope-scaling"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.args);
    const auto r = run_cli(c.args);
    CHECK(r.code != 0);
    CHECK(r.err.find(c.expect) != std::string::npos);
    CHECK(r.err.find("terminate") == std::string::npos);
  }
}

TEST_CASE("ropex rope: rotary dimension and its source key for each config style") {
  const std::string dir = std::string(ROPEX_SOURCE_DIR) + "/tests/fixtures/configs/";
  struct Case {
    const char* model;
    int rotary_dim, head_dim;
    const char *rotary_key, *base_key;
  } cases[] = {
      {"pythia-160m", 16, 64, "rotary_pct", "rotary_emb_base"},             // GPT-NeoX: int(64 * 0.25)
      {"DeepSeek-V2-Lite", 64, 192, "qk_rope_head_dim", "rope_theta"},      // MLA rope part of 128 + 64
      {"gpt-j-6b", 64, 256, "rotary_dim", "default 10000 (no rope_theta or rotary_emb_base)"},
      {"Qwen2.5-7B", 128, 128, "hidden_size/num_attention_heads", "rope_theta"},
      {"gemma-2-2b", 256, 256, "head_dim", "rope_theta"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.model);
    const auto r = run_cli("rope --config " + dir + c.model + "/config.json --json");
    REQUIRE_MESSAGE(r.code == 0, r.err);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["rotary_dim"] == c.rotary_dim);
    CHECK(j["head_dim"] == c.head_dim);
    CHECK(j["rotary_dim_source"] == c.rotary_key);
    CHECK(j["base_source"] == c.base_key);
    CHECK(j["inv_freq"].size() == static_cast<size_t>(c.rotary_dim / 2));
    // inv_freq over the rotary dims only: theta_i = base^(-2i/rotary_dim)
    if (j["rope_type"] == "default")
      CHECK(j["inv_freq"][1].get<double>() ==
            doctest::Approx(std::pow(j["base"].get<double>(), -2.0 / c.rotary_dim)).epsilon(1e-12));
    const auto t = run_cli("rope --config " + dir + c.model + "/config.json");
    CHECK(t.out.find(std::string("rotary_dim <- ") + c.rotary_key) != std::string::npos);
  }
  const auto conflict = temp_file("conflict.json", R"({"hidden_size": 768, "num_attention_heads": 12,
    "rotary_pct": 0.25, "partial_rotary_factor": 0.5})");
  const auto r = run_cli("rope --config " + conflict);
  CHECK(r.code == 2);
  CHECK(r.err.find("partial_rotary_factor") != std::string::npos);
  CHECK(r.err.find("rotary_pct") != std::string::npos);
  const auto nested = temp_file("nested.json", R"({"model_type": "llava", "text_config": {"hidden_size": 4096}})");
  const auto n = run_cli("rope --config " + nested);
  CHECK(n.code == 2);
  CHECK(n.err.find("text_config") != std::string::npos);
}
