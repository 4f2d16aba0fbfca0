// Where the loss rises because of position, not content: the rule pre-registered in
// docs/validation.md (section 6), written once here; `ropex check` and the experiment scripts (which
// call `ropex check`) both use it.
//
// The same tokens are scored twice: in one long window (token at position p sees p tokens before
// it) and in short windows of S tokens with stride S/2 (every token sees between S/2 and S tokens,
// all at positions < S, where the model was trained). d(p) = NLL_long(p) - NLL_short(p) holds the
// text fixed, so a rise of d is the position's doing.
//
//   bins of width B = S/4 over [0, N);  D_b = mean of d(p) over the bin's tokens (all long windows)
//   measured limit = begin of the first bin with begin >= S/2 and D_b > margin (0.5 nats);
//   none: censored ("> N").
#pragma once
#include <ropex/error.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ropex::eval {

struct RiseRule {
  int64_t short_window = 0;  ///< S: tokens of a short window
  double margin = 0.5;       ///< nats
  int64_t bin_width() const { return std::max<int64_t>(1, short_window / 4); }
  int64_t first_bin_begin() const { return short_window / 2; }
};

struct RiseBin {
  int64_t begin = 0, end = 0, count = 0;
  double mean_long = 0, mean_short = 0, mean_diff = 0;
};

struct RiseResult {
  std::vector<RiseBin> bins;
  std::optional<int64_t> limit;  ///< nullopt: no bin exceeded the margin (censored at the window)
  int64_t evaluated = 0;         ///< positions evaluated (N)
};

/// Bins per-position sums and applies the rule. long_sum/short_sum/count are indexed by position.
inline RiseResult position_rise(std::span<const double> long_sum, std::span<const double> short_sum,
                                std::span<const int64_t> count, const RiseRule& rule) {
  if (rule.short_window < 4) throw make_error("rise rule", "short_window", "must be >= 4, got " + std::to_string(rule.short_window));
  if (long_sum.size() != short_sum.size() || long_sum.size() != count.size())
    throw make_error("rise rule", "curves", "long, short and count must have one entry per position");
  RiseResult r;
  const int64_t n = int64_t(long_sum.size()), B = rule.bin_width();
  r.evaluated = n;
  for (int64_t b0 = 0; b0 < n; b0 += B) {
    RiseBin bin;
    bin.begin = b0, bin.end = std::min(n, b0 + B);
    double sl = 0, ss = 0;
    for (int64_t p = bin.begin; p < bin.end; ++p) sl += long_sum[size_t(p)], ss += short_sum[size_t(p)], bin.count += count[size_t(p)];
    if (bin.count) bin.mean_long = sl / double(bin.count), bin.mean_short = ss / double(bin.count);
    bin.mean_diff = bin.mean_long - bin.mean_short;
    if (!r.limit && bin.count && bin.begin >= rule.first_bin_begin() && bin.mean_diff > rule.margin) r.limit = bin.begin;
    r.bins.push_back(bin);
  }
  return r;
}

}  // namespace ropex::eval
