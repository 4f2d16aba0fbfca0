// `ropex predict | base | periods`: each subcommand's JSON parsed and checked against the paper's
// numbers and the library; every bad input exits non-zero with one line naming the field.
#include "cli_runner.hpp"

#include <ropex/presets.hpp>
#include <ropex/scaling_law.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
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

// The paper's formulas (paper.md), written out here rather than taken from ropex:
// d_extra = 2*ceil((d/2) * log_beta_pt(T_train/2pi)) capped at d (eq. 13); beta_0 (16a); 16b / 16c bound.
constexpr double kTwoPi = 6.283185307179586;
int law_critical_dimension(int d, double train_len, double pretrain_base) {
  const int pairs = static_cast<int>(std::ceil((d / 2) * std::log(train_len / kTwoPi) / std::log(pretrain_base)));
  return std::min(d, 2 * std::max(pairs, 0));
}
double law_limit(int d, double train_len, double pretrain_base, double base, double tune_len) {
  const double beta_0 = tune_len == train_len ? pretrain_base
                                              : std::pow(pretrain_base, std::log(tune_len / kTwoPi) /
                                                                            std::log(train_len / kTwoPi));
  if (base > beta_0) return kTwoPi * std::pow(base, double(law_critical_dimension(d, train_len, pretrain_base)) / d);
  return tune_len;
}

std::string fixtures_dir() { return std::string(ROPEX_SOURCE_DIR) + "/tests/fixtures/configs"; }

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
  CHECK(j["updated_critical_dimension"].is_null());  // not applicable in this regime: null, never absent
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
  for (const auto& p : ropex::model_presets) {
    const std::string m(p.name);
    const auto j = json_of("predict --model " + m + " --json");
    CHECK(j["model"] == m);
    CHECK(j["extrapolation_limit"].get<double>() ==
          doctest::Approx(law_limit(p.head_dim, p.train_len, p.pretrain_base, p.base, p.tune_len)).epsilon(1e-12));
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

TEST_CASE("predict --config: d and base from the file, T_train and beta_pt from flags when no preset matches") {
  SUBCASE("legacy rope_theta, head_dim from hidden/heads") {
    const auto cfg = temp_file("l2.json", R"({"hidden_size": 4096, "num_attention_heads": 32,
      "max_position_embeddings": 4096, "rope_theta": 1000000.0, "model_type": "llama"})");
    const auto j = json_of("predict --config " + cfg + " --train-len 4096 --pretrain-base 10000 --json");
    CHECK(j["head_dim"] == 128);
    CHECK(j["train_len"] == 4096);
    CHECK(j["base"] == 1000000);
    CHECK(rounds_to(j["extrapolation_limit"].get<double>(), 129026.8, 1));
    CHECK(j["config"] == cfg);
    CHECK(j["preset"].is_null());
    CHECK(j["inputs"]["head_dim"]["origin"] == cfg + ":hidden_size/num_attention_heads");
    CHECK(j["inputs"]["base"]["origin"] == cfg + ":rope_theta");
    CHECK(j["inputs"]["train_len"]["origin"] == "flag --train-len");
    CHECK(j["inputs"]["pretrain_base"]["origin"] == "flag --pretrain-base");
    CHECK(j["inputs"]["tune_len"]["origin"].get<std::string>().find("default") != std::string::npos);
    // --base overrides the file
    const auto b = json_of("predict --config " + cfg + " --train-len 4096 --pretrain-base 10000 --base 500000 --json");
    CHECK(rounds_to(b["extrapolation_limit"].get<double>(), 78399.7, 1));
    CHECK(b["inputs"]["base"]["origin"] == "flag --base");
  }
  SUBCASE("rope_parameters format: explicit head_dim wins over hidden/heads") {
    const auto cfg = temp_file("l31.json", R"({"hidden_size": 2048, "num_attention_heads": 32, "head_dim": 128,
      "max_position_embeddings": 131072,
      "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})");
    const auto j = json_of("predict --config " + cfg + " --train-len 8192 --pretrain-base 500000 --json");
    CHECK(j["head_dim"] == 128);  // head_dim, not hidden/heads = 64
    CHECK(j["base"] == 500000);
    CHECK(j["scaling"] == "llama3");
    CHECK(j["inputs"]["base"]["origin"] == cfg + ":rope_parameters.rope_theta");
    CHECK(j["critical_dimension"] == law_critical_dimension(128, 8192, 500000));
  }
  SUBCASE("partial_rotary_factor: the law's d is the rotary part") {
    const auto cfg = temp_file("neox.json", R"({"hidden_size": 2048, "num_attention_heads": 16,
      "max_position_embeddings": 2048, "rope_theta": 10000, "partial_rotary_factor": 0.25})");
    const auto j = json_of("predict --config " + cfg + " --train-len 2048 --pretrain-base 10000 --json");
    CHECK(j["head_dim"] == 32);
    CHECK(j["critical_dimension"] == law_critical_dimension(32, 2048, 10000));
    CHECK(j["inputs"]["head_dim"]["origin"].get<std::string>().find(":partial_rotary_factor") != std::string::npos);
  }
}

