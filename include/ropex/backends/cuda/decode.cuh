// Split-KV decode attention: a few query tokens against a long KV cache (FlashDecoding style).
//
//   grid = (splits, kv_heads * row_groups, batch): block (s, kvh, b) reads keys [s*chunk, (s+1)*chunk)
//   of KV head kvh ONCE for every query row that uses it (all `group` query heads x n_q tokens:
//   grouped-query attention costs no extra KV traffic), keeps an online-softmax state per row,
//   and writes (o, lse) of its chunk. The last block of each (b, kvh) to finish (atomic counter)
//   merges the splits, so the whole op is one launch.
//
// Inside a block: a warp reads KPW = 32 / (head_dim/8) keys per 16-byte load (head_dim/8 lanes per
// key row), U key steps ahead for K and V (loads in flight), scores reduced across those lanes
// with shuffles, the running max/sum kept in base 2 (exp2 of scores pre-scaled by log2 e), and
// merged across lanes, warps and splits with attention/online_softmax.hpp's softmax_merge.
// Memory-bound: every K and V byte is read exactly once; the FLOP floor is ~1 FLOP/byte.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/attention/online_softmax.hpp>
#include <ropex/backends/cuda/common.cuh>

#include <algorithm>
#include <string>

namespace ropex::cuda {

/// K or V on the device: element (b, t, h, d) at data + b*batch_stride + t*token_stride + h*head_stride + d.
template <class T>
struct KVView {
  const T* data = nullptr;
  int64_t batch_stride = 0, token_stride = 0, head_stride = 0;
  static KVView token_major(const T* data, int64_t n_tokens, int heads, int head_dim) {
    return {data, n_tokens * heads * head_dim, static_cast<int64_t>(heads) * head_dim, head_dim};
  }
};

/// Scratch for the split partials and the per-(batch, kv head) arrival counters; grows on demand
/// (allocate once outside timed loops by calling reserve).
class DecodeWorkspace {
 public:
  DecodeWorkspace() = default;
  DecodeWorkspace(const DecodeWorkspace&) = delete;
  DecodeWorkspace& operator=(const DecodeWorkspace&) = delete;
  ~DecodeWorkspace() {
    if (partial_o_) cudaFree(partial_o_);
    if (partial_lse_) cudaFree(partial_lse_);
    if (counters_) cudaFree(counters_);
  }
  void reserve(size_t partial_rows, int head_dim, size_t n_counters) {
    if (partial_rows * head_dim > o_capacity_ || partial_rows > lse_capacity_) {
      if (partial_o_) cudaFree(partial_o_);
      if (partial_lse_) cudaFree(partial_lse_);
      o_capacity_ = partial_rows * head_dim;
      lse_capacity_ = partial_rows;
      ROPEX_CUDA_CHECK(cudaMalloc(&partial_o_, o_capacity_ * sizeof(float)));
      ROPEX_CUDA_CHECK(cudaMalloc(&partial_lse_, lse_capacity_ * sizeof(float)));
    }
    if (n_counters > counter_capacity_) {
      if (counters_) cudaFree(counters_);
      counter_capacity_ = n_counters;
      ROPEX_CUDA_CHECK(cudaMalloc(&counters_, n_counters * sizeof(unsigned)));
      ROPEX_CUDA_CHECK(cudaMemset(counters_, 0, n_counters * sizeof(unsigned)));  // kernels reset to 0
    }
  }
  float* partial_o() const { return partial_o_; }
  float* partial_lse() const { return partial_lse_; }
  unsigned* counters() const { return counters_; }

