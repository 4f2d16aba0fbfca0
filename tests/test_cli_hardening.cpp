// The CLI at its edges: numbers that pass a finiteness check but not a meaning check, flags CLI11
// would read as hex/octal or wrap, memory asked for by flags, FIFOs, symlink loops, empty and
// directory inputs, a tokenizer larger than the model, and NaN weights. Each case must end in
// exit 0 with a right answer or exit 2 with one line naming the flag, file or field, and no hang.
#include <doctest/doctest.h>

#include "cli_runner.hpp"
#include "test_util.hpp"

#include <ropex/model/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>

namespace fs = std::filesystem;
using ropex::test::run_cli;

namespace {

const fs::path kRoot = ROPEX_SOURCE_DIR;
const fs::path kHf = kRoot / "tests" / "fixtures" / "hf";
const fs::path kSmolTokenizer = kRoot / ".models" / "tokenizers" / "smollm2" / "tokenizer.json";
const fs::path kGguf = kRoot / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf";

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

struct Tmp : ropex::test::TempDir {
  Tmp() : TempDir("cli_hardening") {}
};

// ropex under `timeout`, so a hang fails the test instead of stalling it (timeout exits 124).
ropex::test::CliResult run_bounded(const std::string& args, int seconds = 30) {
  const fs::path err = fs::temp_directory_path() / ("ropex_hardening_err_" + std::to_string(::getpid()));
  const std::string cmd =
      "timeout " + std::to_string(seconds) + " " + ROPEX_CLI + " " + args + " </dev/null >/dev/null 2>" + q(err);
  ropex::test::CliResult r;
  const int status = std::system(cmd.c_str());
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream e(err);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  fs::remove(err);
  return r;
}

// Exit 2, exactly one line, containing every needle.
void refused(const ropex::test::CliResult& r, const std::vector<std::string>& needles) {
  INFO("stderr: " << r.err);
  CHECK(r.code == 2);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  for (const auto& n : needles) CHECK_MESSAGE(r.err.find(n) != std::string::npos, "missing: " << n);
}

void refused(const std::string& args, const std::vector<std::string>& needles) {
  CAPTURE(args);
  refused(run_bounded(args), needles);
}

// The HF fixture model (vocab 256, float32) copied to `dir` with the default config.
fs::path hf_model(const fs::path& dir) {
  fs::create_directories(dir);
  fs::copy_file(kHf / "default.config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(kHf / "weights" / "model.safetensors", dir / "model.safetensors", fs::copy_options::overwrite_existing);
  return dir;
}

fs::path token_file(const fs::path& p, int n) {
  std::ofstream out(p);
  for (int i = 0; i < n; ++i) out << (i * 37 + 11) % 256 << " ";
  return p;
}

}  // namespace

TEST_CASE("law internals: no out-of-range cast, overflowing results refused") {
  // base 1 + 2^-52: (d/2) log_b(T/2pi) is ~1e18; the cast to long long was undefined (printed 0).
  const auto r = run_bounded("predict --head-dim 128 --train-len 1e300 --base 1e6 --pretrain-base 1.0000000000000002 --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto out = run_cli("predict --head-dim 128 --train-len 1e300 --base 1e6 --pretrain-base 1.0000000000000002 --json");
  CHECK(nlohmann::json::parse(out.out).at("critical_dimension") == 128);
  // 2*pi*1e308 was printed as JSON null with exit 0
  refused("predict --head-dim 128 --train-len 1e300 --base 1e308 --json", {"larger_base_limit", "overflows"});
  refused("base --head-dim 128 --train-len 8 --pretrain-base 1e300 --target 1e300", {"overflows"});
}

TEST_CASE("numeric flags are decimal: hex, octal-looking, wrapped and out-of-range values") {
  refused("predict --head-dim 128 --train-len 0x10 --base 1e6", {"--train-len", "0x10"});
  refused("predict --head-dim 0x80 --train-len 4096 --base 1e6", {"--head-dim", "0x80"});
  refused("predict --head-dim 128 --train-len 4096 --base 0x1p20", {"--base"});
  refused("predict --head-dim 99999999999999999999 --train-len 4096 --base 1e6", {"--head-dim"});
  // "0128" means 128, not octal (CLI11 alone reads 010 as 8)
  const auto a = run_cli("predict --head-dim 0128 --train-len 4096 --base 1e6 --json");
  const auto b = run_cli("predict --head-dim 128 --train-len 4096 --base 1e6 --json");
  REQUIRE(a.code == 0);
  CHECK(a.out == b.out);
  refused("rope --config " + q(kHf / "default.config.json") + " --head-dim -4", {"--head-dim"});
  refused("rope --config " + q(kHf / "default.config.json") + " --head-dim 0", {"--head-dim"});
  refused("generate --model /nonexistent --steps 1 --seed -1", {"--seed"});
  refused("generate --model /nonexistent --steps 1 --seed 18446744073709551616", {"--seed"});
}

TEST_CASE("RoPE values finite but out of range are refused naming the key") {
  const std::string cfg = q(kHf / "default.config.json");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"type":"linear"})", "rope_scaling.factor: required by linear"},
      {R"({"type":"linear","factor":1e-310})", "rope_scaling.factor"},
      {R"({"rope_type":"llama3","factor":1e-310,"original_max_position_embeddings":16})", "rope_scaling.factor"},
      {R"({"rope_type":"dynamic","factor":1e300})", "rope_scaling.factor"},
      {R"({"rope_type":"yarn","factor":4,"attention_factor":1e300})", "rope_scaling.attention_factor"},
      {R"({"rope_type":"yarn","factor":4,"mscale":1e308,"mscale_all_dim":1})", "rope_scaling.mscale"},
      {R"({"rope_type":"longrope","short_factor":[1e-310,1,1,1,1,1,1,1],"long_factor":[1,1,1,1,1,1,1,1]})",
       "rope_scaling.short_factor"},
  };
  for (const auto& [scaling, needle] : cases) refused("rope --config " + cfg + " --rope-scaling '" + scaling + "'", {needle});
  refused("rope --config " + cfg + " --rope-base 1e300", {"--rope-base"});
}

