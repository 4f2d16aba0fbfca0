// `ropex check` (eval/check.hpp, eval/position_rise.hpp, io/journal.hpp, cmd_check.cpp): the
// short-window scoring gives every token the context the rule says, the rule fires where the
// position-driven difference crosses the margin and nowhere else, the journal resumes, and the CLI
// runs end to end on stories260K (and the SmolLM2 GGUF when present), resuming after a kill with
// the same result and without redoing finished work.
#include <doctest/doctest.h>

#include "cli_runner.hpp"
#include "stories_model.hpp"
#include "test_util.hpp"

#include <ropex/eval/check.hpp>
#include <ropex/eval/position_rise.hpp>
#include <ropex/io/journal.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
using ropex::test::run_cli;

namespace {

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

// "NLL" = the number of tokens the target is predicted from: shows each target's context.
struct ContextScorer : ropex::eval::Scorer {
  int64_t vocab() const override { return 10; }
  void score(std::span<const int32_t> t, int64_t first, double* nll, int32_t*) override {
    for (int64_t p = first; p < int64_t(t.size()) - 1; ++p) nll[p - first] = double(p + 1);
    model_tokens_ += int64_t(t.size());
  }
  std::vector<int32_t> greedy(std::span<const int32_t>, int64_t) override { return {}; }
};

const fs::path kText = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "gguf_cli" / "gpl3_apache2.txt";

nlohmann::json without_time(nlohmann::json j) {
  j.erase("time");
  return j;
}

// Equal up to float rounding (relative 1e-6): a unit computed in another process can differ in the
// last bits (the CPU kernels' summation order follows buffer alignment); every count, id, limit and
// text must be identical.
bool same_result(const nlohmann::json& a, const nlohmann::json& b) {
  if (a.is_number_float() || b.is_number_float()) {
    if (!a.is_number() || !b.is_number()) return false;
    const double x = a.get<double>(), y = b.get<double>();
    return std::fabs(x - y) <= 1e-6 * std::max({1.0, std::fabs(x), std::fabs(y)});
  }
  if (a.type() != b.type()) return a.is_number() && b.is_number() && a == b;
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it)
      if (!b.contains(it.key()) || !same_result(*it, b[it.key()])) return false;
    return true;
  }
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!same_result(a[i], b[i])) return false;
    return true;
  }
  return a == b;
}

}  // namespace

TEST_CASE("short windows: each target scored once, from between S/2 and S tokens (the first window: all it has)") {
  ContextScorer s;
  const std::vector<int32_t> tokens(1000, 1);
  const int64_t S = 64;
  const auto lng = ropex::eval::long_window_nll(s, tokens);
  const auto sht = ropex::eval::short_windows_nll(s, tokens, S);
  REQUIRE(lng.size() == 999);
  REQUIRE(sht.size() == 999);
  for (int64_t p = 0; p < 999; ++p) {
    CHECK(lng[size_t(p)] == double(p + 1));
    if (p < S - 1) CHECK(sht[size_t(p)] == double(p + 1));  // the first short window = the long one
    else {
      CHECK(sht[size_t(p)] >= double(S / 2));
      CHECK(sht[size_t(p)] <= double(S));
    }
  }
  // tokens through the model: the long window once, the short ones about twice
  CHECK(s.model_tokens() == 1000 + 30 * 64 + 40);  // windows at 0, 32, .., 928 (64 tokens), 960 (40)
}

TEST_CASE("rise rule: fires at the first bin past S/2 whose mean long-short difference exceeds the margin") {
  const int64_t N = 2000, S = 256;  // bins of 64 from 0; first eligible bin begins at 128
  std::vector<double> lng(N, 3.0), sht(N, 3.0);
  std::vector<int64_t> cnt(N, 1);
  for (int64_t p = 980; p < N; ++p) lng[size_t(p)] = 3.6;  // +0.6 nats from position 980
  auto r = ropex::eval::position_rise(lng, sht, cnt, {S, 0.5});
  REQUIRE(r.limit);
  CHECK(*r.limit == 1024);  // bin [960, 1024) has 44 risen tokens of 64: 0.41 < 0.5; [1024, 1088) is the first above
  CHECK(r.bins.size() == size_t((N + 63) / 64));
  CHECK(r.bins[16].mean_diff == doctest::Approx(0.6));
  CHECK_FALSE(ropex::eval::position_rise(lng, sht, cnt, {S, 1.0}).limit);  // censored
  CHECK(*ropex::eval::position_rise(lng, sht, cnt, {S, 0.25}).limit == 960);
  // a rise inside [0, S/2) is not a limit
  std::vector<double> early(N, 3.0);
  for (int64_t p = 0; p < 128; ++p) early[size_t(p)] = 9.0;
  CHECK_FALSE(ropex::eval::position_rise(early, sht, cnt, {S, 0.5}).limit);
  CHECK_THROWS_AS(ropex::eval::position_rise(lng, sht, std::vector<int64_t>(5), {S, 0.5}), ropex::Error);
}

