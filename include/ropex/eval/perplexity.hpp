// Long-context perplexity, the evaluation of the paper (Liu et al. 2023, Fig. 1/Tables: perplexity
// vs context length): run windows of `context` tokens, stride `stride`, score each target token
// once, and keep the loss per position inside the window — the curve where a model that fails to
// extrapolate blows up past its critical length.
//
//   window w covers tokens [w*stride, w*stride + context); position p predicts token p+1 from 0..p.
//   The first window scores every position; later windows only the targets the previous window did
//   not reach (HF's strided perplexity recipe), so each token is scored once.
//   perplexity = exp(mean NLL over scored targets)
#pragma once
#include <ropex/error.hpp>
#include <ropex/model/kv_cache.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace ropex::eval {

struct PerplexityOptions {
  int64_t context = 0;     ///< window length N (tokens)
  int64_t stride = 0;      ///< window step S (0 = context: non-overlapping windows)
  int64_t bins = 32;       ///< bins of the per-position curve
  int64_t logits_rows = 64;  ///< lm_head rows at once: [rows, vocab] floats, never [N, vocab]
  /// >= 0: every window after the first starts with this token (BOS) in place of its first
  /// token, so each window looks like a document start (models lean on BOS as an attention sink,
  /// StreamingLLM, Xiao et al. 2023). -1 (default): windows are plain slices (HF's recipe).
  int32_t window_bos = -1;
  /// Appended to the error when a token's loss is NaN or inf (the CLI names the likely cause).
  std::string nonfinite_hint = "non-finite weights or out-of-range RoPE settings";
  /// Called after each window with (tokens scored so far, tokens to score in all).
  std::function<void(int64_t, int64_t)> progress;
};

/// Mean loss of the targets whose position within their window lies in [begin, end).
struct PositionBin {
  int64_t begin = 0, end = 0, count = 0;
  double mean_nll = 0;
};

struct PerplexityResult {
  double perplexity = 0, mean_nll = 0;
  int64_t tokens = 0;  ///< targets scored
  int64_t context = 0, stride = 0, windows = 0;
  /// [min(context, tokens)]: summed NLL of the targets at each window position (later positions
  /// are never reached, so they are not stored: a long context over a short file costs nothing).
  std::vector<double> position_nll_sum;
  std::vector<int64_t> position_count;     ///< [min(context, tokens)]
  std::vector<PositionBin> curve;          ///< position_* binned into opts.bins equal ranges
};

/// Bins per-position sums into `bins` equal ranges of [0, context) (empty bins kept, count 0);
/// positions past the arrays' end count as empty. context = 0: the arrays' length.
inline std::vector<PositionBin> bin_positions(std::span<const double> nll_sum, std::span<const int64_t> count,
                                              int64_t bins, int64_t context = 0) {
  const int64_t stored = int64_t(nll_sum.size()), n = context > 0 ? context : stored;
  bins = std::clamp<int64_t>(bins, 1, std::max<int64_t>(n, 1));
  std::vector<PositionBin> out;
  for (int64_t b = 0; b < bins; ++b) {
    PositionBin pb;
    pb.begin = n * b / bins, pb.end = n * (b + 1) / bins;
    double s = 0;
    for (int64_t p = pb.begin; p < std::min(pb.end, stored); ++p) s += nll_sum[size_t(p)], pb.count += count[size_t(p)];
    pb.mean_nll = pb.count ? s / double(pb.count) : 0.0;
    out.push_back(pb);
  }
  return out;
}

/// -log softmax(logits)[target], in double (log-sum-exp with the max taken out).
inline double token_nll(const float* logits, int64_t vocab, int32_t target) {
  float mx = logits[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, logits[v]);
  double s = 0;
  for (int64_t v = 0; v < vocab; ++v) s += std::exp(double(logits[v]) - double(mx));
  return std::log(s) + double(mx) - double(logits[target]);
}

