// RoPE on the GPU: rotate q and k in place, [tokens, heads, head_dim], per-token positions.
//
//   x[t, h, a_i], x[t, h, b_i]  <-  R(af * positions[t] * inv_freq[i])  (a_i, b_i)   i < rotary_dim/2
//   half layout (HF/NeoX):     head = [x0 x1 .. x_{r/2-1} | y0 y1 .. | untouched]   (a, b) = (i, i + r/2)
//   interleaved (GPT-J/Meta):  head = [x0 y0 x1 y1 .. | untouched]                  (a, b) = (2i, 2i + 1)
//
// The angles come from the same ROPEX_HD code as the CPU path (rope/frequencies.hpp: rope_angle,
// rotate_pair): pos * inv_freq is formed and reduced mod 2*pi in double, so position 1e6 is as
// accurate as position 10; only the final sincos is float. rope_inplace is one pass: a thread
// computes the cos/sin of its 32 bytes' pairs for one token and rotates those 32 bytes in 8
// heads (the angle math is per token, the bytes are per head). rope_apply rotates by a cos/sin
// table made earlier (rope_cos_sin_table), for callers that reuse one table many times (every
// layer of the LLaMA stack, flash prefill with fused RoPE). Tried and slower: two passes (table,
// then rotation; 3420 against 3795 GB/s on an H200), a table in shared memory (2701).
#pragma once
#include <ropex/backends/cuda/common.cuh>
#include <ropex/rope/frequencies.hpp>

#include <algorithm>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

namespace ropex::cuda {

/// inv_freq (one double per rotary pair) and the attention factor, copied to the device once per
/// model / scaling variant, with the 16 steps of rope_anchors. Build it from
/// RopeScaling::inv_freq(rotary_dim, seq_len) and RopeScaling::attention_factor(seq_len).
class RopeFrequencies {
 public:
  RopeFrequencies() = default;
  RopeFrequencies(std::span<const double> inv_freq, double attention_factor);  // after the table kernel
  RopeFrequencies(const RopeFrequencies&) = delete;
  RopeFrequencies& operator=(const RopeFrequencies&) = delete;
  RopeFrequencies(RopeFrequencies&& o) noexcept { swap(o); }
  RopeFrequencies& operator=(RopeFrequencies&& o) noexcept { swap(o); return *this; }
  ~RopeFrequencies() {
    if (inv_freq_) cudaFree(inv_freq_);
    if (steps_) cudaFree(steps_);
  }

  const double* inv_freq() const { return inv_freq_; }  // device pointer, [half]
  /// (cos, sin)(r * inv_freq[i]) at [r][i], r < 16, no attention factor: rope_anchors' steps (device).
  const float2* steps() const { return steps_; }
  int half() const { return half_; }                    // rotary_dim / 2
  float attention_factor() const { return attention_factor_; }