TEST_CASE("memory asked for by flags is checked first, naming the flag") {
  Tmp tmp;
  const fs::path model = hf_model(tmp / "m");
  const fs::path tokens = token_file(tmp / "t.txt", 256);
  // --context 2^30 over 256 tokens: the per-position arrays were sized by the flag (16 GiB)
  const auto r = run_bounded("perplexity --model " + q(model) + " --tokens " + q(tokens) + " --context 1073741824 --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto ok = run_cli("perplexity --model " + q(model) + " --tokens " + q(tokens) + " --context 1073741824 --json");
  const auto j = nlohmann::json::parse(ok.out);
  CHECK(j.at("tokens") == 255);
  CHECK(j.at("curve").back().at("end") == 1073741824);
  CHECK(std::isfinite(j.at("perplexity").get<double>()));
  refused("periods --head-dim 2000000000 --train-len 4096 --base 1e6", {"--head-dim", "MemAvailable"});
  if (fs::exists(kGguf))  // 2^24 steps of SmolLM2's KV cache: ~770 GB
    refused("generate --model " + q(kGguf) + " --no-weight-check --steps 16777216", {"--steps", "KV cache"});
  else
    MESSAGE("skipped the --steps case: " << kGguf << " absent");
}

TEST_CASE("FIFOs, symlink loops, empty and directory inputs: one line naming the path, no hang") {
  Tmp tmp;
  const fs::path fifo = tmp / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const fs::path loop = tmp / "loop";
  fs::create_symlink(loop, loop);
  refused("predict --config " + q(fifo) + " --train-len 4096 --pretrain-base 1e4", {fifo.string()});
  refused("rope --config " + q(fifo), {fifo.string()});
  refused("rope --config " + q(loop), {loop.string()});
  refused("predict --config " + q(loop) + " --train-len 4096 --pretrain-base 1e4", {loop.string()});

  // An HF directory whose model.safetensors is a symlink loop
  const fs::path looped = hf_model(tmp / "looped");
  fs::remove(looped / "model.safetensors");
  fs::create_symlink(looped / "model.safetensors", looped / "model.safetensors");
  refused("logits --model " + q(looped) + " --tokens " + q(token_file(tmp / "t.txt", 8)) + " --out " + q(tmp / "o.npy"),
          {(looped / "model.safetensors").string()});

  if (!fs::exists(kSmolTokenizer)) {
    MESSAGE("skipped the --text cases: " << kSmolTokenizer << " absent");
    return;
  }
  const fs::path model = hf_model(tmp / "with_tokenizer");
  fs::copy_file(kSmolTokenizer, model / "tokenizer.json");
  const std::string ppl = "perplexity --model " + q(model) + " --context 16 --text ";
  std::ofstream(tmp / "empty.txt").close();
  refused(ppl + q(tmp / "empty.txt"), {"--text", (tmp / "empty.txt").string()});
  fs::create_directories(tmp / "dir");
  refused(ppl + q(tmp / "dir"), {"--text", (tmp / "dir").string()});
  refused(ppl + q(fifo), {"--text", fifo.string()});
  refused(ppl + q(loop), {"--text", loop.string()});
  refused("tokenize --model " + q(model) + " --text " + q(fifo), {"--text", fifo.string()});
  // SmolLM2's tokenizer (49152 ids) on a model of 256: the tokenizer file is named
  std::ofstream(tmp / "story.txt") << "Once upon a time, a curious fox explored the quiet forest.";
  refused(ppl + q(tmp / "story.txt"), {(model / "tokenizer.json").string(), "vocabulary of 256"});

  // tokenizer.model as a FIFO: sentencepiece's own loader would block on it
  const fs::path spm = hf_model(tmp / "spm_fifo");
  REQUIRE(::mkfifo((spm / "tokenizer.model").c_str(), 0600) == 0);
  const auto r = run_bounded("perplexity --model " + q(spm) + " --context 16 --text " + q(tmp / "story.txt"));
  CHECK(r.code == 2);
  CHECK(r.err.find("tokenizer.model") != std::string::npos);
}

TEST_CASE("non-finite weights: named at load; past --no-weight-check the forward stops with the cause") {
  Tmp tmp;
  const fs::path model = hf_model(tmp / "nan");
  {  // lm_head.weight[0] (the first tensor of the data section) = NaN
    const auto f = ropex::model::SafetensorsFile::open(model / "model.safetensors");
    const auto* t = f.find("lm_head.weight");
    REQUIRE(t);
    std::fstream io(model / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    std::ifstream probe(model / "model.safetensors", std::ios::binary);
    uint64_t n = 0;
    probe.read(reinterpret_cast<char*>(&n), 8);
    const float nan = std::nanf("");
    io.seekp(std::streamoff(8 + n + size_t(t->data - f.tensors().front().data)));
    io.write(reinterpret_cast<const char*>(&nan), 4);
  }
  const fs::path tokens = token_file(tmp / "t.txt", 16);
  const std::string logits = "logits --model " + q(model) + " --tokens " + q(tokens) + " --out " + q(tmp / "o.npy");
  refused(logits, {"lm_head.weight", "not finite"});
  refused(logits + " --no-weight-check", {"logits: not finite", "--no-weight-check"});
  refused("perplexity --model " + q(model) + " --tokens " + q(tokens) + " --context 8 --no-weight-check",
          {"loss: not finite", "--no-weight-check"});
  refused("generate --model " + q(model) + " --steps 2 --no-weight-check", {"logits: not finite"});
}

TEST_CASE("theories: sizes and steps that would scan forever are refused") {
  refused("theories --head-dim 2000000000 --train-len 4096 --base 1e6 --target 131072", {"--head-dim", "8192"});
  refused("theories --head-dim 128 --train-len 4096 --base 1e6 --target 131072 --grid-step 1e-300", {"grid_step"});
  refused("theories --head-dim 128 --train-len 4096 --base 1e6 --target 131072 --fine-step 1e-300", {"fine_step"});
}

TEST_CASE("token ids outside the vocabulary name the token file") {
  Tmp tmp;
  const fs::path model = hf_model(tmp / "m");
  std::ofstream(tmp / "ids.txt") << "1 2 300";
  refused("logits --model " + q(model) + " --tokens " + q(tmp / "ids.txt") + " --out " + q(tmp / "o.npy"),
          {"--tokens", (tmp / "ids.txt").string(), "id 300 at index 2"});
}
