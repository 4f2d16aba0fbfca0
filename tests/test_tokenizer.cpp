// Byte-level BPE (tokenizer/bpe.hpp) against Hugging Face `tokenizers`: ids of the fixture texts for
// Llama-3, Qwen2.5 and SmolLM2 (tests/fixtures/tokenizer/, scripts/make_tokenizer_fixtures.py), on the
// committed reduced tokenizer.json files and, where `make_tokenizer_fixtures.py fetch` has put them in
// .models/tokenizers/, on the full files. Plus the loader's refusals, one per malformed field.
#include <ropex/tokenizer/tokenizer.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using ropex::tokenizer::BpeTokenizer;
using ropex::tokenizer::Tokenizer;

namespace {

const fs::path kFix = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "tokenizer";
const fs::path kFull = fs::path(ROPEX_SOURCE_DIR) / ".models" / "tokenizers";
const char* const kFamilies[] = {"llama3", "qwen2.5", "smollm2"};

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << p);
  return nlohmann::json::parse(in);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void check_family(const BpeTokenizer& tok, const nlohmann::json& fixture, const std::string& what) {
  for (const auto& [name, t] : fixture["texts"].items()) {
    CAPTURE(what);
    CAPTURE(name);
    const std::string text = t["text"].get<std::string>();
    const auto want = t["ids"].get<std::vector<int32_t>>();
    const auto got = tok.encode(text);
    CHECK(got == want);
    if (got != want) {
      for (size_t i = 0; i < std::min(got.size(), want.size()); ++i)
        if (got[i] != want[i]) {
          MESSAGE("first difference at " << i << ": got " << got[i] << ", HF " << want[i]);
          break;
        }
    }
    CHECK(tok.encode(text, true) == t["ids_with_special"].get<std::vector<int32_t>>());
    // HF's decode of its own ids (equal to the text except where NFC composed it)
    CHECK(tok.decode(want) == t["decoded"].get<std::string>());
    CHECK(tok.encode(tok.decode(want)) == want);
  }
}

// A small valid byte-level tokenizer: vocab = the 256 byte symbols + "ab", "abc", "Ġa".
nlohmann::json tiny() {
  nlohmann::json vocab = nlohmann::json::object();
  const auto& table = ropex::tokenizer::ByteLevelTable::get();
  for (int b = 0; b < 256; ++b) vocab[table.to_unicode[size_t(b)]] = b;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  vocab["Ġa"] = 258;
  return {{"version", "1.0"},
          {"added_tokens", {{{"id", 259}, {"content", "<s>"}, {"special", true}, {"lstrip", false},
                             {"rstrip", false}, {"normalized", false}, {"single_word", false}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"post_processor", {{"type", "TemplateProcessing"},
                              {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                              {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {259}}, {"tokens", {"<s>"}}}}}}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array({"a b", "ab c", "Ġ a"})}, {"ignore_merges", false}}}};
}

}  // namespace

TEST_CASE("byte-level BPE ids equal HF tokenizers for Llama-3, Qwen2.5, SmolLM2 (reduced files)") {
  for (const char* fam : kFamilies) {
    const auto tok = BpeTokenizer::from_file(kFix / fam / "tokenizer.json");
    check_family(tok, read_json(kFix / (std::string(fam) + ".ids.json")), std::string(fam) + " (reduced)");
  }
}

