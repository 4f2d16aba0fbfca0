// `ropex tokenize / generate / perplexity --model x.gguf` on SmolLM2-135M-Instruct Q4_1 against Hugging
// Face transformers loading the same file (float32, eager): token ids, 64 greedy tokens, perplexity of
// GPL-3 + Apache-2.0 at contexts 2048 and 8192 (tests/fixtures/gguf_cli/smollm2_model.json, from
// scripts/make_gguf_cli_reference.py). Skipped with a message when .models/ lacks the model
// (scripts/fetch_models.sh). Plus the CLI's one-line refusals for GGUF input.
#include "cli_runner.hpp"
#include "test_util.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using ropex::test::run_cli;

namespace {

const fs::path kRoot = ROPEX_SOURCE_DIR;
const fs::path kFix = kRoot / "tests" / "fixtures" / "gguf_cli";
const fs::path kModel = kRoot / ".models" / "SmolLM2-135M-Instruct.Q4_1.gguf";

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << p);
  return nlohmann::json::parse(in);
}

bool have_model() {
  if (fs::exists(kModel)) return true;
  MESSAGE("skipped: " << kModel.string() << " absent (run scripts/fetch_models.sh)");
  return false;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("ropex tokenize --model smollm2.gguf: ids equal HF's, both ways") {
  if (!have_model()) return;
  const auto fx = read_json(kFix / "smollm2.tokens.json");
  const std::string text = fx["texts"]["multilingual"]["text"];
  const auto file = ropex::test::temp_file("ml.txt", text);
  auto r = run_cli("tokenize --model " + q(kModel) + " --text " + q(file) + " --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["tokens"].get<std::vector<int32_t>>() == fx["texts"]["multilingual"]["ids"].get<std::vector<int32_t>>());
  CHECK(j["tokenizer"].get<std::string>() == kModel.string());
  // the model's text of GPL-3 + Apache-2.0, the perplexity input
  const auto ref = read_json(kFix / "smollm2_model.json");
  r = run_cli("tokenize --model " + q(kModel) + " --text " + q(kFix / "gpl3_apache2.txt") + " --json --bos");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(nlohmann::json::parse(r.out)["tokens"].size() == ref["perplexity"]["tokens"].get<size_t>());  // no BOS: add_bos_token false
  // ids back to text
  const auto ids = ropex::test::temp_file("ids.txt", "19556 28 905 17");
  r = run_cli("tokenize --model " + q(kModel) + " --ids " + q(ids));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.out == "Hello, world!");
}

TEST_CASE("ropex generate --model smollm2.gguf --prompt: 64 greedy tokens equal HF's") {
  if (!have_model()) return;
  const auto ref = read_json(kFix / "smollm2_model.json")["generate"];
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = run_cli("generate --model " + q(kModel) + " --prompt '" + ref["prompt"].get<std::string>() +
                         "' --steps 64 --temperature 0 --json --threads 2");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  const auto got = j["tokens"].get<std::vector<int32_t>>(), want = ref["tokens"].get<std::vector<int32_t>>();
  CHECK(got == want);
  CHECK(j["text"].get<std::string>() == ref["text"].get<std::string>());
  MESSAGE("generate: " << got.size() << " tokens equal to HF's: " << (got == want) << " (" << seconds_since(t0) << " s)");
}

TEST_CASE("ropex perplexity --model smollm2.gguf --text: within 0.1% of HF at contexts 2048 and 8192") {
  if (!have_model()) return;
  if (ropex::test::skip_in_sanitizer_build()) return;
  const auto ref = read_json(kFix / "smollm2_model.json")["perplexity"];
  for (const int ctx : {2048, 8192}) {
    CAPTURE(ctx);
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = run_cli("perplexity --model " + q(kModel) + " --text " + q(kFix / "gpl3_apache2.txt") +
                           " --context " + std::to_string(ctx) + " --json --threads 2");
    REQUIRE_MESSAGE(r.code == 0, r.err);
    const auto j = nlohmann::json::parse(r.out);
    const auto& want = ref[std::to_string(ctx)];
    const double got = j["perplexity"].get<double>(), hf = want["perplexity"].get<double>();
    CHECK(j["tokens"].get<int64_t>() == want["scored"].get<int64_t>());
    CHECK(j["windows"].get<int64_t>() == want["windows"].get<int64_t>());
    CHECK(std::abs(got / hf - 1) < 1e-3);
    MESSAGE("perplexity context " << ctx << ": ropex " << got << ", HF " << hf << " (rel " << (got / hf - 1) << "), "
                                  << j["tokens"].get<int64_t>() << " targets, " << seconds_since(t0) << " s");
  }
}

TEST_CASE("ropex perplexity --fast: int8 activations within 0.5% of exact on the real Q4_1 model; CPU only") {
  if (!have_model()) return;
  if (ropex::test::skip_in_sanitizer_build()) return;
  // The 1024 GPL-3 ids of tests/fixtures/gguf_model, 4 windows of 256 (kept short for the sanitizer build).
  const fs::path ids = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "gguf_model" / "smollm2_q4_1.tokens.npy";
  const std::string base = "perplexity --model " + q(kModel) + " --tokens " + q(ids) + " --context 256 --json --threads 2";
  const auto exact = run_cli(base), fast = run_cli(base + " --fast");
  REQUIRE_MESSAGE(exact.code == 0, exact.err);
  REQUIRE_MESSAGE(fast.code == 0, fast.err);
  const double e = nlohmann::json::parse(exact.out)["perplexity"].get<double>();
  const double f = nlohmann::json::parse(fast.out)["perplexity"].get<double>();
  MESSAGE("context 256: exact " << e << ", fast " << f << " (rel " << (f / e - 1) << ")");
  CHECK(f != e);  // the int8 path really ran
  CHECK(std::abs(f / e - 1) < 5e-3);  // measured -0.32% (the int8 kernels are bit-identical on every ISA)
  const auto gpu = run_cli(base + " --fast --device cuda");
  CHECK(gpu.code == 2);
  CHECK(gpu.err.find("--fast: is a CPU mode") != std::string::npos);
}

TEST_CASE("ropex tokenize on a sentencepiece GGUF; a vocab-only GGUF refused by generate in one line") {
  // tokenizer.ggml.model "llama" (Llama-2's vocabulary, committed): ids equal HF's, BOS from add_bos_token
  const auto spm = kFix / "ggml-vocab-llama-spm.gguf";
  const auto fx = read_json(kFix / "llama-spm.tokens.json");
  const auto file = ropex::test::temp_file("spm.txt", fx["texts"]["multilingual"]["text"].get<std::string>());
  auto r = run_cli("tokenize --model " + q(spm) + " --text " + q(file) + " --json --bos");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  auto want = fx["texts"]["multilingual"]["ids"].get<std::vector<int32_t>>();
  want.insert(want.begin(), 1);
  CHECK(nlohmann::json::parse(r.out)["tokens"].get<std::vector<int32_t>>() == want);
  CHECK(nlohmann::json::parse(r.out)["kind"] == "SentencePiece");
  // a vocab-only file has no weights: one line naming the file
  r = run_cli("generate --model " + q(spm) + " --steps 1");
  CHECK(r.code == 2);
  CHECK(r.err.rfind("ropex: error: " + spm.string() + ": ", 0) == 0);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  // a file that is not there: one line
  r = run_cli("tokenize --model " + q(kFix / "absent.gguf") + " --string hi");
  CHECK(r.code == 2);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

TEST_CASE("ropex predict / rope --config model.gguf: RoPE facts from the metadata, origins named by key") {
  if (!have_model()) return;
  // SmolLM2-135M has no preset (no published pre-training context / base): the law's T_train is the user's
  auto r = run_cli("predict --config " + q(kModel) + " --json");
  CHECK(r.code == 2);
  CHECK(r.err.find("matches no built-in preset") != std::string::npos);
  r = run_cli("predict --config " + q(kModel) + " --train-len 2048 --pretrain-base 10000 --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  const auto& in = j["inputs"];
  CHECK(in["head_dim"]["value"] == 64);
  CHECK(in["head_dim"]["origin"] == kModel.string() + ":llama.rope.dimension_count (of head_dim 64 from "
                                    "llama.embedding_length / llama.attention.head_count)");
  CHECK(in["base"]["value"] == 100000);
  CHECK(in["base"]["origin"] == kModel.string() + ":llama.rope.freq_base");
  r = run_cli("rope --config " + q(kModel) + " --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto k = nlohmann::json::parse(r.out);
  CHECK(k["base"] == 100000);
  CHECK(k["rotary_dim"] == 64);
  CHECK(k["max_position_embeddings"] == 8192);
  CHECK(k["base_source"] == "llama.rope.freq_base");
  CHECK(k["rotary_dim_source"] == "llama.rope.dimension_count");
}
