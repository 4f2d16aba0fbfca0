// One tokenizer for a model, whichever file the checkpoint ships (Tokenizer::from_model):
//   GGUF file: its tokenizer.ggml.* metadata                            -> gguf_vocab.hpp
//   directory: tokenizer.json with model.type "BPE" and a ByteLevel pre-tokenizer -> BpeTokenizer (bpe.hpp)
//              otherwise tokenizer.model                               -> SentencePiece (when built with it)
// A tokenizer.json that is neither (WordPiece, Unigram, Metaspace BPE) with no tokenizer.model next to
// it is loaded anyway, so the refusal names the field.
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/json_file.hpp>
#include <ropex/model/gguf.hpp>
#include <ropex/tokenizer/bpe.hpp>
#include <ropex/tokenizer/gguf_vocab.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#if defined(ROPEX_HAS_SENTENCEPIECE)
#include <sentencepiece_processor.h>
#endif

namespace ropex::tokenizer {

class Tokenizer {
 public:
  enum class Kind { bpe, sentencepiece };

  /// The tokenizer of a model: a GGUF file's own metadata (*.gguf or a file starting "GGUF"),
  /// else the directory's (or the file's directory's) tokenizer.json / tokenizer.model.
  static Tokenizer from_model(const std::filesystem::path& path) {
    std::error_code ec;  // the throwing overloads report a symlink loop as a bare "filesystem error"
    if (std::filesystem::is_regular_file(path, ec) && is_gguf(path)) return from_gguf(path);
    return from_model_dir(path);
  }

  /// The tokenizer in a GGUF file's metadata (tokenizer.ggml.model "gpt2" or "llama"; others refused by name).
  static Tokenizer from_gguf(const std::filesystem::path& path) {
    const auto f = model::GgufFile::open(path);
    return from_gguf_metadata(f.metadata(), path);
  }
  static Tokenizer from_gguf_metadata(const model::GgufMetadata& md, const std::filesystem::path& path) {
    const std::string type(md.get_string("tokenizer.ggml.model"));
    Tokenizer t;
    t.file_ = path;
    if (type == "gpt2") {
      t.kind_ = Kind::bpe;
      t.bpe_ = std::make_shared<BpeTokenizer>(gguf_bpe_tokenizer(md));
      return t;
    }
    if (type == "llama") {
      t.kind_ = Kind::sentencepiece;
      t.gspm_ = std::make_shared<SpmTokenizer>(gguf_spm_tokenizer(md));
      return t;
    }
    throw make_error(md.source(), "key 'tokenizer.ggml.model'", "'" + type + "' is not supported (gpt2, llama)");
  }

  static bool is_gguf(const std::filesystem::path& p) {
    if (p.extension() == ".gguf") return true;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) return false;  // never open (and wait on) a FIFO
    std::ifstream in(p, std::ios::binary);
    char m[4] = {};
    return in.read(m, 4) && std::string_view(m, 4) == "GGUF";
  }

  static Tokenizer from_model_dir(const std::filesystem::path& dir_or_file) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path dir = dir_or_file;
    if (!fs::is_directory(dir, ec)) dir = dir.parent_path();
    const auto tj = dir / "tokenizer.json", spm = dir / "tokenizer.model";
    // symlink_status: a dangling link or a loop counts as present, so loading it names the file
    const bool has_tj = fs::exists(fs::symlink_status(tj, ec)), has_spm = fs::exists(fs::symlink_status(spm, ec));
    if (has_tj && (!has_spm || is_byte_level_bpe(tj))) return from_tokenizer_json(tj);
    if (has_spm) return from_sentencepiece(spm);
    throw make_error(dir.string(), "", "no tokenizer.json or tokenizer.model in the model directory");
  }

  static Tokenizer from_tokenizer_json(const std::filesystem::path& path) {
    Tokenizer t;
    t.kind_ = Kind::bpe;
    t.file_ = path;
    t.bpe_ = std::make_shared<BpeTokenizer>(BpeTokenizer::from_file(path));
    return t;
  }

  static Tokenizer from_sentencepiece(const std::filesystem::path& path) {
#if defined(ROPEX_HAS_SENTENCEPIECE)
    Tokenizer t;
    t.kind_ = Kind::sentencepiece;
    t.file_ = path;
    t.spm_ = std::make_shared<sentencepiece::SentencePieceProcessor>();
    // Read by ropex (regular file, non-blocking open): sentencepiece's own Load would wait on a FIFO.
    if (const auto st = t.spm_->LoadFromSerializedProto(read_regular_file(path)); !st.ok())
      throw make_error(path.string(), "", "cannot load SentencePiece model: " + st.ToString());
    return t;
#else
    throw make_error(path.string(), "",
                     "this ropex was built without SentencePiece (install libsentencepiece-dev and reconfigure)");
#endif
  }

  Kind kind() const { return kind_; }
  /// The file the tokenizer was loaded from (tokenizer.json, tokenizer.model or the GGUF file).
  const std::filesystem::path& file() const { return file_; }

  /// Text -> ids, without BOS; add_bos puts the tokenizer's own prefix first (BOS where it adds one).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const {
    if (bpe_) return bpe_->encode(text, add_special_tokens);
    if (gspm_) return gspm_->encode(text, add_special_tokens);
