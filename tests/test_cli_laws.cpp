// `ropex predict | base | periods`: each subcommand's JSON parsed and checked against the paper's
// numbers and the library; every bad input exits non-zero with one line naming the field.
#include "cli_runner.hpp"

#include <ropex/scaling_law.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <string>

using ropex::test::run_cli;
using ropex::test::temp_file;

namespace {

nlohmann::json json_of(const std::string& args) {
  const auto r = run_cli(args);
  INFO("ropex " << args << "\nstderr: " << r.err);
  REQUIRE(r.code == 0);
  return nlohmann::json::parse(r.out);
}

bool rounds_to(double x, double printed, int decimals) {
  return std::fabs(x - printed) <= 0.5 * std::pow(10.0, -decimals) * (1 + 1e-9);
}

// A failing run: non-zero exit, nothing on stdout, one stderr line that contains `needle`.
void check_fails(const std::string& args, const std::string& needle) {
  const auto r = run_cli(args);
  INFO("ropex " << args << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.code != 0);
  CHECK(r.err.find(needle) != std::string::npos);
  CHECK(r.err.find("terminate") == std::string::npos);
  if (r.code == 2) {  // ropex's own errors: exactly one line
    CHECK(r.err.find('\n') == r.err.size() - 1);
    CHECK(r.out.empty());
  }
}

}  // namespace

TEST_CASE("predict --json: LLaMA-2 + base 1e6 (larger-base regime, 16b)") {
  const auto j = json_of("predict --head-dim 128 --train-len 4096 --base 1000000 --json");
  CHECK(j["critical_dimension"] == 92);
  CHECK(j["critical_base"].get<double>() == 10000);
  CHECK(rounds_to(j["extrapolation_limit"].get<double>(), 129026.8, 1));
  CHECK(j["regime"] == "larger_base");
  CHECK_FALSE(j.contains("updated_critical_dimension"));
  CHECK(j["head_dim"] == 128);
  CHECK(j["train_len"] == 4096);
  CHECK(j["base"] == 1000000);
  CHECK(j["tune_len"] == 4096);
  CHECK(j["pretrain_base"] == 10000);
  // --model gives the same numbers, plus the preset name
  const auto m = json_of("predict --model llama2-7b --base 1000000 --json");
  CHECK(m["extrapolation_limit"] == j["extrapolation_limit"]);
  CHECK(m["model"] == "llama2-7b");
}

TEST_CASE("predict --json: tuned regimes (16a, 16c, 16d)") {
  const auto j = json_of("predict --head-dim 128 --train-len 4096 --base 500 --tune-len 16384 --json");
  CHECK(j["regime"] == "small_base_full");
  CHECK(j["updated_critical_dimension"] == 128);
  CHECK(j["extrapolation_limit"].get<double>() == 16384);
  CHECK(rounds_to(j["critical_base"].get<double>(), 71738.4, 1));
  CHECK(rounds_to(j["beta_3"].get<double>(), 2607.59, 2));
  const auto q = json_of("predict --head-dim 128 --train-len 4096 --base 1304 --json");
  CHECK(q["regime"] == "small_base_quarter");
  CHECK(q["updated_critical_dimension"] == 116);
  CHECK(rounds_to(q["beta_1"].get<double>(), 2607.59, 2));
  CHECK(rounds_to(q["beta_2"].get<double>(), 1303.80, 2));
  const auto t = json_of("predict --head-dim 128 --train-len 4096 --base 2608 --json");
  CHECK(t["regime"] == "tune_length");
  CHECK(t["updated_critical_dimension"] == 106);
  const auto c = json_of("predict --head-dim 128 --train-len 4096 --base 100000 --tune-len 32768 --json");
  CHECK(rounds_to(c["critical_base"].get<double>(), 192144.5, 1));
  CHECK(c["regime"] == "tune_length");
  CHECK(c["extrapolation_limit"].get<double>() == 32768);
  // --pretrain-base generalizes the paper's 10000
  const auto p = json_of("predict --head-dim 128 --train-len 8192 --base 500000 --pretrain-base 500000 --json");
  CHECK(p["critical_dimension"] == 70);
  CHECK(p["pretrain_base"] == 500000);
}

TEST_CASE("predict --model: every preset runs, Code Llama reaches ~129K") {
  for (const char* m : {"llama2-7b", "llama2-13b", "llama2-70b", "codellama-7b", "llama2-long", "llama3-8b",
                        "llama3.1-8b", "mistral-7b", "qwen2-7b"}) {
    const auto j = json_of(std::string("predict --model ") + m + " --json");
    CHECK(j["model"] == m);
    CHECK(j["extrapolation_limit"].get<double>() > 0);
  }
  const auto cl = json_of("predict --model codellama-7b --json");
  CHECK(cl["regime"] == "larger_base");
  CHECK(rounds_to(cl["extrapolation_limit"].get<double>(), 129026.8, 1));
  CHECK(cl["tune_len"] == 16384);
  const auto l31 = json_of("predict --model llama3.1-8b --json");
  CHECK(l31["scaling"] == "llama3");
  CHECK(l31["factor"] == 8);
  // flags override the preset
  const auto o = json_of("predict --model llama2-7b --base 500000 --tune-len 16384 --json");
  CHECK(rounds_to(o["extrapolation_limit"].get<double>(), 78399.7, 1));
  const auto list = run_cli("predict --list-models");
  CHECK(list.code == 0);
  CHECK(list.out.find("qwen2-7b") != std::string::npos);
}

