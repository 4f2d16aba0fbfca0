// The KV cache: every layer's rotated keys and values of the tokens seen so far, so a new token
// attends to them without recomputing the prefix.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/error.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ropex::model {

/// What every KV cache (CPU and CUDA) keeps besides its storage: the shape, how many tokens are
/// filled, and the checks on growing it. The storage classes derive from it.
class KVCacheBook {
 public:
  KVCacheBook() = default;
  KVCacheBook(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity)
      : n_layers_(n_layers), n_kv_heads_(n_kv_heads), head_dim_(head_dim), capacity_(capacity) {}

  int64_t length() const { return length_; }
  int64_t n_layers() const { return n_layers_; }
  int64_t capacity() const { return capacity_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t n_kv_heads() const { return n_kv_heads_; }
  /// Forgets every cached token (the memory is kept for the next sequence).
  void clear() { length_ = 0; }
  /// Keeps only the first n tokens (rewind: retry a continuation, time one decode step).
  void truncate(int64_t n) {
    if (n < 0 || n > length_)
      throw make_error("kv cache", "truncate", std::to_string(n) + " is outside [0, " + std::to_string(length_) + "]");
    length_ = n;
  }

  /// Throws ropex::Error when n more tokens do not fit.
  void reserve_more(int64_t n) const {
    if (length_ + n > capacity_)
      throw make_error("kv cache", "capacity",
                       std::to_string(length_) + " cached + " + std::to_string(n) + " new tokens exceed " +
                           std::to_string(capacity_));
  }
  /// Marks n appended tokens (every layer) as filled.
  void commit(int64_t n) {
    reserve_more(n);
    length_ += n;
  }

 protected:
  int64_t n_layers_ = 0, n_kv_heads_ = 0, head_dim_ = 0, capacity_ = 0, length_ = 0;
};

/// Keys and values, float32, head-major per layer so each head's rows are contiguous for
/// attention:  k, v : [layers, kv_heads, capacity, head_dim].  length() tokens are filled.
/// Keys are stored after RoPE (positions 0 .. length-1), as Hugging Face's cache does.
class KVCache : public KVCacheBook {
 public:
  KVCache() = default;
  KVCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity)
      : KVCacheBook(n_layers, n_kv_heads, head_dim, capacity),
        k_(size_t(n_layers * n_kv_heads * capacity * head_dim)),
        v_(size_t(n_layers * n_kv_heads * capacity * head_dim)) {}

  /// Layer l's keys / values as (token, head) row views: row(t, h) -> head_dim floats.
  attention::HeadsView<float> keys(int64_t layer) { return view(k_, layer); }
  attention::HeadsView<float> values(int64_t layer) { return view(v_, layer); }

  /// Copies n new tokens' keys and values (token-major [n, kv_heads, head_dim]) into layer l at
  /// positions length()+offset .. length()+offset+n-1 (offset: where a chunk of a longer call
  /// starts). Call commit(total) once every layer has been appended.
  void append(int64_t layer, const float* k_new, const float* v_new, int64_t n, int64_t offset = 0) {
    reserve_more(offset + n);
    auto kd = keys(layer), vd = values(layer);
    const int64_t at = length_ + offset;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < n_kv_heads_; ++h) {
        const float* ks = k_new + (t * n_kv_heads_ + h) * head_dim_;
        const float* vs = v_new + (t * n_kv_heads_ + h) * head_dim_;
        std::copy(ks, ks + head_dim_, kd.row(at + t, h));
        std::copy(vs, vs + head_dim_, vd.row(at + t, h));
      }
  }
  /// Bytes held (both tensors).
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  attention::HeadsView<float> view(std::vector<float>& buf, int64_t layer) {
    return attention::head_major(buf.data() + layer * n_kv_heads_ * capacity_ * head_dim_, capacity_, head_dim_);
  }
  std::vector<float> k_, v_;
};

}  // namespace ropex::model