#if defined(ROPEX_HAS_SENTENCEPIECE)
    std::vector<int> ids;
    if (const auto st = spm_->Encode(std::string(text), &ids); !st.ok())
      throw make_error(file_.string(), "", "tokenization failed: " + st.ToString());
    std::vector<int32_t> out;
    if (add_special_tokens && spm_->bos_id() >= 0) out.push_back(spm_->bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
#else
    return {};
#endif
  }

  /// Ids -> text; an unknown id is an error when `strict`, else dropped.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false, bool strict = true) const {
    if (bpe_) return bpe_->decode(ids, skip_special, strict);
    if (gspm_) return gspm_->decode(ids, skip_special, strict);
#if defined(ROPEX_HAS_SENTENCEPIECE)
    std::vector<int> v;
    for (int32_t id : ids) {
      if (id < 0 || id >= spm_->GetPieceSize()) {
        if (!strict) continue;
        throw make_error("ids", "", "id " + std::to_string(id) + " is not in the vocabulary of " + file_.string());
      }
      if (!(skip_special && spm_->IsControl(id))) v.push_back(id);
    }
    std::string out;
    if (const auto st = spm_->Decode(v, &out); !st.ok()) throw make_error(file_.string(), "", "decode failed: " + st.ToString());
    return out;
#else
    (void)skip_special, (void)strict;
    return {};
#endif
  }

  std::optional<int32_t> bos_id() const {
    if (bpe_) return bpe_->bos_id();
    if (gspm_) return gspm_->bos_id();
#if defined(ROPEX_HAS_SENTENCEPIECE)
    if (spm_->bos_id() >= 0) return spm_->bos_id();
#endif
    return std::nullopt;
  }
  /// End-of-sequence ids the tokenizer knows of (tokenizer_config.json's eos_token, SentencePiece's
  /// eos); a model's config.json may list more.
  std::vector<int32_t> eos_ids() const {
    if (bpe_) return bpe_->eos_ids();
    if (gspm_) return gspm_->eos_ids();
#if defined(ROPEX_HAS_SENTENCEPIECE)
    if (spm_->eos_id() >= 0) return {spm_->eos_id()};
#endif
    return {};
  }

  const BpeTokenizer* bpe() const { return bpe_.get(); }

 private:
  // Cheap check before the full load: model.type BPE and a ByteLevel pre-tokenizer or decoder.
  static bool is_byte_level_bpe(const std::filesystem::path& p) {
    nlohmann::json j;
    try {
      j = read_json_file(p);
    } catch (const Error&) {
      return true;  // the full load reports what is wrong
    }
    if (!j.is_object()) return true;
    const auto model_type = j.contains("model") && j["model"].is_object() ? j["model"].value("type", std::string()) : "";
    const std::string dump = j.value("pre_tokenizer", nlohmann::json()).dump() + j.value("decoder", nlohmann::json()).dump();
    return model_type == "BPE" && dump.find("\"ByteLevel\"") != std::string::npos;
  }

  Kind kind_ = Kind::bpe;
  std::filesystem::path file_;
  std::shared_ptr<const BpeTokenizer> bpe_;
  std::shared_ptr<const SpmTokenizer> gspm_;  // a GGUF file's SentencePiece BPE (scores, byte fallback)
#if defined(ROPEX_HAS_SENTENCEPIECE)
  std::shared_ptr<sentencepiece::SentencePieceProcessor> spm_;
#endif
};

}  // namespace ropex::tokenizer
