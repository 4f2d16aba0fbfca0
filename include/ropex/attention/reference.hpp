// The attention oracle: softmax(q k^T * scale + causal/window mask) v, written the slow obvious way with
// every sum in double. Fast paths (tiled CPU, CUDA flash) are tested against it.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/error.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

namespace ropex::attention {

/// Checks the shape is something attention can run (heads divisible into KV groups, sizes >= 0).
inline void validate(const AttentionShape& s) {
  if (s.n_heads <= 0 || s.n_kv_heads <= 0 || s.n_heads % s.n_kv_heads != 0)
    throw make_error("attention", "n_heads", "must be a positive multiple of n_kv_heads");
  if (s.head_dim <= 0 || s.n_queries < 0 || s.n_keys < 0 || s.query_offset < 0)
    throw make_error("attention", "shape", "sizes must be non-negative (head_dim positive)");
  if (s.window < 0 || (s.window > 0 && !s.causal))
    throw make_error("attention", "window", "must be >= 0, and a sliding window needs causal attention");
}

/// out[i, h, :] = sum_j softmax_j(q_i . k_j * scale) v_j over the keys query i may see, in double.
/// Returns [n_queries, n_heads, head_dim] contiguous. A query that sees no key gets zeros. With
/// `lse`, also the natural-log sum of exp(score) per row, [n_heads, n_queries] (-inf where no key).
template <class T>
std::vector<double> attention_reference(HeadsView<const T> q, HeadsView<const T> k, HeadsView<const T> v,
                                        const AttentionShape& s, std::vector<double>* lse = nullptr) {
  validate(s);
  std::vector<double> out(static_cast<size_t>(s.n_queries * s.n_heads * s.head_dim), 0.0);
  if (lse) lse->assign(static_cast<size_t>(s.n_heads * s.n_queries), -INFINITY);
  std::vector<double> scores(static_cast<size_t>(s.n_keys));
  for (int64_t i = 0; i < s.n_queries; ++i) {
    const int64_t n_visible = s.visible_keys(i), first = std::min(s.first_key(i), n_visible);
    for (int64_t h = 0; h < s.n_heads; ++h) {
      const int64_t kvh = h / s.group();
      const T* qi = q.row(i, h);
      double max_score = -INFINITY;
      for (int64_t j = first; j < n_visible; ++j) {
        const T* kj = k.row(j, kvh);
        double dot = 0;
        for (int64_t d = 0; d < s.head_dim; ++d) dot += double(qi[d]) * double(kj[d]);
        scores[j] = dot * s.scale;
        max_score = std::max(max_score, scores[j]);
      }
      double denom = 0;
      for (int64_t j = first; j < n_visible; ++j) denom += (scores[j] = std::exp(scores[j] - max_score));
      if (lse && first < n_visible) (*lse)[static_cast<size_t>(h * s.n_queries + i)] = max_score + std::log(denom);
      double* o = out.data() + (i * s.n_heads + h) * s.head_dim;
      for (int64_t j = first; j < n_visible; ++j) {
        const T* vj = v.row(j, kvh);
        const double p = scores[j] / denom;
        for (int64_t d = 0; d < s.head_dim; ++d) o[d] += p * double(vj[d]);
      }
    }
  }
  return out;
}

}  // namespace ropex::attention
