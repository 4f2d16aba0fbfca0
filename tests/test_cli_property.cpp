// Property test of the CLI: random flag values drawn across (and past) each flag's declared range.
// Every run must end one of two ways: exit 0 with output whose numbers are all finite, or exit 2
// with exactly one line on stderr. A crash, exit 1, a NaN/inf/null in the output or a multi-line
// error fails. The seed is fixed (ROPEX_PROPERTY_SEED overrides it) so a failure reproduces.
#include <doctest/doctest.h>

#include "cli_runner.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using ropex::test::run_cli;

namespace {

const fs::path kHf = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "hf";

struct Draw {
  std::mt19937_64 rng;
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
  double log_uniform(double lo, double hi) { return std::exp(uniform(std::log(lo), std::log(hi))); }
  int64_t integer(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
  bool chance(double p) { return uniform(0, 1) < p; }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[size_t(integer(0, int64_t(v.size()) - 1))]; }
  // A double as the CLI gets it: full precision, sometimes an edge value.
  std::string num(double lo, double hi) {
    if (chance(0.1)) return pick<std::string>({"0", "1", "1.0000000000000002", "6.2831853", "1e300", "1e-300", "-1"});
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", log_uniform(lo, hi));
    return buf;
  }
};

// Keys whose null means "no bound" by design (predict/base JSON), not an overflow.
// And the keys docs/cli.md makes null where they do not apply (stable keys across regimes and
// input routes); a numeric result that overflowed would be one of the others.
const std::set<std::string> kNullable = {"extrapolation_limit", "larger_base_limit", "config", "preset", "factor",
                                         "reason", "updated_critical_dimension", "sweep", "model", "text", "gpu"};

bool all_finite(const nlohmann::json& j, const std::string& key, std::string& bad) {
  // "inputs" echoes what was given (flags already checked at parse), null for what was not
  // (docs/cli.md: stable keys, null where not applicable); results are checked below.
  if (key == "inputs") return true;
  if (j.is_null() && !kNullable.count(key)) return bad = key + " is null", false;
  if (j.is_number_float() && !std::isfinite(j.get<double>())) return bad = key + " is not finite", false;
  if (j.is_object())
    for (const auto& [k, v] : j.items())
      if (!all_finite(v, k, bad)) return false;
  if (j.is_array())
    for (const auto& v : j)
      if (!all_finite(v, key, bad)) return false;
  return true;
}

// The two allowed outcomes.
void check_outcome(const std::string& args, const ropex::test::CliResult& r, bool json) {
  INFO("ropex " << args << "\nexit " << r.code << "\nstderr: " << r.err << "\nstdout: " << r.out.substr(0, 400));
  REQUIRE((r.code == 0 || r.code == 2));
  if (r.code == 2) {
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    return;
  }
  if (json) {
    const auto j = nlohmann::json::parse(r.out, nullptr, false);
    REQUIRE(!j.is_discarded());
    std::string bad;
    CHECK_MESSAGE(all_finite(j, "", bad), bad);
  } else {
    for (const char* s : {"nan", "inf", "NaN", "Inf"}) CHECK(r.out.find(s) == std::string::npos);
  }
}

uint64_t seed() {
  const char* s = std::getenv("ROPEX_PROPERTY_SEED");
  return s ? std::strtoull(s, nullptr, 10) : 20250101;
}

}  // namespace

TEST_CASE("laws: random d, lengths and bases give finite numbers or one-line refusals") {
  Draw d{std::mt19937_64(seed())};
  MESSAGE("seed " << seed());
  for (int i = 0; i < 40; ++i) {
    const std::string hd = std::to_string(d.chance(0.8) ? 2 * d.integer(1, 256) : d.integer(-4, 600));
    std::string args;
    switch (i % 3) {
      case 0:
        args = "predict --head-dim " + hd + " --train-len " + d.num(1, 1e12) + " --base " + d.num(1, 1e20) +
               " --pretrain-base " + d.num(1, 1e8) + (d.chance(0.5) ? " --tune-len " + d.num(1, 1e13) : "");
        break;
      case 1:
        args = "base --head-dim " + hd + " --train-len " + d.num(1, 1e12) + " --target " + d.num(1, 1e15) +
               " --pretrain-base " + d.num(1, 1e8);
        break;
      default:
        args = "periods --head-dim " + std::to_string(2 * d.integer(1, 128)) + " --train-len " + d.num(1, 1e9) +
               " --base " + d.num(1, 1e12);
    }
    args += " --json";
    check_outcome(args, run_cli(args), true);
  }
}

