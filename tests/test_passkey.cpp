// Passkey retrieval (eval/passkey.hpp, `ropex passkey`): the prompt is the published protocol, keys
// are reproducible per cell, greedy answers are judged by their digits, and the CLI runs end to end
// on stories260K (CPU) and, when present, the SmolLM2 GGUF with its own tokenizer.
#include <doctest/doctest.h>

#include "cli_runner.hpp"
#include "stories_model.hpp"
#include "test_util.hpp"

#include <ropex/eval/passkey.hpp>
#include <ropex/io/progress.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <unistd.h>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using ropex::test::run_cli;

namespace {

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

// One byte per token, BOS = 1 first (like stories260K with the byte tokenizer, minus merges).
ropex::eval::TextCodec byte_codec() {
  return {[](const std::string& s) {
            std::vector<int32_t> ids{1};
            for (unsigned char c : s) ids.push_back(int32_t(c) + 3);
            return ids;
          },
          [](const std::vector<int32_t>& ids) {
            std::string s;
            for (int32_t i : ids)
              if (i >= 3) s += char(i - 3);
            return s;
          }};
}

// A scorer that "knows" the answer up to a given number of its tokens, then writes `wrong`.
struct ScriptedScorer : ropex::eval::Scorer {
  std::vector<int32_t> answer;  // the tokens it will emit after the prompt
  int64_t prompt_len = 0;
  int64_t greedy_calls = 0;
  int64_t vocab() const override { return 300; }
  void score(std::span<const int32_t> t, int64_t first, double* nll, int32_t* argmax) override {
    const int64_t n = int64_t(t.size());
    for (int64_t p = first; p < n; ++p) {
      const int64_t k = p - (prompt_len - 1);  // index into the answer this position predicts
      if (argmax) argmax[p - first] = k >= 0 && k < int64_t(answer.size()) ? answer[size_t(k)] : int32_t('.' + 3);
      if (nll && p < n - 1) nll[p - first] = 0.25 * double(k + 1);
    }
  }
  std::vector<int32_t> greedy(std::span<const int32_t> prompt, int64_t steps) override {
    ++greedy_calls;
    std::vector<int32_t> out;
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t k = int64_t(prompt.size()) - prompt_len + s;
      out.push_back(k < int64_t(answer.size()) ? answer[size_t(k)] : int32_t('.' + 3));
    }
    return out;
  }
};

std::vector<int32_t> ids_of(const std::string& s) {
  std::vector<int32_t> v;
  for (unsigned char c : s) v.push_back(int32_t(c) + 3);
  return v;
}

}  // namespace

TEST_CASE("passkey prompt: the Landmark Attention text, needle at the requested depth, fits the length") {
  const std::string t = ropex::eval::passkey_text(4321, 1000, 0.25);
  CHECK(t.rfind("There is an important info hidden inside a lot of irrelevant text.", 0) == 0);
  CHECK(t.find("\nThe pass key is 4321. Remember it. 4321 is the pass key.\n") != std::string::npos);
  CHECK(t.size() >= 37);
  CHECK(t.substr(t.size() - 37) == "What is the pass key? The pass key is");
  // 250 filler characters before the needle, 750 after
  const auto first_nl = t.find('\n'), needle = t.find("The pass key is 4321");
  CHECK(needle - first_nl - 2 == 250);
  const auto codec = byte_codec();
  for (double depth : {0.0, 0.5, 1.0})
    for (int64_t L : {400, 1000, 3000}) {
      const int64_t chars = ropex::eval::passkey_filler_chars(codec, L, depth);
      for (int trial = 0; trial < 3; ++trial) {
        const int key = ropex::eval::passkey_key(7, L, depth, trial);
        const auto p = ropex::eval::passkey_tokens(codec, key, chars, depth);
        CHECK(int64_t(p.tokens.size()) <= L);
        CHECK(int64_t(p.tokens.size()) >= L - 8);  // digits vary with the key
        CHECK(p.tokens.size() - size_t(p.answer_begin) == std::to_string(key).size() + 1);  // " " + digits
      }
    }
  CHECK_THROWS_WITH_AS(ropex::eval::passkey_filler_chars(codec, 100, 0.5), doctest::Contains("too short"), ropex::Error);
}

TEST_CASE("passkey keys: seeded per cell, in [1, 50000], independent of the grid around them") {
  std::map<int, int> seen;
  for (int t = 0; t < 200; ++t) {
    const int k = ropex::eval::passkey_key(1, 4096, 0.5, t);
    CHECK(k >= 1);
    CHECK(k <= 50000);
    ++seen[k];
    CHECK(k == ropex::eval::passkey_key(1, 4096, 0.5, t));
  }
  CHECK(seen.size() > 190);
  CHECK(ropex::eval::passkey_key(1, 4096, 0.5, 0) != ropex::eval::passkey_key(2, 4096, 0.5, 0));
}

