// Passkey retrieval, the protocol of Landmark Attention (Mohtashami & Jaggi, arXiv 2305.16300),
// used by Position Interpolation (Chen et al., arXiv 2306.15595) and YaRN (Peng et al., arXiv
// 2309.00071): a key hidden at a chosen depth of repeated filler text, then a question; the model
// answers by greedy decoding and is right when the digits it writes are the key.
//
//   prompt = task "\n" filler[:k] "\n" needle "\n" filler[:rest] "\n" question
//   filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
//            repeated (joined by spaces) and cut to a number of characters, as Landmark's script does
//   needle = "The pass key is N. Remember it. N is the pass key."   N uniform in [1, 50000]
//   question = "What is the pass key? The pass key is"
//
// Beside accuracy, the needle-driven loss: the mean NLL of the answer tokens (" N") given the prompt
// (Mohtashami & Jaggi report accuracy only; the loss shows how far a failing model is from the key).
#pragma once
#include <ropex/error.hpp>
#include <ropex/eval/scorer.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace ropex::eval {

inline constexpr const char* passkey_task =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there.";
inline constexpr const char* passkey_filler =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
inline constexpr const char* passkey_question = "What is the pass key? The pass key is";
inline constexpr int passkey_max_key = 50000;

inline std::string passkey_needle(int key) {
  const std::string k = std::to_string(key);
  return "The pass key is " + k + ". Remember it. " + k + " is the pass key.";
}

/// The prompt text with `filler_chars` characters of filler, `depth` of them before the needle.
inline std::string passkey_text(int key, int64_t filler_chars, double depth) {
  std::string filler;
  while (int64_t(filler.size()) < filler_chars) filler += (filler.empty() ? "" : " ") + std::string(passkey_filler);
  const int64_t before = int64_t(std::llround(depth * double(filler_chars)));
  return std::string(passkey_task) + "\n" + filler.substr(0, size_t(before)) + "\n" + passkey_needle(key) + "\n" +
         filler.substr(0, size_t(filler_chars - before)) + "\n" + passkey_question;
}

/// The model's tokenizer, as two functions (encode adds what the model's tokenizer adds: BOS).
struct TextCodec {
  std::function<std::vector<int32_t>(const std::string&)> encode;
  std::function<std::string(const std::vector<int32_t>&)> decode;
};

/// One trial, tokenized: sequence = prompt tokens then answer tokens.
struct PasskeyPrompt {
  int key = 0;
  std::vector<int32_t> tokens;
  int64_t answer_begin = 0;  ///< first answer token's index
};

/// The key of trial `trial` in the cell (length, depth): drawn from its own seeded generator, so a
/// cell's keys do not depend on the rest of the grid (a resumed run draws the same ones).
inline int passkey_key(uint64_t seed, int64_t length, double depth, int trial) {
  std::seed_seq seq{uint32_t(seed), uint32_t(seed >> 32), uint32_t(length), uint32_t(length >> 32),
                    uint32_t(std::llround(depth * 1e6)), uint32_t(trial)};
  std::mt19937_64 rng(seq);
  return std::uniform_int_distribution<int>(1, passkey_max_key)(rng);
}

/// Tokenizes prompt + " N"; the answer is what follows the longest common prefix with the prompt
/// alone (a merge across the boundary moves it left, never loses a token).
inline PasskeyPrompt passkey_tokens(const TextCodec& codec, int key, int64_t filler_chars, double depth) {
  const std::string text = passkey_text(key, filler_chars, depth);
  const auto prompt = codec.encode(text);
  PasskeyPrompt p;
  p.key = key;
  p.tokens = codec.encode(text + " " + std::to_string(key));
  size_t common = 0;
  while (common < prompt.size() && common < p.tokens.size() && prompt[common] == p.tokens[common]) ++common;
  if (common == 0 || common == p.tokens.size())
    throw make_error("passkey", "tokenizer", "the answer \" " + std::to_string(key) + "\" produced no tokens after the prompt");
  p.answer_begin = int64_t(common);
  return p;
}