 private:
  float* partial_o_ = nullptr;
  float* partial_lse_ = nullptr;
  unsigned* counters_ = nullptr;
  size_t o_capacity_ = 0, lse_capacity_ = 0, counter_capacity_ = 0;
};

namespace detail {

template <class T>
struct DecodeArgs {
  const T* q;  // [batch, n_queries, n_heads, head_dim] contiguous
  KVView<T> k, v;
  T* o;        // [batch, n_queries, n_heads, head_dim] contiguous
  float* lse;  // [batch, n_heads, n_queries] natural log, or nullptr
  float* partial_o;    // [batch, kv_heads * row_groups, splits, ROWS, head_dim]
  float* partial_lse;  // [batch, kv_heads * row_groups, splits, ROWS]
  unsigned* counters;  // [batch, kv_heads * row_groups]
  attention::AttentionShape shape;
  int splits, row_groups;
  int64_t keys_per_split;
  float scale_log2;  // scale * log2(e)
};

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int LANES>
__device__ __forceinline__ float sum_lanes(float x) {  // sum over groups of LANES consecutive lanes
#pragma unroll
  for (int o = LANES / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <class T>
__device__ __forceinline__ void load8(float (&f)[8], const T* p) {
  const Vec16<T> v = *reinterpret_cast<const Vec16<T>*>(p);
#pragma unroll
  for (int e = 0; e < 8; ++e) f[e] = to_float(v.v[e]);
}

/// Streaming 16-byte load of KV (read once: evict-first in L2, no L1 allocation).
__device__ __forceinline__ int4 load_stream(const void* p) {
  int4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.s32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

template <class T>
__device__ __forceinline__ void unpack8(float (&f)[8], int4 raw) {
  const Vec16<T> v = *reinterpret_cast<const Vec16<T>*>(&raw);
#pragma unroll
  for (int e = 0; e < 8; ++e) f[e] = to_float(v.v[e]);
}

template <class T, int HD, int ROWS, int NW, int U>
__global__ void __launch_bounds__(NW * 32, ROWS == 4 ? 4 : 1) decode_kernel(DecodeArgs<T> a) {
  static_assert(sizeof(T) == 2, "decode reads 16-bit KV");
  constexpr int LPK = HD / 8;      // lanes per key row (8 elements = 16 bytes each)
  constexpr int KPW = 32 / LPK;    // keys per warp per load
  constexpr int STEP = NW * KPW;   // keys per block per unrolled slot
  static_assert(32 % LPK == 0, "head_dim must be 64, 128 or 256");
  using State = attention::SoftmaxState<float>;

  const int split = blockIdx.x, b = blockIdx.z;
  const int kvh = blockIdx.y / a.row_groups, rg = blockIdx.y - kvh * a.row_groups;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int ks = lane / LPK, d0 = (lane % LPK) * 8;
  const attention::AttentionShape& s = a.shape;
  const int group = static_cast<int>(s.group());
  const int n_rows = static_cast<int>(s.n_queries) * group;

  // Query rows of this block: row r -> token t = gr / group, head kvh*group + gr % group.
  float q[ROWS][8];
  int64_t visible[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const int gr = rg * ROWS + r;
    if (gr < n_rows) {
      const int t = gr / group, h = kvh * group + gr % group;
      load8(q[r], a.q + ((static_cast<int64_t>(b) * s.n_queries + t) * s.n_heads + h) * HD + d0);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[r][e] *= a.scale_log2;
      visible[r] = s.visible_keys(t);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) q[r][e] = 0.f;
      visible[r] = 0;
    }
  }
  int64_t max_visible = 0;
#pragma unroll
  for (int r = 0; r < ROWS; ++r) max_visible = max(max_visible, visible[r]);

  const int64_t k_begin = static_cast<int64_t>(split) * a.keys_per_split;
  const int64_t k_end = min(k_begin + a.keys_per_split, max_visible);

  float m2[ROWS], l[ROWS], acc[ROWS][8];  // running max in base 2, sum, unnormalized output
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    m2[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[r][e] = 0.f;
  }

  const T* kbase = a.k.data + b * a.k.batch_stride + kvh * a.k.head_stride + d0;
  const T* vbase = a.v.data + b * a.v.batch_stride + kvh * a.v.head_stride + d0;
  for (int64_t k0 = k_begin; k0 < k_end; k0 += STEP * U) {
    int4 kr[U], vr[U];
    int64_t key[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {  // issue all loads first: 2U 16-byte loads in flight per lane
      key[u] = k0 + u * STEP + warp * KPW + ks;
      if (key[u] < k_end) {
        kr[u] = load_stream(kbase + key[u] * a.k.token_stride);
        vr[u] = load_stream(vbase + key[u] * a.v.token_stride);
      } else {
        kr[u] = vr[u] = make_int4(0, 0, 0, 0);
      }
    }
    float sc[U][ROWS];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[8];
      unpack8<T>(kf, kr[u]);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) d = fmaf(q[r][e], kf[e], d);
        d = sum_lanes<LPK>(d);
        sc[u][r] = key[u] < k_end && key[u] < visible[r] ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      float mx = m2[r];
#pragma unroll
      for (int u = 0; u < U; ++u) mx = fmaxf(mx, sc[u][r]);
      const float alpha = mx == -INFINITY ? 0.f : exp2f(m2[r] - mx);
      m2[r] = mx;
      l[r] *= alpha;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[r][e] *= alpha;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const float p = mx == -INFINITY ? 0.f : exp2f(sc[u][r] - mx);
        sc[u][r] = p;
        l[r] += p;
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float vf[8];
      unpack8<T>(vf, vr[u]);
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[r][e] = fmaf(sc[u][r], vf[e], acc[r][e]);
    }
  }

  // Merge the KPW key streams of this warp (lanes ks = 0..KPW-1 hold separate states).
  State st[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) st[r] = State{m2[r] * kLn2, l[r]};  // base 2 -> natural log domain
#pragma unroll
  for (int off = LPK; off < 32; off *= 2) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      State other{__shfl_xor_sync(0xffffffffu, st[r].max, off), __shfl_xor_sync(0xffffffffu, st[r].sum, off)};
      const auto mg = attention::softmax_merge(st[r], other);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float ao = __shfl_xor_sync(0xffffffffu, acc[r][e], off);
        acc[r][e] = acc[r][e] * mg.factor_a + ao * mg.factor_b;
      }
      st[r] = mg.merged;
    }
  }