/// Perplexity of `model` (a model::Llama<B>) over `tokens`. Memory: one KV cache of `context`
/// tokens, the window's hidden states, and [logits_rows, vocab] logits.
template <class Model>
PerplexityResult perplexity(Model& model, std::span<const int32_t> tokens, const PerplexityOptions& opts) {
  const int64_t n = int64_t(tokens.size()), N = opts.context;
  const int64_t S = opts.stride > 0 ? opts.stride : N;
  if (N < 2) throw make_error("perplexity", "context", "must be >= 2, got " + std::to_string(N));
  if (S > N) throw make_error("perplexity", "stride", "must be <= context (" + std::to_string(N) + "), got " + std::to_string(S));
  if (n < 2) throw make_error("perplexity", "tokens", "need at least 2 tokens, got " + std::to_string(n));
  const int64_t vocab = model.config().vocab_size;

  PerplexityResult r;
  r.context = N, r.stride = S;
  r.position_nll_sum.assign(size_t(std::min(N, n)), 0.0);
  r.position_count.assign(size_t(std::min(N, n)), 0);
  // Layer-streamed: one window is one forward() from an empty cache, so only the current
  // layer's keys/values are ever needed (1/num_layers of a full cache).
  auto cache = model.make_cache(std::min(N, n), /*layer_streamed=*/true);
  std::vector<float> logits;
  constexpr bool backend_nll = requires(const typename Model::Scalar* h, const int32_t* t, double* d) {
    model.nll(h, int64_t(1), t, d);
  };
  if constexpr (!backend_nll) logits.resize(size_t(opts.logits_rows * vocab));
  std::vector<double> row_nll(size_t(opts.logits_rows));
  std::vector<int32_t> targets;
  double total = 0;
  // The targets the windows below will score (the progress total): a window scores its targets
  // past those already scored, so non-overlapping windows skip each window's first token.
  int64_t to_score = 0;
  for (int64_t b = 0, until = 0; until < n - 1; b += S) {
    const int64_t e = std::min(b + N, n);
    to_score += (e - b - 1) - std::max<int64_t>(0, until - b - 1);
    until = e;
    if (e == n) break;
  }
  int64_t scored_until = 0;  // targets < this index are already scored (target index = token index)
  for (int64_t begin = 0; scored_until < n - 1; begin += S) {
    const int64_t end = std::min(begin + N, n);
    cache.clear();
    std::vector<int32_t> window(tokens.begin() + begin, tokens.begin() + end);
    if (opts.window_bos >= 0 && begin > 0) window[0] = opts.window_bos;
    const auto hidden = model.forward(window, cache);
    // Targets begin+p+1 for window positions p; score only those not yet scored.
    const int64_t p_first = std::max<int64_t>(0, scored_until - begin - 1), p_end = end - begin - 1;
    for (int64_t p0 = p_first; p0 < p_end; p0 += opts.logits_rows) {
      const int64_t rows = std::min(opts.logits_rows, p_end - p0);
      if constexpr (backend_nll) {
        // The backend computes the loss where the logits are (the GPU): targets are the window's
        // next tokens (true tokens, also where window[0] was replaced by BOS).
        targets.assign(tokens.begin() + begin + p0 + 1, tokens.begin() + begin + p0 + 1 + rows);
        model.nll(hidden.data() + p0 * hidden.cols(), rows, targets.data(), row_nll.data());
      } else {
        model.logits(hidden.data() + p0 * hidden.cols(), rows, logits.data());
        for (int64_t i = 0; i < rows; ++i)
          row_nll[size_t(i)] = token_nll(logits.data() + i * vocab, vocab, tokens[size_t(begin + p0 + i + 1)]);
      }
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t p = p0 + i;
        const double nll = row_nll[size_t(i)];
        if (!std::isfinite(nll))
          throw make_error("perplexity", "loss",
                           "not finite (NaN or inf) predicting token " + std::to_string(begin + p + 1) + ": " +
                               opts.nonfinite_hint);
        total += nll;
        r.position_nll_sum[size_t(p)] += nll;
        r.position_count[size_t(p)] += 1;
        ++r.tokens;
      }
    }
    scored_until = end;
    ++r.windows;
    if (opts.progress) opts.progress(r.tokens, to_score);
    if (end == n) break;
  }
  r.mean_nll = total / double(r.tokens);
  r.perplexity = std::exp(r.mean_nll);
  r.curve = bin_positions(r.position_nll_sum, r.position_count, opts.bins, N);
  // exp(mean NLL) past 709.78 is inf (printed as "inf", or null in JSON): refuse instead.
  double worst = r.mean_nll;
  for (const auto& b : r.curve) worst = std::max(worst, b.mean_nll);
  if (!(worst < 709.78))
    throw make_error("perplexity", "loss",
                     "a mean NLL of " + std::to_string(worst) + " nats puts exp(NLL) past the double range: " +
                         opts.nonfinite_hint);
  return r;
}

}  // namespace ropex::eval