TEST_CASE("journal: units read back under the same plan, a torn last line dropped, another plan refused") {
  const fs::path p = fs::temp_directory_path() / ("ropex_journal_" + std::to_string(::getpid()) + ".jsonl");
  fs::remove(p);
  const nlohmann::json plan{{"max_len", 4096}};
  {
    ropex::io::Journal j(p, plan);
    CHECK(j.resumed() == 0);
    j.add("long/0/0", std::vector<double>{0.1, 1.0 / 3.0});
    j.add("short/0/0", std::vector<double>{0.2});
  }
  std::ofstream(p, std::ios::app) << R"({"key":"passkey/0/1","val)";  // killed mid-write
  {
    ropex::io::Journal j(p, plan);
    CHECK(j.resumed() == 2);
    REQUIRE(j.find("long/0/0"));
    CHECK((*j.find("long/0/0"))[1].get<double>() == 1.0 / 3.0);  // full precision
    CHECK_FALSE(j.find("passkey/0/1"));
    j.add("passkey/0/1", {{"correct", true}});
  }
  CHECK(ropex::io::Journal(p, plan).resumed() == 3);
  CHECK_THROWS_WITH_AS(ropex::io::Journal(p, nlohmann::json{{"max_len", 8192}}), doctest::Contains("other inputs"), ropex::Error);
  fs::remove(p);
}

TEST_CASE("passkey lengths around each prediction; memory cap; passkey limit") {
  std::vector<ropex::eval::TheoryPrediction> preds{{"liu", "", 628.0, "", true}, {"men", "", 100000.0, "", true},
                                                   {"slow", "", 700.0, "", false}};
  CHECK(ropex::eval::passkey_lengths(preds, 512, 1024) == std::vector<int64_t>{314, 512, 628, 1024});
  CHECK(ropex::eval::passkey_limit({{512, 1.0}, {1024, 0.5}, {2048, 0.0}, {4096, 1.0}}) == 1024);
  CHECK(ropex::eval::passkey_limit({{512, 0.25}}) == 0);
  ropex::model::LlamaConfig c;
  c.hidden_size = 576, c.intermediate_size = 1536, c.num_key_value_heads = 3, c.head_dim = 64, c.num_attention_heads = 9;
  CHECK(ropex::eval::memory_cap_tokens(c, 4.0 * (6 * 576 + 3 * 1536 + 4 * 3 * 64 + 9 * 64) * 1000) == 1000);
}