TEST_CASE("predict --config: both HF formats, head_dim and T_train rules") {
  SUBCASE("legacy rope_theta, head_dim from hidden/heads, T_train = max_position_embeddings") {
    const auto cfg = temp_file("l2.json", R"({"hidden_size": 4096, "num_attention_heads": 32,
      "max_position_embeddings": 4096, "rope_theta": 1000000.0, "model_type": "llama"})");
    const auto j = json_of("predict --config " + cfg + " --json");
    CHECK(j["head_dim"] == 128);
    CHECK(j["train_len"] == 4096);
    CHECK(j["base"] == 1000000);
    CHECK(rounds_to(j["extrapolation_limit"].get<double>(), 129026.8, 1));
    CHECK(j["config"] == cfg);
    // --base overrides the file
    const auto b = json_of("predict --config " + cfg + " --base 500000 --json");
    CHECK(rounds_to(b["extrapolation_limit"].get<double>(), 78399.7, 1));
  }
  SUBCASE("rope_parameters format with original_max_position_embeddings inside, explicit head_dim") {
    const auto cfg = temp_file("l31.json", R"({"hidden_size": 2048, "num_attention_heads": 32, "head_dim": 128,
      "max_position_embeddings": 131072,
      "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})");
    const auto j = json_of("predict --config " + cfg + " --json");
    CHECK(j["head_dim"] == 128);       // head_dim wins over hidden/heads (= 64)
    CHECK(j["train_len"] == 8192);     // original_max_position_embeddings, not 131072
    CHECK(j["base"] == 500000);
    CHECK(j["scaling"] == "llama3");
    CHECK(j["critical_dimension"] == ropex::critical_dimension(128, 8192));
  }
  SUBCASE("legacy rope_scaling with original_max_position_embeddings") {
    const auto cfg = temp_file("l31legacy.json", R"({"hidden_size": 4096, "num_attention_heads": 32,
      "max_position_embeddings": 131072, "rope_theta": 500000.0,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192}})");
    const auto j = json_of("predict --config " + cfg + " --json");
    CHECK(j["train_len"] == 8192);
    CHECK(j["base"] == 500000);
  }
  SUBCASE("partial_rotary_factor: the law's d is the rotary part") {
    const auto cfg = temp_file("neox.json", R"({"hidden_size": 2048, "num_attention_heads": 16,
      "max_position_embeddings": 2048, "rope_theta": 10000, "partial_rotary_factor": 0.25})");
    const auto j = json_of("predict --config " + cfg + " --json");
    CHECK(j["head_dim"] == 32);
    CHECK(j["critical_dimension"] == ropex::critical_dimension(32, 2048));
  }
}

TEST_CASE("predict --csv and --sweep-base") {
  const auto r = run_cli("predict --model llama2-7b --base 1000000 --csv");
  REQUIRE(r.code == 0);
  CHECK(r.out.rfind("base,extrapolation_limit,regime", 0) == 0);
  CHECK(r.out.find("1000000,129026.7827,larger_base") != std::string::npos);
  const auto s = run_cli("predict --model llama2-7b --tune-len 16384 --sweep-base 100,1e7,50");
  REQUIRE(s.code == 0);
  int lines = 0;
  for (char c : s.out) lines += c == '\n';
  CHECK(lines == 51);
  CHECK(s.out.find("small_base_full") != std::string::npos);
  CHECK(s.out.find("tune_length") != std::string::npos);
  CHECK(s.out.find("larger_base") != std::string::npos);
}

TEST_CASE("base --json: exact inverse of 16b and the ceiling-free form") {
  const auto j = json_of("base --head-dim 128 --train-len 4096 --target 131072 --json");
  CHECK(std::lround(j["base"].get<double>()) == 1022122);
  CHECK(std::lround(j["base_ceiling_free"].get<double>()) == 1378414);
  CHECK(j["critical_dimension"] == 92);
  CHECK(j["target"] == 131072);
  // round trip through predict: the exact-inverse base predicts the target back
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", j["base"].get<double>());
  const auto p = json_of(std::string("predict --model llama2-7b --base ") + buf + " --json");
  CHECK(p["extrapolation_limit"].get<double>() == doctest::Approx(131072).epsilon(1e-12));
  const auto m = json_of("base --model llama2-7b --target 131072 --json");
  CHECK(m["base"] == j["base"]);
}