 private:
  void swap(RopeFrequencies& o) noexcept {
    std::swap(inv_freq_, o.inv_freq_);
    std::swap(steps_, o.steps_);
    std::swap(half_, o.half_);
    std::swap(attention_factor_, o.attention_factor_);
  }
  double* inv_freq_ = nullptr;
  float2* steps_ = nullptr;
  int half_ = 0;
  float attention_factor_ = 1.f;
};

namespace detail {

/// cos/sin of positions[token] for pair i, times the attention factor.
__device__ __forceinline__ float2 rope_cos_sin(int64_t position, double inv_freq, float attention_factor) {
  float s, c;
  sincosf(static_cast<float>(rope_angle(position, inv_freq)), &s, &c);
  return make_float2(attention_factor * c, attention_factor * s);
}

/// One 16-byte chunk of a head in registers: `a` holds dims a..a+VEC-1; in the half layout `b`
/// holds their partners r/2 further, in the interleaved layout `a` holds VEC/2 whole pairs.
template <class T>
struct Chunk16 {
  Vec16<T> a, b;
};

template <class T>
__device__ __forceinline__ Chunk16<T> load_chunk(const T* head, int chunk, int half, RopeLayout layout) {
  using V = Vec16<T>;
  Chunk16<T> d;
  d.a = *reinterpret_cast<const V*>(head + chunk * kVec<T>);
  if (layout == RopeLayout::half) d.b = *reinterpret_cast<const V*>(head + half + chunk * kVec<T>);
  return d;
}

/// Index of the first rotary pair held by 16-byte chunk `chunk` (kVec<T> elements).
template <class T>
__device__ __forceinline__ int first_pair(int chunk, RopeLayout layout) {
  return layout == RopeLayout::half ? chunk * kVec<T> : chunk * kVec<T> / 2;
}

/// Rotates a chunk in registers; cs(e) = cos/sin (float2) of the chunk's e-th pair (pair first_pair + e).
/// Chunk: Chunk16<T>, or any {a, b} of element arrays `v` (the Hopper prefill kernel's 8-byte pieces).
/// Shared by the RoPE kernels and the Hopper prefill kernel's in-shared-memory rotation.
template <class Chunk, class CosSin>
__device__ __forceinline__ void rotate_chunk_values(Chunk& d, RopeLayout layout, CosSin cs) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(d.a.v[0])>>;
  constexpr int VEC = sizeof(d.a.v) / sizeof(d.a.v[0]);
  if (layout == RopeLayout::half) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      float x = to_float(d.a.v[e]), y = to_float(d.b.v[e]);
      rotate_pair(x, y, cs(e).x, cs(e).y);
      d.a.v[e] = from_float<T>(x);
      d.b.v[e] = from_float<T>(y);
    }
  } else {
#pragma unroll
    for (int e = 0; e < VEC / 2; ++e) {
      float x = to_float(d.a.v[2 * e]), y = to_float(d.a.v[2 * e + 1]);
      rotate_pair(x, y, cs(e).x, cs(e).y);
      d.a.v[2 * e] = from_float<T>(x);
      d.a.v[2 * e + 1] = from_float<T>(y);
    }
  }
}

/// Rotates a loaded chunk and stores it; cs = cos/sin of the chunk's pairs (first_pair onwards).
template <class T>
__device__ __forceinline__ void rotate_store_chunk(T* head, int chunk, int half, RopeLayout layout, const float2* cs,
                                                   Chunk16<T> d) {
  using V = Vec16<T>;
  auto pair_cs = [&](int e) { return cs[e]; };
  if (layout == RopeLayout::half) {  // one branch around math and stores (the layout is a constant inside)
    rotate_chunk_values(d, RopeLayout::half, pair_cs);
    *reinterpret_cast<V*>(head + chunk * kVec<T>) = d.a;
    *reinterpret_cast<V*>(head + half + chunk * kVec<T>) = d.b;
  } else {
    rotate_chunk_values(d, RopeLayout::interleaved, pair_cs);
    *reinterpret_cast<V*>(head + chunk * kVec<T>) = d.a;
  }
}

/// Rotates one chunk of a head from src into dst (the same pointer for in place); cs = the cos/sin
/// row of its token. VEC = kVec<T> moves 16 bytes (see Chunk16), VEC = 1 is the scalar fallback
/// (one pair; rotary dim not a multiple of the vector).
template <class T, int VEC>
__device__ __forceinline__ void rotate_chunk(const T* src, T* dst, int chunk, int half, RopeLayout layout,
                                             const float2* cs) {
  if constexpr (VEC == kVec<T>) {
    rotate_store_chunk(dst, chunk, half, layout, cs + first_pair<T>(chunk, layout), load_chunk(src, chunk, half, layout));
  } else {
    const RopePair p = rope_pair(layout, chunk, 2 * half);
    float x = to_float(src[p.a]), y = to_float(src[p.b]);
    rotate_pair(x, y, cs[chunk].x, cs[chunk].y);
    dst[p.a] = from_float<T>(x);
    dst[p.b] = from_float<T>(y);
  }
}

struct RopeTensor {
  void* data;
  int heads;
  int64_t token_stride, head_stride;  // in elements
  void* out = nullptr;                 // nullptr: in place; else rotated dims written here
  int64_t out_token_stride = 0, out_head_stride = 0;
};

