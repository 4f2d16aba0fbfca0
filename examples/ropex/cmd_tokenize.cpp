// ropex tokenize: text -> ids (and back) with a model's own tokenizer (a GGUF file's metadata, or a
// directory's tokenizer.json byte-level BPE, else tokenizer.model SentencePiece).
#include "cli.hpp"
#include "vocab.hpp"

#include <ropex/error.hpp>
#include <ropex/io/output_file.hpp>
#include <ropex/io/tokens.hpp>
#include <ropex/tokenizer/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct TokenizeOptions {
  std::string model, text_file, text, out, ids;
  bool json = false, bos = false, skip_special = false;
};

void run_tokenize(const TokenizeOptions& o) {
  const int given = int(!o.text_file.empty()) + int(!o.text.empty()) + int(!o.ids.empty());
  if (given != 1) throw ropex::cli::UsageError("tokenize: give exactly one of --text FILE, --string S or --ids FILE");
  const ropex::cli::ModelArg model = ropex::cli::resolve_model_path(o.model, "tokenize");
  auto inputs = ropex::cli::model_files(o.model);
  for (const auto& f : {o.text_file, o.ids})
    if (!f.empty()) inputs.emplace_back(f);
  if (!o.out.empty()) ropex::io::refuse_if_input(o.out, "--out", inputs);
  const auto tok = ropex::tokenizer::Tokenizer::from_model(o.model);
  const std::string kind = tok.kind() == ropex::tokenizer::Tokenizer::Kind::bpe ? "byte-level BPE" : "SentencePiece";

  // One JSON key set either way: tokens (the ids), text (decoded; null when encoding), tokenizer, kind, inputs.
  auto json = [&](const std::vector<int32_t>& ids, const nlohmann::ordered_json& text) {
    using ropex::cli::input_json;
    const auto none = input_json(nullptr, "not given");
    nlohmann::ordered_json j{{"tokens", ids}, {"text", text}, {"tokenizer", tok.file().string()}, {"kind", kind}};
    j["inputs"] = {{"model", model.json()},
                   {"text", o.text_file.empty() ? none : input_json(o.text_file, "flag --text")},
                   {"string", o.text.empty() ? none : input_json(o.text, "flag --string")},
                   {"ids", o.ids.empty() ? none : input_json(o.ids, "flag --ids")},
                   {"out", o.out.empty() ? none : input_json(o.out, "flag --out")},
                   {"bos", input_json(o.bos, o.bos ? "flag --bos" : "default off")},
                   {"skip_special", input_json(o.skip_special, o.skip_special ? "flag --skip-special" : "default off")}};
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  };
  if (!o.ids.empty()) {  // ids -> text
    const auto ids = ropex::io::read_tokens(o.ids);
    const std::string text = tok.decode(ids, o.skip_special);
    if (o.json)
      json(ids, text);
    else
      std::cout << text;
    return;
  }

  std::string text = o.text;
  if (!o.text_file.empty()) {
    try {  // regular files only, opened non-blocking: a FIFO is refused, not waited on
      text = ropex::read_regular_file(o.text_file);
    } catch (const ropex::Error& e) {
      throw ropex::make_error("--text", "", e.what());
    }
  }
  const auto ids = tok.encode(text, o.bos);
  if (!o.out.empty()) {  // int32 1-D .npy, what --tokens / --prompt-tokens and numpy.load read
    std::string bytes = ropex::io::npy_header("<i4", {ids.size()});
    bytes.append(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t));
    ropex::io::write_file_atomic(o.out, "--out", bytes, inputs);
  }
  if (o.json) {
    json(ids, nullptr);
  } else if (o.out.empty()) {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
  }
  std::fprintf(stderr, "%zu tokens from %zu bytes (%s, %s)\n", ids.size(), text.size(), kind.c_str(),
               tok.file().string().c_str());
}

}  // namespace

ROPEX_SUBCOMMAND(55, [](CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  auto* s = app.add_subcommand("tokenize",
                               "text -> token ids (or --ids back to text) with the model's tokenizer: a GGUF file's own, "
                               "or the directory's tokenizer.json (byte-level BPE) or tokenizer.model (SentencePiece)");
  s->add_option("--model", o->model,
                "HF model directory, GGUF file or llama2.c .bin (a .bin: the tokenizer beside it)")->required();
  s->add_option("--text", o->text_file, "text file to tokenize");
  s->add_option("--string", o->text, "text to tokenize, given inline");
  s->add_option("--ids", o->ids, "token ids (.npy int32/int64 or text) to decode to text");
  s->add_option("--out", o->out, "write the ids here as int32 .npy (atomically; never an input)");
  s->add_flag("--bos", o->bos, "add what the tokenizer adds (BOS for Llama-3; a GGUF file's tokenizer.ggml.add_bos_token)");
  s->add_flag("--skip-special", o->skip_special, "--ids: drop special tokens from the text");
  s->add_flag("--json", o->json, "print JSON: tokens (ids), text (--ids: the decoded text, else null), tokenizer, kind, inputs");
  s->callback([o] { run_tokenize(*o); });
});