namespace {
std::string random_scaling(Draw& d) {
  const std::string type = d.pick<std::string>({"linear", "ntk", "dynamic", "yarn", "llama3", "longrope", "default"});
  nlohmann::json s = {{"rope_type", type}};
  if (d.chance(0.9)) s["factor"] = d.log_uniform(1e-5, 1e8);
  if (type == "yarn") {
    if (d.chance(0.5)) s["attention_factor"] = d.log_uniform(1e-3, 1e4);
    if (d.chance(0.5)) s["mscale"] = d.log_uniform(1e-3, 1e4), s["mscale_all_dim"] = d.log_uniform(1e-3, 1e4);
    if (d.chance(0.5)) s["beta_fast"] = d.log_uniform(1e-3, 1e7), s["beta_slow"] = d.log_uniform(1e-3, 1e7);
    s["original_max_position_embeddings"] = d.integer(1, 1 << 20);
  }
  if (type == "llama3") {
    s["low_freq_factor"] = d.log_uniform(1e-3, 1e3);
    s["high_freq_factor"] = d.log_uniform(1e-3, 1e3);
    s["original_max_position_embeddings"] = d.integer(1, 1 << 20);
  }
  if (type == "longrope") {
    std::vector<double> sf, lf;
    for (int i = 0; i < 8; ++i) sf.push_back(d.log_uniform(1e-4, 1e7)), lf.push_back(d.log_uniform(1e-4, 1e7));
    s["short_factor"] = sf, s["long_factor"] = lf;
    s["original_max_position_embeddings"] = d.integer(1, 64);
  }
  return "'" + s.dump() + "'";
}
}  // namespace

TEST_CASE("rope: random scaling dicts, bases and positions") {
  Draw d{std::mt19937_64(seed() + 1)};
  const std::string cfg = "'" + (kHf / "default.config.json").string() + "'";
  for (int i = 0; i < 40; ++i) {
    std::string args = "rope --config " + cfg + " --positions " + std::to_string(d.integer(0, int64_t(1) << 40)) +
                       " --rope-scaling " + random_scaling(d) + " --json";
    if (d.chance(0.3)) args += " --rope-base " + d.num(1, 1e18);
    if (d.chance(0.3)) args += " --head-dim " + std::to_string(d.integer(-8, 4096));
    check_outcome(args, run_cli(args), true);
  }
}

TEST_CASE("model: random contexts, strides, bins, steps, temperatures, seeds and scalings") {
  const fs::path dir = fs::temp_directory_path() / ("ropex_property_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(kHf / "default.config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(kHf / "weights" / "model.safetensors", dir / "model.safetensors", fs::copy_options::overwrite_existing);
  const fs::path tokens = dir / "tokens.txt";
  {
    std::ofstream out(tokens);
    for (int i = 0; i < 96; ++i) out << (i * 53 + 7) % 256 << " ";
  }
  const std::string model = "'" + dir.string() + "'", tok = "'" + tokens.string() + "'";
  Draw d{std::mt19937_64(seed() + 2)};
  for (int i = 0; i < 24; ++i) {
    std::string args;
    if (i % 2 == 0) {
      const int64_t context = d.chance(0.2) ? d.integer(-2, 1 << 30) : d.integer(2, 128);
      args = "perplexity --model " + model + " --tokens " + tok + " --context " + std::to_string(context) +
             " --bins " + std::to_string(d.integer(0, 1 << 20)) + " --json";
      if (d.chance(0.5)) args += " --stride " + std::to_string(d.integer(0, 130));
    } else {
      args = "generate --model " + model + " --steps " + std::to_string(d.integer(0, 48)) + " --temperature " +
             d.num(1e-3, 1e6) + " --seed " + std::to_string(d.integer(0, INT64_MAX)) + " --json";
    }
    if (d.chance(0.6)) args += " --rope-scaling " + random_scaling(d);
    if (d.chance(0.2)) args += " --rope-base " + d.num(1, 1e18);
    check_outcome(args, run_cli(args), true);
  }
  fs::remove_all(dir);
}