/// Streaming pass: a thread rotates one 16-byte chunk position (or one pair on the scalar path) of
/// one token in H consecutive heads of q and k. The chunk's cos/sin come from the per-token table
/// once, into registers, for all H heads (reading them per head made L2 traffic twice the DRAM
/// traffic), and the H loads are issued before any store.
/// Items of one launch: at most 2^31 (rope_apply splits longer inputs), indexed in 32 bits and
/// decomposed with FastDiv: a 64-bit division is a long instruction sequence per 16 bytes moved.
struct RopeItems {
  uint32_t n_items;           // items of this launch
  int64_t t0;                 // its first token
  FastDiv per_token, chunks;  // groups * chunks, chunks
};

/// This thread's item: token t, head group g, chunk c (false past the launch's items).
struct RopeItem {
  int64_t t;
  int g, c;
};
__device__ __forceinline__ bool rope_item(const RopeItems& items, RopeItem& it) {
  const uint32_t item = blockIdx.x * blockDim.x + threadIdx.x;
  if (item >= items.n_items) return false;
  const uint32_t tl = items.per_token.div(item);
  const uint32_t rest = item - tl * items.per_token.d;
  const uint32_t gq = items.chunks.div(rest);
  it = {items.t0 + tl, static_cast<int>(gq), static_cast<int>(rest - gq * items.chunks.d)};
  return true;
}

/// Head h of token t, counting q's heads first then k's (fields selected, not a reference to a
/// kernel parameter taken: that would copy the parameters to the stack).
template <class T>
__device__ __forceinline__ T* rope_head(const RopeTensor& q, const RopeTensor& k, int64_t t, int h) {
  const bool is_q = h < q.heads;
  const int hh = is_q ? h : h - q.heads;
  return static_cast<T*>(is_q ? q.data : k.data) + t * (is_q ? q.token_stride : k.token_stride) +
         hh * (is_q ? q.head_stride : k.head_stride);
}
/// Where head h's rotated chunk goes: in place, or the out tensor.
template <class T>
__device__ __forceinline__ T* rope_out(const RopeTensor& q, const RopeTensor& k, int64_t t, int h) {
  const bool is_q = h < q.heads;
  void* out = is_q ? q.out : k.out;
  if (out == nullptr) return rope_head<T>(q, k, t, h);
  const int hh = is_q ? h : h - q.heads;
  return static_cast<T*>(out) + t * (is_q ? q.out_token_stride : k.out_token_stride) +
         hh * (is_q ? q.out_head_stride : k.out_head_stride);
}

template <class T, int VEC, int H>
__global__ void __launch_bounds__(256) rope_apply_kernel(RopeTensor q, RopeTensor k, RopeItems items,
                                                         const float2* __restrict__ table, int half, RopeLayout layout) {
  pdl_launch_dependents();
  pdl_wait();
  const int heads = q.heads + k.heads;
  RopeItem it;
  if (!rope_item(items, it)) return;
  const int64_t t = it.t;
  const int g = it.g, c = it.c;
  auto head_ptr = [&](int h) { return rope_head<T>(q, k, t, h); };
  auto out_ptr = [&](int h) { return rope_out<T>(q, k, t, h); };
  const float2* row = table + t * half;
  if constexpr (VEC == kVec<T>) {
    constexpr int NP = VEC;  // pairs per chunk, at most (half layout; interleaved uses VEC/2)
    float2 cs[NP];
    const int p0 = first_pair<T>(c, layout);
    const int np = layout == RopeLayout::half ? VEC : VEC / 2;
#pragma unroll
    for (int e = 0; e < NP; ++e) cs[e] = e < np ? row[p0 + e] : make_float2(0.f, 0.f);
    Chunk16<T> d[H];
#pragma unroll
    for (int j = 0; j < H; ++j)
      if (g * H + j < heads) d[j] = load_chunk(head_ptr(g * H + j), c, half, layout);
#pragma unroll
    for (int j = 0; j < H; ++j)
      if (g * H + j < heads) rotate_store_chunk(out_ptr(g * H + j), c, half, layout, cs, d[j]);
  } else {
    for (int j = 0; j < H; ++j)
      if (g * H + j < heads) rotate_chunk<T, 1>(head_ptr(g * H + j), out_ptr(g * H + j), c, half, layout, row);
  }
}