  // Merge the NW warps through shared memory; warp 0 ends up with the block's state.
  __shared__ float sh_acc[NW][ROWS][HD];
  __shared__ State sh_st[NW][ROWS];
  if (ks == 0) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
#pragma unroll
      for (int e = 0; e < 8; ++e) sh_acc[warp][r][d0 + e] = acc[r][e];
      if (d0 == 0) sh_st[warp][r] = st[r];
    }
  }
  __syncthreads();

  const int64_t gi = static_cast<int64_t>(b) * gridDim.y + blockIdx.y;  // (batch, kv head, row group)
  // Thread layout for the epilogue: one thread per (row, dim) pair, looping.
  for (int idx = threadIdx.x; idx < ROWS * HD; idx += NW * 32) {
    const int r = idx / HD, d = idx - r * HD;
    State m = sh_st[0][r];
    float o = sh_acc[0][r][d];
    for (int w = 1; w < NW; ++w) {
      const auto mg = attention::softmax_merge(m, sh_st[w][r]);
      o = o * mg.factor_a + sh_acc[w][r][d] * mg.factor_b;
      m = mg.merged;
    }
    const float inv = attention::softmax_finalize(m);
    const float lse = m.sum > 0.f ? m.max + logf(m.sum) : -INFINITY;
    if (a.splits == 1) {
      const int gr = rg * ROWS + r;
      if (gr < n_rows) {
        const int t = gr / group, h = kvh * group + gr % group;
        a.o[((static_cast<int64_t>(b) * s.n_queries + t) * s.n_heads + h) * HD + d] = from_float<T>(o * inv);
        if (a.lse && d == 0) a.lse[(static_cast<int64_t>(b) * s.n_heads + h) * s.n_queries + t] = lse;
      }
    } else {
      const int64_t pr = (gi * a.splits + split) * ROWS + r;
      a.partial_o[pr * HD + d] = o * inv;
      if (d == 0) a.partial_lse[pr] = lse;
    }
  }
  if (a.splits == 1) return;

  // Last block to arrive merges all splits (one launch instead of a separate combine kernel).
  __shared__ bool is_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned done = atomicAdd(a.counters + gi, 1u);
    is_last = done == static_cast<unsigned>(a.splits - 1);
    if (is_last) a.counters[gi] = 0;  // ready for the next launch
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  // Each split's normalized output o_s with lse_s is the state {max = lse_s, sum = 1}.
  // (1) merged state per row: lanes merge strided splits, then the warp merges its lanes.
  __shared__ State merged[ROWS];
  for (int r = warp; r < ROWS; r += NW) {
    State m{};
    for (int sp = lane; sp < a.splits; sp += 32) {
      const float lse = __ldcg(a.partial_lse + (gi * a.splits + sp) * ROWS + r);
      if (lse != -INFINITY) m = attention::softmax_merge(m, State{lse, 1.f}).merged;
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      const State other{__shfl_xor_sync(0xffffffffu, m.max, off), __shfl_xor_sync(0xffffffffu, m.sum, off)};
      m = attention::softmax_merge(m, other).merged;
    }
    if (lane == 0) merged[r] = m;
  }
  __syncthreads();
  // (2) o = sum_s exp(lse_s - max) o_s / sum: independent loads, so many are in flight at once.
  for (int idx = threadIdx.x; idx < ROWS * HD; idx += NW * 32) {
    const int r = idx / HD, d = idx - r * HD;
    const int gr = rg * ROWS + r;
    if (gr >= n_rows) continue;
    const State m = merged[r];
    float o = 0.f;
#pragma unroll 8
    for (int sp = 0; sp < a.splits; ++sp) {
      const int64_t pr = (gi * a.splits + sp) * ROWS + r;
      const float lse = __ldcg(a.partial_lse + pr);
      const float w = lse == -INFINITY ? 0.f : attention::softmax_weight(m, lse);
      o += w * __ldcg(a.partial_o + pr * HD + d);
    }
    const int t = gr / group, h = kvh * group + gr % group;
    a.o[((static_cast<int64_t>(b) * s.n_queries + t) * s.n_heads + h) * HD + d] =
        from_float<T>(o * attention::softmax_finalize(m));
    if (a.lse && d == 0)
      a.lse[(static_cast<int64_t>(b) * s.n_heads + h) * s.n_queries + t] =
          m.sum > 0.f ? m.max + logf(m.sum) : -INFINITY;
  }
}

