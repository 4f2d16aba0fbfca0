// SentencePiece BPE from a vocabulary with scores (a GGUF file whose tokenizer.ggml.model is "llama":
// Llama 1/2, Mistral-7B, Phi-3), as llama.cpp's llm_tokenizer_spm and SentencePiece's BPE model run it:
//
//   text ──added tokens split out──► pieces ──" " -> "▁", "▁" put first (add_space_prefix; the first
//   piece and every piece after an added token)──► UTF-8 characters ──repeatedly merge the adjacent
//   pair whose concatenation is a token of the highest score (ties: leftmost)──► tokens; a piece
//   that is no token falls back to its bytes as <0xNN> tokens (else the unknown token)
//
// No merges list: a pair merges when the concatenation is in the vocabulary, ranked by its score.
#pragma once
#include <ropex/error.hpp>
#include <ropex/tokenizer/bpe.hpp>  // utf8::, AddedToken

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ropex::tokenizer {

class SpmTokenizer {
 public:
  struct Parts {
    std::string source;                  ///< the file, for errors
    std::vector<std::string> tokens;     ///< id -> piece ("▁" for a space)
    std::vector<float> scores;           ///< id -> score (higher merges first)
    std::vector<int32_t> types;          ///< id -> GGUF token type (6 = byte <0xNN>, 3 = control)
    std::vector<AddedToken> added;       ///< matched whole in the text
    std::optional<int32_t> bos, unk;
    std::vector<int32_t> eos_ids;
    bool add_bos = true, add_eos = false, add_space_prefix = true;
  };

  static SpmTokenizer from_parts(Parts p) {
    SpmTokenizer t;
    t.p_ = std::move(p);
    t.byte_id_.fill(-1);
    for (size_t i = 0; i < t.p_.tokens.size(); ++i) t.vocab_.insert_or_assign(t.p_.tokens[i], int32_t(i));
    for (int b = 0; b < 256; ++b) {
      static const char* hex = "0123456789ABCDEF";
      const std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
      if (const auto it = t.vocab_.find(name); it != t.vocab_.end()) t.byte_id_[size_t(b)] = it->second;
    }
    for (size_t k = 0; k < t.p_.added.size(); ++k) {
      t.added_by_id_.emplace(t.p_.added[k].id, k);
      t.added_by_first_[uint8_t(t.p_.added[k].content[0])].push_back(k);
    }
    for (auto& [c, list] : t.added_by_first_)
      std::stable_sort(list.begin(), list.end(),
                       [&](size_t x, size_t y) { return t.p_.added[x].content.size() > t.p_.added[y].content.size(); });
    if (t.p_.add_bos && !t.p_.bos) throw make_error(t.p_.source, "key 'tokenizer.ggml.bos_token_id'", "missing, but the tokenizer adds BOS");
    if (t.p_.add_eos && t.p_.eos_ids.empty()) throw make_error(t.p_.source, "key 'tokenizer.ggml.eos_token_id'", "missing, but the tokenizer adds EOS");
    return t;
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const {
    if (const size_t bad = utf8::first_invalid(text); bad != std::string_view::npos)
      throw make_error("text", "", "not valid UTF-8 at byte " + std::to_string(bad));
    std::vector<int32_t> ids;
    if (add_special_tokens && p_.add_bos) ids.push_back(*p_.bos);
    size_t pos = 0;
    bool after_added = true;  // the first piece gets the prefix too
    while (pos < text.size()) {
      size_t mb = text.size();
      const AddedToken* hit = nullptr;
      for (size_t i = pos; i < text.size() && !hit; ++i) {
        const auto it = added_by_first_.find(uint8_t(text[i]));
        if (it == added_by_first_.end()) continue;
        for (const size_t k : it->second)
          if (text.compare(i, p_.added[k].content.size(), p_.added[k].content) == 0) {
            hit = &p_.added[k];
            mb = i;
            break;
          }
      }
      if (mb > pos) {
        encode_piece(text.substr(pos, mb - pos), after_added, ids);
        after_added = false;
      }
      if (!hit) break;
      ids.push_back(hit->id);
      after_added = true;
      pos = mb + hit->content.size();
    }
    if (add_special_tokens && p_.add_eos) ids.push_back(p_.eos_ids.front());
    return ids;
  }

  /// Ids -> text: "▁" -> " ", <0xNN> -> the byte, added tokens as their text (special ones dropped
  /// if skip_special); the space the encoder put first is taken off again.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false, bool strict = true) const {
    std::string out;
    for (int32_t id : ids) {
      if (id < 0 || size_t(id) >= p_.tokens.size()) {
        if (!strict) continue;
        throw make_error("ids", "", "id " + std::to_string(id) + " is not in the vocabulary of " + p_.source);
      }
      if (const auto a = added_by_id_.find(id); a != added_by_id_.end()) {
        if (!(skip_special && p_.added[a->second].special)) out += p_.added[a->second].content;
        continue;
      }
      const std::string& tok = p_.tokens[size_t(id)];
      if (p_.types[size_t(id)] == 6 && tok.size() == 6 && tok.compare(0, 3, "<0x") == 0) {
        out += char(std::stoi(tok.substr(3, 2), nullptr, 16));
        continue;
      }
      if (skip_special && p_.types[size_t(id)] == 3) continue;
      for (size_t i = 0; i < tok.size();) {
        if (tok.compare(i, 3, "\xE2\x96\x81") == 0) {
          out += ' ';
          i += 3;
        } else {
          out += tok[i++];
        }
      }
    }
    if (p_.add_space_prefix && !out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

  std::optional<int32_t> bos_id() const { return p_.bos; }
  const std::vector<int32_t>& eos_ids() const { return p_.eos_ids; }
  size_t vocab_size() const { return p_.tokens.size(); }

 private:
  void encode_piece(std::string_view raw, bool prefix, std::vector<int32_t>& ids) const {
    std::string s;
    if (p_.add_space_prefix && prefix) s = "\xE2\x96\x81";
    for (char c : raw) {
      if (c == ' ') s += "\xE2\x96\x81";
      else s += c;
    }
    struct Sym {
      size_t off, n;
      int32_t prev, next;
    };
    std::vector<Sym> sym;
    for (size_t i = 0; i < s.size();) {
      const size_t n = std::max<size_t>(1, utf8::seq_len(s, i));
      const int32_t k = int32_t(sym.size());
      sym.push_back({i, n, k - 1, k + 1});
      i += n;
    }
    if (sym.empty()) return;
    sym.back().next = -1;
    struct Bigram {
      float score;
      int32_t left, right;
      size_t size;
      bool operator<(const Bigram& o) const { return score < o.score || (score == o.score && left > o.left); }
    };
    std::priority_queue<Bigram> heap;
    const auto text_of = [&](int32_t l, int32_t r) { return s.substr(sym[size_t(l)].off, sym[size_t(l)].n + sym[size_t(r)].n); };
    const auto try_add = [&](int32_t l, int32_t r) {
      if (l < 0 || r < 0) return;
      const std::string t = text_of(l, r);
      const auto it = vocab_.find(t);
      if (it == vocab_.end()) return;
      heap.push({p_.scores[size_t(it->second)], l, r, t.size()});
    };
    for (int32_t i = 1; i < int32_t(sym.size()); ++i) try_add(i - 1, i);
    while (!heap.empty()) {
      const Bigram b = heap.top();
      heap.pop();
      Sym& l = sym[size_t(b.left)];
      Sym& r = sym[size_t(b.right)];
      if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale
      l.n += r.n;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) sym[size_t(r.next)].prev = b.left;
      try_add(l.prev, b.left);
      try_add(b.left, l.next);
    }
    // Every merged symbol is a token (a pair merges only into one); what is left unmerged is one
    // character, which is its token or falls back to its bytes.
    const auto emit = [&](size_t off, size_t n) {
      if (const auto it = vocab_.find(s.substr(off, n)); it != vocab_.end()) {
        ids.push_back(it->second);
        return;
      }
      for (size_t j = 0; j < n; ++j) {
        const int32_t id = byte_id_[uint8_t(s[off + j])];
        if (id >= 0) ids.push_back(id);
        else if (p_.unk) ids.push_back(*p_.unk);
        else throw make_error(p_.source, "key 'tokenizer.ggml.tokens'", "no <0xNN> byte token and no unknown token for a byte of the text");
      }
    };
    for (int32_t i = 0; i >= 0; i = sym[size_t(i)].next) emit(sym[size_t(i)].off, sym[size_t(i)].n);
  }

  Parts p_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::array<int32_t, 256> byte_id_{};
  std::unordered_map<int32_t, size_t> added_by_id_;
  std::unordered_map<uint8_t, std::vector<size_t>> added_by_first_;
};

}  // namespace ropex::tokenizer
