// Online (streaming) softmax: the running max / running sum that lets attention visit keys in
// tiles and never hold a full row of scores (Milakov & Gimelshein 2018; FlashAttention, Dao 2022).
//
// For one query row, after seeing scores s_1..s_j:
//     m_j = max(m_{j-1}, s_j)
//     l_j = l_{j-1} * exp(m_{j-1} - m_j) + exp(s_j - m_j)
//     o_j = o_{j-1} * exp(m_{j-1} - m_j) + exp(s_j - m_j) * v_j
// and softmax(s) @ V = o_n / l_n. Two partial states over disjoint key sets merge the same way
// (split-KV decoding). Scalar ROPEX_HD code, no Eigen or CUDA includes: the CPU tiles and the
// CUDA kernels call these same functions.
#pragma once
#include <ropex/config.hpp>

#include <cmath>
#include <limits>

namespace ropex::attention {

ROPEX_HD inline float softmax_exp(float x) { return ::expf(x); }
ROPEX_HD inline double softmax_exp(double x) { return ::exp(x); }
ROPEX_HD inline float softmax_log(float x) { return ::logf(x); }
ROPEX_HD inline double softmax_log(double x) { return ::log(x); }

/// Running max and running sum of exp(score - max) for one query row.
template <class T>
struct SoftmaxState {
  T max = -std::numeric_limits<T>::infinity();
  T sum = T(0);
};

/// Moves the state to a new running max `max(state.max, block_max)` and returns the factor
/// `exp(m_old - m_new)` the caller multiplies its output accumulator by. A row that has seen only
/// masked scores (-inf) keeps factor 0 instead of exp(-inf - -inf) = NaN.
template <class T>
ROPEX_HD inline T softmax_rescale(SoftmaxState<T>& s, T block_max) {
  const T new_max = s.max > block_max ? s.max : block_max;
  if (new_max == -std::numeric_limits<T>::infinity()) return T(0);
  const T factor = softmax_exp(s.max - new_max);  // exp(-inf) = 0 on the first block
  s.sum *= factor;
  s.max = new_max;
  return factor;
}

/// exp(score - running max): the weight of one key after softmax_rescale (0 for masked -inf).
template <class T>
ROPEX_HD inline T softmax_weight(const SoftmaxState<T>& s, T score) {
  return softmax_exp(score - s.max);
}

/// Factors for merging two partial states a, b over disjoint keys: the merged output is
/// o = o_a * fa + o_b * fb (before dividing by the merged sum), merged = {max, fa*l_a + fb*l_b}.
template <class T>
struct SoftmaxMerge {
  SoftmaxState<T> merged;
  T factor_a, factor_b;
};

template <class T>
ROPEX_HD inline SoftmaxMerge<T> softmax_merge(const SoftmaxState<T>& a, const SoftmaxState<T>& b) {
  SoftmaxMerge<T> r;
  const T m = a.max > b.max ? a.max : b.max;
  if (m == -std::numeric_limits<T>::infinity()) {
    r.merged = SoftmaxState<T>{};
    r.factor_a = r.factor_b = T(0);
    return r;
  }
  r.factor_a = softmax_exp(a.max - m);
  r.factor_b = softmax_exp(b.max - m);
  r.merged.max = m;
  r.merged.sum = a.sum * r.factor_a + b.sum * r.factor_b;
  return r;
}

/// Merging two normalised partial outputs o_a, o_b over disjoint keys given their log-sum-exps
/// (context-parallel ring blocks, split-KV partials): o = o_a * factor_a + o_b * factor_b and
/// lse = ln(exp(lse_a) + exp(lse_b)); a partial with lse = -inf (no key seen) gets factor 0.
template <class T>
struct LseMerge {
  T lse, factor_a, factor_b;
};

template <class T>
ROPEX_HD inline LseMerge<T> lse_merge(T lse_a, T lse_b) {
  // A normalised output is the state {max = lse, sum = 1}; merge those, then renormalise.
  const SoftmaxMerge<T> m = softmax_merge(SoftmaxState<T>{lse_a, T(1)}, SoftmaxState<T>{lse_b, T(1)});
  if (!(m.merged.sum > T(0))) return {-std::numeric_limits<T>::infinity(), T(0), T(0)};
  const T inv = T(1) / m.merged.sum;
  return {m.merged.max + softmax_log(m.merged.sum), m.factor_a * inv, m.factor_b * inv};
}

/// 1 / sum: what the accumulated output is multiplied by at the end (0 for an all-masked row, so
/// it outputs zeros rather than NaN).
template <class T>
ROPEX_HD inline T softmax_finalize(const SoftmaxState<T>& s) {
  return s.sum > T(0) ? T(1) / s.sum : T(0);
}

}  // namespace ropex::attention
