// Rotating queries and keys in place: cos/sin tables (angles in double) and the two pair layouts.
#pragma once
#include <ropex/error.hpp>
#include <ropex/rope/frequencies.hpp>

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ropex {

/// cos and sin of every (token, pair): row t holds the angles of positions[t].
///   cos[t*half + i] = attention_factor * cos(positions[t] * inv_freq[i])   (same for sin)
/// Angles are formed and reduced in double (rope_angle), then stored as Real.
template <class Real = float>
struct BasicRopeTable {
  std::int64_t n_tokens = 0;
  int half = 0;  // rotary_dim / 2
  std::vector<Real> cos, sin;
};
using RopeTable = BasicRopeTable<float>;

/// Builds the table for the given per-token positions (any order: packed, shifted, StreamingLLM).
template <class Real = float>
BasicRopeTable<Real> rope_table(std::span<const double> inv_freq, std::span<const std::int64_t> positions,
                                double attention_factor = 1.0) {
  BasicRopeTable<Real> t;
  t.n_tokens = static_cast<std::int64_t>(positions.size());
  t.half = static_cast<int>(inv_freq.size());
  t.cos.resize(positions.size() * inv_freq.size());
  t.sin.resize(positions.size() * inv_freq.size());
  for (size_t p = 0; p < positions.size(); ++p) {
    for (size_t i = 0; i < inv_freq.size(); ++i) {
      const double a = rope_angle(positions[p], inv_freq[i]);
      t.cos[p * inv_freq.size() + i] = static_cast<Real>(attention_factor * std::cos(a));
      t.sin[p * inv_freq.size() + i] = static_cast<Real>(attention_factor * std::sin(a));
    }
  }
  return t;
}

/// Positions start, start+1, ..., start+n-1.
inline std::vector<std::int64_t> iota_positions(std::int64_t n, std::int64_t start = 0) {
  std::vector<std::int64_t> p(static_cast<size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = start + i;
  return p;
}

/// Rotates x in place:  x[t, h, :] <- R(positions[t]) x[t, h, :]  for the first r = 2*table.half
/// dims of every head (partial rotary leaves dims r..head_dim-1 untouched).
///
/// Element (t, h, j) lives at x[t*token_stride + h*head_stride + j]. Pair i rotates dims
///   half-rotated ("NeoX", HF):          (i, i + r/2)     head = [ccccssss....]
///   interleaved ("GPT-J", Meta, ggml):  (2i, 2i + 1)     head = [cscscscs....]
/// by   a' = a*cos - b*sin,   b' = a*sin + b*cos   (cos/sin from the table, which carries the
/// attention factor). T is float, double, Eigen::half or Eigen::bfloat16 (any type convertible
/// to and from Real); arithmetic is done in Real.
template <class T, class Real>
void apply_rope(T* x, std::int64_t n_tokens, std::int64_t n_heads, std::int64_t head_dim,
                std::int64_t token_stride, std::int64_t head_stride, const BasicRopeTable<Real>& table,
                RopeLayout layout) {
  const int r = 2 * table.half;
  if (r > head_dim)
    throw make_error("apply_rope", "rotary_dim", "rotary dim " + std::to_string(r) + " exceeds head_dim " +
                                                     std::to_string(head_dim));
  if (table.n_tokens != n_tokens)
    throw make_error("apply_rope", "table", "table has " + std::to_string(table.n_tokens) +
                                                " rows for " + std::to_string(n_tokens) + " tokens");
  for (std::int64_t t = 0; t < n_tokens; ++t) {
    const Real* c = table.cos.data() + t * table.half;
    const Real* s = table.sin.data() + t * table.half;
    for (std::int64_t h = 0; h < n_heads; ++h) {
      T* v = x + t * token_stride + h * head_stride;
      for (int i = 0; i < table.half; ++i) {
        const RopePair p = rope_pair(layout, i, r);
        Real a = static_cast<Real>(v[p.a]), b = static_cast<Real>(v[p.b]);
        rotate_pair(a, b, c[i], s[i]);
        v[p.a] = static_cast<T>(a);
        v[p.b] = static_cast<T>(b);
      }
    }
  }
}

/// Contiguous [n_tokens, n_heads, head_dim] convenience overload.
template <class T, class Real>
void apply_rope(T* x, std::int64_t n_tokens, std::int64_t n_heads, std::int64_t head_dim,
                const BasicRopeTable<Real>& table, RopeLayout layout) {
  apply_rope(x, n_tokens, n_heads, head_dim, n_heads * head_dim, head_dim, table, layout);
}

/// Meta -> HF weight permutation of q/k rows within one head (what convert_llama_weights_to_hf
/// does): HF row t*(r/2) + j holds Meta row 2j + t. With it, an interleaved-layout model and its
/// half-layout conversion compute identical attention. Returns the Meta row for each HF row.
inline std::vector<int> interleaved_to_half_permutation(int head_dim) {
  std::vector<int> perm(static_cast<size_t>(head_dim));
  for (int t = 0; t < 2; ++t)
    for (int j = 0; j < head_dim / 2; ++j) perm[static_cast<size_t>(t * (head_dim / 2) + j)] = 2 * j + t;
  return perm;
}

}  // namespace ropex
