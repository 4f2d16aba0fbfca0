// `ropex logits | generate | perplexity` end to end: outputs against HF fixtures and the library,
// and every bad input gives a non-zero exit with a one-line message naming the problem.
#include <doctest/doctest.h>

#include "cli_runner.hpp"
#include "stories_model.hpp"

#include <ropex/eval/perplexity.hpp>
#include <ropex/io/npy.hpp>
#include <ropex/io/tokens.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using ropex::test::run_cli;

namespace {

const fs::path kFixtures = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "hf";
const std::string kStories = std::string(ROPEX_SHARED_DATA) + "/stories260K.bin";

fs::path tmp_root() { return fs::temp_directory_path() / ("ropex_cli_model_" + std::to_string(::getpid())); }

struct Cleanup {
  ~Cleanup() {
    std::error_code ec;
    fs::remove_all(tmp_root(), ec);
  }
};

// HF model dir: shared fixture weights + one variant's config.
fs::path hf_model(const std::string& variant) {
  const fs::path dir = tmp_root() / variant;
  fs::create_directories(dir);
  fs::copy_file(kFixtures / (variant + ".config.json"), dir / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(kFixtures / "weights" / "model.safetensors", dir / "model.safetensors", fs::copy_options::overwrite_existing);
  return dir;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::isnan(a[i]) ? INFINITY : std::abs(double(a[i]) - b[i]));
  return m;
}

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

}  // namespace

TEST_CASE("ropex logits: .npy [n, vocab] matching HF; --rope-base / --rope-scaling select another variant") {
  Cleanup cleanup;
  const fs::path model = hf_model("default"), out = tmp_root() / "out.npy";
  const std::string toks = q(kFixtures / "tokens.npy");
  auto r = run_cli("logits --model " + q(model) + " --tokens " + toks + " --out " + q(out));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  auto got = ropex::io::read_npy_f32(out);
  CHECK(got.shape == std::vector<size_t>{48, 256});
  CHECK(max_abs_diff(got.data, ropex::io::read_npy_f32(kFixtures / "default.logits.npy").data) <= 1e-3);

  r = run_cli("logits --model " + q(model) + " --tokens " + toks + " --out " + q(out) + " --rope-base 500");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(max_abs_diff(ropex::io::read_npy_f32(out).data, ropex::io::read_npy_f32(kFixtures / "base500.logits.npy").data) <= 1e-3);

  r = run_cli("logits --model " + q(model) + " --tokens " + toks + " --out " + q(out) +
              " --rope-scaling '{\"rope_type\":\"linear\",\"factor\":4}' --threads 1");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(max_abs_diff(ropex::io::read_npy_f32(out).data, ropex::io::read_npy_f32(kFixtures / "linear.logits.npy").data) <= 1e-3);

  // A text token file (comma/whitespace separated) gives the first rows of the same logits.
  const auto ids = ropex::io::read_tokens(kFixtures / "tokens.npy");
  const auto txt = ropex::test::temp_file("ids.txt", std::to_string(ids[0]) + ", " + std::to_string(ids[1]) + "\n" +
                                                         std::to_string(ids[2]));
  r = run_cli("logits --model " + q(model) + " --tokens " + q(txt) + " --out " + q(out));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  got = ropex::io::read_npy_f32(out);
  CHECK(got.shape == std::vector<size_t>{3, 256});
  const auto full = ropex::io::read_npy_f32(kFixtures / "default.logits.npy");
  CHECK(max_abs_diff(got.data, std::vector<float>(full.data.begin(), full.data.begin() + 3 * 256)) <= 1e-3);
  fs::remove(txt);
}