TEST_CASE("periods --json / --csv") {
  const auto j = json_of("periods --model llama2-7b --json");
  REQUIRE(j["pairs"].size() == 64);
  CHECK(j["dims_full_period_in_train"] == 92);
  CHECK(rounds_to(j["pairs"][45]["period"].get<double>(), 4080.19, 2));
  CHECK(rounds_to(j["pairs"][46]["period"].get<double>(), 4711.72, 2));
  CHECK(j["pairs"][45]["full_period_in_train"] == true);
  CHECK(j["pairs"][46]["full_period_in_train"] == false);
  CHECK(j["pairs"][46]["dims_half"] == nlohmann::json::array({46, 110}));
  CHECK(j["pairs"][46]["dims_interleaved"] == nlohmann::json::array({92, 93}));
  const auto t = json_of("periods --head-dim 128 --train-len 4096 --base 1304 --json");
  CHECK(t["dims_full_period_in_tune"] == 116);
  const auto c = run_cli("periods --head-dim 64 --train-len 2048 --base 10000 --csv");
  REQUIRE(c.code == 0);
  int lines = 0;
  for (char ch : c.out) lines += ch == '\n';
  CHECK(lines == 33);
  CHECK(c.out.rfind("pair,", 0) == 0);
}

TEST_CASE("--help works for each subcommand") {
  for (const char* sub : {"predict", "base", "periods"}) {
    const auto r = run_cli(std::string(sub) + " --help");
    CHECK(r.code == 0);
    CHECK(r.out.find("--head-dim") != std::string::npos);
  }
}

TEST_CASE("bad inputs: non-zero exit, one line naming the field") {
  check_fails("predict --head-dim 127 --train-len 4096 --base 1e6", "head_dim");
  check_fails("predict --head-dim 0 --train-len 4096 --base 1e6", "head_dim");
  check_fails("predict --head-dim 128 --train-len 4096 --base 1", "base");
  check_fails("predict --head-dim 128 --train-len 4096 --base 0.5", "base");
  check_fails("predict --head-dim 128 --train-len 6 --base 1e6", "train_len");
  check_fails("predict --head-dim 128 --train-len 4096 --base 1e6 --tune-len 2048", "tune_len");
  check_fails("predict --head-dim 128 --train-len 4096 --base nan", "base");
  check_fails("predict --head-dim 128 --train-len inf --base 1e6", "train_len");
  check_fails("predict --head-dim 128 --train-len 4096 --base 1e6 --pretrain-base 1", "pretrain_base");
  check_fails("predict --head-dim 128 --train-len 4096", "--base");
  check_fails("predict --train-len 4096 --base 1e6", "--head-dim");
  check_fails("predict --head-dim abc --train-len 4096 --base 1e6", "head-dim");
  check_fails("predict --model llama9", "llama2-7b");  // lists the valid presets
  check_fails("predict --model llama9", "llama9");
  check_fails("predict --config /nonexistent/config.json", "/nonexistent/config.json");
  check_fails("predict --model llama2-7b --sweep-base 1,10", "sweep-base");
  check_fails("base --head-dim 128 --train-len 4096 --target 3", "target");
  check_fails("base --head-dim 128 --train-len 4096", "target");
  check_fails("base --head-dim 7 --train-len 4096 --target 131072", "head_dim");
  check_fails("periods --head-dim 128 --train-len 4096 --base -5", "base");
  check_fails("periods --head-dim 128 --train-len 4096 --base 10000 --tune-len 100", "tune_len");
  const auto bad = temp_file("bad.json", "{\"hidden_size\": 4096,");
  check_fails("predict --config " + bad, "malformed JSON");
  const auto no_len = temp_file("nolen.json", R"({"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 1e6})");
  check_fails("predict --config " + no_len, "max_position_embeddings");
  const auto no_heads = temp_file("noheads.json", R"({"hidden_size": 4096, "max_position_embeddings": 4096})");
  check_fails("predict --config " + no_heads, "num_attention_heads");
  const auto bad_theta = temp_file("theta.json", R"({"hidden_size": 4096, "num_attention_heads": 32,
    "max_position_embeddings": 4096, "rope_theta": 0.5})");
  check_fails("predict --config " + bad_theta, "rope_theta");
  const auto odd = temp_file("odd.json", R"({"hidden_size": 4095, "num_attention_heads": 4095,
    "max_position_embeddings": 4096})");
  check_fails("predict --config " + odd, "head_dim");
}

TEST_CASE("predict --config: the HF fixtures give the same prediction in both formats") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(ROPEX_SOURCE_DIR) / "tests/fixtures/hf";
  if (!fs::exists(dir)) {
    MESSAGE("skipped: " << dir << " not present");
    return;
  }
  int pairs = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    const std::string suffix = ".legacy.config.json";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const fs::path current = dir / (name.substr(0, name.size() - suffix.size()) + ".config.json");
    if (!fs::exists(current)) continue;
    CAPTURE(name);
    auto a = json_of("predict --config " + e.path().string() + " --json");
    auto b = json_of("predict --config " + current.string() + " --json");
    a.erase("config");
    b.erase("config");
    CHECK(a == b);
    ++pairs;
  }
  CHECK(pairs > 0);
}