/// Single pass (rope_inplace): a thread takes one token and a fixed pair of 16-byte pieces of
/// every head in a group of `heads_per_group` consecutive heads of q and k. Half layout: dims
/// [cV, cV + V) and their partners half further; interleaved: chunks c and c + half/V, whole pairs
/// each (the same 32 bytes per head as the half layout). The pieces' cos/sin are computed once, in
/// the thread, from positions[t] (the angle reduced in double, as everywhere) while the first
/// head's loads are in flight, and serve every head of the group: no table goes through memory.
/// The next head's loads are issued before this head's math (measured on an H200: 3795 GB/s at 8
/// heads a thread, against 3683 without, 3048 with two heads' loads at a time, and 3420 for the
/// former two passes, cos/sin table then rotation; docs/kernels.md, "RoPE").
template <class T, int VEC>
__global__ void __launch_bounds__(256) rope_single_pass_kernel(RopeTensor q, RopeTensor k, RopeItems items,
                                                               const int64_t* __restrict__ positions,
                                                               const double* __restrict__ inv_freq,
                                                               float attention_factor, int half, RopeLayout layout,
                                                               int heads_per_group) {
  pdl_launch_dependents();
  pdl_wait();
  RopeItem it;
  if (!rope_item(items, it)) return;
  const int c = it.c, h0 = it.g * heads_per_group, h1 = min(q.heads + k.heads, h0 + heads_per_group);
  const int64_t t = it.t;
  if constexpr (VEC == kVec<T>) {
    using V = Vec16<T>;
    const bool inter = layout == RopeLayout::interleaved;
    const int off_a = c * VEC, off_b = inter ? off_a + half : half + off_a;  // element offsets of the pieces
    auto load = [&](V& a, V& b, int h) {
      const T* x = rope_head<T>(q, k, t, h);
      a = *reinterpret_cast<const V*>(x + off_a);
      b = *reinterpret_cast<const V*>(x + off_b);
    };
    V a, b;
    load(a, b, h0);
    // The VEC pairs the pieces hold: half layout, (a[e], b[e]) is pair cV + e; interleaved, pieces
    // a and b hold pairs cV/2 + e and (cV + half)/2 + e, e < V/2.
    float2 cs[VEC];
    const int64_t pos = positions[t];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const int pair = !inter ? off_a + e : (e < VEC / 2 ? off_a / 2 + e : off_b / 2 + e - VEC / 2);
      cs[e] = rope_cos_sin(pos, inv_freq[pair], attention_factor);
    }
    for (int h = h0; h < h1; ++h) {
      V na, nb;
      if (h + 1 < h1) load(na, nb, h + 1);
      if (!inter) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          float x = to_float(a.v[e]), y = to_float(b.v[e]);
          rotate_pair(x, y, cs[e].x, cs[e].y);
          a.v[e] = from_float<T>(x);
          b.v[e] = from_float<T>(y);
        }
      } else {
#pragma unroll
        for (int e = 0; e < VEC / 2; ++e) {
          float x = to_float(a.v[2 * e]), y = to_float(a.v[2 * e + 1]);
          rotate_pair(x, y, cs[e].x, cs[e].y);
          a.v[2 * e] = from_float<T>(x);
          a.v[2 * e + 1] = from_float<T>(y);
          x = to_float(b.v[2 * e]), y = to_float(b.v[2 * e + 1]);
          rotate_pair(x, y, cs[VEC / 2 + e].x, cs[VEC / 2 + e].y);
          b.v[2 * e] = from_float<T>(x);
          b.v[2 * e + 1] = from_float<T>(y);
        }
      }
      T* y = rope_out<T>(q, k, t, h);
      *reinterpret_cast<V*>(y + off_a) = a;
      *reinterpret_cast<V*>(y + off_b) = b;
      a = na, b = nb;
    }
  } else {
    const float2 cs = rope_cos_sin(positions[t], inv_freq[c], attention_factor);
    const RopePair p = rope_pair(layout, c, 2 * half);
    for (int h = h0; h < h1; ++h) {
      const T* src = rope_head<T>(q, k, t, h);
      T* dst = rope_out<T>(q, k, t, h);
      float x = to_float(src[p.a]), y = to_float(src[p.b]);
      rotate_pair(x, y, cs.x, cs.y);
      dst[p.a] = from_float<T>(x);
      dst[p.b] = from_float<T>(y);
    }
  }
}