TEST_CASE("byte-level BPE ids equal HF tokenizers on the full tokenizer.json files") {
  for (const char* fam : kFamilies) {
    const auto path = kFull / fam / "tokenizer.json";
    if (!fs::exists(path)) {
      MESSAGE("skipped " << fam << ": " << path << " absent (scripts/make_tokenizer_fixtures.py fetch)");
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const auto tok = Tokenizer::from_model_dir(kFull / fam);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE(tok.kind() == Tokenizer::Kind::bpe);
    check_family(*tok.bpe(), read_json(kFix / (std::string(fam) + ".ids.json")), std::string(fam) + " (full)");

    // encode speed on ~1 MB of the multilingual text (a measurement, printed, not asserted)
    const std::string base = read_json(kFix / (std::string(fam) + ".ids.json"))["texts"]["multilingual"]["text"];
    std::string big;
    while (big.size() < (1u << 20)) big += base + "\n";
    const auto t1 = std::chrono::steady_clock::now();
    const auto ids = tok.encode(big);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    CHECK(tok.decode(ids) == (std::string(fam) == "qwen2.5" ? tok.decode(tok.encode(big)) : big));
    std::printf("%s: load %.2f s; encode %.2f MB -> %zu tokens in %.3f s (%.0f tokens/s, %.1f MB/s)\n", fam, load_s,
                double(big.size()) / 1e6, ids.size(), s, double(ids.size()) / s, double(big.size()) / 1e6 / s);
  }
}

TEST_CASE("special tokens inside text are one id each; partial ones are plain text") {
  const auto qwen = BpeTokenizer::from_file(kFix / "qwen2.5" / "tokenizer.json");
  const auto im_start = qwen.token_to_id("<|im_start|>");
  REQUIRE(im_start.has_value());
  CHECK(*im_start == 151644);
  const auto ids = qwen.encode("<|im_start|><|im_start|>");
  CHECK(ids == std::vector<int32_t>{151644, 151644});
  const auto partial = qwen.encode("<|im_end");
  CHECK(std::find(partial.begin(), partial.end(), 151645) == partial.end());
  CHECK(qwen.decode(qwen.encode("a<|im_end|>b")) == "a<|im_end|>b");
  CHECK(qwen.decode(qwen.encode("a<|im_end|>b"), /*skip_special=*/true) == "ab");
  // non-special added tokens (Qwen2.5's <tool_call>) also split out
  const auto tc = qwen.token_to_id("<tool_call>");
  REQUIRE(tc.has_value());
  CHECK(qwen.encode("<tool_call>") == std::vector<int32_t>{*tc});
}

TEST_CASE("merges in both formats, ignore_merges, BOS from the template and from tokenizer_config.json") {
  const auto a = BpeTokenizer::from_json_text(tiny().dump(), "tiny.json");
  auto j = tiny();
  j["model"]["merges"] = nlohmann::json::array({nlohmann::json::array({"a", "b"}), nlohmann::json::array({"ab", "c"}),
                                              nlohmann::json::array({"Ġ", "a"})});
  const auto b = BpeTokenizer::from_json_text(j.dump(), "tiny.json");
  CHECK(a.encode("abc abcab a") == std::vector<int32_t>{257, 32, 257, 256, 258});
  CHECK(b.encode("abc abcab a") == a.encode("abc abcab a"));
  CHECK(a.encode("abc", true) == std::vector<int32_t>{259, 257});
  CHECK(a.bos_id() == 259);
  // ignore_merges: a pre-token found whole in the vocab is emitted even when the merges would not reach it
  j = tiny();
  j["model"]["vocab"]["bc"] = 260;
  j["model"]["merges"] = nlohmann::json::array({"b c", "a b"});  // "abc" by merges: a + bc (no "a bc" merge) -> two ids
  CHECK(BpeTokenizer::from_json_text(j.dump(), "t.json").encode("abc") == std::vector<int32_t>{'a', 260});
  j["model"]["ignore_merges"] = true;
  CHECK(BpeTokenizer::from_json_text(j.dump(), "t.json").encode("abc") == std::vector<int32_t>{257});
  // tokenizer_config.json's add_bos_token overrides the template
  const auto no_bos = BpeTokenizer::from_json_text(tiny().dump(), "tiny.json", {{"add_bos_token", false}, {"bos_token", "<s>"}});
  CHECK(no_bos.encode("abc", true) == std::vector<int32_t>{257});
  // lstrip / rstrip absorb the whitespace next to the added token
  j = tiny();
  j["added_tokens"][0]["lstrip"] = true;
  j["added_tokens"][0]["rstrip"] = true;
  CHECK(BpeTokenizer::from_json_text(j.dump(), "t.json").encode("ab  <s>  ab") == std::vector<int32_t>{256, 259, 256});
  // a long run merges in O(n log n) and gives the obvious result
  CHECK(a.encode(std::string(100000, 'x')).size() == 100000);
}

TEST_CASE("Tokenizer::from_model_dir picks tokenizer.json and reports the file") {
  const auto t = Tokenizer::from_model_dir(kFix / "llama3");
  CHECK(t.kind() == Tokenizer::Kind::bpe);
  CHECK(t.file().filename() == "tokenizer.json");
  CHECK(t.bos_id() == 128000);
  CHECK_THROWS_WITH_AS(Tokenizer::from_model_dir(kFix), doctest::Contains("no tokenizer.json or tokenizer.model"), ropex::Error);
}

TEST_CASE("malformed tokenizer.json: one error naming the file and the field") {
  struct Case {
    const char* field;
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Case> cases = {
      {"model.type", [](auto& j) { j["model"]["type"] = "WordPiece"; }},
      {"model.type", [](auto& j) { j["model"]["type"] = "Unigram"; }},
      {"model.type", [](auto& j) { j["model"].erase("type"); }},
      {"model", [](auto& j) { j.erase("model"); }},
      {"model.vocab", [](auto& j) { j["model"]["vocab"] = nlohmann::json::array(); }},
      {"model.vocab[\"ab\"]", [](auto& j) { j["model"]["vocab"]["ab"] = -1; }},
      {"model.merges", [](auto& j) { j["model"]["merges"] = "a b"; }},
      {"model.merges[1]", [](auto& j) { j["model"]["merges"][1] = "abc"; }},
      {"model.merges[1]", [](auto& j) { j["model"]["merges"][1] = nlohmann::json::array({"ab"}); }},
      {"model.merges[0]", [](auto& j) { j["model"]["merges"][0] = "a q\xC3\xA9"; }},
      {"model.merges[2]", [](auto& j) { j["model"]["merges"][2] = "b a"; }},
      {"model.byte_fallback", [](auto& j) { j["model"]["byte_fallback"] = true; }},
      {"model.dropout", [](auto& j) { j["model"]["dropout"] = 0.1; }},
      {"model.ignore_merges", [](auto& j) { j["model"]["ignore_merges"] = "yes"; }},
      {"added_tokens[0].id", [](auto& j) { j["added_tokens"][0]["id"] = "259"; }},
      {"added_tokens[0].content", [](auto& j) { j["added_tokens"][0]["content"] = ""; }},
      {"added_tokens[0].single_word", [](auto& j) { j["added_tokens"][0]["single_word"] = true; }},
      {"normalizer.type", [](auto& j) { j["normalizer"] = {{"type", "NFKC"}}; }},
      {"normalizer.type", [](auto& j) { j["normalizer"] = {{"type", "Lowercase"}}; }},
      {"pre_tokenizer.type", [](auto& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }},
      {"pre_tokenizer", [](auto& j) { j["pre_tokenizer"] = nullptr; }},
      {"pre_tokenizer.pretokenizers[0].pattern.Regex",
       [](auto& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "(\\p{L}"}}}, {"behavior", "Isolated"}},
                                                  {{"type", "ByteLevel"}, {"use_regex", false}}}}};
       }},
      {"pre_tokenizer.pretokenizers[0].behavior",
       [](auto& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "\\s"}}}, {"behavior", "Removed"}},
                                                  {{"type", "ByteLevel"}}}}};
       }},
      {"pre_tokenizer.pretokenizers[0].pattern",
       [](auto& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Isolated"}},
                                                  {{"type", "ByteLevel"}}}}};
       }},
      {"post_processor.type", [](auto& j) { j["post_processor"] = {{"type", "BertLike"}}; }},
      {"post_processor.single", [](auto& j) { j["post_processor"]["special_tokens"] = nlohmann::json::object(); }},
      {"decoder.type", [](auto& j) { j["decoder"] = {{"type", "WordPiece"}}; }},
      {"decoder", [](auto& j) { j.erase("decoder"); }},
  };
  for (const auto& c : cases) {
    auto j = tiny();
    c.edit(j);
    CAPTURE(c.field);
    std::string msg;
    try {
      BpeTokenizer::from_json_text(j.dump(), "bad/tokenizer.json");
      FAIL("accepted a malformed file");
    } catch (const ropex::Error& e) {
      msg = e.what();
    }
    CHECK(msg.find("bad/tokenizer.json: ") == 0);
    CHECK(msg.find(std::string(c.field) + ": ") != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
  CHECK_THROWS_WITH_AS(BpeTokenizer::from_json_text("{\"model\": ", "x.json"), doctest::Contains("x.json: malformed JSON: "), ropex::Error);
  CHECK_THROWS_WITH_AS(BpeTokenizer::from_file(kFix / "absent.json"), doctest::Contains("absent.json: cannot open"), ropex::Error);
  const auto a = BpeTokenizer::from_json_text(tiny().dump(), "tiny.json");
  CHECK_THROWS_WITH_AS(a.encode("\xC3("), "text: not valid UTF-8 at byte 0", ropex::Error);
  CHECK_THROWS_WITH_AS(a.decode({999}), doctest::Contains("id 999 is not in the vocabulary"), ropex::Error);
}

// ------------------------------------------------------------------ tokenizers inside GGUF files
// tests/fixtures/gguf_cli/<name>.tokens.json (scripts/make_gguf_cli_reference.py): HF ids of the texts
// for SmolLM2's GGUF and the vocab-only GGUFs llama-cpp-python vendors; the BPE ones (1.7-7.8 MB) live in
// .models/ (skipped with a message when absent), the sentencepiece ones (< 1 MB) in the fixtures, so
// the sentencepiece path (tokenizer.ggml.model "llama": scores, <0xNN> byte fallback) always runs.
namespace {

const fs::path kGgufFix = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "gguf_cli";

fs::path gguf_of(const nlohmann::json& fx) {
  const fs::path p = fs::path(ROPEX_SOURCE_DIR) / fx["file"].get<std::string>();
  if (fs::exists(p)) return p;
  const fs::path local = kGgufFix / p.filename();
  return fs::exists(local) ? local : p;
}

// llama.cpp's own test vectors for the file (ggml-vocab-*.gguf.inp/.out): ids from the original tokenizer.json.
int check_llama_cpp_vectors(const Tokenizer& tok, const fs::path& gguf) {
  if (!fs::exists(fs::path(gguf.string() + ".inp"))) return -1;
  const std::string inp = slurp(gguf.string() + ".inp"), out = slurp(gguf.string() + ".out");
  std::vector<std::string> texts, lines;
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t b = 0;;) {
    const size_t e = inp.find(sep, b);
    texts.push_back(inp.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + sep.size();
  }
  std::istringstream ls(out);
  for (std::string l; std::getline(ls, l);) lines.push_back(l);
  CHECK(lines.size() + 1 >= texts.size());
  lines.resize(texts.size());  // the last text's ids may be an empty last line
  int equal = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<int32_t> want;
    std::istringstream is(lines[i]);
    for (int32_t v; is >> v;) want.push_back(v);
    const auto got = tok.encode(texts[i]);
    CAPTURE(texts[i]);
    CHECK(got == want);
    equal += got == want;
  }
  return equal;
}

}  // namespace

