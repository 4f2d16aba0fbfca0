// The CLI vocabulary every subcommand shares (docs/cli.md): --model (a path, then a preset),
// --config (file or directory), --json / --csv to stdout and --out to a file, "inputs" with value
// and origin, JSON keys that do not depend on the regime, "did you mean", exit codes (2 usage or
// input, 1 I/O), --version; and outputs that never overwrite an input or half-write a file.
#include <doctest/doctest.h>

#include "cli_runner.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>

namespace fs = std::filesystem;
using ropex::test::run_cli;

namespace {

const fs::path kRoot = ROPEX_SOURCE_DIR;
const fs::path kConfigs = kRoot / "tests" / "fixtures" / "configs";
const fs::path kGguf = kRoot / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
const fs::path kStories = fs::path(ROPEX_SHARED_DATA) / "stories260K.bin";

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

nlohmann::json json_of(const std::string& args) {
  const auto r = run_cli(args);
  INFO("ropex " << args << "\nstderr: " << r.err);
  REQUIRE(r.code == 0);
  return nlohmann::json::parse(r.out);
}

std::set<std::string> keys(const nlohmann::json& j) {
  std::set<std::string> k;
  for (const auto& [name, v] : j.items()) k.insert(name);
  return k;
}

// Same top-level keys and same "inputs" keys; every input is {"value", "origin", ...}.
void check_same_keys(const std::vector<std::string>& runs) {
  const auto first = json_of(runs.front());
  REQUIRE(first.contains("inputs"));
  for (const auto& [name, in] : first["inputs"].items()) {
    INFO(runs.front() << ": inputs." << name);
    CHECK(in.contains("value"));
    CHECK(in.contains("origin"));
  }
  for (size_t i = 1; i < runs.size(); ++i) {
    const auto j = json_of(runs[i]);
    INFO(runs.front() << "\n  vs\n" << runs[i]);
    CHECK(keys(j) == keys(first));
    CHECK(keys(j["inputs"]) == keys(first["inputs"]));
  }
}

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path tmp_root() {
  const fs::path d = fs::temp_directory_path() / ("ropex_cli_vocab_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST_CASE("a mistyped subcommand or flag names the closest one; exit 2") {
  auto r = run_cli("predcit --model llama2-7b");
  CHECK(r.code == 2);
  CHECK(has(r.err, "unknown subcommand 'predcit'"));
  CHECK(has(r.err, "did you mean 'predict'?"));
  r = run_cli("perplxity --model x");
  CHECK(r.code == 2);
  CHECK(has(r.err, "'perplexity'"));
  r = run_cli("predict --model llama2-7b --jsn");
  CHECK(r.code == 2);
  CHECK(has(r.err, "unknown flag --jsn"));
  CHECK(has(r.err, "did you mean --json?"));
  r = run_cli("periods --model llama2-7b --train-lne 4096");
  CHECK(r.code == 2);
  CHECK(has(r.err, "did you mean --train-len?"));
  r = run_cli("perplexity --model m.gguf --tokens t --context 8 --csv curve.csv");  // --csv FILE was the old spelling
  CHECK(r.code == 2);
  CHECK(has(r.err, "write a file with --out curve.csv"));
  r = run_cli("");
  CHECK(r.code == 2);
  CHECK(has(r.err, "a subcommand is required: "));
  CHECK(has(r.err, "predict"));
  CHECK(r.out.empty());
}

TEST_CASE("--version: version, git commit, build type and backends") {
  const auto r = run_cli("--version");
  REQUIRE(r.code == 0);
  CHECK(std::regex_search(r.out, std::regex("^ropex [0-9]+\\.[0-9]+\\.[0-9]+\n")));
  CHECK(std::regex_search(r.out, std::regex("\ncommit: ([0-9a-f]{40}|unknown[^\n]*)\n")));
  CHECK(std::regex_search(r.out, std::regex("\nbuild type: [^\n]+\n")));
  CHECK(std::regex_search(r.out, std::regex("\nopenmp: (on|off)")));
  CHECK(std::regex_search(r.out, std::regex("\ncuda: (on|off)")));
  CHECK(std::regex_search(r.out, std::regex("\nnative isa: [^\n]+")));
}

TEST_CASE("--model: a path before a preset name, reported with what it resolved to") {
  const fs::path dir = kConfigs / "Llama-3.1-8B";
  // A model directory is read as --config would read it.
  const auto m = json_of("predict --model " + q(dir) + " --json");
  const auto c = json_of("predict --config " + q(dir) + " --json");
  CHECK(m["extrapolation_limit"] == c["extrapolation_limit"]);
  CHECK(m["inputs"]["model"]["value"] == dir.string());
  CHECK(m["inputs"]["model"]["resolved"] == "model directory");
  CHECK(m["inputs"]["config"]["origin"] == "flag --model");
  CHECK(c["inputs"]["model"]["value"].is_null());
  CHECK(c["inputs"]["config"]["origin"] == "flag --config");
  const auto p = json_of("predict --model llama2-7b --base 1000000 --json");
  CHECK(p["inputs"]["model"]["resolved"] == "built-in preset");
  // A directory named like a preset is the directory (a path wins).
  const fs::path shadow = tmp_root() / "llama2-7b";
  fs::create_directories(shadow);
  fs::copy_file(dir / "config.json", shadow / "config.json", fs::copy_options::overwrite_existing);
  const auto s = run_cli("predict --model " + q(shadow) + " --json");
  REQUIRE_MESSAGE(s.code == 0, s.err);
  CHECK(nlohmann::json::parse(s.out)["inputs"]["model"]["resolved"] == "model directory");
  // The text report names it too.
  const auto t = run_cli("theories --model " + q(dir));
  REQUIRE_MESSAGE(t.code == 0, t.err);
  CHECK(has(t.out, "<- flag --model (model directory)"));
  if (fs::exists(kGguf)) {
    const auto g = json_of("predict --model " + q(kGguf) + " --train-len 2048 --pretrain-base 10000 --json");
    CHECK(g["inputs"]["model"]["resolved"] == "GGUF file");
    CHECK(g["inputs"]["base"]["origin"].get<std::string>().find("rope.freq_base") != std::string::npos);
  }
  if (fs::exists(kStories)) {
    const auto b = json_of("rope --model " + q(kStories) + " --json");
    CHECK(b["inputs"]["model"]["resolved"] == "llama2.c checkpoint");
    CHECK(b["base"] == 10000);
  }
  fs::remove_all(tmp_root());
}

TEST_CASE("--model errors name the flag: empty, unknown (with the closest preset), a preset where weights are needed") {
  auto r = run_cli("predict --model '' --base 1000000");
  CHECK(r.code == 2);
  CHECK(has(r.err, "--model: empty"));
  r = run_cli("predict --model llama2-7 --base 1000000");
  CHECK(r.code == 2);
  CHECK(has(r.err, "not a preset"));
  CHECK(has(r.err, "did you mean 'llama2-7b'"));
  for (const char* sub : {"perplexity --tokens x --context 8", "logits --tokens x --out y", "generate --steps 1",
                          "tokenize --string hi"}) {
    r = run_cli(std::string(sub) + " --model llama2-7b");
    INFO(sub << ": " << r.err);
    CHECK(r.code == 2);
    CHECK(has(r.err, "--model: llama2-7b is a built-in preset"));
  }
  r = run_cli("predict --model " + q(kConfigs / "Llama-3.1-8B" / "config.json"));
  CHECK(r.code == 2);
  CHECK(has(r.err, "--config"));  // a config.json goes to --config
}

TEST_CASE("--config takes a file or a directory in every subcommand that has it") {
  const fs::path dir = kConfigs / "Llama-3.1-8B";
  for (const char* sub : {"predict", "base --target 131072", "periods", "theories", "rope"}) {
    INFO(sub);
    auto a = json_of(std::string(sub) + " --config " + q(dir) + " --json");
    auto b = json_of(std::string(sub) + " --config " + q(dir / "config.json") + " --json");
    CHECK(a["inputs"]["config"]["value"] == (dir / "config.json").string());  // the file read
    a.erase("men_solver"), b.erase("men_solver");  // theories: the solver's time
    CHECK(a == b);
  }
}

TEST_CASE("--json is always JSON: predict --sweep-base --json") {
  const auto j = json_of("predict --model llama2-7b --sweep-base 100,1e7,5 --json");
  REQUIRE(j["sweep"].is_array());
  CHECK(j["sweep"].size() == 5);
  CHECK(j["sweep"][0]["base"] == 100);
  CHECK(j["extrapolation_limit"].is_null());  // per row, not for the run
  CHECK(j["inputs"]["sweep_base"]["value"] == nlohmann::json::array({100, 1e7, 5}));
  // the row values are the single-base run's
  const auto one = json_of("predict --model llama2-7b --base 1e7 --json");
  CHECK(j["sweep"][4]["extrapolation_limit"] == one["extrapolation_limit"]);
  for (const auto& name : keys(j["sweep"][4])) CHECK(one.contains(name));  // a row has the single-base result keys
  const auto l = json_of("predict --list-models --json");
  CHECK(l["presets"].size() > 5);
}

TEST_CASE("--csv is always CSV on stdout: base --csv, perplexity --csv") {
  const auto r = run_cli("base --head-dim 128 --train-len 4096 --target 131072 --csv");
  REQUIRE(r.code == 0);
  CHECK(r.out.rfind("target,base,base_ceiling_free,critical_dimension,head_dim,train_len,pretrain_base\n131072,", 0) == 0);
  const auto j = json_of("base --head-dim 128 --train-len 4096 --target 131072 --json");
  char row[128];
  std::snprintf(row, sizeof row, "131072,%.17g,", j["base"].get<double>());
  CHECK(has(r.out, row));
  CHECK(run_cli("base --head-dim 128 --train-len 4096 --target 131072 --csv --json").code == 2);
}

TEST_CASE("JSON keys are the same whatever the regime or the input route") {
  const std::string dir = q(kConfigs / "Llama-3.1-8B");
  check_same_keys({"predict --model llama2-7b --base 1000000 --json",                                  // larger base
                   "predict --head-dim 128 --train-len 4096 --base 500 --tune-len 16384 --json",       // small base, 16c
                   "predict --config " + q(kConfigs / "Yi-6B-200K") + " --train-len 200000 --pretrain-base 10000 --json",  // no bound
                   "predict --config " + dir + " --json",                                             // preset matched, llama3 scaling
                   "predict --model " + dir + " --json"});
  check_same_keys({"predict --model llama2-7b --sweep-base 100,1e7,3 --json",
                   "predict --head-dim 64 --train-len 2048 --sweep-base 10,1e9,4 --json"});
  check_same_keys({"base --model llama2-7b --target 131072 --json", "base --head-dim 128 --train-len 4096 --target 65536 --json",
                   "base --config " + dir + " --target 1000000 --json"});
  check_same_keys({"periods --model llama2-7b --json", "periods --head-dim 64 --train-len 2048 --json",
                   "periods --config " + dir + " --json"});
  check_same_keys({"theories --model llama2-7b --json", "theories --head-dim 64 --train-len 2048 --base 10000 --json",
                   "theories --config " + dir + " --json"});
  check_same_keys({"rope --config " + dir + " --json", "rope --model " + dir + " --positions 200000 --json",
                   "rope --config " + dir + " --rope-scaling '{\"rope_type\":\"linear\",\"factor\":2}' --json"});
  const auto j = json_of("predict --head-dim 128 --train-len 4096 --base 1000000 --json");
  CHECK(j["reason"].is_null());
  CHECK(j["preset"].is_null());
  CHECK(j["factor"].is_null());
  CHECK(j["inputs"]["model"]["value"].is_null());
  CHECK(j["inputs"]["model"]["origin"] == "not given");
}

TEST_CASE("model subcommands: inputs in JSON, stable keys, outputs atomic and never an input") {
  if (!fs::exists(kStories)) {
    MESSAGE("skipped: " << kStories.string() << " absent");
    return;
  }
  const fs::path dir = tmp_root() / "model";
  fs::create_directories(dir);
  const fs::path model = dir / "stories260K.bin", link = dir / "link.bin";
  fs::copy_file(kStories, model, fs::copy_options::overwrite_existing);
  fs::create_symlink(model, link);
  const std::string before = slurp(model);
  const fs::path ids = dir / "ids.txt";
  {
    std::ofstream f(ids);
    for (int i = 0; i < 40; ++i) f << (1 + (i * 37) % 500) << " ";
  }
  const std::string ppl = "perplexity --model " + q(model) + " --tokens " + q(ids) + " --context 16";
  check_same_keys({ppl + " --json", ppl + " --stride 8 --bins 4 --json"});
  const auto j = json_of(ppl + " --json");
  CHECK(j["gpu"].is_null());
  CHECK(j["inputs"]["context"]["value"] == 16);
  CHECK(j["inputs"]["stride"]["origin"] == "default = context");
  CHECK(j["inputs"]["model"]["resolved"] == "llama2.c checkpoint");
  check_same_keys({"generate --model " + q(model) + " --steps 2 --json",
                   "generate --model " + q(model) + " --prompt-tokens " + q(ids) + " --steps 3 --temperature 1 --json"});
  CHECK(json_of("generate --model " + q(model) + " --steps 2 --json")["text"].is_null());

  // --out: replaced whole (a new inode), and the CSV is what --csv prints.
  const fs::path out = dir / "curve.csv";
  std::ofstream(out) << "old\n";
  struct stat st0{}, st1{};
  ::stat(out.c_str(), &st0);
  auto r = run_cli(ppl + " --out " + q(out));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  ::stat(out.c_str(), &st1);
  CHECK(st0.st_ino != st1.st_ino);
  const auto csv = run_cli(ppl + " --csv");
  REQUIRE(csv.code == 0);
  CHECK(csv.out.rfind("position,count,mean_nll\n", 0) == 0);
  CHECK(slurp(out) == csv.out);
  for (const auto& f : fs::directory_iterator(dir)) CHECK(f.path().filename().string().find(".ropex-") == std::string::npos);

  // An output that is an input: refused with exit 2, the input untouched (by path, via a symlink, the tokens).
  for (const auto& args : {ppl + " --out " + q(model), ppl + " --out " + q(link), ppl + " --out " + q(ids),
                           "logits --model " + q(link) + " --tokens " + q(ids) + " --out " + q(model),
                           "logits --model " + q(model) + " --tokens " + q(ids) + " --out " + q(ids),
                           "tokenize --model " + q(model) + " --text " + q(ids) + " --out " + q(ids)}) {
    r = run_cli(args);
    INFO(args << "\n" << r.err);
    CHECK(r.code == 2);
    CHECK(has(r.err, "refusing to overwrite"));
  }
  CHECK(slurp(model) == before);

  // I/O failures: exit 1 naming the path, for --out and for stdout.
  r = run_cli(ppl + " --out /dev/full");
  CHECK(r.code == 1);
  CHECK(has(r.err, "/dev/full"));
  r = run_cli(ppl + " --csv > /dev/full");
  CHECK(r.code == 1);
  CHECK(has(r.err, "stdout: write failed"));
  r = run_cli("logits --model " + q(model) + " --tokens " + q(ids) + " --out /dev/full");
  CHECK(r.code == 1);
  fs::remove_all(tmp_root());
}

TEST_CASE("stdout that cannot be written is an I/O failure: exit 1, for every kind of output") {
  for (const char* args : {"predict --model llama2-7b --base 1000000 --json", "periods --model llama2-7b --csv",
                           "theories --model llama2-7b", "base --model llama2-7b --target 65536", "--version", "--help"}) {
    const auto r = run_cli(std::string(args) + " > /dev/full");
    INFO(args << ": " << r.err);
    CHECK(r.code == 1);
    CHECK(has(r.err, "stdout: write failed"));
  }
}

TEST_CASE("tokenize: the same JSON keys encoding and decoding; --out atomic") {
  if (!fs::exists(kGguf)) {
    MESSAGE("skipped: " << kGguf.string() << " absent (run scripts/fetch_models.sh)");
    return;
  }
  const fs::path out = tmp_root() / "ids.npy";
  auto r = run_cli("tokenize --model " + q(kGguf) + " --string 'Hello world' --out " + q(out) + " --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto enc = nlohmann::json::parse(r.out);
  r = run_cli("tokenize --model " + q(kGguf) + " --ids " + q(out) + " --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto dec = nlohmann::json::parse(r.out);
  CHECK(keys(enc) == keys(dec));
  CHECK(keys(enc["inputs"]) == keys(dec["inputs"]));
  CHECK(enc["tokens"] == dec["tokens"]);
  CHECK(enc["text"].is_null());
  CHECK(dec["text"] == "Hello world");
  fs::remove_all(tmp_root());
}