/// Where a table row's position comes from: one per token, or runs (row t of sequence b = t / n
/// is position starts[b] + t % n).
struct PerTokenPositions {
  const int64_t* positions;
  __device__ int64_t operator()(int64_t t) const { return positions[t]; }
};
struct RunPositions {
  const int64_t* starts;
  int64_t n;
  int64_t stride = 1;  // 16: rope_anchors' every 16th position
  __device__ int64_t operator()(int64_t t) const { return starts[t / n] + stride * (t % n); }
};
struct FirstPositions {  // row t is position t
  __device__ int64_t operator()(int64_t t) const { return t; }
};

/// cos/sin table for fused RoPE: table[t * half + i] = af * (cos, sin)(position(t) * inv_freq[i]).
template <class Position>
__global__ void rope_table_kernel(float2* __restrict__ table, Position position, int64_t n_rows,
                                  const double* __restrict__ inv_freq, int half, float attention_factor) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_rows * half) return;
  const int64_t t = idx / half;
  const int i = static_cast<int>(idx - t * half);
  table[idx] = rope_cos_sin(position(t), inv_freq[i], attention_factor);
}

}  // namespace detail

/// A strided [tokens, heads, head_dim] tensor on the device (strides in elements).
template <class T>
struct DeviceHeads {
  T* data = nullptr;
  int heads = 0;
  int64_t token_stride = 0, head_stride = 0;
  static DeviceHeads contiguous(T* data, int heads, int head_dim) {
    return {data, heads, static_cast<int64_t>(heads) * head_dim, head_dim};
  }
};

namespace detail {

/// How a launch covers q and k: 16-byte chunks where every pointer, stride and the rotary half
/// allow it (half % V == 0 in the half layout, 2*half % V == 0 interleaved), else one pair per
/// thread; items = tokens x ceil(heads / heads_per_item) x chunks, launched in pieces of < 2^31.
struct RopeLaunch {
  RopeTensor q, k;
  bool vec = false;
  int chunks = 0, heads_per_item = 1;
  int64_t per_token = 0, tokens_per_launch = 0;
  FastDiv div_token, div_chunk;
  RopeItems items(int64_t t0, int64_t nt) const { return {static_cast<uint32_t>(nt * per_token), t0, div_token, div_chunk}; }
};

template <class T>
RopeLaunch plan_rope(const char* who, const DeviceHeads<T>& q, const DeviceHeads<T>& k, const DeviceHeads<T>& q_out,
                     const DeviceHeads<T>& k_out, int half, RopeLayout layout, int heads_vec, int heads_scalar,
                     bool two_pieces = false) {
  constexpr int V = kVec<T>;
  auto aligned = [&](const DeviceHeads<T>& x) {
    return x.heads == 0 || (reinterpret_cast<uintptr_t>(x.data) % 16 == 0 && x.token_stride % V == 0 &&
                            x.head_stride % V == 0);
  };
  if ((q_out.data && q_out.heads != q.heads) || (k_out.data && k_out.heads != k.heads))
    throw make_error(who, "out", "must have the same number of heads as its input");
  RopeLaunch l;
  // two_pieces (the single pass): 2 x 16 bytes per head in either layout, so half % V == 0.
  const bool whole = layout == RopeLayout::half || two_pieces ? half % V == 0 : (2 * half) % V == 0;
  l.vec = aligned(q) && aligned(k) && (!q_out.data || aligned(q_out)) && (!k_out.data || aligned(k_out)) && whole;
  l.q = {q.data, q.heads, q.token_stride, q.head_stride, q_out.data, q_out.token_stride, q_out.head_stride};
  l.k = {k.data, k.heads, k.token_stride, k.head_stride, k_out.data, k_out.token_stride, k_out.head_stride};
  l.chunks = !l.vec ? half : (layout == RopeLayout::half || two_pieces ? half / V : 2 * half / V);
  l.heads_per_item = l.vec ? heads_vec : heads_scalar;  // heads one thread takes, per path
  l.per_token = ceil_div(q.heads + k.heads, l.heads_per_item) * l.chunks;
  if (l.per_token >= (int64_t{1} << 31)) throw make_error(who, "heads", "too many heads x chunks");
  l.tokens_per_launch = std::max<int64_t>(1, (int64_t{1} << 31) / l.per_token);
  l.div_token = FastDiv(static_cast<uint32_t>(l.per_token));
  l.div_chunk = FastDiv(static_cast<uint32_t>(l.chunks));
  return l;
}

inline void check_rotary(const char* who, int half, int head_dim) {
  if (2 * half > head_dim)
    throw make_error(who, "rotary_dim", std::to_string(2 * half) + " exceeds head_dim " + std::to_string(head_dim));
}

}  // namespace detail

