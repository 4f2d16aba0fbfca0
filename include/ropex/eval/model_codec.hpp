// A model's tokenizer as the encode/decode pair the evaluations take (eval::TextCodec): encode
// starts with what the model starts a document with (a GGUF file's add_bos_token, else the
// config's BOS) and refuses ids outside the model's vocabulary, naming the tokenizer file.
// Shared by `ropex passkey` / `ropex check` and the Python module.
#pragma once
#include <ropex/error.hpp>
#include <ropex/eval/passkey.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/tokenizer/tokenizer.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ropex::eval {

struct ModelCodec {
  std::string file;  ///< the tokenizer's file
  TextCodec codec;
};

/// The tokenizer at `tokenizer_path` (a directory, tokenizer.json/.model or GGUF file), or the
/// checkpoint's own when it is empty.
inline ModelCodec model_codec(const model::Checkpoint& ck, const std::string& tokenizer_path = "") {
  const std::string path = tokenizer_path.empty() ? ck.path().string() : tokenizer_path;
  const auto tok = std::make_shared<const tokenizer::Tokenizer>(tokenizer::Tokenizer::from_model(path));
  const bool gguf = tokenizer::Tokenizer::is_gguf(path);
  const int64_t bos = ck.config().bos_token_id, vocab = ck.config().vocab_size;
  const std::string file = tok->file().string();
  ModelCodec m{file, {}};
  m.codec.encode = [tok, gguf, bos, vocab, file](const std::string& text) {
    std::vector<int32_t> ids;
    if (gguf) {
      ids = tok->encode(text, /*add_special_tokens=*/true);
    } else {
      if (bos >= 0) ids.push_back(int32_t(bos));
      const auto t = tok->encode(text);
      ids.insert(ids.end(), t.begin(), t.end());
    }
    for (int32_t id : ids)
      if (id < 0 || id >= vocab)
        throw make_error(file, "", "token id " + std::to_string(id) + " is outside the model's vocabulary (" + std::to_string(vocab) + ")");
    return ids;
  };
  m.codec.decode = [tok](const std::vector<int32_t>& ids) { return tok->decode(ids, /*skip_special=*/true, /*strict=*/false); };
  return m;
}

}  // namespace ropex::eval