// A released config.json matched to its preset: the law at the model's published pre-training facts
// (the report values below, not ropex's output), the base and d from the file.
TEST_CASE("predict --config on real config.json files gives the law at the published pre-training facts") {
  struct Case {
    const char* dir;
    const char* preset;
    int d;
    double train_len, pretrain_base, base, tune_len;
  } cases[] = {
      {"Qwen2.5-7B", "qwen2", 128, 4096, 1e4, 1e6, 32768},       // Qwen2.5 report sec. 3.3 (shared with Qwen2-7B)
      {"CodeLlama-7b-hf", "codellama-7b", 128, 4096, 1e4, 1e6, 16384},  // Code Llama sec. 2.4
      {"Llama-3.1-8B", "llama3.1-8b", 128, 8192, 5e5, 5e5, 131072},    // Llama 3 herd sec. 3.4
      {"Mistral-7B-v0.1", "mistral-7b", 128, 8192, 1e4, 1e4, 8192},      // Mistral 7B Table 1
      {"pythia-160m", "pythia-160m", 16, 2048, 1e4, 1e4, 2048},         // rotary_pct 0.25 of 64
      {"DeepSeek-V2-Lite", "deepseek-v2-lite", 64, 4096, 1e4, 1e4, 32768},  // qk_rope_head_dim
      {"gemma-2-2b", "gemma2-2b", 256, 8192, 1e4, 1e4, 8192},
  };
  for (const auto& c : cases) {
    CAPTURE(c.dir);
    const std::string dir = fixtures_dir() + "/" + c.dir;
    const auto j = json_of("predict --config " + dir + " --json");  // a model directory: its config.json
    CHECK(j["config"] == dir + "/config.json");
    CHECK(j["preset"].get<std::string>().rfind(c.preset, 0) == 0);
    CHECK(j["head_dim"] == c.d);
    CHECK(j["train_len"].get<double>() == c.train_len);
    CHECK(j["pretrain_base"].get<double>() == c.pretrain_base);
    CHECK(j["base"].get<double>() == c.base);
    CHECK(j["tune_len"].get<double>() == c.tune_len);
    CHECK(j["critical_dimension"] == law_critical_dimension(c.d, c.train_len, c.pretrain_base));
    CHECK(j["bounded"] == true);
    CHECK(j["extrapolation_limit"].get<double>() ==
          doctest::Approx(law_limit(c.d, c.train_len, c.pretrain_base, c.base, c.tune_len)).epsilon(1e-12));
    for (const char* k : {"train_len", "pretrain_base", "tune_len"})
      CHECK(j["inputs"][k]["origin"].get<std::string>().rfind("preset ", 0) == 0);
    CHECK(j["inputs"]["base"]["origin"].get<std::string>().rfind(dir + "/config.json:", 0) == 0);
    // the text report names the preset and each input's origin
    const auto t = run_cli("predict --config " + dir + "/config.json");
    CHECK(t.code == 0);
    CHECK(t.out.find("preset matched by config.json") != std::string::npos);
    CHECK(t.out.find(c.preset) != std::string::npos);
  }
  // The user-reported wrong answers are gone: Qwen2.5-7B is the 16b bound of a 4K/1e4 pre-training
  // (~129K), not 2*pi*1e6; Code Llama agrees with its own preset.
  const auto q = json_of("predict --config " + fixtures_dir() + "/Qwen2.5-7B --json");
  CHECK(q["regime"] == "larger_base");
  CHECK(q["preset_matches"] == nlohmann::json::array({"qwen2-7b", "qwen2.5-7b"}));
  const auto cl = json_of("predict --config " + fixtures_dir() + "/CodeLlama-7b-hf --json");
  CHECK(cl["extrapolation_limit"] == json_of("predict --model codellama-7b --json")["extrapolation_limit"]);
  const auto mi = json_of("predict --config " + fixtures_dir() + "/Mistral-7B-v0.1 --json");
  CHECK(mi["train_len"] == 8192);  // not max_position_embeddings 32768
}