/// Rotates q and k by a cos/sin table made earlier (rope_cos_sin_table; [n_tokens, half] float2),
/// so the LLaMA stack computes a chunk's table once and applies it in every layer, and flash
/// prefill rotates K once with the table it rotates Q tiles by.
/// With q_out / k_out (same head counts): q and k are only read and the rotated dims are written
/// there (out of place; dims past 2 * half are not written: copy them first when rotary < head_dim).
/// pdl: launched as a programmatic dependent of the kernel before it (common.cuh).
template <class T>
void rope_apply(DeviceHeads<T> q, DeviceHeads<T> k, int64_t n_tokens, int head_dim, const float2* table, int half,
                RopeLayout layout, cudaStream_t stream = nullptr, int heads_per_thread = 1,
                DeviceHeads<T> q_out = {}, DeviceHeads<T> k_out = {}, bool pdl = false) {
  detail::check_rotary("cuda::rope_apply", half, head_dim);
  if (n_tokens <= 0 || q.heads + k.heads == 0) return;
  // 16-byte chunks of 1 or 2 heads a thread; the scalar path runs one head per thread.
  const detail::RopeLaunch run = detail::plan_rope("cuda::rope_apply", q, k, q_out, k_out, half, layout,
                                                   heads_per_thread != 1 ? 2 : 1, 1);
  constexpr int V = kVec<T>;
  auto kernel = run.vec && run.heads_per_item == 2 ? detail::rope_apply_kernel<T, V, 2>
                : run.vec         ? detail::rope_apply_kernel<T, V, 1>
                                  : detail::rope_apply_kernel<T, 1, 1>;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += run.tokens_per_launch) {
    const int64_t nt = std::min(run.tokens_per_launch, n_tokens - t0);
    launch_pdl(kernel, dim3(static_cast<unsigned>(ceil_div(nt * run.per_token, 256))), dim3(256), 0, stream, pdl, run.q,
               run.k, run.items(t0, nt), table, half, layout);
    check_launch("rope_apply_kernel");
  }
}

/// Rotates q and k in place (either may have heads = 0): the first 2 * freq.half() dims of each
/// head, by the angles of positions[t] (device array, one per token). T: float, __half,
/// __nv_bfloat16. Pass k = {} to rotate one tensor. One pass: each thread computes the cos/sin of
/// the pairs in 32 bytes of a head for one token and rotates those 32 bytes in heads_per_thread
/// consecutive heads (a tuning knob; 8 was the fastest of 5-20 measured, docs/kernels.md).
template <class T>
void rope_inplace(DeviceHeads<T> q, DeviceHeads<T> k, int64_t n_tokens, int head_dim,
                  const int64_t* positions, const RopeFrequencies& freq, RopeLayout layout,
                  cudaStream_t stream = nullptr, int heads_per_thread = 8) {
  const int half = freq.half();
  detail::check_rotary("cuda::rope_inplace", half, head_dim);
  if (heads_per_thread < 1) throw make_error("cuda::rope_inplace", "heads_per_thread", "must be >= 1");
  if (n_tokens <= 0 || q.heads + k.heads == 0) return;
  const detail::RopeLaunch l =
      detail::plan_rope("cuda::rope_inplace", q, k, {}, {}, half, layout, heads_per_thread, heads_per_thread, true);
  auto kernel = l.vec ? detail::rope_single_pass_kernel<T, kVec<T>> : detail::rope_single_pass_kernel<T, 1>;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += l.tokens_per_launch) {
    const int64_t nt = std::min(l.tokens_per_launch, n_tokens - t0);
    launch_pdl(kernel, dim3(static_cast<unsigned>(ceil_div(nt * l.per_token, 256))), dim3(256), 0, stream, false, l.q,
               l.k, l.items(t0, nt), positions, freq.inv_freq(), freq.attention_factor(), half, layout,
               heads_per_thread);
    check_launch("rope_single_pass_kernel");
  }
}