TEST_CASE("ropex generate: greedy JSON equals the library's greedy decode; sampling is seeded") {
  if (!fs::exists(kStories)) {
    MESSAGE("skipped: " << kStories << " is absent");
    return;
  }
  auto r = run_cli("generate --model " + q(kStories) + " --steps 40 --temperature 0 --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  const auto tokens = j.at("tokens").get<std::vector<int>>();
  REQUIRE(tokens.size() == 40);
  // Library greedy from BOS over a full forward each step (no cache reuse): same ids.
  const auto ck = ropex::model::Checkpoint::open(kStories);
  ropex::model::Llama<> model(ck);
  std::vector<int32_t> seq = {1};
  for (int i = 0; i < 40; ++i) {
    auto cache = model.make_cache(int64_t(seq.size()));
    const auto lg = model.logits(seq, cache);
    int best = 0;
    for (int v = 1; v < 512; ++v)
      if (lg(lg.rows() - 1, v) > lg(lg.rows() - 1, best)) best = v;
    seq.push_back(best);
  }
  CHECK(std::vector<int>(seq.begin() + 1, seq.end()) == tokens);

  // A prompt: only the continuation is printed, and it is the greedy continuation.
  const auto prompt = ropex::test::temp_file("prompt.txt", "1 " + std::to_string(seq[1]) + " " + std::to_string(seq[2]));
  r = run_cli("generate --model " + q(kStories) + " --prompt-tokens " + q(prompt) + " --steps 5 --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(nlohmann::json::parse(r.out).at("tokens").get<std::vector<int>>() == std::vector<int>(seq.begin() + 3, seq.begin() + 8));
  fs::remove(prompt);

  // Sampling: same seed -> same ids; the ids are valid.
  const auto a = run_cli("generate --model " + q(kStories) + " --steps 30 --temperature 1 --seed 7 --json");
  const auto b = run_cli("generate --model " + q(kStories) + " --steps 30 --temperature 1 --seed 7 --json");
  const auto c = run_cli("generate --model " + q(kStories) + " --steps 30 --temperature 1 --seed 8 --json");
  REQUIRE(a.code == 0);
  CHECK(a.out == b.out);
  CHECK(a.out != c.out);
  const auto sampled = nlohmann::json::parse(a.out).at("tokens").get<std::vector<int>>();
  for (int t : sampled) CHECK((t >= 0 && t < 512));
  // Plain output: ids on stdout, the speed on stderr.
  r = run_cli("generate --model " + q(kStories) + " --steps 3");
  CHECK(r.code == 0);
  CHECK(r.err.find("tokens/s") != std::string::npos);
}

TEST_CASE("ropex perplexity: JSON keys and value equal the library; --out per-position curve") {
  if (!fs::exists(kStories)) {
    MESSAGE("skipped: " << kStories << " is absent");
    return;
  }
  Cleanup cleanup;
  fs::create_directories(tmp_root());
  // 300 tokens of the model's own sampled text.
  const auto ck = ropex::model::Checkpoint::open(kStories);
  auto g = run_cli("generate --model " + q(kStories) + " --steps 299 --temperature 0.8 --seed 3 --json");
  REQUIRE(g.code == 0);
  std::vector<int32_t> ids = {1};
  const auto gj = nlohmann::json::parse(g.out);
  for (int t : gj.at("tokens")) ids.push_back(t);
  std::string text;
  for (int t : ids) text += std::to_string(t) + " ";
  const auto file = ropex::test::temp_file("ppl.txt", text);
  const fs::path csv = tmp_root() / "curve.csv";
  auto r = run_cli("perplexity --model " + q(kStories) + " --tokens " + q(file) + " --context 128 --stride 64 --json --out " + q(csv));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  // not a terminal: one plain progress line per window, with rate and ETA; --quiet: none
  CHECK(r.err.find("perplexity: 127/299 tokens") != std::string::npos);
  CHECK(r.err.find("tokens/s") != std::string::npos);
  CHECK(r.err.find("ETA") != std::string::npos);
  CHECK(run_cli("perplexity --model " + q(kStories) + " --tokens " + q(file) + " --context 128 --stride 64 --quiet").err.empty());
  const auto j = nlohmann::json::parse(r.out);
  ropex::model::Llama<> model(ck);
  ropex::eval::PerplexityOptions po;
  po.context = 128, po.stride = 64;
  const auto lib = ropex::eval::perplexity(model, ids, po);
  // Same computation in two processes; summation order may differ in the last bits (Eigen peels
  // reductions by the runtime alignment of buffers), hence 1e-6 rather than bit equality.
  CHECK(j.at("perplexity").get<double>() == doctest::Approx(lib.perplexity).epsilon(1e-6));
  CHECK(j.at("tokens").get<int64_t>() == 299);
  CHECK(j.at("context").get<int64_t>() == 128);
  CHECK(j.at("curve").size() == 32);
  // --bos-windows: later windows start with BOS (the library's window_bos).
  r = run_cli("perplexity --model " + q(kStories) + " --tokens " + q(file) + " --context 128 --stride 64 --json --bos-windows");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const double with_bos = nlohmann::json::parse(r.out).at("perplexity").get<double>();
  po.window_bos = 1;
  CHECK(with_bos == doctest::Approx(ropex::eval::perplexity(model, ids, po).perplexity).epsilon(1e-6));
  CHECK(with_bos > 1.0);
  CHECK(with_bos != doctest::Approx(j.at("perplexity").get<double>()));
  // The first window (a real story start) is what the trained model knows: low loss there.
  CHECK(std::exp(j.at("curve")[0].at("mean_nll").get<double>()) < 30.0);
  std::ifstream in(csv);
  std::string header;
  std::getline(in, header);
  CHECK(header == "position,count,mean_nll");
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  CHECK(lines == 127);  // positions 0..126 predict a token
  // Plain text output.
  r = run_cli("perplexity --model " + q(kStories) + " --tokens " + q(file) + " --context 300");
  CHECK(r.code == 0);
  CHECK(r.out.find("perplexity") == 0);
  fs::remove(file);
}

TEST_CASE("ropex perplexity --text: a real book through a SentencePiece tokenizer trained on it") {
  Cleanup cleanup;
  const fs::path dir = tmp_root() / "text";
  const std::string cmd = "'" + std::string(ROPEX_SOURCE_DIR) + "/scripts/fetch_text.sh' " + q(dir) + " bible --spm 256 >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0 || !fs::exists(dir / "bible_spm256.model")) {
    MESSAGE("skipped: scripts/fetch_text.sh could not provide the KJV text / spm_train");
    return;
  }
  // The first ~60 KB of Genesis through the tiny HF fixture model (random weights, vocab 256).
  std::ifstream in(dir / "bible.txt");
  std::string text(60000, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(in.gcount()));
  const auto part = ropex::test::temp_file("genesis.txt", text);
  const fs::path model = hf_model("default");
  auto r = run_cli("perplexity --model " + q(model) + " --text " + q(part) + " --context 256 --json");
#if defined(ROPEX_HAS_SENTENCEPIECE)
  CHECK(r.code == 2);  // no tokenizer.model in the model directory yet
  CHECK(r.err.find("tokenizer.model") != std::string::npos);
  fs::copy_file(dir / "bible_spm256.model", model / "tokenizer.model");
  r = run_cli("perplexity --model " + q(model) + " --text " + q(part) + " --context 256 --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("tokens").get<int64_t>() > 10000);  // BPE-256 over 60 KB: ~2-3 bytes per token
  CHECK(j.at("context").get<int64_t>() == 256);
  const double ppl = j.at("perplexity").get<double>();
  CHECK(std::isfinite(ppl));
  CHECK(ppl > 1.0);
#else
  CHECK(r.code == 2);
  CHECK(r.err.find("SentencePiece") != std::string::npos);
#endif
  fs::remove(part);
}

TEST_CASE("ropex model commands: bad input exits non-zero with one clear line") {
  Cleanup cleanup;
  const fs::path model = hf_model("default"), out = tmp_root() / "o.npy";
  const std::string toks = q(kFixtures / "tokens.npy");
  struct Case {
    std::string args, needle;
  };
  const auto bad_ids = ropex::test::temp_file("bad_ids.txt", "1 2 256");
  const auto neg_ids = ropex::test::temp_file("neg_ids.txt", "1 -5");
  const auto junk_ids = ropex::test::temp_file("junk_ids.txt", "1 two 3");
  const std::vector<Case> cases = {
      {"logits --model /nonexistent/model --tokens " + toks + " --out " + q(out), "/nonexistent/model"},
      {"logits --model " + q(model) + " --tokens /nonexistent.npy --out " + q(out), "/nonexistent.npy"},
      {"logits --model " + q(model) + " --tokens " + q(bad_ids) + " --out " + q(out), "outside the vocabulary"},
      {"logits --model " + q(model) + " --tokens " + q(neg_ids) + " --out " + q(out), ""},
      {"logits --model " + q(model) + " --tokens " + q(junk_ids) + " --out " + q(out), ""},
      {"logits --model " + q(model) + " --tokens " + toks + " --out " + q(out) + " --rope-scaling '{bad json'", "--rope-scaling"},
      {"logits --model " + q(model) + " --tokens " + toks + " --out " + q(out) + " --rope-base 0.5", "--rope-base"},
      {"logits --model " + q(model) + " --tokens " + toks + " --out " + q(out) +
           " --rope-scaling '{\"rope_type\":\"warp\",\"factor\":2}'", "warp"},
      {"logits --model " + q(model) + " --tokens " + toks + " --out /nonexistent/dir/o.npy", "/nonexistent/dir/o.npy"},
      {"generate --model " + q(model) + " --steps 0", ""},
      {"generate --model " + q(model) + " --steps 3 --prompt-tokens " + q(bad_ids), "outside the vocabulary"},
      {"perplexity --model " + q(model) + " --context 16", "--tokens or --text"},
      {"perplexity --model " + q(model) + " --tokens " + toks + " --text x.txt --context 16", "--tokens or --text"},
      {"perplexity --model " + q(model) + " --tokens " + toks + " --context 1", ""},
      {"perplexity --model " + q(model) + " --tokens " + toks + " --context 16 --stride 32", "stride"},
      {"perplexity --model " + q(model) + " --tokens " + q(bad_ids) + " --context 16", "outside the vocabulary"},
  };
  for (const auto& c : cases) {
    INFO("ropex " << c.args);
    const auto r = run_cli(c.args);
    INFO("stderr: " << r.err);
    CHECK(r.code != 0);
    CHECK(r.code < 128);  // an error exit, not a crash
    CHECK(!r.err.empty());
    if (!c.needle.empty()) CHECK(r.err.find(c.needle) != std::string::npos);
  }
  for (const auto& f : {bad_ids, neg_ids, junk_ids}) fs::remove(f);
}

// ---- ropex tokenize / generate --prompt: the model directory's tokenizer (tokenizer/tokenizer.hpp)
#include <ropex/tokenizer/tokenizer.hpp>

TEST_CASE("ropex tokenize: ids equal HF tokenizers; --out then --ids gives the text back; bad input exits 2") {
  Cleanup cleanup;
  const fs::path fix = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer";
  for (const char* fam : {"llama3", "qwen2.5", "smollm2"}) {
    CAPTURE(fam);
    std::ifstream in(fix / (std::string(fam) + ".ids.json"));
    const auto want = nlohmann::json::parse(in)["texts"]["multilingual"];
    const fs::path text = ropex::test::temp_file("tok.txt", want["text"].get<std::string>());
    auto r = run_cli("tokenize --model " + q((fix / fam).string()) + " --text " + q(text.string()) + " --json");
    REQUIRE_MESSAGE(r.code == 0, r.err);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["tokens"] == want["ids"]);
    CHECK(j["tokenizer"].get<std::string>().find("tokenizer.json") != std::string::npos);
    const auto npy = tmp_root() / (std::string(fam) + ".ids.npy");
    fs::create_directories(tmp_root());
    r = run_cli("tokenize --model " + q((fix / fam).string()) + " --text " + q(text.string()) + " --bos --out " + q(npy.string()));
    REQUIRE_MESSAGE(r.code == 0, r.err);
    CHECK(ropex::io::read_tokens(npy) == want["ids_with_special"].get<std::vector<int32_t>>());
    r = run_cli("tokenize --model " + q((fix / fam).string()) + " --ids " + q(npy.string()) + " --skip-special");
    REQUIRE_MESSAGE(r.code == 0, r.err);
    CHECK(r.out == want["decoded"].get<std::string>());
    fs::remove(text);
  }
  const fs::path bad = tmp_root() / "bad_tokenizer";
  fs::create_directories(bad);
  std::ofstream(bad / "tokenizer.json") << R"({"model": {"type": "Unigram", "vocab": []}})";
  const std::string llama = q((fix / "llama3").string());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"tokenize --model " + q(bad.string()) + " --string x", "tokenizer.json: model.type: 'Unigram' is not supported"},
      {"tokenize --model " + q(fix.string()) + " --string x", "no tokenizer.json or tokenizer.model"},
      {"tokenize --model " + llama + " --string x --ids y.npy", "exactly one of"},
      {"tokenize --model " + llama, "exactly one of"},
      {"tokenize --model " + llama + " --text /nonexistent/t.txt", "--text: /nonexistent/t.txt: cannot open"},
      {"tokenize --model " + llama + " --ids " + q((fix / "llama3.ids.json").string()), "llama3.ids.json"},
  };
  for (const auto& [args, msg] : cases) {
    CAPTURE(args);
    const auto r = run_cli(args);
    CHECK(r.code == 2);
    CHECK(r.err.find(msg) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}

TEST_CASE("ropex generate --prompt: text through the model's tokenizer, the continuation printed as text") {
  Cleanup cleanup;
  if (!fs::exists(kStories)) {
    MESSAGE("skipped: " << kStories << " is absent");
    return;
  }
  // stories260K (vocab 512) next to a byte-level BPE tokenizer.json whose ids all lie below 512
  const fs::path dir = tmp_root() / "stories_bpe";
  ropex::test::stories_with_byte_tokenizer(dir);
  const auto model = q((dir / "stories260K.bin").string());
  auto r = run_cli("generate --model " + model + " --prompt " + q("Once upon the time") + " --steps 6 --json");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = nlohmann::json::parse(r.out);
  const auto tok = ropex::tokenizer::Tokenizer::from_model_dir(dir);
  const auto ids = tok.encode("Once upon the time");
  CHECK(std::find(ids.begin(), ids.end(), 258) != ids.end());  // " the" merged
  // the same continuation as the ids given directly, with the model's BOS first (no BOS in this tokenizer)
  std::string ids_text;
  for (int32_t id : ids) ids_text += " " + std::to_string(id);
  const fs::path pfile = ropex::test::temp_file("prompt_ids.txt", ids_text);
  auto r2 = run_cli("generate --model " + model + " --prompt-tokens " + q(pfile.string()) + " --steps 6 --json");
  REQUIRE_MESSAGE(r2.code == 0, r2.err);
  const auto tokens = j.at("tokens").get<std::vector<int32_t>>();
  CHECK(tokens == nlohmann::json::parse(r2.out).at("tokens").get<std::vector<int32_t>>());
  const std::string decoded = tok.decode(tokens, true, false);
  if (ropex::tokenizer::utf8::first_invalid(decoded) == std::string::npos)  // JSON carries U+FFFD for bad bytes
    CHECK(j.at("text").get<std::string>() == decoded);
  r = run_cli("generate --model " + model + " --prompt " + q("Once upon the time") + " --steps 6");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.out == decoded + "\n");  // plain output: the raw bytes
  // --prompt and --prompt-tokens exclude each other
  CHECK(run_cli("generate --model " + model + " --prompt x --prompt-tokens " + q(pfile.string()) + " --steps 1").code == 2);
  fs::remove(pfile);
}
