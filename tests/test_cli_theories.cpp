// `ropex theories`: JSON / CSV / text on a preset and on real config.json fixtures, values checked
// against the laws written out here and a brute-force loop over Men et al.'s definition; bad input
// exits 2 with one line naming the flag.
#include "cli_runner.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

using ropex::test::run_cli;

namespace {

constexpr double kTwoPi = 6.283185307179586;

nlohmann::json json_of(const std::string& args) {
  const auto r = run_cli(args);
  INFO("ropex " << args << "\nstderr: " << r.err);
  REQUIRE(r.code == 0);
  return nlohmann::json::parse(r.out);
}

const nlohmann::json& row(const nlohmann::json& j, const std::string& theory) {
  for (const auto& r : j["theories"])
    if (r["theory"] == theory) return r;
  FAIL("no row " << theory);
  static nlohmann::json none;
  return none;
}

std::int64_t brute_length(int d, double b, std::int64_t cap, int static_pairs = 0) {
  for (std::int64_t m = 0; m < cap; ++m) {
    long double s = static_pairs;
    for (int i = 0; i < d / 2; ++i) s += std::cos(static_cast<long double>(m) * std::pow(static_cast<long double>(b), -2.0L * i / d));
    if (s < 0) return m;
  }
  return cap;
}

std::string fixture(const std::string& name) { return std::string(ROPEX_SOURCE_DIR) + "/tests/fixtures/configs/" + name; }

void check_fails(const std::string& args, const std::string& needle) {
  const auto r = run_cli(args);
  INFO("ropex " << args << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.code == 2);
  CHECK(r.out.empty());
  CHECK(r.err.find(needle) != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

}  // namespace

TEST_CASE("ropex theories --model llama2-7b --target 8192 --json") {
  const auto j = json_of("theories --model llama2-7b --target 8192 --json");
  CHECK(j["target"] == 8192);
  CHECK(j["inputs"]["target"]["origin"] == "flag --target");
  CHECK(j["inputs"]["base"]["origin"].get<std::string>().find("preset llama2-7b") == 0);
  // Liu: base 10000 = beta_0, so 16c: the bound is T_tune = 4096; base for 8192 = (8192/2pi)^(128/92).
  CHECK(row(j, "liu_scaling_law")["supported_context"] == 4096);
  CHECK(row(j, "liu_scaling_law")["base_for_target"].get<double>() ==
        doctest::Approx(std::pow(8192 / kTwoPi, 128.0 / 92)).epsilon(1e-12));
  // Men: the first negative distance for base 10000, and the base for 8192 (feasible; bracket refuted).
  const auto& men = row(j, "men_discrimination_bound");
  CHECK(men["supported_context"] == brute_length(128, 10000, 100000));
  const double b = men["base_for_target"].get<double>();
  CHECK(brute_length(128, b, 8192) >= 8192);
  CHECK(brute_length(128, j["men_solver"]["base_infeasible_below"].get<double>(), 8192) < 8192);
  CHECK(b == doctest::Approx(8.4e4).epsilon(0.01));  // Men et al. Table 2 and Su's recomputation: 8.4e4 at 8K
  // Slowest pair and numeric rows.
  CHECK(row(j, "slowest_pair_period")["supported_context"].get<double>() ==
        doctest::Approx(kTwoPi * std::pow(10000.0, 126.0 / 128)).epsilon(1e-12));
  CHECK(row(j, "bf16_exact_positions")["supported_context"] == 256);
  CHECK(row(j, "fp32_exact_positions")["supported_context"] == 16777216);
  CHECK(row(j, "fp32_angle_error")["supported_context"] == 262144);
  CHECK(row(j, "fp32_angle_error")["base_for_target"].is_null());
  // Cut-points: LLaMA-2's YaRN ramp 20 .. 46 and d_extra 92.
  CHECK(j["cut_points"]["yarn"]["low"] == 20);
  CHECK(j["cut_points"]["yarn"]["high"] == 46);
  CHECK(j["cut_points"]["liu"]["critical_dimension"] == 92);
}

TEST_CASE("ropex theories on config.json fixtures: Llama-3.1-8B (preset matched) and pythia-160m (partial rotary)") {
  const auto j = json_of("theories --config " + fixture("Llama-3.1-8B") + " --target 16384 --json");
  CHECK(j["preset"] == "llama3.1-8b");
  CHECK(j["inputs"]["base"]["value"] == 500000);
  CHECK(j["inputs"]["base"]["origin"].get<std::string>().find("rope_theta") != std::string::npos);
  // Liu at base = pre-training base 5e5, T_train 8192, T_tune 131072: d_extra = 70 -> regime 16c (base < beta_0).
  const double d_extra_pairs = std::ceil(64 * std::log(8192 / kTwoPi) / std::log(500000.0));
  CHECK(d_extra_pairs == 35);
  CHECK(row(j, "liu_scaling_law")["base_for_target"].get<double>() ==
        doctest::Approx(std::pow(16384 / kTwoPi, 128.0 / 70)).epsilon(1e-12));
  CHECK(row(j, "men_discrimination_bound")["supported_context"] == brute_length(128, 500000, 200000));

  const auto p = json_of("theories --config " + fixture("pythia-160m") + " --train-len 2048 --json");
  CHECK(p["inputs"]["head_dim"]["value"] == 16);
  CHECK(p["inputs"]["static_pairs"]["value"] == 24);
  CHECK(row(p, "men_discrimination_bound")["supported_context"].is_null());  // 24 static pairs > 8 rotating
  CHECK(p["target"] == 2048);
}

TEST_CASE("ropex theories --csv and text") {
  const auto r = run_cli("theories --head-dim 64 --train-len 2048 --base 10000 --target 4096 --csv");
  REQUIRE(r.code == 0);
  CHECK(r.out.rfind("theory,supported_context,base_for_target,source\n", 0) == 0);
  CHECK(r.out.find("\nmen_discrimination_bound,") != std::string::npos);
  CHECK(r.out.find("\nliu_scaling_law,") != std::string::npos);
  const auto t = run_cli("theories --model mistral-7b --target 16384");
  REQUIRE(t.code == 0);
  CHECK(t.out.find("ropex theories mistral-7b") == 0);
  CHECK(t.out.find("input target                       16384 <- flag --target") != std::string::npos);
  CHECK(t.out.find("men_discrimination_bound") != std::string::npos);
  CHECK(t.out.find("YaRN ramp") != std::string::npos);
}

TEST_CASE("ropex theories: bad input exits 2 with one line naming the flag") {
  check_fails("theories --head-dim 128 --train-len 4096 --base 0.5", "--base");
  check_fails("theories --head-dim 127 --train-len 4096 --base 10000", "--head-dim");
  check_fails("theories --head-dim 128 --base 10000", "--train-len");
  check_fails("theories --model llama2-7b --target 3", "--target");
  check_fails("theories --model llama2-7b --tolerance -1", "--tolerance");
  check_fails("theories --model no-such-model", "--model");
  check_fails("theories --config /nonexistent/config.json", "/nonexistent/config.json");
}
