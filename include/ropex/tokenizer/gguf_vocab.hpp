// The tokenizer stored in a GGUF file's metadata (llama.cpp's tokenizer.ggml.* keys):
//
//   tokenizer.ggml.model  "gpt2"  byte-level BPE: .tokens (byte-level spelling), .merges ("a b", rank
//                                 order), .token_type, .pre (which split rule) -> BpeTokenizer::from_parts
//                         "llama" SentencePiece BPE: .tokens, .scores, .token_type -> SpmTokenizer (spm.hpp)
//                         others  refused by name
//   .pre -> the split regexes llama.cpp runs for that type (src/llama-vocab.cpp, llm_tokenizer_bpe),
//           written as in the families' tokenizer.json ((?i:'s|...) where llama.cpp spells '[sS]|...)
//   .token_type 3 (control) -> special added token, 4 (user-defined) -> added token, both matched
//           whole in the text (as transformers' GGUF loader and llama.cpp do); a control token
//           spelled outside the byte alphabet stays a plain vocabulary entry (transformers' rule)
//   "llama": .scores (f32, one per token), byte tokens <0xNN>, .add_space_prefix (default true), BOS by default
//   .bos_token_id / .eos_token_id / .eot_token_id / .eom_token_id; .add_bos_token (default: llama.cpp's
//           per-`pre` default: true for llama-bpe and the other Llama-3 names, else false), .add_eos_token
// Every key that changes the ids is read or refused naming the file and the key.
#pragma once
#include <ropex/error.hpp>
#include <ropex/model/gguf.hpp>
#include <ropex/tokenizer/bpe.hpp>
#include <ropex/tokenizer/spm.hpp>

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ropex::tokenizer {

namespace gguf_pre {

// The regexes of src/llama-vocab.cpp's llm_tokenizer_bpe, per pre-tokenizer type.
inline constexpr const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr const char* kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct Rule {
  std::vector<std::string> regexes;
  bool ignore_merges = false;
  bool add_bos = false;  ///< llama.cpp's default when tokenizer.ggml.add_bos_token is absent
};

/// llama.cpp's rule for `pre`, or nothing when ropex does not know it.
inline std::optional<Rule> rule(std::string_view pre) {
  const auto any = [&](std::initializer_list<std::string_view> names) {
    for (auto n : names)
      if (pre == n) return true;
    return false;
  };
  if (any({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"}))
    return Rule{{kLlama3}, true, true};
  if (any({"dbrx", "smaug-bpe"})) return Rule{{kLlama3}, false, false};
  if (any({"qwen2", "deepseek-r1-qwen", "stablelm2"})) return Rule{{kQwen2}, false, false};
  if (any({"smollm", "starcoder", "refact", "codeshell", "exaone", "minerva-7b"}))
    return Rule{{R"(\p{N})", kGpt2Pattern}, false, false};
  if (any({"gpt-2", "phi-2", "mpt", "olmo", "jais"})) return Rule{{kGpt2Pattern}, false, false};
  if (pre == "default")
    return Rule{{R"([\p{P}\$\+<=>\^~\|]+)", kGpt2Pattern, R"(\p{N}+)", R"([0-9][0-9][0-9])"}, false, false};
  return std::nullopt;
}

inline constexpr const char* kSupported =
    "llama-bpe, llama3, llama-v3, falcon3, falcon-h1, pixtral, midm-2.0, lfm2, dbrx, smaug-bpe, qwen2, "
    "deepseek-r1-qwen, stablelm2, smollm, starcoder, refact, codeshell, exaone, minerva-7b, gpt-2, phi-2, mpt, "
    "olmo, jais, default";

}  // namespace gguf_pre

/// Token types of tokenizer.ggml.token_type (llama.cpp llama_token_type / gguf-py TokenType).
enum class GgufTokenType : int32_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

namespace detail {

inline std::string gguf_key(std::string_view k) { return "key '" + std::string(k) + "'"; }

/// tokenizer.ggml.token_type as ints (absent: all normal); its length must match the tokens.
inline std::vector<int32_t> gguf_token_types(const model::GgufMetadata& md, size_t n) {
  std::vector<int32_t> types(n, int32_t(GgufTokenType::normal));
  const auto* v = md.find("tokenizer.ggml.token_type");
  if (!v) return types;
  const std::string k = gguf_key("tokenizer.ggml.token_type");
  if (v->type != model::GgufValueType::array || !model::gguf_is_integer(v->elem_type))
    throw make_error(md.source(), k, "expected an array of integers, got " + v->describe());
  if (v->count != n)
    throw make_error(md.source(), k, "has " + std::to_string(v->count) + " entries for " + std::to_string(n) + " tokens");
  for (size_t i = 0; i < n; ++i) {
    const auto t = v->at(i).integer_as<int32_t>();
    if (!t || *t < 0 || *t > 6) throw make_error(md.source(), k + "[" + std::to_string(i) + "]", "not a token type (0..6)");
    types[i] = *t;
  }
  return types;
}

/// An optional token id key; must name a token.
inline std::optional<int32_t> gguf_token_id(const model::GgufMetadata& md, std::string_view key, size_t n) {
  if (!md.contains(key)) return std::nullopt;
  const int64_t id = md.get_i64(key);
  if (id < 0) return std::nullopt;  // llama.cpp writes -1 for "none"
  if (uint64_t(id) >= n)
    throw make_error(md.source(), gguf_key(key), "id " + std::to_string(id) + " is outside tokenizer.ggml.tokens (" + std::to_string(n) + ")");
  return int32_t(id);
}

inline std::optional<bool> gguf_flag(const model::GgufMetadata& md, std::string_view key) {
  if (!md.contains(key)) return std::nullopt;
  return md.get_bool(key);
}

}  // namespace detail

/// BOS/EOS facts every GGUF tokenizer shares.
struct GgufSpecials {
  std::optional<int32_t> bos;
  std::vector<int32_t> eos;  ///< eos, eot, eom (distinct, in that order)
};

inline GgufSpecials gguf_specials(const model::GgufMetadata& md, size_t n) {
  GgufSpecials s;
  s.bos = detail::gguf_token_id(md, "tokenizer.ggml.bos_token_id", n);
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
    if (const auto id = detail::gguf_token_id(md, k, n); id && std::find(s.eos.begin(), s.eos.end(), *id) == s.eos.end())
      s.eos.push_back(*id);
  return s;
}

/// The byte-level BPE tokenizer of a GGUF whose tokenizer.ggml.model is "gpt2".
inline BpeTokenizer gguf_bpe_tokenizer(const model::GgufMetadata& md) {
  const std::string& src = md.source();
  const auto pre_v = md.find("tokenizer.ggml.pre");
  if (!pre_v)
    throw make_error(src, detail::gguf_key("tokenizer.ggml.pre"),
                     "missing: the file does not say how its text is split (llama.cpp falls back to 'default' "
                     "and warns that quality degrades); ropex refuses");
  const std::string pre(md.get_string("tokenizer.ggml.pre"));
  const auto rule = gguf_pre::rule(pre);
  if (!rule)
    throw make_error(src, detail::gguf_key("tokenizer.ggml.pre"),
                     "'" + pre + "' is not supported (" + gguf_pre::kSupported + ")");

  BpeTokenizer::Parts p;
  p.source = src;
  p.tokens_field = "tokenizer.ggml.tokens";
  p.merges_field = detail::gguf_key("tokenizer.ggml.merges");
  const auto& toks = md.get_string_array("tokenizer.ggml.tokens");
  if (toks.empty()) throw make_error(src, detail::gguf_key("tokenizer.ggml.tokens"), "is empty");
  const auto types = detail::gguf_token_types(md, toks.size());
  const auto& table = ByteLevelTable::get();
  const auto in_alphabet = [&](std::string_view t) {
    for (size_t i = 0; i < t.size();) {
      const size_t n = utf8::seq_len(t, i);
      if (n == 0) return false;
      const uint32_t cp = utf8::decode_at(t, i, n);
      if (cp >= table.from_codepoint.size() || table.from_codepoint[cp] < 0) return false;
      i += n;
    }
    return true;
  };
  p.tokens.reserve(toks.size());
  for (size_t i = 0; i < toks.size(); ++i) {
    const std::string_view t = toks[i];
    if (t.empty()) throw make_error(src, detail::gguf_key("tokenizer.ggml.tokens") + "[" + std::to_string(i) + "]", "is empty");
    if (utf8::first_invalid(t) != std::string_view::npos)
      throw make_error(src, detail::gguf_key("tokenizer.ggml.tokens") + "[" + std::to_string(i) + "]", "not valid UTF-8");
    const bool spelled = in_alphabet(t);
    p.tokens.push_back(spelled ? std::string(t) : table.encode(t));  // a raw-text token is respelled by its bytes
    const auto type = GgufTokenType(types[i]);
    if ((type == GgufTokenType::control && spelled) || type == GgufTokenType::user_defined) {
      AddedToken a;
      a.id = int32_t(i);
      a.content = std::string(t);
      a.special = type == GgufTokenType::control;
      p.added.push_back(std::move(a));
    }
  }
  p.merges = md.get_string_array("tokenizer.ggml.merges");
  p.split_regexes = rule->regexes;
  p.ignore_merges = rule->ignore_merges;
  const auto sp = gguf_specials(md, toks.size());
  p.bos = sp.bos;
  p.eos_ids = sp.eos;
  p.add_bos = detail::gguf_flag(md, "tokenizer.ggml.add_bos_token").value_or(rule->add_bos);
  p.add_eos = detail::gguf_flag(md, "tokenizer.ggml.add_eos_token").value_or(false);
  if (p.add_eos && !md.contains("tokenizer.ggml.eos_token_id"))
    throw make_error(src, detail::gguf_key("tokenizer.ggml.add_eos_token"), "is true but tokenizer.ggml.eos_token_id is missing");
  if (p.add_bos && !p.bos)
    throw make_error(src, detail::gguf_key("tokenizer.ggml.bos_token_id"), "missing, but the tokenizer adds BOS");
  return BpeTokenizer::from_parts(p);
}

/// The SentencePiece BPE tokenizer of a GGUF whose tokenizer.ggml.model is "llama".
inline SpmTokenizer gguf_spm_tokenizer(const model::GgufMetadata& md) {
  const std::string& src = md.source();
  SpmTokenizer::Parts p;
  p.source = src;
  const auto& toks = md.get_string_array("tokenizer.ggml.tokens");
  if (toks.empty()) throw make_error(src, detail::gguf_key("tokenizer.ggml.tokens"), "is empty");
  p.types = detail::gguf_token_types(md, toks.size());
  const auto& sc = md.get_array("tokenizer.ggml.scores");
  if (sc.elem_type != model::GgufValueType::f32 && sc.elem_type != model::GgufValueType::f64)
    throw make_error(src, detail::gguf_key("tokenizer.ggml.scores"), "expected an array of floats, got " + sc.describe());
  if (sc.count != toks.size())
    throw make_error(src, detail::gguf_key("tokenizer.ggml.scores"),
                     "has " + std::to_string(sc.count) + " entries for " + std::to_string(toks.size()) + " tokens");
  for (size_t i = 0; i < toks.size(); ++i) {
    const std::string_view t = toks[i];
    if (t.empty() || utf8::first_invalid(t) != std::string_view::npos)
      throw make_error(src, detail::gguf_key("tokenizer.ggml.tokens") + "[" + std::to_string(i) + "]", "empty or not valid UTF-8");
    p.tokens.emplace_back(t);
    p.scores.push_back(float(*sc.at(i).floating()));
    const auto type = GgufTokenType(p.types[i]);
    if (type == GgufTokenType::control || type == GgufTokenType::user_defined) {
      AddedToken a;
      a.id = int32_t(i);
      a.content = std::string(t);
      a.special = type == GgufTokenType::control;
      p.added.push_back(std::move(a));
    }
  }
  const auto sp = gguf_specials(md, toks.size());
  p.bos = sp.bos;
  p.eos_ids = sp.eos;
  p.unk = detail::gguf_token_id(md, "tokenizer.ggml.unknown_token_id", toks.size());
  p.add_bos = detail::gguf_flag(md, "tokenizer.ggml.add_bos_token").value_or(true);
  p.add_eos = detail::gguf_flag(md, "tokenizer.ggml.add_eos_token").value_or(false);
  p.add_space_prefix = detail::gguf_flag(md, "tokenizer.ggml.add_space_prefix").value_or(true);
  if (md.contains("tokenizer.ggml.precompiled_charsmap"))
    throw make_error(src, detail::gguf_key("tokenizer.ggml.precompiled_charsmap"), "a SentencePiece normalizer is not supported");
  return SpmTokenizer::from_parts(std::move(p));
}

}  // namespace ropex::tokenizer