TEST_CASE("predict/base/periods --config without a matching preset: exit 2 naming the missing flags") {
  for (const char* dir : {"Yi-6B-200K", "SmolLM2-135M", "gpt-j-6b"}) {
    const std::string cfg = fixtures_dir() + "/" + dir + "/config.json";
    CAPTURE(cfg);
    check_fails("predict --config " + cfg, "--train-len, --pretrain-base: required");
    check_fails("predict --config " + cfg, cfg);
    check_fails("predict --config " + cfg + " --train-len 4096", "--pretrain-base: required");
    check_fails("predict --config " + cfg + " --pretrain-base 10000", "--train-len: required");
    check_fails("base --config " + cfg + " --target 131072", "--train-len, --pretrain-base");
    check_fails("periods --config " + cfg, "--train-len, --pretrain-base");
  }
  // with the flags: d and base from the file, the rest from the flags
  const std::string smol = fixtures_dir() + "/SmolLM2-135M";
  const auto j = json_of("predict --config " + smol + " --train-len 2048 --pretrain-base 10000 --tune-len 8192 --json");
  CHECK(j["head_dim"] == 64);
  CHECK(j["inputs"]["head_dim"]["origin"] == smol + "/config.json:head_dim");
  CHECK(j["base"] == 100000);
  CHECK(j["inputs"]["tune_len"]["origin"] == "flag --tune-len");
  CHECK(j["extrapolation_limit"].get<double>() ==
        doctest::Approx(law_limit(64, 2048, 10000, 100000, 8192)).epsilon(1e-12));
  const auto b = json_of("base --config " + smol + " --train-len 2048 --pretrain-base 10000 --target 65536 --json");
  CHECK(b["critical_dimension"] == law_critical_dimension(64, 2048, 10000));
  CHECK(b["inputs"]["train_len"]["origin"] == "flag --train-len");
  const auto gptj = json_of("periods --config " + fixtures_dir() + "/gpt-j-6b --train-len 2048 --pretrain-base 10000 --json");
  CHECK(gptj["head_dim"] == 64);  // rotary_dim, not n_embd/n_head = 256
  CHECK(gptj["pairs"].size() == 32);
  CHECK(gptj["inputs"]["base"]["origin"].get<std::string>().find("default 10000") != std::string::npos);
  check_fails("predict --config " + fixtures_dir() + "/no-such-model", "no-such-model");
  check_fails("predict --config " + fixtures_dir(), "no config.json");
}

TEST_CASE("d_extra reaching d: no finite limit from the base") {
  // Yi-6B-200K read with T_train = 200000 at base 1e4: every pair of d = 128 completes a period.
  REQUIRE(law_critical_dimension(128, 200000, 10000) == 128);
  const std::string yi = fixtures_dir() + "/Yi-6B-200K";
  const auto j = json_of("predict --config " + yi + " --train-len 200000 --pretrain-base 10000 --json");
  CHECK(j["critical_dimension"] == 128);
  CHECK(j["regime"] == "larger_base");
  CHECK(j["extrapolation_limit"].is_null());
  CHECK(j["larger_base_limit"].is_null());
  CHECK(j["bounded"] == false);
  CHECK(j["hard_bound"] == false);
  CHECK(j["reason"].get<std::string>().find("d_extra = d = 128") != std::string::npos);
  const auto t = run_cli("predict --config " + yi + " --train-len 200000 --pretrain-base 10000");
  CHECK(t.code == 0);
  CHECK(t.out.find("none: d_extra = d = 128") != std::string::npos);
  CHECK(t.out.find("tokens (") == std::string::npos);  // no finite limit printed
  const auto c = run_cli("predict --head-dim 128 --train-len 200000 --base 10000000 --csv");
  REQUIRE(c.code == 0);
  CHECK(c.out.find("10000000,,larger_base,0,128,") != std::string::npos);
  CHECK(c.out.substr(c.out.size() - 3) == ",0\n");
  // one pair short of d: a finite 16b bound
  REQUIRE(law_critical_dimension(128, 50000, 10000) == 126);
  const auto f = json_of("predict --head-dim 128 --train-len 50000 --base 10000000 --json");
  CHECK(f["bounded"] == true);
  CHECK(f["extrapolation_limit"].get<double>() ==
        doctest::Approx(law_limit(128, 50000, 10000, 1e7, 50000)).epsilon(1e-12));
}

TEST_CASE("--model: every input's origin is the preset and its source") {
  const auto j = json_of("predict --model qwen2.5-7b --json");
  CHECK(j["preset"] == "qwen2.5-7b");
  CHECK(j["inputs"]["train_len"]["origin"] == "preset qwen2.5-7b (Qwen2.5 report, arXiv 2412.15115 sec. 3.3)");
  CHECK(j["inputs"]["train_len"]["value"] == 4096);
  const auto o = json_of("predict --model qwen2.5-7b --train-len 8192 --json");
  CHECK(o["inputs"]["train_len"]["origin"] == "flag --train-len");
  CHECK(o["inputs"]["pretrain_base"]["origin"].get<std::string>().rfind("preset qwen2.5-7b", 0) == 0);
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
  check_fails("predict --config " + no_len, "--train-len, --pretrain-base: required");
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
    const std::string flags = " --train-len 32 --pretrain-base 10000 --json";
    auto a = json_of("predict --config " + e.path().string() + flags);
    auto b = json_of("predict --config " + current.string() + flags);
    a.erase("config");
    b.erase("config");
    for (auto* x : {&a, &b}) {  // the origins and the config input name the file and key; the values must agree
      x->at("inputs").erase("config");
      for (auto& [k, v] : x->at("inputs").items()) v.erase("origin");
    }
    CHECK(a == b);
    ++pairs;
  }
  CHECK(pairs > 0);
}
