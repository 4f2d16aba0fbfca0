// Byte-level BPE, as Hugging Face `tokenizers` runs it from a tokenizer.json (GPT-2, Llama-3,
// Qwen2/2.5, SmolLM2, Mistral-Nemo):
//
//   text ──added tokens split out──► pieces ──normalizer (NFC)──► pre-tokenizer (Split regex /
//   Digits / ByteLevel: bytes → printable code points) ──► BPE merges per pre-token ──► ids
//   (+ BOS from the post-processor or tokenizer_config.json's add_bos_token)
//
// Every field that changes the ids is honoured or refused by name. Regexes are the file's own,
// compiled by PCRE2 (UTF + UCP, JIT when available); without PCRE2 the loader refuses.
#pragma once
#include <ropex/error.hpp>
#include <ropex/io/json_file.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <cstdlib>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#if defined(ROPEX_HAS_PCRE2)
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#endif
#if defined(ROPEX_HAS_UTF8PROC)
#include <utf8proc.h>
#endif

namespace ropex::tokenizer {

// ------------------------------------------------------------------------------------ UTF-8
namespace utf8 {

inline void append(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18));
    s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
}

/// Length of the valid UTF-8 sequence at s[i], or 0 when it is not one (overlong, surrogate, > U+10FFFF).
inline size_t seq_len(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return uint8_t(s[i + k]); };
  const uint8_t c = b(0);
  const size_t left = s.size() - i;
  const auto cont = [&](size_t k) { return k < left && (b(k) & 0xC0) == 0x80; };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(1) >= 0xA0) return 0;  // surrogates
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;
    if (c == 0xF4 && b(1) >= 0x90) return 0;
    return 4;
  }
  return 0;
}

/// Byte offset of the first invalid sequence, or npos when `s` is valid UTF-8.
inline size_t first_invalid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = seq_len(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

inline uint32_t decode_at(std::string_view s, size_t i, size_t n) {
  const auto b = [&](size_t k) { return uint32_t(uint8_t(s[i + k])); };
  switch (n) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

}  // namespace utf8

// ------------------------------------------------------------------------- byte <-> unicode
/// GPT-2's reversible byte-to-unicode table (openai/gpt-2 encoder.py `bytes_to_unicode`): the 188
/// printable Latin-1 bytes map to themselves, the other 68 to U+0100.. in byte order, so every
/// byte string becomes printable text without spaces or control characters (space -> 'Ġ').
struct ByteLevelTable {
  std::array<std::string, 256> to_unicode;    // byte -> UTF-8 of its code point
  std::array<int16_t, 324> from_codepoint{};  // code point (< 0x144) -> byte, or -1

  ByteLevelTable() {
    from_codepoint.fill(-1);
    const auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = printable(b) ? uint32_t(b) : next++;
      to_unicode[size_t(b)].clear();
      utf8::append(to_unicode[size_t(b)], cp);
      from_codepoint[cp] = int16_t(b);
    }
  }
  static const ByteLevelTable& get() {
    static const ByteLevelTable t;
    return t;
  }
  std::string encode(std::string_view bytes) const {
    std::string out;
    out.reserve(bytes.size() * 2);
    for (char c : bytes) out += to_unicode[uint8_t(c)];
    return out;
  }
};

// ------------------------------------------------------------------------------------ regex
/// A compiled split pattern. find_all returns the [begin, end) byte ranges of the matches, in order.
class Regex {
 public:
  Regex(const std::string& pattern, std::string_view source, std::string_view field) {
#if defined(ROPEX_HAS_PCRE2)
    int err = 0;
    PCRE2_SIZE off = 0;
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr));
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw make_error(source, field,
                       "PCRE2 cannot compile the pattern at offset " + std::to_string(off) + ": " +
                           reinterpret_cast<const char*>(msg));
    }
    jit_ = pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE) == 0;
#else
    (void)pattern;
    throw make_error(source, field,
                     "this ropex was built without PCRE2 (install libpcre2-dev and rebuild) and cannot "
                     "run the tokenizer's split regex");
#endif
  }

  bool jit() const { return jit_; }

  /// `s` must be valid UTF-8 (checked once by the caller).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
    std::vector<std::pair<size_t, size_t>> out;