template <class T, int HD, int ROWS>
void launch_decode(DecodeArgs<T> a, int n_rows, int batch, int kv_heads, int max_splits, DecodeWorkspace& ws,
                   cudaStream_t stream) {
  constexpr int NW = 4, U = ROWS >= 8 ? 2 : 4;  // 8 rows: fewer keys in flight, to stay in registers
  constexpr int STEP = NW * (32 / (HD / 8)) * U;  // keys one block handles per loop iteration
  a.row_groups = static_cast<int>(ceil_div(n_rows, ROWS));
  const int64_t n_keys = a.shape.n_keys;
  const int64_t units = static_cast<int64_t>(batch) * kv_heads * a.row_groups;
  // One full wave: as many equal splits as the resident block slots allow (a partial second wave
  // would leave SMs idle for a whole block's time), but at least STEP keys per split.
  static const int slots = [] {
    int per_sm = 0;
    ROPEX_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, decode_kernel<T, HD, ROWS, NW, U>, NW * 32, 0));
    return std::max(1, per_sm) * device_sm_count();
  }();
  int splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(slots / units, ceil_div(n_keys, STEP))));
  if (max_splits > 0) splits = std::min(splits, max_splits);
  a.keys_per_split = ceil_div(ceil_div(n_keys, splits), STEP) * STEP;
  a.splits = static_cast<int>(ceil_div(n_keys, a.keys_per_split));
  if (a.splits > 1) {
    ws.reserve(static_cast<size_t>(units) * a.splits * ROWS, HD, static_cast<size_t>(units));
    a.partial_o = ws.partial_o();
    a.partial_lse = ws.partial_lse();
    a.counters = ws.counters();
  }
  dim3 grid(a.splits, kv_heads * a.row_groups, batch);
  decode_kernel<T, HD, ROWS, NW, U><<<grid, NW * 32, 0, stream>>>(a);
  check_launch("decode_kernel");
}