/// Filler characters such that every trial of this cell fits in `length` tokens (prompt and
/// answer), as close to it as the tokenizer allows: sized on the longest key, then shrunk until
/// it fits; the trials' own token counts are reported.
inline int64_t passkey_filler_chars(const TextCodec& codec, int64_t length, double depth) {
  const int worst = passkey_max_key;  // most digits
  const auto fixed = int64_t(passkey_tokens(codec, worst, 0, depth).tokens.size());
  if (fixed >= length)
    throw make_error("passkey", "--lengths",
                     std::to_string(length) + " tokens is too short: the prompt without filler is " + std::to_string(fixed));
  const auto unit = int64_t(passkey_tokens(codec, worst, 4000, depth).tokens.size()) - fixed;
  const double chars_per_token = 4000.0 / double(std::max<int64_t>(unit, 1));
  int64_t chars = int64_t(double(length - fixed) * chars_per_token);
  for (int it = 0; it < 64; ++it) {
    const auto n = int64_t(passkey_tokens(codec, worst, chars, depth).tokens.size());
    if (n <= length && length - n <= std::max<int64_t>(2, length / 200)) return chars;
    chars = std::max<int64_t>(0, chars + int64_t(double(length - n) * chars_per_token) - (n > length ? 1 : 0));
  }
  // Did not settle within 0.5%: take the largest that fits (below the target).
  while (chars > 0 && int64_t(passkey_tokens(codec, worst, chars, depth).tokens.size()) > length)
    chars -= std::max<int64_t>(1, int64_t(chars_per_token));
  return chars;
}

/// The first run of decimal digits in `text`, and whether the text continues past it (a run that
/// reaches the end may still grow with more tokens).
inline std::pair<std::string, bool> first_digits(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && !std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  size_t j = i;
  while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
  return {text.substr(i, j - i), j < text.size()};
}

struct PasskeyTrial {
  int64_t length = 0;  ///< the cell's target length
  double depth = 0;
  int trial = 0, key = 0;
  int64_t tokens = 0;         ///< prompt + answer tokens
  int64_t needle_token = 0;   ///< token index where the needle's text starts (about depth * tokens)
  bool correct = false;
  double answer_nll = 0;      ///< mean NLL per answer token (nats)
  int64_t answer_tokens = 0;
  std::string answer;         ///< the digits the model wrote (greedy)
};

/// Runs one trial: one forward of prompt + answer gives the answer tokens' losses and the greedy
/// choice after every answer prefix. Greedy decoding writes the answer's tokens as long as each
/// choice equals the next answer token; at the first other choice (or after the last answer token)
/// it has written prefix + that token, and the digits of that text decide. Only when those digits
/// reach the end of the text (the model may still be writing digits) does it decode on, with the
/// KV cache, up to 8 more tokens.
inline PasskeyTrial passkey_trial(Scorer& scorer, const TextCodec& codec, int64_t length, double depth, int trial,
                                  uint64_t seed, int64_t filler_chars) {
  PasskeyTrial t;
  t.length = length, t.depth = depth, t.trial = trial;
  t.key = passkey_key(seed, length, depth, trial);
  const PasskeyPrompt p = passkey_tokens(codec, t.key, filler_chars, depth);
  t.tokens = int64_t(p.tokens.size());
  const int64_t first = p.answer_begin - 1, n = t.tokens, k = n - p.answer_begin;
  std::vector<double> nll(size_t(n - 1 - first));
  std::vector<int32_t> arg(size_t(n - first));
  scorer.score(p.tokens, first, nll.data(), arg.data());
  double s = 0;
  for (double v : nll) s += v;
  t.answer_tokens = k;
  t.answer_nll = s / double(k);
  std::vector<int32_t> written;
  int64_t j = 0;
  while (j < k && arg[size_t(j)] == p.tokens[size_t(p.answer_begin + j)]) written.push_back(arg[size_t(j++)]);
  written.push_back(arg[size_t(j)]);
  auto [digits, ended] = first_digits(codec.decode(written));
  if (!ended) {
    std::vector<int32_t> prefix(p.tokens.begin(), p.tokens.begin() + p.answer_begin);
    prefix.insert(prefix.end(), written.begin(), written.end());
    const auto more = scorer.greedy(prefix, 8);
    written.insert(written.end(), more.begin(), more.end());
    digits = first_digits(codec.decode(written)).first;
  }
  t.answer = digits;
  t.correct = digits == std::to_string(t.key);
  // Where the needle sits: tokens of the text before it.
  const std::string text = passkey_text(t.key, filler_chars, depth);
  const auto cut = text.find(passkey_needle(t.key));
  t.needle_token = int64_t(codec.encode(text.substr(0, cut)).size());
  return t;
}