#if defined(ROPEX_HAS_PCRE2)
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), &pcre2_match_data_free);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t start = 0;
    while (start <= s.size()) {
      const int rc = jit_ ? pcre2_jit_match(code_.get(), subject, s.size(), start, PCRE2_NO_UTF_CHECK, md.get(), nullptr)
                          : pcre2_match(code_.get(), subject, s.size(), start, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) throw make_error("tokenizer", "pre_tokenizer", "PCRE2 match failed (error " + std::to_string(rc) + ")");
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const size_t b = ov[0], e = ov[1];
      if (e > b) {
        out.emplace_back(b, e);
        start = e;
      } else {  // empty match: step over one code point
        if (b >= s.size()) break;
        start = b + std::max<size_t>(1, utf8::seq_len(s, b));
      }
    }
#else
    (void)s;
#endif
    return out;
  }

 private:
#if defined(ROPEX_HAS_PCRE2)
  struct Free {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
  };
  std::unique_ptr<pcre2_code, Free> code_;
#endif
  bool jit_ = false;
};

/// GPT-2's split pattern, which ByteLevel uses when `use_regex` is true (openai/gpt-2 encoder.py).
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// --------------------------------------------------------------------------------- tokenizer
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, normalized = false;
};

class BpeTokenizer {
 public:
  /// Loads tokenizer.json (and tokenizer_config.json next to it, for add_bos_token / bos / eos).
  static BpeTokenizer from_file(const std::filesystem::path& path) {
    const std::string text = read_regular_file(path);  // a FIFO or directory is refused, not waited on
    nlohmann::json cfg;
    const auto cfg_path = path.parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::symlink_status(cfg_path, ec))) {
      cfg = read_json_file(cfg_path);
      if (!cfg.is_object()) throw make_error(cfg_path.string(), "", "not a JSON object");
    }
    return from_json_text(text, path.string(), cfg);
  }

  /// Parses tokenizer.json text; `source` names the file in errors. `config` is tokenizer_config.json (or null).
  static BpeTokenizer from_json_text(std::string_view text, const std::string& source,
                                     const nlohmann::json& config = nullptr) {
    // Depth-limited, NUL- and duplicate-key-free (json_file.hpp): the loaders below walk it.
    nlohmann::json j = parse_json_strict(text, source);
    if (!j.is_object()) throw make_error(source, "", "not a JSON object");
    BpeTokenizer t;
    t.source_ = source;
    t.load_model(j);
    t.load_added_tokens(j);
    t.load_normalizer(j);
    t.load_pre_tokenizer(j);
    t.load_post_processor(j, config);
    t.load_decoder(j);
    return t;
  }

  /// A byte-level BPE vocabulary given as data rather than tokenizer.json (a GGUF file's
  /// tokenizer.ggml.* keys; tokenizer/gguf_vocab.hpp reads them). The result holds what
  /// from_json_text builds: vocab (a token listed twice keeps its last id, as HF and llama.cpp map
  /// it), merges by rank, added tokens, the Split regexes in order (Isolated) then ByteLevel
  /// without a regex of its own, and BOS/EOS.
  struct Parts {
    std::string source;                                       ///< the file, for errors
    std::string tokens_field = "tokens", merges_field = "merges";  ///< how errors name the lists
    std::vector<std::string> tokens;                          ///< id -> byte-level spelling
    std::vector<std::string_view> merges;                     ///< "left right", in rank order
    std::vector<AddedToken> added;
    std::vector<std::string> split_regexes;
    bool ignore_merges = false;
    std::optional<int32_t> bos;
    bool add_bos = false, add_eos = false;
    std::vector<int32_t> eos_ids;                             ///< eos first (add_eos appends it), then eot, eom
  };
  static BpeTokenizer from_parts(const Parts& p) {
    BpeTokenizer t;
    t.source_ = p.source;
    t.ignore_merges_ = p.ignore_merges;
    t.vocab_.reserve(p.tokens.size());
    t.id_to_token_.reserve(p.tokens.size());
    for (size_t i = 0; i < p.tokens.size(); ++i) {
      t.vocab_.insert_or_assign(p.tokens[i], int32_t(i));
      t.id_to_token_[int32_t(i)] = p.tokens[i];
    }
    t.merges_.reserve(p.merges.size());
    for (size_t r = 0; r < p.merges.size(); ++r) {
      const std::string_view s = p.merges[r];
      const std::string field = p.merges_field + "[" + std::to_string(r) + "]";
      const size_t sp = s.find(' ');
      if (sp == std::string_view::npos || s.find(' ', sp + 1) != std::string_view::npos)
        t.fail(field, "must be \"left right\" with one space, got \"" + std::string(s.substr(0, 60)) + "\"");
      const std::string a(s.substr(0, sp)), b(s.substr(sp + 1));
      const auto ia = t.vocab_.find(a), ib = t.vocab_.find(b), ic = t.vocab_.find(a + b);
      if (ia == t.vocab_.end() || ib == t.vocab_.end())
        t.fail(field, "token '" + (ia == t.vocab_.end() ? a : b) + "' is not in " + p.tokens_field);
      if (ic == t.vocab_.end()) t.fail(field, "merged token '" + a + b + "' is not in " + p.tokens_field);
      t.merges_.try_emplace(pair_key(ia->second, ib->second), Merge{int32_t(r), ic->second});
    }
    t.added_ = p.added;
    for (size_t k = 0; k < t.added_.size(); ++k) {
      t.added_by_id_.emplace(t.added_[k].id, t.added_[k]);
      t.added_by_first_[uint8_t(t.added_[k].content[0])].push_back(k);
    }
    for (auto& [c, list] : t.added_by_first_)
      std::stable_sort(list.begin(), list.end(),
                       [&](size_t x, size_t y) { return t.added_[x].content.size() > t.added_[y].content.size(); });
    for (size_t i = 0; i < p.split_regexes.size(); ++i)
      t.pre_.push_back({Step::split, std::make_shared<Regex>(p.split_regexes[i], t.source_, "split regex " + std::to_string(i))});
    t.pre_.push_back({Step::byte_level, nullptr, false});
    t.bos_id_ = p.bos;
    t.eos_ids_ = p.eos_ids;
    if (p.add_bos) {
      if (!p.bos) t.fail("add_bos_token", "is true but there is no bos token id");
      t.prefix_ids_.push_back(*p.bos);
    }
    if (p.add_eos) {
      if (p.eos_ids.empty()) t.fail("add_eos_token", "is true but there is no eos token id");
      t.suffix_ids_.push_back(p.eos_ids.front());
    }
    return t;
  }

  /// Text -> ids. `add_special_tokens` adds what the post-processor adds (BOS for Llama-3).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const {
    if (const size_t bad = utf8::first_invalid(text); bad != std::string_view::npos)
      throw make_error("text", "", "not valid UTF-8 at byte " + std::to_string(bad));
    std::vector<int32_t> ids;
    if (add_special_tokens) ids.insert(ids.end(), prefix_ids_.begin(), prefix_ids_.end());
    size_t pos = 0;
    while (pos < text.size()) {
      // next added token at or after pos (leftmost, then longest)
      size_t mb = text.size(), me = text.size();
      const AddedToken* hit = nullptr;
      for (size_t i = pos; i < text.size() && !hit; ++i) {
        const auto it = added_by_first_.find(uint8_t(text[i]));
        if (it == added_by_first_.end()) continue;
        for (const size_t k : it->second) {  // longest first
          const AddedToken* a = &added_[k];
          if (text.compare(i, a->content.size(), a->content) == 0) {
            hit = a;
            mb = i;
            me = i + a->content.size();
            break;
          }
        }
      }
      if (hit) {
        if (hit->lstrip)
          while (mb > pos && is_space(text[mb - 1])) --mb;
        if (hit->rstrip)
          while (me < text.size() && is_space(text[me])) ++me;
      }
      encode_plain(text.substr(pos, mb - pos), ids);
      if (hit) ids.push_back(hit->id);
      pos = me;
    }
    if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
    return ids;
  }

  /// Ids -> text: added tokens as their content (special ones dropped if skip_special), the rest
  /// through the ByteLevel decoder (code points back to bytes). An id in neither is an error when
  /// `strict`, else dropped (as HF's decode does; a model's padded vocab rows have no token).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false, bool strict = true) const {
    const auto& table = ByteLevelTable::get();
    std::string out;
    for (int32_t id : ids) {
      if (const auto a = added_by_id_.find(id); a != added_by_id_.end()) {
        if (!(skip_special && a->second.special)) out += a->second.content;
        continue;
      }
      const auto t = id_to_token_.find(id);
      if (t == id_to_token_.end()) {
        if (!strict) continue;
        throw make_error("ids", "", "id " + std::to_string(id) + " is not in the vocabulary of " + source_);
      }
      const std::string& tok = t->second;
      for (size_t i = 0; i < tok.size();) {
        const size_t n = std::max<size_t>(1, utf8::seq_len(tok, i));
        const uint32_t cp = utf8::seq_len(tok, i) ? utf8::decode_at(tok, i, n) : 0xFFFFFFFFu;
        if (cp < table.from_codepoint.size() && table.from_codepoint[cp] >= 0)
          out += char(table.from_codepoint[cp]);
        else
          out.append(tok, i, n);  // not a byte-level symbol: kept as written
        i += n;
      }
    }
    return out;
  }

  std::optional<int32_t> bos_id() const { return bos_id_; }
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  size_t vocab_size() const { return vocab_.size() + added_.size(); }
  /// Id of a vocabulary or added token, if any.
  std::optional<int32_t> token_to_id(const std::string& tok) const {
    for (const auto& a : added_)
      if (a.content == tok) return a.id;
    if (const auto it = vocab_.find(tok); it != vocab_.end()) return it->second;
    return std::nullopt;
  }
  const std::vector<AddedToken>& added_tokens() const { return added_; }

 private:
  struct Merge {
    int32_t rank, result;
  };
  enum class Step { split, digits, byte_level };
  struct PreStep {
    Step kind;
    std::shared_ptr<const Regex> regex;  // split / digits / byte_level with use_regex
    bool add_prefix_space = false;
  };

  static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  [[noreturn]] void fail(std::string_view field, std::string_view problem) const {
    throw make_error(source_, field, problem);
  }
  const nlohmann::json& need(const nlohmann::json& obj, const char* key, const std::string& field) const {
    if (!obj.is_object() || !obj.contains(key)) fail(field, "missing");
    return obj.at(key);
  }
  bool flag(const nlohmann::json& obj, const char* key, const std::string& field, bool dflt) const {
    if (!obj.contains(key) || obj.at(key).is_null()) return dflt;
    if (!obj.at(key).is_boolean()) fail(field + "." + key, "must be true or false");
    return obj.at(key).get<bool>();
  }

  void load_model(const nlohmann::json& j) {
    const auto& m = need(j, "model", "model");
    if (!m.is_object()) fail("model", "must be an object");
    std::string type = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>() : "";
    if (type.empty()) fail("model.type", "missing (BPE is supported)");
    if (type != "BPE") fail("model.type", "'" + type + "' is not supported (only byte-level BPE; WordPiece/Unigram/WordLevel are refused)");
    if (flag(m, "byte_fallback", "model", false)) fail("model.byte_fallback", "true is not supported (SentencePiece-style BPE: use tokenizer.model)");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (m.contains(k) && !m[k].is_null() && !(m[k].is_string() && m[k].get<std::string>().empty()))
        fail(std::string("model.") + k, "is not supported");
    if (m.contains("dropout") && !m["dropout"].is_null() && !(m["dropout"].is_number() && m["dropout"].get<double>() == 0.0))
      fail("model.dropout", "BPE dropout is not supported");
    ignore_merges_ = flag(m, "ignore_merges", "model", false);

    const auto& v = need(m, "vocab", "model.vocab");
    if (!v.is_object()) fail("model.vocab", "must be an object {token: id}");
    vocab_.reserve(v.size());
    for (const auto& [tok, id] : v.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        fail("model.vocab[\"" + tok + "\"]", "id must be a non-negative integer");
      vocab_.emplace(tok, int32_t(id.get<int64_t>()));
    }
    id_to_token_.reserve(vocab_.size());
    for (const auto& [tok, id] : vocab_) id_to_token_[id] = tok;

    const auto& ms = need(m, "merges", "model.merges");
    if (!ms.is_array()) fail("model.merges", "must be an array");
    merges_.reserve(ms.size());
    for (size_t r = 0; r < ms.size(); ++r) {
      const auto& e = ms[r];
      const std::string field = "model.merges[" + std::to_string(r) + "]";
      std::string a, b;
      if (e.is_string()) {  // "a b" (tokenizers < 0.20)
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) fail(field, "must be \"left right\" with one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        fail(field, "must be \"left right\" or [\"left\", \"right\"]");
      }
      const auto ia = vocab_.find(a), ib = vocab_.find(b), ic = vocab_.find(a + b);
      if (ia == vocab_.end() || ib == vocab_.end()) fail(field, "token '" + (ia == vocab_.end() ? a : b) + "' is not in model.vocab");
      if (ic == vocab_.end()) fail(field, "merged token '" + a + b + "' is not in model.vocab");
      merges_.try_emplace(pair_key(ia->second, ib->second), Merge{int32_t(r), ic->second});
    }
  }

  void load_added_tokens(const nlohmann::json& j) {
    if (!j.contains("added_tokens") || j["added_tokens"].is_null()) return;
    const auto& at = j["added_tokens"];
    if (!at.is_array()) fail("added_tokens", "must be an array");
    for (size_t i = 0; i < at.size(); ++i) {
      const std::string field = "added_tokens[" + std::to_string(i) + "]";
      const auto& e = at[i];
      if (!e.is_object()) fail(field, "must be an object");
      AddedToken a;
      const auto& id = need(e, "id", field + ".id");
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) fail(field + ".id", "must be a non-negative integer");
      a.id = int32_t(id.get<int64_t>());
      const auto& c = need(e, "content", field + ".content");
      if (!c.is_string() || c.get<std::string>().empty()) fail(field + ".content", "must be a non-empty string");
      a.content = c.get<std::string>();
      if (utf8::first_invalid(a.content) != std::string_view::npos) fail(field + ".content", "not valid UTF-8");
      a.special = flag(e, "special", field, false);
      a.lstrip = flag(e, "lstrip", field, false);
      a.rstrip = flag(e, "rstrip", field, false);
      a.normalized = flag(e, "normalized", field, false);
      if (flag(e, "single_word", field, false)) fail(field + ".single_word", "true is not supported");
      added_.push_back(std::move(a));
    }
    for (size_t k = 0; k < added_.size(); ++k) {
      added_by_id_.emplace(added_[k].id, added_[k]);
      added_by_first_[uint8_t(added_[k].content[0])].push_back(k);
    }
    for (auto& [c, list] : added_by_first_)
      std::stable_sort(list.begin(), list.end(),
                       [&](size_t x, size_t y) { return added_[x].content.size() > added_[y].content.size(); });
  }

  void load_normalizer(const nlohmann::json& j) {
    if (!j.contains("normalizer") || j["normalizer"].is_null()) return;
    const auto& n = j["normalizer"];
    const auto type = n.is_object() && n.contains("type") && n["type"].is_string() ? n["type"].get<std::string>() : "";
    if (type == "NFC") {
      nfc_ = true;
    } else if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array() && n["normalizers"].empty()) {
    } else {
      fail("normalizer.type", "'" + type + "' is not supported (null or NFC)");
    }
  }

  void load_pre_tokenizer(const nlohmann::json& j) {
    const auto& p = need(j, "pre_tokenizer", "pre_tokenizer");
    if (p.is_null()) fail("pre_tokenizer", "null is not supported (byte-level BPE needs a ByteLevel step)");
    std::vector<std::pair<const nlohmann::json*, std::string>> steps;
    const auto type_of = [&](const nlohmann::json& s, const std::string& field) {
      if (!s.is_object() || !s.contains("type") || !s["type"].is_string()) fail(field + ".type", "missing");
      return s["type"].get<std::string>();
    };
    if (type_of(p, "pre_tokenizer") == "Sequence") {
      const auto& list = need(p, "pretokenizers", "pre_tokenizer.pretokenizers");
      if (!list.is_array()) fail("pre_tokenizer.pretokenizers", "must be an array");
      for (size_t i = 0; i < list.size(); ++i) steps.emplace_back(&list[i], "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]");
    } else {
      steps.emplace_back(&p, "pre_tokenizer");
    }
    bool byte_level = false;
    for (const auto& [s, field] : steps) {
      const std::string type = type_of(*s, field);
      if (byte_level) fail(field, "'" + type + "' after ByteLevel is not supported");
      if (type == "Split") {
        const auto& pat = need(*s, "pattern", field + ".pattern");
        if (!pat.is_object() || !pat.contains("Regex") || !pat["Regex"].is_string())
          fail(field + ".pattern", "only {\"Regex\": ...} patterns are supported");
        const auto beh = s->contains("behavior") && (*s)["behavior"].is_string() ? (*s)["behavior"].get<std::string>() : "";
        if (beh != "Isolated") fail(field + ".behavior", "'" + beh + "' is not supported (Isolated)");
        if (flag(*s, "invert", field, false)) fail(field + ".invert", "true is not supported");
        pre_.push_back({Step::split, std::make_shared<Regex>(pat["Regex"].get<std::string>(), source_, field + ".pattern.Regex")});
      } else if (type == "Digits") {
        const bool individual = flag(*s, "individual_digits", field, false);
        pre_.push_back({Step::digits, std::make_shared<Regex>(individual ? R"(\p{N})" : R"(\p{N}+)", source_, field)});
      } else if (type == "ByteLevel") {
        PreStep st{Step::byte_level, nullptr, flag(*s, "add_prefix_space", field, true)};
        if (flag(*s, "use_regex", field, true)) st.regex = std::make_shared<Regex>(kGpt2Pattern, source_, field + ".use_regex");
        pre_.push_back(std::move(st));
        byte_level = true;
      } else {
        fail(field + ".type", "'" + type + "' is not supported (Split with a Regex, Digits, ByteLevel)");
      }
    }
    if (!byte_level) fail("pre_tokenizer", "no ByteLevel step: not a byte-level BPE tokenizer");
  }

  void add_template(const nlohmann::json& items, const nlohmann::json& specials, const std::string& field) {
    if (!items.is_array()) fail(field, "must be an array");
    bool seen_a = false;
    for (size_t i = 0; i < items.size(); ++i) {
      const auto& it = items[i];
      const std::string f = field + "[" + std::to_string(i) + "]";
      if (it.is_object() && it.contains("Sequence")) {
        seen_a = true;
      } else if (it.is_object() && it.contains("SpecialToken") && it["SpecialToken"].is_object() &&
                 it["SpecialToken"].contains("id") && it["SpecialToken"]["id"].is_string()) {
        const std::string name = it["SpecialToken"]["id"].get<std::string>();
        if (!specials.is_object() || !specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
          fail(field, "special token '" + name + "' is not in post_processor.special_tokens");
        for (const auto& id : specials[name]["ids"]) {
          if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) fail(f, "ids must be non-negative integers");
          (seen_a ? suffix_ids_ : prefix_ids_).push_back(int32_t(id.get<int64_t>()));
        }
      } else {
        fail(f, "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  }

  void load_post_processor(const nlohmann::json& j, const nlohmann::json& config) {
    std::vector<std::pair<const nlohmann::json*, std::string>> procs;
    if (j.contains("post_processor") && !j["post_processor"].is_null()) {
      const auto& p = j["post_processor"];
      if (!p.is_object() || !p.contains("type") || !p["type"].is_string()) fail("post_processor.type", "missing");
      if (p["type"] == "Sequence") {
        const auto& list = need(p, "processors", "post_processor.processors");
        if (!list.is_array()) fail("post_processor.processors", "must be an array");
        for (size_t i = 0; i < list.size(); ++i) procs.emplace_back(&list[i], "post_processor.processors[" + std::to_string(i) + "]");
      } else {
        procs.emplace_back(&p, "post_processor");
      }
    }
    for (const auto& [p, field] : procs) {
      const std::string type = p->is_object() && p->contains("type") && (*p)["type"].is_string() ? (*p)["type"].get<std::string>() : "";
      if (type == "ByteLevel") continue;  // offsets only; ids unchanged
      if (type == "TemplateProcessing") {
        add_template(need(*p, "single", field + ".single"), (*p).value("special_tokens", nlohmann::json::object()), field + ".single");
      } else if (type == "RobertaProcessing" || type == "BertProcessing") {
        for (const char* k : {"cls", "sep"}) {
          const auto& e = need(*p, k, field + "." + k);
          if (!e.is_array() || e.size() != 2 || !e[1].is_number_integer() || e[1].get<int64_t>() < 0)
            fail(field + "." + k, "must be [token, id]");
          (std::string(k) == "cls" ? prefix_ids_ : suffix_ids_).push_back(int32_t(e[1].get<int64_t>()));
        }
      } else {
        fail(field + ".type", "'" + type + "' is not supported (TemplateProcessing, ByteLevel, RobertaProcessing)");
      }
    }
    // tokenizer_config.json decides BOS when it says (transformers' LlamaTokenizerFast does so).
    const auto token_id = [&](const nlohmann::json& v) -> std::optional<int32_t> {
      std::string s;
      if (v.is_string()) s = v.get<std::string>();
      else if (v.is_object() && v.contains("content") && v["content"].is_string()) s = v["content"].get<std::string>();
      else return std::nullopt;
      return token_to_id(s);
    };
    if (config.is_object()) {
      if (config.contains("bos_token")) bos_id_ = token_id(config["bos_token"]);
      if (config.contains("eos_token"))
        if (auto e = token_id(config["eos_token"])) eos_ids_.push_back(*e);
      if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) {
        prefix_ids_.erase(std::remove(prefix_ids_.begin(), prefix_ids_.end(), bos_id_.value_or(-1)), prefix_ids_.end());
        if (config["add_bos_token"].get<bool>()) {
          if (!bos_id_) throw make_error("tokenizer_config.json", "bos_token", "add_bos_token is true but bos_token is missing or unknown");
          prefix_ids_.insert(prefix_ids_.begin(), *bos_id_);
        }
      }
    }
    if (!bos_id_ && !prefix_ids_.empty()) bos_id_ = prefix_ids_.front();
    for (const auto* v : {&prefix_ids_, &suffix_ids_})
      for (int32_t id : *v)
        if (!added_by_id_.count(id) && !id_to_token_.count(id))
          fail("post_processor", "adds id " + std::to_string(id) + ", which is neither in model.vocab nor in added_tokens");
  }

  void load_decoder(const nlohmann::json& j) {
    if (!j.contains("decoder") || j["decoder"].is_null()) fail("decoder", "missing (ByteLevel is supported)");
    const auto& d = j["decoder"];
    const auto type = d.is_object() && d.contains("type") && d["type"].is_string() ? d["type"].get<std::string>() : "";
    if (type != "ByteLevel") fail("decoder.type", "'" + type + "' is not supported (ByteLevel)");
  }

  // ---- encoding ----
  std::string normalize(std::string_view s) const {
    if (!nfc_) return std::string(s);
    bool below = true;  // code points below U+0300 are already NFC (no combining marks, no singletons)
    for (size_t i = 0; i < s.size() && below; ++i) below = uint8_t(s[i]) < 0xCC;
    if (below) return std::string(s);
#if defined(ROPEX_HAS_UTF8PROC)
    utf8proc_uint8_t* out = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()), &out,
                                utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (n < 0) throw make_error(source_, "normalizer", std::string("NFC failed: ") + utf8proc_errmsg(n));
    std::string r(reinterpret_cast<const char*>(out), size_t(n));
    std::free(out);
    return r;
#else
    throw make_error(source_, "normalizer", "NFC of text beyond U+02FF needs utf8proc (install libutf8proc-dev and rebuild)");
#endif
  }

  void encode_plain(std::string_view raw, std::vector<int32_t>& ids) const {
    if (raw.empty()) return;
    const std::string text = normalize(raw);
    std::vector<std::string> pieces{text};
    for (const auto& st : pre_) {
      std::vector<std::string> next;
      for (auto& p : pieces) {
        if (st.kind == Step::byte_level) {
          if (st.add_prefix_space && (p.empty() || p[0] != ' ')) p.insert(p.begin(), ' ');
          if (!st.regex) {
            next.push_back(std::move(p));
            continue;
          }
        }
        // Isolated split: matches and the gaps between them are both pieces.
        size_t last = 0;
        for (const auto& [b, e] : st.regex->find_all(p)) {
          if (b > last) next.emplace_back(p.substr(last, b - last));
          next.emplace_back(p.substr(b, e - b));
          last = e;
        }
        if (last < p.size()) next.emplace_back(p.substr(last));
      }
      pieces = std::move(next);
    }
    const auto& table = ByteLevelTable::get();
    for (const auto& p : pieces) bpe_word(table.encode(p), ids);
  }

  /// BPE of one byte-level pre-token: repeatedly merge the adjacent pair of lowest rank (a heap of
  /// candidate pairs over a linked list of symbols; stale heap entries are skipped), O(n log n).
  void bpe_word(const std::string& word, std::vector<int32_t>& ids) const {
    if (word.empty()) return;
    if (ignore_merges_)
      if (const auto it = vocab_.find(word); it != vocab_.end()) {
        ids.push_back(it->second);
        return;
      }
    if (word.size() <= 64) {  // most pre-tokens repeat; long ones (runs) are rare and not worth keeping
      std::lock_guard lock(cache_->mutex);
      if (const auto it = cache_->map.find(word); it != cache_->map.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    struct Sym {
      int32_t id;
      int32_t prev, next;
    };
    std::vector<Sym> sym;
    sym.reserve(word.size());
    for (size_t i = 0; i < word.size();) {
      const size_t n = std::max<size_t>(1, utf8::seq_len(word, i));
      const auto it = vocab_.find(word.substr(i, n));
      if (it != vocab_.end()) {  // a symbol missing from the vocab is dropped (no unk token)
        const int32_t k = int32_t(sym.size());
        sym.push_back({it->second, k - 1, k + 1});
      }
      i += n;
    }
    if (sym.empty()) return;
    sym.back().next = -1;
    struct Cand {
      int32_t rank, left, left_id, right_id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<>> heap;
    const auto push = [&](int32_t l) {
      if (l < 0 || sym[size_t(l)].next < 0) return;
      const int32_t r = sym[size_t(l)].next;
      if (const auto m = merges_.find(pair_key(sym[size_t(l)].id, sym[size_t(r)].id)); m != merges_.end())
        heap.push({m->second.rank, l, sym[size_t(l)].id, sym[size_t(r)].id});
    };
    for (int32_t i = 0; i + 1 < int32_t(sym.size()); ++i) push(i);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      Sym& l = sym[size_t(c.left)];
      if (l.id != c.left_id || l.next < 0 || sym[size_t(l.next)].id != c.right_id) continue;  // stale
      const int32_t r = l.next;
      l.id = merges_.at(pair_key(c.left_id, c.right_id)).result;
      l.next = sym[size_t(r)].next;
      if (l.next >= 0) sym[size_t(l.next)].prev = c.left;
      sym[size_t(r)].id = -1;  // removed
      push(l.prev);
      push(c.left);
    }
    const size_t start = ids.size();
    for (int32_t i = 0; i >= 0; i = sym[size_t(i)].next) ids.push_back(sym[size_t(i)].id);
    if (word.size() <= 64) {
      std::lock_guard lock(cache_->mutex);
      if (cache_->map.size() > 200000) cache_->map.clear();
      cache_->map.emplace(word, std::vector<int32_t>(ids.begin() + std::ptrdiff_t(start), ids.end()));
    }
  }

  std::string source_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<int32_t, std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  bool ignore_merges_ = false;
  bool nfc_ = false;
  std::vector<AddedToken> added_;
  std::unordered_map<int32_t, AddedToken> added_by_id_;
  std::unordered_map<uint8_t, std::vector<size_t>> added_by_first_;  // indices into added_, longest first
  std::vector<PreStep> pre_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  std::optional<int32_t> bos_id_;
  std::vector<int32_t> eos_ids_;
  struct Cache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();
};

}  // namespace ropex::tokenizer