/// Fills table [n_tokens, half] (device, float2 = (cos, sin) * attention factor) for fused RoPE in
/// flash attention (positions per token, so shifted or re-based positions work).
inline void rope_cos_sin_table(float2* table, const int64_t* positions, int64_t n_tokens,
                               const RopeFrequencies& freq, cudaStream_t stream = nullptr) {
  const int64_t n = n_tokens * freq.half();
  if (n == 0) return;
  detail::rope_table_kernel<<<static_cast<unsigned>(ceil_div(n, 256)), 256, 0, stream>>>(
      table, detail::PerTokenPositions{positions}, n_tokens, freq.inv_freq(), freq.half(), freq.attention_factor());
  check_launch("rope_table_kernel");
}

/// rope_cos_sin_table for positions that run on within each sequence: row t (of batch * n_per_seq)
/// is position starts[t / n_per_seq] + t % n_per_seq (starts: device, [batch]). inv_freq: device
/// [half] (RopeFrequencies::inv_freq()).
inline void rope_cos_sin_table_runs(float2* table, const int64_t* starts, int batch, int64_t n_per_seq,
                                    const double* inv_freq, int half, float attention_factor,
                                    cudaStream_t stream = nullptr) {
  const int64_t n = static_cast<int64_t>(batch) * n_per_seq * half;
  if (n == 0) return;
  detail::rope_table_kernel<<<static_cast<unsigned>(ceil_div(n, 256)), 256, 0, stream>>>(
      table, detail::RunPositions{starts, n_per_seq}, static_cast<int64_t>(batch) * n_per_seq, inv_freq, half,
      attention_factor);
  check_launch("rope_table_kernel");
}

/// The cos/sin of a run of positions (start, start + 1, ...) as 16-row anchors, for kernels that
/// make a tile's cos/sin in shared memory instead of reading a per-token table (1/16 of its bytes):
/// cos/sin(start + 16 a + r) = anchors[a] (x) steps[r], a complex product (angle addition), r < 16,
/// with RopeFrequencies::steps(). Both are formed from positions reduced in double (rope_angle), so
/// the product is within a few float roundings of the direct value at any position.
///   anchors [batch][n_anchors][half] = af * (cos, sin)((starts[b] + 16 a) * inv_freq[i])
inline void rope_anchors(float2* anchors, const int64_t* starts, int batch, int64_t n_anchors, const double* inv_freq,
                         int half, float attention_factor, cudaStream_t stream = nullptr) {
  const int64_t rows = static_cast<int64_t>(batch) * n_anchors, n = rows * half;
  if (n == 0) return;
  detail::rope_table_kernel<<<static_cast<unsigned>(ceil_div(n, 256)), 256, 0, stream>>>(
      anchors, detail::RunPositions{starts, n_anchors, 16}, rows, inv_freq, half, attention_factor);
  check_launch("rope_table_kernel");
}

inline RopeFrequencies::RopeFrequencies(std::span<const double> inv_freq, double attention_factor)
    : half_(static_cast<int>(inv_freq.size())), attention_factor_(static_cast<float>(attention_factor)) {
  if (inv_freq.empty()) throw make_error("cuda::RopeFrequencies", "inv_freq", "is empty");
  ROPEX_CUDA_CHECK(cudaMalloc(&inv_freq_, inv_freq.size() * sizeof(double)));
  ROPEX_CUDA_CHECK(cudaMemcpy(inv_freq_, inv_freq.data(), inv_freq.size() * sizeof(double), cudaMemcpyHostToDevice));
  ROPEX_CUDA_CHECK(cudaMalloc(&steps_, 16 * inv_freq.size() * sizeof(float2)));
  detail::rope_table_kernel<<<static_cast<unsigned>(ceil_div(int64_t{16} * half_, int64_t{256})), 256>>>(
      steps_, detail::FirstPositions{}, 16, inv_freq_, half_, 1.f);
  check_launch("rope_table_kernel");
}

}  // namespace ropex::cuda