TEST_CASE("GGUF tokenizers: ids equal HF's from the same file, and llama.cpp's test vectors") {
  for (const std::string name : {"smollm2", "llama-bpe", "qwen2", "gpt-2", "llama-spm", "phi-3"}) {
    CAPTURE(name);
    const auto fx = read_json(kGgufFix / (name + ".tokens.json"));
    const fs::path gguf = gguf_of(fx);
    if (!fs::exists(gguf)) {
      MESSAGE("skipped " << name << ": " << gguf << " absent (scripts/fetch_models.sh; scripts/make_tokenizer_fixtures.py fetch)");
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const auto tok = Tokenizer::from_model(gguf);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(tok.file() == gguf);
    int texts = 0, same_as_hf_gguf = 0;
    for (const auto& [tname, t] : fx["texts"].items()) {
      CAPTURE(tname);
      std::string text = t["text"].get<std::string>();
      if (tname == "gpl3") {
        if (!fs::exists(text)) continue;
        text = slurp(text);
      }
      const auto want = t["ids"].get<std::vector<int32_t>>();
      const auto got = tok.encode(text);
      CHECK(got == want);
      CHECK(tok.decode(got) == t["decoded"].get<std::string>());
      ++texts;
      if (t["same_as_hf_gguf"].get<bool>()) {
        CHECK(got == t["hf_gguf"].get<std::vector<int32_t>>());
        ++same_as_hf_gguf;
      }
    }
    const int vec = check_llama_cpp_vectors(tok, gguf);
    MESSAGE(name << " (pre " << fx["tokenizer.ggml.pre"].get<std::string>() << "): " << texts << " texts equal HF, "
                 << same_as_hf_gguf << " of them also transformers' GGUF loader as is; llama.cpp vectors equal: "
                 << (vec < 0 ? std::string("none shipped") : std::to_string(vec)) << "; load " << load_s << " s");
  }
}

namespace {

// An in-memory GGUF tokenizer: tokens = the 256 byte symbols + "ab" + "<|end|>" (control), merges "a b".
struct MiniGguf {
  std::vector<std::string> tokens;
  std::vector<std::string> merges{"a b"};
  std::vector<int32_t> types;
  std::string model = "gpt2", pre = "gpt-2";
  ropex::model::GgufMetadata md{"mini.gguf"};

  MiniGguf() {
    const auto& table = ropex::tokenizer::ByteLevelTable::get();
    for (int b = 0; b < 256; ++b) tokens.push_back(table.to_unicode[size_t(b)]);
    tokens.push_back("ab");
    tokens.push_back("<|end|>");
    types.assign(tokens.size(), 1);
    types.back() = 3;
  }
  static ropex::model::GgufValue str(std::string_view s) {
    ropex::model::GgufValue v;
    v.type = ropex::model::GgufValueType::string;
    v.str = s;
    return v;
  }
  static ropex::model::GgufValue strings(const std::vector<std::string>& list) {
    ropex::model::GgufValue v;
    v.type = ropex::model::GgufValueType::array;
    v.elem_type = ropex::model::GgufValueType::string;
    v.count = list.size();
    for (const auto& s : list) v.strings.emplace_back(s);
    return v;
  }
  const ropex::model::GgufMetadata& build(bool with_pre = true) {
    md = ropex::model::GgufMetadata{"mini.gguf"};
    md.add("tokenizer.ggml.model", str(model));
    if (with_pre) md.add("tokenizer.ggml.pre", str(pre));
    md.add("tokenizer.ggml.tokens", strings(tokens));
    md.add("tokenizer.ggml.merges", strings(merges));
    ropex::model::GgufValue t;
    t.type = ropex::model::GgufValueType::array;
    t.elem_type = ropex::model::GgufValueType::i32;
    t.count = types.size();
    t.elems = reinterpret_cast<const std::byte*>(types.data());
    md.add("tokenizer.ggml.token_type", t);
    ropex::model::GgufValue e;
    e.type = ropex::model::GgufValueType::u32;
    e.bits = uint32_t(tokens.size() - 1);
    md.add("tokenizer.ggml.eos_token_id", e);
    return md;
  }
};

std::string gguf_error(MiniGguf& g, bool with_pre = true) {
  try {
    Tokenizer::from_gguf_metadata(g.build(with_pre), "mini.gguf");
  } catch (const ropex::Error& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST_CASE("GGUF tokenizer metadata: control tokens split out, eos ids, and refusals naming the key") {
  MiniGguf g;
  const auto tok = Tokenizer::from_gguf_metadata(g.build(), "mini.gguf");
  CHECK(tok.encode("ab<|end|>a b") == std::vector<int32_t>{256, 257, 'a', 0x20 + 0, 'b'});
  CHECK(tok.eos_ids() == std::vector<int32_t>{257});
  CHECK(tok.decode({256, 257}) == "ab<|end|>");
  CHECK(tok.decode({256, 257}, /*skip_special=*/true) == "ab");

  g.pre = "deepseek-llm";
  CHECK(gguf_error(g) == std::string("mini.gguf: key 'tokenizer.ggml.pre': 'deepseek-llm' is not supported (") +
                             ropex::tokenizer::gguf_pre::kSupported + ")");
  g.pre = "gpt-2";
  CHECK(gguf_error(g, false).find("mini.gguf: key 'tokenizer.ggml.pre': missing") == 0);
  g.model = "bert";
  CHECK(gguf_error(g) == "mini.gguf: key 'tokenizer.ggml.model': 'bert' is not supported (gpt2, llama)");
  g.model = "gpt2";
  g.merges = {"a c"};
  CHECK(gguf_error(g) == "mini.gguf: key 'tokenizer.ggml.merges'[0]: merged token 'ac' is not in tokenizer.ggml.tokens");
  g.merges = {"ab"};
  CHECK(gguf_error(g).find("mini.gguf: key 'tokenizer.ggml.merges'[0]: must be \"left right\"") == 0);
  g.merges = {"a b"};
  g.types.pop_back();
  CHECK(gguf_error(g) == "mini.gguf: key 'tokenizer.ggml.token_type': has 257 entries for 258 tokens");
}
