// How attention sees its inputs: per-head rows of head_dim contiguous numbers, addressed by
// (token, head) through two strides, so one kernel reads token-major projections
// ([tokens, heads, head_dim], straight out of the q/k/v matmuls) and head-major KV caches
// ([heads, capacity, head_dim]) alike.
#pragma once
#include <ropex/config.hpp>

#include <cstdint>

namespace ropex::attention {

/// rows(t, h) = data + t*token_stride + h*head_stride, each row head_dim contiguous elements.
template <class T>
struct HeadsView {
  T* data = nullptr;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
  ROPEX_HD T* row(int64_t token, int64_t head) const { return data + token * token_stride + head * head_stride; }
};

/// The same view, read-only.
template <class T>
ROPEX_HD inline HeadsView<const T> const_view(HeadsView<T> v) {
  return {v.data, v.token_stride, v.head_stride};
}

/// Token-major [tokens, heads, head_dim] view.
template <class T>
ROPEX_HD inline HeadsView<T> token_major(T* data, int64_t n_heads, int64_t head_dim) {
  return {data, n_heads * head_dim, head_dim};
}
/// Head-major [heads, capacity, head_dim] view (what the KV cache stores).
template <class T>
ROPEX_HD inline HeadsView<T> head_major(T* data, int64_t capacity, int64_t head_dim) {
  return {data, head_dim, capacity * head_dim};
}

/// Sizes of one attention call. Query i sits at absolute position query_offset + i and key j at
/// position j, so with `causal` query i sees keys 0 .. query_offset + i (a KV cache of
/// query_offset earlier tokens followed by the n_queries new ones). Query head h reads KV head
/// h / (n_heads / n_kv_heads) (grouped-query attention, Ainslie et al. 2023).
struct AttentionShape {
  int64_t n_queries = 0, n_keys = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t query_offset = 0;
  bool causal = true;
  double scale = 0;  // usually 1/sqrt(head_dim)
  /// Sliding window (Mistral, Qwen2, Phi-3): with causal, query i sees only the `window` most
  /// recent keys, itself included (HF: kv_idx > q_idx - sliding_window). 0 = no window.
  int64_t window = 0;
  ROPEX_HD int64_t group() const { return n_heads / n_kv_heads; }
  /// Number of keys query i may see (causal: up to and including its own position).
  ROPEX_HD int64_t visible_keys(int64_t i) const {
    if (!causal) return n_keys;
    const int64_t v = query_offset + i + 1;
    return v < n_keys ? v : n_keys;
  }
  /// First key query i may see: keys [first_key(i), visible_keys(i)) are its window.
  ROPEX_HD int64_t first_key(int64_t i) const {
    if (!causal || window <= 0) return 0;
    const int64_t f = query_offset + i + 1 - window;
    return f > 0 ? f : 0;
  }
};

}  // namespace ropex::attention
