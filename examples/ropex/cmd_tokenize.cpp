// ropex tokenize: text -> ids (and back) with a model's own tokenizer (a GGUF file's metadata, or a
// directory's tokenizer.json byte-level BPE, else tokenizer.model SentencePiece).
#include "cli.hpp"

#include <ropex/error.hpp>
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

// int32 1-D .npy (format 1.0), what `--tokens` / `--prompt-tokens` and numpy.load read.
void write_ids_npy(const std::string& path, const std::vector<int32_t>& ids) {
  std::string dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (" + std::to_string(ids.size()) + ",), }";
  while ((10 + dict.size() + 1) % 64 != 0) dict += ' ';
  dict += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw ropex::make_error("--out", path, "cannot open for writing");
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t n = uint16_t(dict.size());
  f.write(reinterpret_cast<const char*>(&n), 2);
  f.write(dict.data(), std::streamsize(dict.size()));
  f.write(reinterpret_cast<const char*>(ids.data()), std::streamsize(ids.size() * sizeof(int32_t)));
  f.close();
  if (!f) throw ropex::make_error("--out", path, "write failed");
}

void run_tokenize(const TokenizeOptions& o) {
  const int given = int(!o.text_file.empty()) + int(!o.text.empty()) + int(!o.ids.empty());
  if (given != 1) throw ropex::cli::UsageError("tokenize: give exactly one of --text FILE, --string S or --ids FILE");
  const auto tok = ropex::tokenizer::Tokenizer::from_model(o.model);
  const std::string kind = tok.kind() == ropex::tokenizer::Tokenizer::Kind::bpe ? "byte-level BPE" : "SentencePiece";

  if (!o.ids.empty()) {  // ids -> text
    const auto ids = ropex::io::read_tokens(o.ids);
    const std::string text = tok.decode(ids, o.skip_special);
    if (o.json)
      std::cout << nlohmann::json{{"text", text}, {"tokens", ids.size()}, {"tokenizer", tok.file().string()}}
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
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
  if (!o.out.empty()) write_ids_npy(o.out, ids);
  if (o.json) {
    std::cout << nlohmann::json{{"tokens", ids}, {"tokenizer", tok.file().string()}, {"kind", kind}}.dump() << "\n";
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
  s->add_option("--model", o->model, "HF model directory, GGUF file or llama2.c .bin (a file in a directory: the directory's tokenizer)")->required();
  s->add_option("--text", o->text_file, "text file to tokenize");
  s->add_option("--string", o->text, "text to tokenize, given inline");
  s->add_option("--ids", o->ids, "token ids (.npy int32/int64 or text) to decode to text");
  s->add_option("--out", o->out, "write the ids here as int32 .npy");
  s->add_flag("--bos", o->bos, "add what the tokenizer adds (BOS for Llama-3; a GGUF file's tokenizer.ggml.add_bos_token)");
  s->add_flag("--skip-special", o->skip_special, "--ids: drop special tokens from the text");
  s->add_flag("--json", o->json, "print JSON: {\"tokens\": [...], \"tokenizer\": file} (with --ids: {\"text\": ...})");
  s->callback([o] { run_tokenize(*o); });
});
