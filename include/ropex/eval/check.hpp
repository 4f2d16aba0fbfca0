// The pieces of `ropex check`: every theory's prediction for one model (theories.hpp,
// scaling_law.hpp), the same tokens scored in one long window and in short windows (the comparison
// of eval/position_rise.hpp), the passkey lengths around the predictions, and a memory cap for the
// long window. The command (examples/ropex/cmd_check.cpp) runs them, resumably, and writes the report.
#pragma once
#include <ropex/error.hpp>
#include <ropex/eval/scorer.hpp>
#include <ropex/model/config.hpp>
#include <ropex/scaling_law.hpp>
#include <ropex/theories.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace ropex::eval {

/// RoPE facts of one model setting.
struct TheoryInputs {
  int head_dim = 0;      ///< rotary dims d
  int static_pairs = 0;  ///< pairs of the head that do not rotate
  double base = 0, train_len = 0, tune_len = 0, pretrain_base = 10000;
};

struct TheoryPrediction {
  std::string theory, source;
  std::optional<double> context;  ///< nullopt: the theory sets no bound for this model
  std::string note;
  bool context_limit = false;     ///< a supported-context prediction (sets the default --max-len and the passkey lengths)
};

/// Each theory's supported context for the model, in the order `ropex theories` prints them.
inline std::vector<TheoryPrediction> theory_predictions(const TheoryInputs& in) {
  std::vector<TheoryPrediction> out;
  const int d = in.head_dim;
  {
    const auto lim = extrapolation_limit(d, in.train_len, in.base, in.tune_len, in.pretrain_base);
    TheoryPrediction p{"liu_scaling_law", "Liu et al., arXiv 2310.05209, Theorem 3 (16a-16d)", {}, "", true};
    // Every pair completing a period inside T_train (d_extra = d, larger base): no bound.
    if (!(lim.critical_dimension == d && lim.regime == Regime::larger_base)) p.context = lim.limit;
    p.note = std::string("regime ") + regime_name(lim.regime) + (lim.hard_bound ? ", hard bound" : ", smooth degradation past T_tune");
    out.push_back(p);
  }
  {
    const auto len = men_context_length(d, in.base, std::int64_t{1} << 24, in.static_pairs);
    TheoryPrediction p{"men_discrimination_bound", "Men et al., arXiv 2405.14591, eq. 9-11", {}, "", true};
    if (len.bounded) p.context = double(len.length);
    else p.note = "B_m >= 0 for every distance below 2^24";
    out.push_back(p);
  }
  out.push_back({"slowest_pair_period", "2*pi*b^((d-2)/d), the slowest pair's period", slowest_period(d, in.base),
                 "its angle aliases past this distance", false});
  for (const auto t : {Dtype::bf16, Dtype::fp16}) {
    const auto nb = numeric_bounds(t);
    out.push_back({std::string(dtype_name(t)) + "_exact_positions", "2^p, p = " + std::to_string(nb.precision),
                   nb.exact_positions, "positions past it are not all representable in " + std::string(dtype_name(t)), false});
  }
  return out;
}

/// NLL of window[p+1] for p = 0 .. n-2, from one forward of the whole window.
inline std::vector<double> long_window_nll(Scorer& scorer, std::span<const int32_t> window) {
  std::vector<double> nll(window.size() - 1);
  scorer.score(window, 0, nll.data(), nullptr);
  return nll;
}

/// The same targets as long_window_nll, each scored once in short windows of S tokens with stride
/// S/2 (the first window scores its every target; each later one the targets the previous did not
/// reach, so every target has between S/2 and S tokens of context; HF's strided recipe).
inline std::vector<double> short_windows_nll(Scorer& scorer, std::span<const int32_t> window, int64_t S) {
  const int64_t n = int64_t(window.size());
  if (S < 4) throw make_error("check", "--short-window", "must be >= 4, got " + std::to_string(S));
  std::vector<double> nll(size_t(n - 1));
  const int64_t stride = S / 2;
  int64_t scored_until = 1;  // targets (token indices) below this are scored; token 0 is no target
  std::vector<double> buf;
  for (int64_t b = 0; scored_until < n; b += stride) {
    const int64_t e = std::min(b + S, n);
    const int64_t first = scored_until - b - 1;  // the window position that predicts token scored_until
    buf.resize(size_t(e - b - 1 - first));
    scorer.score(window.subspan(size_t(b), size_t(e - b)), first, buf.data(), nullptr);
    for (size_t i = 0; i < buf.size(); ++i) nll[size_t(b + first) + i] = buf[i];
    scored_until = e;
    if (e == n) break;
  }
  return nll;
}

/// Passkey lengths around the predictions: P/2, P, 2P for each finite context-limit prediction P
/// inside [S/2, N], plus S; capped at N, at least 64 tokens, ascending.
inline std::vector<int64_t> passkey_lengths(const std::vector<TheoryPrediction>& preds, int64_t S, int64_t N) {
  std::set<int64_t> L{std::min(S, N)};
  for (const auto& p : preds) {
    if (!p.context_limit || !p.context) continue;
    const double P = *p.context;
    if (P < double(S) / 2 || P > double(N)) continue;
    for (double f : {0.5, 1.0, 2.0}) L.insert(std::min<int64_t>(N, std::max<int64_t>(64, int64_t(std::llround(P * f)))));
  }
  return {L.begin(), L.end()};
}

/// Tokens of one long window that fit in `bytes` of host memory, by the forward's main buffers:
/// activations of every token through one layer (hidden, q/k/v, attention output, the MLP's
/// intermediate x3) and one layer's keys/values, in float32. An estimate: it sets the default
/// --max-len cap, never a result.
inline int64_t memory_cap_tokens(const model::LlamaConfig& c, double bytes) {
  const double per_token = 4.0 * double(6 * c.hidden_size + 3 * c.intermediate_size +
                                        4 * c.num_key_value_heads * c.head_dim + c.num_attention_heads * c.head_dim);
  return std::max<int64_t>(2, int64_t(bytes / per_token));
}

/// The passkey limit of docs/validation.md section 6: the largest tested length L such that every
/// tested length <= L has mean accuracy >= 0.5 (0 when the shortest already fails).
inline int64_t passkey_limit(const std::vector<std::pair<int64_t, double>>& length_accuracy) {
  auto v = length_accuracy;
  std::sort(v.begin(), v.end());
  int64_t lim = 0;
  for (const auto& [L, a] : v) {
    if (a < 0.5) break;
    lim = L;
  }
  return lim;
}

}  // namespace ropex::eval