TEST_CASE("passkey trial: right only when the greedy digits are the key (longer runs and other splits too)") {
  const auto codec = byte_codec();
  const int64_t L = 600;
  const int64_t chars = ropex::eval::passkey_filler_chars(codec, L, 0.5);
  const int key = ropex::eval::passkey_key(0, L, 0.5, 0);
  const auto p = ropex::eval::passkey_tokens(codec, key, chars, 0.5);
  const std::string k = std::to_string(key);
  ScriptedScorer s;
  s.prompt_len = p.answer_begin;
  auto run = [&](const std::string& written) {
    s.answer = ids_of(written);
    return ropex::eval::passkey_trial(s, codec, L, 0.5, 0, 0, chars);
  };
  auto t = run(" " + k + ".");
  CHECK(t.correct);
  CHECK(t.answer == k);
  CHECK(t.answer_tokens == int64_t(k.size()) + 1);
  CHECK(t.answer_nll == doctest::Approx(0.25 * double(k.size() + 2) / 2));  // mean of 0.25 * (1 .. len)
  CHECK(s.greedy_calls == 0);  // settled by the one forward
  t = run(" " + k + "7.");  // one digit too many: wrong, found by decoding on
  CHECK_FALSE(t.correct);
  CHECK(t.answer == k + "7");
  CHECK(s.greedy_calls == 1);
  t = run(std::string(" ") + (k[0] == '9' ? '8' : '9') + k.substr(1) + ".");  // first digit wrong
  CHECK_FALSE(t.correct);
  t = run(" no idea.");
  CHECK_FALSE(t.correct);
  CHECK(t.answer.empty());
  CHECK(t.needle_token > 200);  // depth 0.5 of ~600 tokens, after the task line
  CHECK(t.needle_token < 450);
}

TEST_CASE("progress: plain lines with rate and ETA when not a terminal, nothing when off") {
  std::FILE* f = std::tmpfile();
  {
    ropex::io::Progress p("job", 10, "tokens", true, f);
    CHECK(p.mode() == ropex::io::Progress::Mode::lines);
    p.update(5, "window 1");
    p.update(10, "window 2");
  }
  std::rewind(f);
  char buf[1024] = {};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  const std::string out(buf, n);
  CHECK(out.find("job: 5/10 tokens (50%)") != std::string::npos);
  CHECK(out.find("job: 10/10 tokens (100%)") != std::string::npos);
  CHECK(out.find("tokens/s") != std::string::npos);
  CHECK(out.find("ETA") != std::string::npos);
  CHECK(out.find("[window 2]") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 2);
  std::fclose(f);
  std::FILE* g = std::tmpfile();
  {
    ropex::io::Progress p("job", 10, "tokens", false, g);
    p.update(10);
  }
  CHECK(std::ftell(g) == 0);
  std::fclose(g);
}

TEST_CASE("ropex passkey on stories260K: grid, JSON inputs with origins, CSV, bad input") {
  if (!fs::exists(ropex::test::stories_bin)) {
    MESSAGE("skipped: " << ropex::test::stories_bin << " is absent");
    return;
  }
  const fs::path dir = fs::temp_directory_path() / ("ropex_passkey_" + std::to_string(::getpid()));
  const auto model = ropex::test::stories_with_byte_tokenizer(dir);
  const std::string base = "passkey --model " + q(model) + " --lengths 300,400 --depths 0,1 --trials 2 --seed 5 --threads 1";
  auto r = run_cli(base + " --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["inputs"]["seed"]["value"] == 5);
  CHECK(j["inputs"]["seed"]["origin"] == "flag --seed");
  CHECK(j["inputs"]["tokenizer"]["value"].get<std::string>().find("tokenizer.json") != std::string::npos);
  REQUIRE(j["cells"].size() == 4);
  REQUIRE(j["trials"].size() == 8);
  for (const auto& t : j["trials"]) {
    CHECK(t["tokens"].get<int64_t>() <= t["length"].get<int64_t>());
    CHECK(t["tokens"].get<int64_t>() >= t["length"].get<int64_t>() - 8);
    CHECK(t["answer_nll"].get<double>() > 0);
    CHECK(t["key"] == ropex::eval::passkey_key(5, t["length"], t["depth"], t["trial"]));
  }
  for (const auto& c : j["cells"]) CHECK(c["accuracy"].get<double>() == doctest::Approx(c["correct"].get<double>() / 2));
  CHECK(r.err.find("passkey: 8/8 trials") != std::string::npos);  // progress, one line per trial
  // the same grid as CSV, the same numbers
  auto c = run_cli(base + " --csv --quiet");
  REQUIRE(c.code == 0);
  CHECK(c.err.empty());
  CHECK(c.out.rfind("length,depth,trials,correct,accuracy,answer_nll,mean_tokens\n", 0) == 0);
  CHECK(std::count(c.out.begin(), c.out.end(), '\n') == 5);
  char line[256];
  std::snprintf(line, sizeof line, "300,0,2,%d,", j["cells"][0]["correct"].get<int>());
  CHECK(c.out.find(line) != std::string::npos);
  // bad input: one line, exit 2
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--lengths 300 --depths 1.5", "--depths"}, {"--lengths 40", "too short"}, {"--lengths 300 --trials 0", "--trials"}}) {
    auto b = run_cli("passkey --model " + q(model) + " " + args);
    CHECK(b.code == 2);
    CHECK_MESSAGE(b.err.find(needle) != std::string::npos, b.err);
  }
  fs::remove_all(dir);
}

TEST_CASE("ropex passkey on the SmolLM2 GGUF with its own tokenizer: retrieves at short length") {
  const fs::path gguf = fs::path(ROPEX_SOURCE_DIR) / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(gguf)) {
    MESSAGE("skipped: " << gguf << " is absent");
    return;
  }
  if (ropex::test::skip_in_sanitizer_build()) return;
  auto r = run_cli("passkey --model " + q(gguf) + " --lengths 256 --depths 0,1 --trials 1 --threads 2 --json --quiet");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["inputs"]["tokenizer"]["origin"] == "the model's own");
  int correct = 0;
  for (const auto& c : j["cells"]) correct += c["correct"].get<int>();
  CHECK(correct == 2);  // a 135M instruct model finds a key in 256 tokens at either end
}