template <class T, int HD>
void decode_rows(DecodeArgs<T> a, int n_rows, int batch, int kv_heads, int max_splits, DecodeWorkspace& ws,
                 cudaStream_t stream) {
  if (n_rows <= 1) launch_decode<T, HD, 1>(a, n_rows, batch, kv_heads, max_splits, ws, stream);
  else if (n_rows <= 2) launch_decode<T, HD, 2>(a, n_rows, batch, kv_heads, max_splits, ws, stream);
  else if (n_rows <= 4) launch_decode<T, HD, 4>(a, n_rows, batch, kv_heads, max_splits, ws, stream);
  else launch_decode<T, HD, 8>(a, n_rows, batch, kv_heads, max_splits, ws, stream);
}

}  // namespace detail

/// Decode attention:  o[b, t, h] = softmax(q[b, t, h] . K[b, :, h/group]^T * scale) V[b, :, h/group]
/// for n_queries new tokens per sequence (shape.query_offset = n_keys - n_queries for a cache that
/// already holds them; causal masks later keys per token). q, o: [batch, n_queries, n_heads,
/// head_dim] contiguous; K, V: any strides (token- or head-major caches); lse: [batch, n_heads,
/// n_queries] or nullptr. T = __nv_bfloat16 or __half; head_dim 64, 128 or 256.
/// max_splits = 1 runs without the split/merge step (for tests of both paths).
template <class T>
void decode_attention(const T* q, KVView<T> k, KVView<T> v, T* o, float* lse, int batch,
                      const attention::AttentionShape& shape, DecodeWorkspace& ws, int max_splits = 0,
                      cudaStream_t stream = nullptr) {
  if (shape.n_heads <= 0 || shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0)
    throw make_error("cuda::decode_attention", "n_heads", "must be a positive multiple of n_kv_heads");
  if (shape.n_queries <= 0 || batch <= 0) return;
  if (shape.n_keys <= 0) throw make_error("cuda::decode_attention", "n_keys", "must be positive");
  detail::DecodeArgs<T> a{};
  a.q = q; a.k = k; a.v = v; a.o = o; a.lse = lse;
  a.shape = shape;
  a.scale_log2 = static_cast<float>(shape.scale) * detail::kLog2e;
  const int n_rows = static_cast<int>(shape.n_queries * shape.group());
  const int kvh = static_cast<int>(shape.n_kv_heads);
  switch (shape.head_dim) {
    case 64: detail::decode_rows<T, 64>(a, n_rows, batch, kvh, max_splits, ws, stream); break;
    case 128: detail::decode_rows<T, 128>(a, n_rows, batch, kvh, max_splits, ws, stream); break;
    case 256: detail::decode_rows<T, 256>(a, n_rows, batch, kvh, max_splits, ws, stream); break;
    default:
      throw make_error("cuda::decode_attention", "head_dim",
                       "must be 64, 128 or 256, got " + std::to_string(shape.head_dim));
  }
}

}  // namespace ropex::cuda