TEST_CASE("ropex check on stories260K: report files, predictions, the rule, passkey, time split") {
  if (!fs::exists(ropex::test::stories_bin)) {
    MESSAGE("skipped: " << ropex::test::stories_bin << " is absent");
    return;
  }
  const fs::path dir = fs::temp_directory_path() / ("ropex_check_" + std::to_string(::getpid()));
  const auto model = ropex::test::stories_with_byte_tokenizer(dir / "model");
  const fs::path out = dir / "report";
  auto r = run_cli("check --model " + q(model) + " --text " + q(kText) + " --max-len 1024 --passkey-depths 0,1 --passkey-trials 1 --threads 1 --report " + q(out) + " --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  for (const char* f : {"report.json", "report.md", "report.html", "per_token.csv", "curve.csv", "limits.svg", "loss_0.svg", "passkey_0.svg", "partial.jsonl"})
    CHECK_MESSAGE(fs::exists(out / f), f);
  CHECK(nlohmann::json::parse(std::ifstream(out / "report.json")) == j);
  // inputs with origins: d = 8 rotary dims of the .bin header, T = seq_len 512, base 10000
  CHECK(j["inputs"]["head_dim"]["value"] == 8);
  CHECK(j["inputs"]["tune_len"]["value"] == 512);
  CHECK(j["inputs"]["base"]["value"] == 10000.0);
  CHECK(j["inputs"]["max_len"]["origin"] == "flag --max-len");
  CHECK(j["inputs"]["short_window"]["value"] == 512);
  const auto& st = j["settings"][0];
  // Liu et al. for d = 8, T = 512 at the pre-training base: the tune_length regime, limit T = 512;
  // Men et al.: the first negative B_m at distance 91 (as `ropex theories --head-dim 8 ...`)
  CHECK(st["predictions"][0]["theory"] == "liu_scaling_law");
  CHECK(st["predictions"][0]["context"] == 512.0);
  CHECK(st["predictions"][1]["theory"] == "men_discrimination_bound");
  CHECK(st["predictions"][1]["context"] == 91.0);
  // passkey at 512/2, 512, 2 x 512 (capped at N) around Liu's 512 (Men's 91 is below S/2) and S = 512
  CHECK(st["passkey"]["lengths"] == nlohmann::json::array({256, 512, 1024}));
  CHECK(st["passkey"]["cells"].size() == 6);
  // per-token file: N-1 rows, full precision; first S-1 positions identical in both scorings
  std::ifstream pt(out / "per_token.csv");
  std::string line;
  std::getline(pt, line);
  CHECK(line == "setting,window,position,target_token,nll_long,nll_short");
  int64_t rows = 0, same = 0;
  while (std::getline(pt, line)) {
    ++rows;
    const auto c4 = line.rfind(','), c3 = line.rfind(',', c4 - 1);
    if (rows <= 511) same += line.substr(c3 + 1, c4 - c3 - 1) == line.substr(c4 + 1);
  }
  CHECK(rows == 1023);
  CHECK(same == 511);
  // the rule's bins of S/4 = 128; the measured limit (if any) is a bin start >= 256
  CHECK(st["rise"]["bins"].size() == 8);
  const auto& lim = st["rise"]["margin_0.50"]["measured_limit"];
  if (!lim.is_null()) {
    CHECK(lim.get<int64_t>() >= 256);
    CHECK(lim.get<int64_t>() % 128 == 0);
  }
  CHECK(j["time"]["model_seconds"].get<double>() > 0);
  CHECK(j["time"]["model_fraction"].get<double>() <= 1.0);
  CHECK(j["time"]["units_computed"] == 2 + 6);
  CHECK(r.err.find("check: ") != std::string::npos);  // progress lines
  // a rerun finds every unit done, computes nothing, and reports the same
  auto again = run_cli("check --model " + q(model) + " --text " + q(kText) + " --max-len 1024 --passkey-depths 0,1 --passkey-trials 1 --threads 1 --report " + q(out) + " --json");
  REQUIRE_MESSAGE(again.code == 0, again.err);
  const auto j2 = nlohmann::json::parse(again.out);
  CHECK(j2["time"]["units_computed"] == 0);
  CHECK(j2["time"]["units_resumed"] == 8);
  CHECK(without_time(j2) == without_time(j));
  // other inputs into the same directory: refused, naming the file
  auto other = run_cli("check --model " + q(model) + " --text " + q(kText) + " --max-len 768 --report " + q(out));
  CHECK(other.code == 2);
  CHECK(other.err.find("partial.jsonl: plan: was written for other inputs") != std::string::npos);
  // bad input
  auto bad = run_cli("check --model " + q(model) + " --text " + q(kText) + " --rope-scaling '{\"rope_type\":\"yarn\"' --report " + q(dir / "bad"));
  CHECK(bad.code == 2);
  CHECK(bad.err.find("--rope-scaling") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("ropex check resumes after a kill: same result, finished units not redone") {
  if (!fs::exists(ropex::test::stories_bin)) {
    MESSAGE("skipped: " << ropex::test::stories_bin << " is absent");
    return;
  }
  const fs::path dir = fs::temp_directory_path() / ("ropex_check_resume_" + std::to_string(::getpid()));
  const auto model = ropex::test::stories_with_byte_tokenizer(dir / "model");
  const std::vector<std::string> args{"check", "--model", model.string(), "--text", kText.string(), "--max-len", "768",
                                      "--rope-base", "40000", "--passkey-depths", "0,1", "--passkey-trials", "1", "--threads", "1",
                                      "--quiet"};
  std::string args_text;
  for (size_t i = 0; i < args.size(); ++i) args_text += (i ? " " : "") + q(args[i]);
  // uninterrupted reference
  auto ref = run_cli(args_text + " --json --report " + q(dir / "ref"));
  REQUIRE_MESSAGE(ref.code == 0, ref.err);
  const auto jr = nlohmann::json::parse(ref.out);
  const int64_t units = jr["time"]["units_computed"];
  CHECK(units >= 2 * 2 + 3 * 2);  // two settings' windows; the first's passkey at 256, 512, 768
  // interrupted: SIGKILL once a few units are on disk
  const fs::path part = dir / "cut" / "partial.jsonl";
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::vector<std::string> a = args;
    a.push_back("--report");
    a.push_back((dir / "cut").string());
    std::vector<char*> argv{const_cast<char*>(ROPEX_CLI)};
    for (auto& s : a) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execv(ROPEX_CLI, argv.data());
    ::_exit(127);
  }
  int64_t lines_at_kill = 0;
  for (int i = 0; i < 60000; ++i) {
    std::ifstream f(part);
    lines_at_kill = 0;
    std::string l;
    while (std::getline(f, l)) ++lines_at_kill;
    if (lines_at_kill >= 4) break;  // plan + 3 units
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE_MESSAGE(WIFSIGNALED(status), "the run ended before it could be interrupted");
  auto resumed = run_cli(args_text + " --json --report " + q(dir / "cut"));
  REQUIRE_MESSAGE(resumed.code == 0, resumed.err);
  const auto j = nlohmann::json::parse(resumed.out);
  const int64_t done_before = j["time"]["units_resumed"];
  CHECK(done_before >= 3);
  CHECK(done_before < units);
  CHECK(j["time"]["units_computed"].get<int64_t>() == units - done_before);  // nothing redone
  CHECK(same_result(without_time(j), without_time(jr)));
  // the units read back are the interrupted run's own, bit for bit (full precision on disk)
  std::ifstream part_in(part);
  std::string l;
  std::getline(part_in, l);
  std::getline(part_in, l);
  const auto first_unit = nlohmann::json::parse(l);
  REQUIRE(first_unit["key"] == "long/0/0");
  std::ifstream pt(dir / "cut" / "per_token.csv");
  std::getline(pt, l);
  for (size_t p = 0; p < first_unit["value"].size(); ++p) {
    std::getline(pt, l);
    const auto c4 = l.rfind(','), c3 = l.rfind(',', c4 - 1);
    REQUIRE(std::stod(l.substr(c3 + 1, c4 - c3 - 1)) == first_unit["value"][p].get<double>());
  }
  fs::remove_all(dir);
}

TEST_CASE("ropex check on the SmolLM2 GGUF (its own tokenizer, GGUF metadata): small run") {
  const fs::path gguf = fs::path(ROPEX_SOURCE_DIR) / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(gguf)) {
    MESSAGE("skipped: " << gguf << " is absent");
    return;
  }
  if (ropex::test::skip_in_sanitizer_build()) return;
  const fs::path out = fs::temp_directory_path() / ("ropex_check_smollm2_" + std::to_string(::getpid()));
  auto r = run_cli("check --model " + q(gguf) + " --text " + q(kText) + " --max-len 512 --short-window 128 --passkey-trials 0 "
                   "--threads 2 --quiet --json --report " + q(out));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["inputs"]["base"]["value"] == 100000.0);  // GGUF llama.rope.freq_base
  CHECK(j["inputs"]["tune_len"]["value"] == 8192);  // GGUF llama.context_length
  CHECK(j["inputs"]["head_dim"]["value"] == 64);
  // within its trained context (8K) the long window is no worse than short ones: no rise
  CHECK(j["settings"][0]["rise"]["margin_0.50"]["measured_limit"].is_null());
  CHECK(j["settings"][0]["predictions"][1]["context"].get<double>() > 512);  // Men et al. at base 1e5, d 64
  fs::remove_all(out);
}