/// Accuracy and mean answer loss of one (length, depth) cell.
struct PasskeyCell {
  int64_t length = 0;
  double depth = 0;
  int trials = 0, correct = 0;
  double accuracy = 0, answer_nll = 0, mean_tokens = 0;
};

/// Every trial of a grid, lengths x depths x trials in that order (the filler measured once per
/// cell); `after(trial, done)` after each, for progress (it may throw to stop the grid).
inline std::vector<PasskeyTrial> passkey_grid(Scorer& scorer, const TextCodec& codec, const std::vector<int64_t>& lengths,
                                              const std::vector<double>& depths, int trials, uint64_t seed,
                                              const std::function<void(const PasskeyTrial&, size_t)>& after = {}) {
  std::vector<PasskeyTrial> out;
  for (int64_t L : lengths)
    for (double d : depths) {
      const int64_t chars = passkey_filler_chars(codec, L, d);
      for (int t = 0; t < trials; ++t) {
        out.push_back(passkey_trial(scorer, codec, L, d, t, seed, chars));
        if (after) after(out.back(), out.size());
      }
    }
  return out;
}

inline std::vector<PasskeyCell> passkey_cells(const std::vector<PasskeyTrial>& trials) {
  std::vector<PasskeyCell> cells;
  for (const auto& t : trials) {
    auto it = std::find_if(cells.begin(), cells.end(), [&](const PasskeyCell& c) { return c.length == t.length && c.depth == t.depth; });
    if (it == cells.end()) {
      cells.push_back({t.length, t.depth});
      it = cells.end() - 1;
    }
    it->trials += 1, it->correct += t.correct ? 1 : 0;
    it->answer_nll += t.answer_nll, it->mean_tokens += double(t.tokens);
  }
  for (auto& c : cells) {
    c.accuracy = double(c.correct) / double(c.trials);
    c.answer_nll /= double(c.trials), c.mean_tokens /= double(c.trials);
  }
  return cells;
}

/// Checks of a grid given by a user; `prefix` + "lengths" etc. name the fields as the caller
/// spells them ("--lengths" on the command line, "lengths" in Python).
inline void check_passkey_grid(const std::vector<int64_t>& lengths, const std::vector<double>& depths, int trials,
                               std::string_view prefix = "--") {
  const std::string p(prefix);
  if (lengths.empty()) throw make_error("passkey", p + "lengths", "needs at least one length");
  for (auto L : lengths)
    if (L < 16 || L > (int64_t(1) << 24)) throw make_error("passkey", p + "lengths", "each must lie in [16, 2^24], got " + std::to_string(L));
  if (depths.empty()) throw make_error("passkey", p + "depths", "needs at least one depth");
  for (double d : depths)
    if (!(d >= 0 && d <= 1)) throw make_error("passkey", p + "depths", "each must lie in [0, 1], got " + std::to_string(d));
  if (trials < 1) throw make_error("passkey", p + "trials", "must be >= 1, got " + std::to_string(trials));
}

}  // namespace ropex::eval
