// Split-KV decode attention: a few query tokens against a long KV cache (FlashDecoding style).
//
//   grid = (splits, kv_heads * row_groups, batch): block (s, kvh, b) reads keys [s*chunk, (s+1)*chunk)
//   of KV head kvh ONCE for every query row that uses it (all `group` query heads x n_q tokens:
//   grouped-query attention costs no extra KV traffic), keeps an online-softmax state per row,
//   and writes (o, lse) of its chunk. The last block of each (b, kvh) to finish (atomic counter)
//   merges the splits, so the whole op is one launch.
//
// Four kernels. The CUDA-core one (one query row per KV head, e.g. multi-head attention decoding one
// token): a warp reads KPW = 32 / (head_dim/8) keys per 16-byte load (head_dim/8 lanes per
// key row), U key steps ahead for K and V (loads in flight), scores reduced across those lanes
// with shuffles, the running max/sum kept in base 2 (exp2 of scores pre-scaled by log2 e), and
// merged across lanes, warps and splits with attention/online_softmax.hpp's softmax_merge.
// The tensor-core one (GQA, several new tokens): up to 16 query rows of a KV head ride mma.sync,
// 16 keys per warp step (decode_mma_kernel). The bulk-copy one (decode_bulk_kernel): the CUDA-core
// math on keys a copy warp streams into shared memory, for caches whose keys are contiguous per
// head. The TMA one (decode_tma_kernel, sm_90, the default there for <= 8 rows a KV head): swizzled
// K/V boxes from the tensor copy engine into mma.sync with the query rows on the N side. All end
// in finish_block.
// Memory-bound: every K and V byte is read exactly once; the FLOP floor is ~1 FLOP/byte.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/attention/online_softmax.hpp>
#include <ropex/backends/cuda/common.cuh>
#include <ropex/backends/cuda/mma.cuh>
#include <ropex/backends/cuda/tma.cuh>

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
/// Query rows one decode block serves at most (the tensor-core kernel's M side; the CUDA-core
/// kernel takes up to 8): each block stages at most this many partial rows.
inline constexpr int kDecodeMaxRows = 16;

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
  /// Room for any split count at this head_dim, so no launch allocates (a recorded CUDA graph
  /// cannot): the splits of all (batch, kv head, row group) units fill at most one wave of
  /// resident blocks, <= cudaDevAttrMaxBlocksPerMultiprocessor per SM, each with <= kDecodeMaxRows
  /// partial rows. ~35 MB at head_dim 128 on an H100.
  void reserve_for_any_split(int head_dim) {
    int dev = 0, per_sm = 0;
    ROPEX_CUDA_CHECK(cudaGetDevice(&dev));
    ROPEX_CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxBlocksPerMultiprocessor, dev));
    const size_t blocks = static_cast<size_t>(std::max(per_sm, 1)) * static_cast<size_t>(device_sm_count());
    reserve(blocks * kDecodeMaxRows, head_dim, blocks);
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

/// Which decode kernel: the CUDA-core one (lanes split a key's dims, shuffles reduce the scores),
/// the tensor-core one (16 query rows per block through mma.sync; head_dim 64 or 128), the
/// CUDA-core one fed by bulk copies (sm_90+, a cache whose keys are contiguous per head, <= 4
/// query rows per KV head), or the tensor-core one fed by the tensor copy engine (sm_90+, 8 query
/// rows a block, strides a TMA map can describe).
enum class DecodeKernel { automatic, cuda_core, tensor_core, bulk_copy, tma_tensor_core };

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
  // Sliding window (shape.window): the splits cover keys [key_begin, n_keys) only, key_begin the
  // first query's first key (0 without a window); a row sees key j when visible - 1 - j < span,
  // unsigned (span = the window, or 2^63 - 1: every key below visible), one compare as before.
  int64_t key_begin;
  uint64_t span;
};

/// Whether a row that sees keys below `visible` sees key `key` (the causal limit and the window).
__device__ __forceinline__ bool sees(int64_t key, int64_t visible, uint64_t span) {
  return static_cast<uint64_t>(visible - 1 - key) < span;
}
inline constexpr uint64_t kAllKeys = ~uint64_t{0} >> 1;  // DecodeArgs::span without a window

/// The L2 policy of K/V loads: evict first. Each byte is read once, and on an H200 the hint alone
/// took decode from 3.3-3.7 to 3.8-4.2 TB/s at 32K-512K keys (same process, interleaved runs).
__device__ __forceinline__ uint64_t kv_l2_policy() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}

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

/// Streaming 16-byte load of KV (read once: no L1 allocation, L2 under `policy`).
__device__ __forceinline__ int4 load_stream(const void* p, uint64_t policy) {
  int4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.L2::256B.v4.s32 {%0,%1,%2,%3}, [%4], %5;"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p), "l"(policy));
  return r;
}

template <class T>
__device__ __forceinline__ void unpack8(float (&f)[8], int4 raw) {
  const Vec16<T> v = *reinterpret_cast<const Vec16<T>*>(&raw);
#pragma unroll
  for (int e = 0; e < 8; ++e) f[e] = to_float(v.v[e]);
}

/// The end of every decode block: merges the NW warps' (o, state) rows staged in shared memory
/// (sh_acc [NW][ROWS][HD] unnormalized, sh_st [NW][ROWS] in the natural-log domain), writes the
/// block's result (or its split partial), and the last split of each (batch, kv head, row group)
/// to arrive merges all splits. Only the rows that exist are touched, and each row's merge
/// weights are computed once, not per element: with 16 rows a block, per-element softmax merges
/// made this epilogue the larger part of a short decode.
template <class T, int HD, int ROWS, int NW>
__device__ __forceinline__ void finish_block(const DecodeArgs<T>& a, const float* sh_acc,
                                             const attention::SoftmaxState<float>* sh_st, int rg, int kvh, int b,
                                             int split) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const attention::AttentionShape& s = a.shape;
  const int group = static_cast<int>(s.group());
  const int n_rows = static_cast<int>(s.n_queries) * group;
  const int rows = min(ROWS, n_rows - rg * ROWS);  // rows of this block that exist
  auto out_index = [&](int r) {  // (batch, token, head) of block row r
    const int gr = rg * ROWS + r, t = gr / group, h = kvh * group + gr % group;
    return (static_cast<int64_t>(b) * s.n_queries + t) * s.n_heads + h;
  };
  auto lse_index = [&](int r) {
    const int gr = rg * ROWS + r, t = gr / group, h = kvh * group + gr % group;
    return (static_cast<int64_t>(b) * s.n_heads + h) * s.n_queries + t;
  };

  // Threads past the NW warps (the bulk-copy kernel's copy warp) only meet the barriers.
  const bool worker = threadIdx.x < NW * 32;
  // (1) Per row: the weight of each warp, exp(m_w - M) / L, and the row's log-sum-exp.
  __shared__ float weight[NW][ROWS], row_lse[ROWS];
  for (int r = threadIdx.x; worker && r < rows; r += NW * 32) {
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < NW; ++w) mx = fmaxf(mx, sh_st[w * ROWS + r].max);
    float f[NW], sum = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      f[w] = mx == -INFINITY ? 0.f : __expf(sh_st[w * ROWS + r].max - mx);
      sum += f[w] * sh_st[w * ROWS + r].sum;
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) weight[w][r] = f[w] * inv;
    row_lse[r] = sum > 0.f ? mx + logf(sum) : -INFINITY;
  }
  __syncthreads();
  const int64_t gi = static_cast<int64_t>(b) * gridDim.y + blockIdx.y;  // (batch, kv head, row group)
  for (int idx = threadIdx.x; worker && idx < rows * HD; idx += NW * 32) {
    const int r = idx / HD, d = idx - r * HD;
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) o += sh_acc[(w * ROWS + r) * HD + d] * weight[w][r];
    if (a.splits == 1) {
      a.o[out_index(r) * HD + d] = from_float<T>(o);
      if (a.lse && d == 0) a.lse[lse_index(r)] = row_lse[r];
    } else {
      const int64_t pr = (gi * a.splits + split) * ROWS + r;
      a.partial_o[pr * HD + d] = o;
      if (d == 0) a.partial_lse[pr] = row_lse[r];
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
  // (2) Per row, a warp turns the splits' log-sum-exps into weights exp(lse_s - M) / L, in place
  //     in partial_lse (this block is their last reader), and the row's final log-sum-exp.
  float* lse_of = a.partial_lse + gi * a.splits * ROWS;  // [split][ROWS]
  for (int r = warp; worker && r < rows; r += NW) {
    float mx = -INFINITY;
    for (int sp = lane; sp < a.splits; sp += 32) mx = fmaxf(mx, __ldcg(lse_of + sp * ROWS + r));
#pragma unroll
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float sum = 0.f;
    for (int sp = lane; sp < a.splits; sp += 32) {
      const float e = mx == -INFINITY ? 0.f : __expf(__ldcg(lse_of + sp * ROWS + r) - mx);
      sum += e;
      lse_of[sp * ROWS + r] = e;  // unnormalized for now
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    for (int sp = lane; sp < a.splits; sp += 32) lse_of[sp * ROWS + r] *= inv;
    if (lane == 0) row_lse[r] = sum > 0.f ? mx + logf(sum) : -INFINITY;
  }
  __syncthreads();
  // (3) o = sum_s w_s o_s: four rows per thread at a time, the split loop unrolled, so dozens of
  //     independent loads are in flight (this tail is latency-bound; a deeper unroll for one row
  //     cost the CUDA-core kernel 12-15% at 32K-512K on an H200: the registers it takes are the
  //     whole kernel's, so occupancy fell).
  const float* po = a.partial_o + gi * a.splits * ROWS * HD;
  for (int idx = threadIdx.x; worker && idx < ceil_div(rows, 4) * HD; idx += NW * 32) {
    const int r0 = (idx / HD) * 4, d = idx % HD;
    float o[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
    for (int sp = 0; sp < a.splits; ++sp) {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (r0 + j < rows) o[j] += __ldcg(lse_of + sp * ROWS + r0 + j) * __ldcg(po + (static_cast<int64_t>(sp) * ROWS + r0 + j) * HD + d);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (r0 + j >= rows) break;
      a.o[out_index(r0 + j) * HD + d] = from_float<T>(o[j]);
      if (a.lse && d == 0) a.lse[lse_index(r0 + j)] = row_lse[r0 + j];
    }
  }
}

/// The CUDA-core kernels' per-lane work: a lane holds 8 dims (16 bytes) of one key row, LPK lanes a
/// row, KPW rows a warp; q rows pre-scaled by scale * log2(e).
template <int HD>
struct CudaCoreLanes {
  static constexpr int LPK = HD / 8;    // lanes per key row (8 elements = 16 bytes each)
  static constexpr int KPW = 32 / LPK;  // keys per warp per load
  static_assert(32 % LPK == 0, "head_dim must be 64, 128 or 256");
};

/// The query rows of a CUDA-core block: row r -> token t = gr / group, head kvh*group + gr % group;
/// visible[r] = the keys row r sees (from the shape alone, so no kernel output is read).
template <class T, int ROWS>
struct DecodeRows {
  int64_t visible[ROWS];
  __device__ __forceinline__ DecodeRows(const DecodeArgs<T>& a, int rg) {
    const attention::AttentionShape& s = a.shape;
    const int group = static_cast<int>(s.group()), n_rows = static_cast<int>(s.n_queries) * group;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const int gr = rg * ROWS + r;
      visible[r] = gr < n_rows ? s.visible_keys(gr / group) : 0;
    }
  }
  __device__ __forceinline__ int64_t max_visible() const {
    int64_t m = 0;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) m = max(m, visible[r]);
    return m;
  }
};

/// q[r][0..7] = this lane's 8 dims of query row r, times scale * log2(e); zero past the rows.
template <class T, int HD, int ROWS>
__device__ __forceinline__ void load_q_rows(float (&q)[ROWS][8], const DecodeArgs<T>& a, int rg, int kvh, int b, int d0) {
  const attention::AttentionShape& s = a.shape;
  const int group = static_cast<int>(s.group()), n_rows = static_cast<int>(s.n_queries) * group;
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const int gr = rg * ROWS + r;
    if (gr < n_rows) {
      const int t = gr / group, h = kvh * group + gr % group;
      load8(q[r], a.q + ((static_cast<int64_t>(b) * s.n_queries + t) * s.n_heads + h) * HD + d0);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[r][e] *= a.scale_log2;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) q[r][e] = 0.f;
    }
  }
}

/// The online-softmax state of ROWS rows before any key: max -inf, sum 0, output 0.
template <int ROWS>
__device__ __forceinline__ void empty_rows(float (&m2)[ROWS], float (&l)[ROWS], float (&acc)[ROWS][8]) {
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    m2[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[r][e] = 0.f;
  }
}

/// One lane's online softmax over U key slots it holds in registers (kr/vr; zero for keys it does
/// not have): scores reduced over the LPK lanes of a row, running max in base 2, sum, output.
/// key_of(u) = the key of slot u (recomputed, not kept: registers; 4-row blocks spilled).
/// WINDOW: rows also drop keys left of their window (sees); without, the causal limit alone (the
/// CUDA-core kernels are instantiated both ways: the window's test cost them 4-7% at 32K-128K keys).
template <class T, int ROWS, int U, int LPK, bool WINDOW, class KeyOf>
__device__ __forceinline__ void cuda_core_step(const int4 (&kr)[U], const int4 (&vr)[U], const float (&q)[ROWS][8],
                                               KeyOf key_of, int64_t k_end, const int64_t (&visible)[ROWS], uint64_t span,
                                               float (&m2)[ROWS], float (&l)[ROWS], float (&acc)[ROWS][8]) {
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
      const int64_t key = key_of(u);
      sc[u][r] = key < k_end && (WINDOW ? sees(key, visible[r], span) : key < visible[r]) ? d : -INFINITY;
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

/// The CUDA-core kernels' end: merges the KPW key streams of each warp (lanes ks = 0..KPW-1 hold
/// separate states), stages the NW warps' rows in shared memory and calls finish_block. Threads
/// past the NW working warps (a copy-issuing warp) pass `worker` = false and only meet the barriers.
template <class T, int HD, int ROWS, int NW>
__device__ __forceinline__ void cuda_core_finish(const DecodeArgs<T>& a, bool worker, const float (&m2)[ROWS],
                                                 const float (&l)[ROWS], float (&acc)[ROWS][8], int rg, int kvh, int b,
                                                 int split) {
  using State = attention::SoftmaxState<float>;
  constexpr int LPK = CudaCoreLanes<HD>::LPK;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, ks = lane / LPK, d0 = (lane % LPK) * 8;
  State st[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) st[r] = State{m2[r] * kLn2, l[r]};  // base 2 -> natural log domain
  if (worker) {
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
  }
  // Merge the NW warps through shared memory (finish_block).
  __shared__ float sh_acc[NW][ROWS][HD];
  __shared__ State sh_st[NW][ROWS];
  if (worker && ks == 0) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
#pragma unroll
      for (int e = 0; e < 8; ++e) sh_acc[warp][r][d0 + e] = acc[r][e];
      if (d0 == 0) sh_st[warp][r] = st[r];
    }
  }
  __syncthreads();
  finish_block<T, HD, ROWS, NW>(a, &sh_acc[0][0][0], &sh_st[0][0], rg, kvh, b, split);
}

template <class T, int HD, int ROWS, int NW, int U, bool WINDOW = false>
__global__ void __launch_bounds__(NW * 32, ROWS == 4 ? 4 : 1) decode_kernel(DecodeArgs<T> a) {
  static_assert(sizeof(T) == 2, "decode reads 16-bit KV");
  pdl_launch_dependents();
  constexpr int LPK = CudaCoreLanes<HD>::LPK, KPW = CudaCoreLanes<HD>::KPW;
  constexpr int STEP = NW * KPW;  // keys per block per unrolled slot

  const int split = blockIdx.x, b = blockIdx.z;
  const int kvh = blockIdx.y / a.row_groups, rg = blockIdx.y - kvh * a.row_groups;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int ks = lane / LPK, d0 = (lane % LPK) * 8;
  const attention::AttentionShape& s = a.shape;
  const DecodeRows<T, ROWS> rows(a, rg);  // q is read after pdl_wait (the kernel before writes it)

  const int64_t k_begin = a.key_begin + static_cast<int64_t>(split) * a.keys_per_split;
  const int64_t k_end = min(k_begin + a.keys_per_split, rows.max_visible());
  const T* kbase = a.k.data + b * a.k.batch_stride + kvh * a.k.head_stride + d0;
  const T* vbase = a.v.data + b * a.v.batch_stride + kvh * a.v.head_stride + d0;
  const uint64_t policy = kv_l2_policy();
  int4 kr[U], vr[U];
  auto key_of = [&](int64_t k0, int u) { return k0 + u * STEP + warp * KPW + ks; };  // this lane's key of slot u
  auto load_step = [&](int64_t k0, int64_t from, int64_t to) {  // the step's keys in [from, to)
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t key = key_of(k0, u);
      if (key >= from && key < to) {
        kr[u] = load_stream(kbase + key * a.k.token_stride, policy);
        vr[u] = load_stream(vbase + key * a.v.token_stride, policy);
      }
    }
  };
#pragma unroll
  for (int u = 0; u < U; ++u) kr[u] = vr[u] = make_int4(0, 0, 0, 0);
  float q[ROWS][8];
  if constexpr (ROWS == 1) {
    // The first step's keys written by earlier steps (all but the last n_queries) are requested
    // before pdl_wait: with PDL they stream while the kernel before this one (RoPE, the KV append)
    // still runs. The rest of the step follows the wait.
    const int64_t old_keys = s.n_keys - s.n_queries;
    load_step(k_begin, k_begin, min(k_end, old_keys));
    pdl_wait();
    load_step(k_begin, max(k_begin, old_keys), k_end);
    load_q_rows<T, HD, ROWS>(q, a, rg, kvh, b, d0);
  } else {  // several rows: q first, keys in the loop (holding a key step across more cost spills)
    pdl_wait();
    load_q_rows<T, HD, ROWS>(q, a, rg, kvh, b, d0);
  }

  float m2[ROWS], l[ROWS], acc[ROWS][8];  // running max in base 2, sum, unnormalized output
  empty_rows(m2, l, acc);

  for (int64_t k0 = k_begin; k0 < k_end; k0 += STEP * U) {
    if (ROWS > 1 || k0 != k_begin) {  // issue all loads first: 2U 16-byte loads in flight per lane
#pragma unroll
      for (int u = 0; u < U; ++u) kr[u] = vr[u] = make_int4(0, 0, 0, 0);
      load_step(k0, k0, k_end);
    }
    cuda_core_step<T, ROWS, U, LPK, WINDOW>(kr, vr, q, [&](int u) { return key_of(k0, u); }, k_end, rows.visible, a.span, m2, l,
                                            acc);
  }
  cuda_core_finish<T, HD, ROWS, NW>(a, true, m2, l, acc, rg, kvh, b, split);
}

/// The barriers of a ring of S shared-memory stages (thread 0, then a block barrier): full[st]
/// completes when stage st's bytes have landed (one arrival, the copy issuer's expect_tx), empty[st]
/// when its `readers` threads have each arrived after reading it.
template <int S>
__device__ __forceinline__ void init_stage_ring(uint64_t (&full)[S], uint64_t (&empty)[S], int readers) {
  if (threadIdx.x == 0) {
    for (int st = 0; st < S; ++st) {
      mma::mbar_init(mma::smem_addr(&full[st]), 1);
      mma::mbar_init(mma::smem_addr(&empty[st]), readers);
    }
    mma::mbar_init_fence();
  }
  __syncthreads();
}

/// The bulk-copy kernel's shape: NW computing warps and one warp issuing copies; a stage is KB
/// consecutive keys of K and of V, S stages in flight. The defaults (DecodeBulkShape) were the
/// fastest of a sweep on an H100 (NW 2-16, U 1-8, S 2-8; docs/benchmarks.md).
template <class T, int HD, int NW_, int U_, int S_>
struct DecodeBulkConfig {
  static constexpr int NW = NW_, U = U_, S = S_;
  static constexpr int KB = NW * CudaCoreLanes<HD>::KPW * U;
  static constexpr uint32_t part_bytes = KB * HD * sizeof(T);  // K (or V) bytes of one stage
  static constexpr size_t smem = size_t(S) * 2 * part_bytes;
};

/// CUDA-core decode for a cache whose keys are contiguous per (batch, head) (head-major, as HF's
/// [batch, heads, tokens, head_dim] cache and the SDPA peers' tensors): a warp streams each stage's
/// KB keys of K and V into shared memory with two bulk copies (the copy engine, cp.async.bulk), S
/// stages ahead, and NW warps run the CUDA-core kernel's math on them. On an H200 a bulk copy of a
/// contiguous range read 4.7 TB/s where 16-byte loads of one block's range read 3.4-4.4
/// (docs/benchmarks.md). sm_90+.
template <int ROWS>
struct DecodeBulkShape {  // one row a KV head: 8 warps x 4 key steps, 4 stages; GQA rows: 8 x 2, 6 stages
  static constexpr int NW = 8, U = ROWS == 1 ? 4 : 2, S = ROWS == 1 ? 4 : 6;
};

template <class T, int HD, int ROWS, int NW_ = DecodeBulkShape<ROWS>::NW, int U_ = DecodeBulkShape<ROWS>::U,
          int S_ = DecodeBulkShape<ROWS>::S, bool WINDOW = false>
__global__ void __launch_bounds__((NW_ + 1) * 32) decode_bulk_kernel(DecodeArgs<T> a) {
  static_assert(sizeof(T) == 2, "decode reads 16-bit KV");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using C = DecodeBulkConfig<T, HD, NW_, U_, S_>;
  constexpr int NW = C::NW, U = C::U, S = C::S, KB = C::KB;
  constexpr int LPK = CudaCoreLanes<HD>::LPK, KPW = CudaCoreLanes<HD>::KPW, STEP = NW * KPW;
  pdl_launch_dependents();
  pdl_wait();
  extern __shared__ __align__(128) unsigned char bulk_smem[];
  __shared__ __align__(8) uint64_t full[S], empty[S];
  const uint32_t stage0 = mma::smem_addr(bulk_smem);
  auto k_slot = [&](int st) { return stage0 + st * 2 * C::part_bytes; };
  const int split = blockIdx.x, b = blockIdx.z;
  const int kvh = blockIdx.y / a.row_groups, rg = blockIdx.y - kvh * a.row_groups;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int ks = lane / LPK, d0 = (lane % LPK) * 8;
  init_stage_ring(full, empty, NW * 32);  // every computing thread releases a stage after its reads
  const DecodeRows<T, ROWS> rows(a, rg);
  const int64_t k_begin = a.key_begin + static_cast<int64_t>(split) * a.keys_per_split;
  const int64_t k_end = min(k_begin + a.keys_per_split, rows.max_visible());
  const int n_stages = k_end > k_begin ? static_cast<int>(ceil_div(k_end - k_begin, KB)) : 0;

  float m2[ROWS], l[ROWS], acc[ROWS][8];
  empty_rows(m2, l, acc);
  if (warp == NW) {  // the copy warp: one lane issues, S stages ahead of the slowest computing warp
    if (lane == 0) {
      const T* kbase = a.k.data + b * a.k.batch_stride + kvh * a.k.head_stride;
      const T* vbase = a.v.data + b * a.v.batch_stride + kvh * a.v.head_stride;
      const uint64_t policy = kv_l2_policy();
      for (int it = 0; it < n_stages; ++it) {
        const int st = it % S;
        if (it >= S) mma::mbar_wait(mma::smem_addr(&empty[st]), ((it / S) - 1) & 1);
        const int64_t k0 = k_begin + static_cast<int64_t>(it) * KB;
        const uint32_t bytes = static_cast<uint32_t>(min(static_cast<int64_t>(KB), k_end - k0)) * HD * sizeof(T);
        const uint32_t bar = mma::smem_addr(&full[st]);
        mma::mbar_expect_tx(bar, 2 * bytes);
        mma::bulk_copy_g2s(k_slot(st), kbase + k0 * HD, bytes, bar, policy);
        mma::bulk_copy_g2s(k_slot(st) + C::part_bytes, vbase + k0 * HD, bytes, bar, policy);
      }
    }
    __syncwarp();
  } else {
    float q[ROWS][8];
    load_q_rows<T, HD, ROWS>(q, a, rg, kvh, b, d0);
    for (int it = 0; it < n_stages; ++it) {
      const int st = it % S;
      mma::mbar_wait(mma::smem_addr(&full[st]), (it / S) & 1);
      const int64_t k0 = k_begin + static_cast<int64_t>(it) * KB;
      auto key_of = [&](int u) { return k0 + u * STEP + warp * KPW + ks; };
      int4 kr[U], vr[U];
      const unsigned char* slot = bulk_smem + st * 2 * C::part_bytes;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t key = key_of(u);
        const int row = static_cast<int>(key - k0);
        // Rows past k_end hold stale bytes (the last stage is partial): never read them.
        kr[u] = key < k_end ? *reinterpret_cast<const int4*>(slot + (row * HD + d0) * sizeof(T)) : make_int4(0, 0, 0, 0);
        vr[u] = key < k_end ? *reinterpret_cast<const int4*>(slot + C::part_bytes + (row * HD + d0) * sizeof(T))
                            : make_int4(0, 0, 0, 0);
      }
      mma::mbar_arrive(mma::smem_addr(&empty[st]));  // this thread is done with the slot
      cuda_core_step<T, ROWS, U, LPK, WINDOW>(kr, vr, q, key_of, k_end, rows.visible, a.span, m2, l, acc);
    }
  }
  cuda_core_finish<T, HD, ROWS, NW>(a, warp < NW, m2, l, acc, rg, kvh, b, split);
#else
  __trap();
#endif
}

/// The online softmax's running max of a lane's two rows moves to mx (base 2), if it moved for any
/// lane of the warp (after the first keys it rarely does): alpha = 2^(m2 - mx) (1 while a row has
/// seen no key) rescales the rows' sums and their accumulators, acc[i][e] belonging to row e % 2
/// (ROW_OF_E_MOD_2: rows on the N side, m16n8 columns 2c, 2c+1) or to row e / 2 (rows on M: g, g+8).
template <bool ROW_OF_E_MOD_2, int N>
__device__ __forceinline__ void rescale_if_max_moved(float (&m2)[2], float (&l)[2], const float (&mx)[2],
                                                     float (&acc)[N][4]) {
  if (!__any_sync(0xffffffffu, mx[0] != m2[0] || mx[1] != m2[1])) return;
  float alpha[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    alpha[j] = mx[j] == -INFINITY ? 1.f : mma::fast_exp2(m2[j] - mx[j]);
    l[j] *= alpha[j];
    m2[j] = mx[j];
  }
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[i][e] *= alpha[ROW_OF_E_MOD_2 ? e % 2 : e / 2];
}

/// The TMA tensor-core kernel's shape: NW computing warps of U 16-key steps each a stage (KB =
/// NW*16*U keys of K and of V a stage), S stages, and one warp issuing the tensor copies.
template <class T, int HD, int NW_, int U_, int S_>
struct DecodeTmaConfig {
  static constexpr int NW = NW_, U = U_, S = S_;
  static constexpr int ROWS = 8;         // query rows a block: the N side of both MMAs
  static constexpr int KB = NW * 16 * U;  // keys a stage
  static constexpr int BOXES = HD / 64;  // 64-dim (128-byte) boxes a key row
  static constexpr uint32_t box_bytes = KB * 128;
  static constexpr uint32_t stage_bytes = 2 * BOXES * box_bytes;  // K's boxes, then V's
  static constexpr size_t epilogue =
      size_t(NW) * ROWS * HD * sizeof(float) + size_t(NW) * ROWS * sizeof(attention::SoftmaxState<float>);
  static constexpr size_t smem = 1024 + (size_t(S) * stage_bytes > epilogue ? size_t(S) * stage_bytes : epilogue);
  static_assert(HD % 64 == 0 && KB <= 256, "64-dim boxes of at most 256 keys");
  static_assert(smem <= 227 * 1024, "more shared memory than a block may have");
};
/// 4 warps x 16 keys, 4 stages (2 at head_dim 256, whose 64 KB stages would not fit 4): the
/// fastest or within 1% of it in a sweep on an H100 (NW 2-8, U 1-2, S 2-6; docs/benchmarks.md).
template <int HD>
struct DecodeTmaShape {
  static constexpr int NW = 4, U = 1, S = HD == 256 ? 2 : 4;
};

/// Tensor-core decode fed by the tensor copy engine, for GQA rows (2..8 query rows a KV head): a
/// warp streams each stage's keys of K and V into shared memory as 64-dim boxes with the 128-byte
/// swizzle (tma.cuh), S stages ahead; NW warps take 16 keys each and run, with the block's 8 query
/// rows on the N side of mma.sync m16n8k16 (keys and dims on M, so 4 rows waste half, not 3/4):
///   S^T = K Q^T        A = K tile (ldmatrix; the swizzle spreads 8 keys over 8 bank groups),
///                      B = Q^T from registers
///   softmax            per row (lane (g, c) holds rows 2c, 2c+1 of keys g, g+8), base 2
///   O^T += V^T P^T     A = V^T (ldmatrix.trans of the V tile), B = P^T: the S^T accumulators,
///                      packed to 16 bits and transposed in registers (movmatrix)
/// The CUDA-core math of decode_bulk_kernel was issue-bound with 4 rows (151 registers, one block
/// an SM) and the copy of decode_mma_kernel (cp.async by every warp) slower than the copy engine.
/// The map's key extent is n_keys, so keys past it read as zeros, never as the cache's stale
/// slots. sm_90+.
template <class T, int HD, int NW_ = DecodeTmaShape<HD>::NW, int U_ = DecodeTmaShape<HD>::U, int S_ = DecodeTmaShape<HD>::S>
__global__ void __launch_bounds__((NW_ + 1) * 32) decode_tma_kernel(const __grid_constant__ CUtensorMap tk,
                                                                     const __grid_constant__ CUtensorMap tv,
                                                                     DecodeArgs<T> a) {
  static_assert(sizeof(T) == 2, "decode reads 16-bit KV");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using C = DecodeTmaConfig<T, HD, NW_, U_, S_>;
  using State = attention::SoftmaxState<float>;
  constexpr int NW = C::NW, U = C::U, S = C::S, KB = C::KB, ROWS = C::ROWS, BOXES = C::BOXES, KC = HD / 16;
  pdl_launch_dependents();
  pdl_wait();
  extern __shared__ unsigned char tma_smem[];
  __shared__ __align__(8) uint64_t full[S], empty[S];
  const uint32_t raw = mma::smem_addr(tma_smem), base = (raw + 1023u) & ~1023u;  // swizzle atoms: 1024 bytes
  const int split = blockIdx.x, b = blockIdx.z;
  const int kvh = blockIdx.y / a.row_groups, rg = blockIdx.y - kvh * a.row_groups;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  init_stage_ring(full, empty, NW * 32);  // every computing thread releases a stage after its reads
  const attention::AttentionShape& s = a.shape;
  const int group = static_cast<int>(s.group()), n_rows = static_cast<int>(s.n_queries) * group;
  const DecodeRows<T, ROWS> rows(a, rg);
  const int64_t k_begin = a.key_begin + static_cast<int64_t>(split) * a.keys_per_split;
  const int64_t k_end = min(k_begin + a.keys_per_split, rows.max_visible());
  const int n_stages = k_end > k_begin ? static_cast<int>(ceil_div(k_end - k_begin, KB)) : 0;

  float m2[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows 2c, 2c+1: running max (base 2), lane's sum
  float acc[KC][4];  // O^T tile mt: [0], [1] dims 16mt + g of rows 2c, 2c+1; [2], [3] dims 16mt + g + 8
#pragma unroll
  for (int mt = 0; mt < KC; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.f;

  if (warp == NW) {  // the copy warp: one lane issues, S stages ahead of the slowest computing warp
    if (lane == 0) {
      const uint64_t policy = kv_l2_policy();
      for (int it = 0; it < n_stages; ++it) {
        const int st = it % S;
        if (it >= S) mma::mbar_wait(mma::smem_addr(&empty[st]), ((it / S) - 1) & 1);
        const int k0 = static_cast<int>(k_begin + static_cast<int64_t>(it) * KB);
        const uint32_t bar = mma::smem_addr(&full[st]), kt = base + st * C::stage_bytes;
        mma::mbar_expect_tx(bar, C::stage_bytes);  // boxes past n_keys still count their zero fill
#pragma unroll
        for (int bx = 0; bx < BOXES; ++bx) {
          tma::load_4d(kt + bx * C::box_bytes, &tk, bar, 64 * bx, k0, kvh, b, policy);
          tma::load_4d(kt + (BOXES + bx) * C::box_bytes, &tv, bar, 64 * bx, k0, kvh, b, policy);
        }
      }
    }
    __syncwarp();
  } else {
    // Q^T as the B operand: lane (g, c) holds row g's dims 16kc + 2c, +1 and 16kc + 2c + 8, +9.
    uint32_t qb[KC][2];
    {
      const int gr = rg * ROWS + g;
      const T* qrow = nullptr;
      if (gr < n_rows) {
        const int t = gr / group, h = kvh * group + gr % group;
        qrow = a.q + ((static_cast<int64_t>(b) * s.n_queries + t) * s.n_heads + h) * HD;
      }
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        qb[kc][0] = qrow ? *reinterpret_cast<const uint32_t*>(qrow + 16 * kc + 2 * c) : 0u;
        qb[kc][1] = qrow ? *reinterpret_cast<const uint32_t*>(qrow + 16 * kc + 2 * c + 8) : 0u;
      }
    }
    int64_t visible[2];  // of rows 2c, 2c+1 (the columns of this lane's S^T and O^T fragments)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int gr = rg * ROWS + 2 * c + j;
      visible[j] = gr < n_rows ? s.visible_keys(gr / group) : 0;
    }
    for (int it = 0; it < n_stages; ++it) {
      const int st = it % S;
      mma::mbar_wait(mma::smem_addr(&full[st]), (it / S) & 1);
      const uint32_t kt = base + st * C::stage_bytes, vt = kt + BOXES * C::box_bytes;
      const int row0 = warp * 16 * U;  // this warp's first key row in the stage
      const int64_t k0 = k_begin + static_cast<int64_t>(it) * KB + row0;
      float sc[U][4];  // S^T: [0], [1] key g of rows 2c, 2c+1; [2], [3] key g + 8
#pragma unroll
      for (int u = 0; u < U; ++u) {
        sc[u][0] = sc[u][1] = sc[u][2] = sc[u][3] = 0.f;
        // A = K[16 keys][16 dims]: matrices (keys 0-7, chunk 2q), (8-15, 2q), (0-7, 2q+1), (8-15, 2q+1).
        const int r = row0 + 16 * u + lane % 8 + 8 * ((lane / 8) % 2);
#pragma unroll
        for (int kc = 0; kc < KC; ++kc) {
          uint32_t af[4];
          mma::ldmatrix_x4(af, kt + (kc / 4) * C::box_bytes + tma::swizzled(r, 2 * (kc % 4) + lane / 16));
          mma::mma_16816<T>(sc[u], af, qb[kc][0], qb[kc][1]);
        }
      }
      // Scale to base 2, mask, and update the running max of rows 2c, 2c+1 (over the 8 lanes g).
      float mx[2] = {m2[0], m2[1]};
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t key = k0 + 16 * u + g + 8 * (e / 2);
          const float v = sc[u][e] * a.scale_log2;
          sc[u][e] = key < k_end && sees(key, visible[e % 2], a.span) ? v : -INFINITY;
          mx[e % 2] = fmaxf(mx[e % 2], sc[u][e]);
        }
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int off = 4; off < 32; off *= 2) mx[j] = fmaxf(mx[j], __shfl_xor_sync(0xffffffffu, mx[j], off));
      rescale_if_max_moved<true>(m2, l, mx, acc);
#pragma unroll
      for (int u = 0; u < U; ++u) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = m2[e % 2] == -INFINITY ? 0.f : mma::fast_exp2(sc[u][e] - m2[e % 2]);
          sc[u][e] = p;
          l[e % 2] += p;
        }
        // P^T (keys x rows) as the B operand: lane (g, c) needs keys 2c, 2c+1 (and +8) of row g.
        const uint32_t b0 = mma::transpose_8x8(mma::pack2<T>(sc[u][0], sc[u][1]));
        const uint32_t b1 = mma::transpose_8x8(mma::pack2<T>(sc[u][2], sc[u][3]));
        // A = V^T[16 dims][16 keys]: transposed matrices (keys 0-7, chunk 2q), (0-7, 2q+1), (8-15, 2q), (8-15, 2q+1).
        const int r = row0 + 16 * u + lane % 8 + 8 * (lane / 16);
#pragma unroll
        for (int mt = 0; mt < KC; ++mt) {
          uint32_t av[4];
          mma::ldmatrix_x4_trans(av, vt + (mt / 4) * C::box_bytes + tma::swizzled(r, 2 * (mt % 4) + (lane / 8) % 2));
          mma::mma_16816<T>(acc[mt], av, b0, b1);
        }
      }
      mma::mbar_arrive(mma::smem_addr(&empty[st]));  // this thread is done with the stage
    }
  }
  // The warp's rows for finish_block, in the pipeline's shared memory (every copy has landed: each
  // stage issued was waited for): the lane sums over the keys g first.
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int off = 4; off < 32; off *= 2) l[j] += __shfl_xor_sync(0xffffffffu, l[j], off);
  __syncthreads();
  float* sh_acc = reinterpret_cast<float*>(tma_smem + (base - raw));  // [NW][ROWS][HD]
  State* sh_st = reinterpret_cast<State*>(sh_acc + NW * ROWS * HD);   // [NW][ROWS]
  if (warp < NW) {
#pragma unroll
    for (int mt = 0; mt < KC; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) sh_acc[(warp * ROWS + 2 * c + e % 2) * HD + 16 * mt + g + 8 * (e / 2)] = acc[mt][e];
    if (g == 0) {
      sh_st[warp * ROWS + 2 * c] = State{m2[0] * kLn2, l[0]};
      sh_st[warp * ROWS + 2 * c + 1] = State{m2[1] * kLn2, l[1]};
    }
  }
  __syncthreads();
  finish_block<T, HD, ROWS, NW>(a, sh_acc, sh_st, rg, kvh, b, split);
#else
  __trap();
#endif
}

/// bf16/fp16 pair {lo of x, lo of y} (sel = 0x5410) or {hi of x, hi of y} (sel = 0x7632).
__device__ __forceinline__ uint32_t pair_halves(uint32_t x, uint32_t y, uint32_t sel) { return __byte_perm(x, y, sel); }

__device__ __forceinline__ uint32_t word_of(const int4& v, int j) {
  return static_cast<uint32_t>(j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w);
}

/// Tensor-core decode (mma.sync m16n8k16): the block's 16 query rows (all `group` heads of a KV
/// head x the new tokens, zero-padded) are the M side of S = Q K^T and O = P V, 16 keys per warp
/// step. Scores are reduced over head_dim by the tensor core instead of lane shuffles, which kept
/// the CUDA-core kernel issue-bound with several rows per block (GQA).
/// Both sums are order-free, so each lane takes the dims / keys that make its loads contiguous:
///   S: lane (g, c) loads K[key g][dims (4i + c)*8 .. +7], i < HD/32: word 4i+j of that (dims
///      (4i+c)*8 + 2j, +1) is the B fragment's k-slot, and Q's A fragment uses the same dims.
///   O: lane (g, c) loads V[keys 2c, 2c+1, 8+2c, 9+2c][dims (8h + g)*8 .. +7], h < HD/64: dim block
///      nb = 8h + e of O holds, in column n, the physical dim (8h + n)*8 + e.
/// P goes from the S accumulators straight into the A fragment of P V (the FlashAttention-2 trick).
template <class T, int HD, int NW, int STAGES>
struct DecodeMmaSmem {
  static constexpr int LDS = HD + 8;  // row stride: 16 bytes of padding spreads a quad's rows over the banks
  static constexpr size_t pipeline = size_t(NW) * STAGES * 32 * LDS * sizeof(T);  // per warp: 16 K + 16 V rows a stage
  static constexpr size_t epilogue = size_t(NW) * 16 * HD * sizeof(float) + size_t(NW) * 16 * sizeof(attention::SoftmaxState<float>);
  static constexpr size_t bytes = pipeline > epilogue ? pipeline : epilogue;
};

template <class T, int HD, int NW, int STAGES>
__global__ void __launch_bounds__(NW * 32, 1) decode_mma_kernel(DecodeArgs<T> a) {
  static_assert(HD == 64 || HD == 128, "tensor-core decode: head_dim 64 or 128");
  pdl_launch_dependents();
  pdl_wait();
  constexpr int ROWS = kDecodeMaxRows, KW = HD / 32, VW = HD / 64, NB = HD / 8, KC = HD / 16, CH = HD / 8;
  constexpr int LDS = DecodeMmaSmem<T, HD, NW, STAGES>::LDS;
  using State = attention::SoftmaxState<float>;
  const int split = blockIdx.x, b = blockIdx.z;
  const int kvh = blockIdx.y / a.row_groups, rg = blockIdx.y - kvh * a.row_groups;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const attention::AttentionShape& s = a.shape;
  const int group = static_cast<int>(s.group());
  const int n_rows = static_cast<int>(s.n_queries) * group;

  // Q rows g and g + 8 as bf16/fp16 words in this lane's dim order; rows past n_rows are zero.
  uint32_t qw[2][4 * KW];
  int64_t visible[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int gr = rg * ROWS + g + 8 * half;
    visible[half] = 0;
    int4 raw[KW];
#pragma unroll
    for (int i = 0; i < KW; ++i) raw[i] = make_int4(0, 0, 0, 0);
    if (gr < n_rows) {
      const int t = gr / group, h = kvh * group + gr % group;
      const T* qrow = a.q + ((static_cast<int64_t>(b) * s.n_queries + t) * s.n_heads + h) * HD;
#pragma unroll
      for (int i = 0; i < KW; ++i) raw[i] = *reinterpret_cast<const int4*>(qrow + (4 * i + c) * 8);
      visible[half] = s.visible_keys(t);
    }
#pragma unroll
    for (int i = 0; i < KW; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) qw[half][4 * i + j] = word_of(raw[i], j);
  }
  int64_t max_visible = max(visible[0], visible[1]);
#pragma unroll
  for (int off = 1; off < 32; off *= 2) max_visible = max(max_visible, __shfl_xor_sync(0xffffffffu, max_visible, off));

  const int64_t k_begin = a.key_begin + static_cast<int64_t>(split) * a.keys_per_split;
  const int64_t k_end = min(k_begin + a.keys_per_split, max_visible);

  float m2[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows g, g+8: running max (base 2), lane's sum
  float acc[NB][4];
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) acc[nb][0] = acc[nb][1] = acc[nb][2] = acc[nb][3] = 0.f;

  // Each warp streams its own 16-key steps (k_begin + (it*NW + warp)*16) through STAGES shared
  // slots by cp.async, STAGES-1 steps ahead: the loads of later steps are in flight while this one
  // is multiplied (with loads straight into registers a warp waited out every step's latency).
  extern __shared__ __align__(16) unsigned char decode_smem[];
  T* wbuf = reinterpret_cast<T*>(decode_smem) + warp * STAGES * 32 * LDS;
  const T* kbase = a.k.data + b * a.k.batch_stride + kvh * a.k.head_stride;
  const T* vbase = a.v.data + b * a.v.batch_stride + kvh * a.v.head_stride;
  const uint64_t policy = kv_l2_policy();
  const int64_t first = k_begin + warp * 16;
  const int n_steps = first < k_end ? static_cast<int>(ceil_div(k_end - first, NW * 16)) : 0;
  auto issue = [&](int it) {
    if (it < n_steps) {
      const int64_t k0 = first + static_cast<int64_t>(it) * NW * 16;
      T* slot = wbuf + (it % STAGES) * 32 * LDS;
#pragma unroll
      for (int idx = lane; idx < 32 * CH; idx += 32) {
        const int r = idx / CH, ch = idx % CH;
        const int64_t key = k0 + (r & 15);
        const bool valid = key < k_end;
        const T* src = r < 16 ? kbase + (valid ? key * a.k.token_stride : 0) : vbase + (valid ? key * a.v.token_stride : 0);
        mma::cp_async16_hint(slot + r * LDS + ch * 8, src + ch * 8, valid, policy);
      }
    }
    mma::cp_async_commit();  // empty groups keep the wait count uniform
  };
#pragma unroll
  for (int it = 0; it < STAGES - 1; ++it) issue(it);
  for (int it = 0; it < n_steps; ++it) {
    issue(it + STAGES - 1);
    mma::cp_async_wait<STAGES - 1>();
    __syncwarp();
    const T* slot = wbuf + (it % STAGES) * 32 * LDS;
    const int64_t k0 = first + static_cast<int64_t>(it) * NW * 16;
    int4 kr[2][KW];
#pragma unroll
    for (int jb = 0; jb < 2; ++jb)  // keys k0 + 8jb + g
#pragma unroll
      for (int i = 0; i < KW; ++i) kr[jb][i] = *reinterpret_cast<const int4*>(slot + (8 * jb + g) * LDS + (4 * i + c) * 8);

    float sc[2][4];  // S for key blocks k0 + 8jb: [0,1] row g keys 2c, 2c+1; [2,3] row g+8
#pragma unroll
    for (int jb = 0; jb < 2; ++jb) {
      sc[jb][0] = sc[jb][1] = sc[jb][2] = sc[jb][3] = 0.f;
#pragma unroll
      for (int kc = 0; kc < KC; ++kc) {
        const uint32_t af[4] = {qw[0][2 * kc], qw[1][2 * kc], qw[0][2 * kc + 1], qw[1][2 * kc + 1]};
        mma::mma_16816<T>(sc[jb], af, word_of(kr[jb][kc / 2], 2 * (kc % 2)), word_of(kr[jb][kc / 2], 2 * (kc % 2) + 1));
      }
    }
    // Scale to base 2, mask, and update the running max of rows g / g+8 (a quad shares a row).
    float mx[2] = {m2[0], m2[1]};
#pragma unroll
    for (int jb = 0; jb < 2; ++jb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = k0 + 8 * jb + 2 * c + (e % 2);
        const float v = sc[jb][e] * a.scale_log2;
        sc[jb][e] = key < k_end && sees(key, visible[e / 2], a.span) ? v : -INFINITY;
        mx[e / 2] = fmaxf(mx[e / 2], sc[jb][e]);
      }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      mx[half] = fmaxf(mx[half], __shfl_xor_sync(0xffffffffu, mx[half], 1));
      mx[half] = fmaxf(mx[half], __shfl_xor_sync(0xffffffffu, mx[half], 2));
    }
    rescale_if_max_moved<false>(m2, l, mx, acc);
#pragma unroll
    for (int jb = 0; jb < 2; ++jb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = m2[e / 2] == -INFINITY ? 0.f : mma::fast_exp2(sc[jb][e] - m2[e / 2]);
        sc[jb][e] = p;
        l[e / 2] += p;
      }
    // O += P V: the k16 slot 2c(+1) is key block 0's columns, 2c+8(+9) key block 1's. V leaves
    // shared memory only now, so K's and V's registers are never live together.
    int4 vr[4][VW];
#pragma unroll
    for (int r = 0; r < 4; ++r)  // keys k0 + 8(r/2) + 2c + r%2
#pragma unroll
      for (int h = 0; h < VW; ++h)
        vr[r][h] = *reinterpret_cast<const int4*>(slot + (16 + 8 * (r / 2) + 2 * c + r % 2) * LDS + (8 * h + g) * 8);
    __syncwarp();  // the slot is refilled by the next step's issue
    const uint32_t pf[4] = {mma::pack2<T>(sc[0][0], sc[0][1]), mma::pack2<T>(sc[0][2], sc[0][3]),
                            mma::pack2<T>(sc[1][0], sc[1][1]), mma::pack2<T>(sc[1][2], sc[1][3])};
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      const int h = nb / 8, e = nb % 8;
      const uint32_t sel = e % 2 ? 0x7632u : 0x5410u;
      const uint32_t b0 = pair_halves(word_of(vr[0][h], e / 2), word_of(vr[1][h], e / 2), sel);
      const uint32_t b1 = pair_halves(word_of(vr[2][h], e / 2), word_of(vr[3][h], e / 2), sel);
      mma::mma_16816<T>(acc[nb], pf, b0, b1);
    }
  }
  mma::cp_async_wait<0>();

  // Stage the warp's rows for finish_block (in the pipeline's shared memory, once every warp is
  // done with it): the quad's partial sums first.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 1);
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 2);
  }
  __syncthreads();
  float* sh_acc = reinterpret_cast<float*>(decode_smem);                // [NW][ROWS][HD]
  State* sh_st = reinterpret_cast<State*>(sh_acc + NW * ROWS * HD);     // [NW][ROWS]
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    const int h = nb / 8, e = nb % 8;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int row = g + 8 * (q / 2), n = 2 * c + q % 2;
      sh_acc[(warp * ROWS + row) * HD + (8 * h + n) * 8 + e] = acc[nb][q];
    }
  }
  if (c == 0) {
    sh_st[warp * ROWS + g] = State{m2[0] * kLn2, l[0]};
    sh_st[warp * ROWS + g + 8] = State{m2[1] * kLn2, l[1]};
  }
  __syncthreads();
  finish_block<T, HD, ROWS, NW>(a, sh_acc, sh_st, rg, kvh, b, split);
}

/// Splits the keys of each (batch, kv head, row group) unit over blocks and launches `kernel`:
/// one full wave, as many equal splits as the resident block slots allow (a partial second wave
/// would leave SMs idle for a whole block's time), but at least `step` keys per split.
template <class Kernel>
int resident_blocks(Kernel kernel, int threads, size_t smem = 0) {
  int per_sm = 0;
  ROPEX_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  return std::max(1, per_sm) * device_sm_count();
}

template <class T, int ROWS, class Kernel, class... Lead>
void launch_split(Kernel kernel, int threads, size_t smem, int slots, int step, DecodeArgs<T> a, int n_rows, int batch,
                  int kv_heads, int max_splits, DecodeWorkspace& ws, cudaStream_t stream, const char* name, bool pdl,
                  const Lead&... lead) {  // lead: kernel arguments before the DecodeArgs (tensor maps)
  a.row_groups = static_cast<int>(ceil_div(n_rows, ROWS));
  const int64_t n_keys = a.shape.n_keys - a.key_begin;  // the keys the splits cover
  const int64_t units = static_cast<int64_t>(batch) * kv_heads * a.row_groups;
  int splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(slots / units, ceil_div(n_keys, step))));
  if (max_splits > 0) splits = std::min(splits, max_splits);
  a.keys_per_split = ceil_div(ceil_div(n_keys, splits), step) * step;
  a.splits = static_cast<int>(ceil_div(n_keys, a.keys_per_split));
  if (a.splits > 1) {
    ws.reserve(static_cast<size_t>(units) * a.splits * ROWS, static_cast<int>(a.shape.head_dim), static_cast<size_t>(units));
    a.partial_o = ws.partial_o();
    a.partial_lse = ws.partial_lse();
    a.counters = ws.counters();
  }
  dim3 grid(a.splits, kv_heads * a.row_groups, batch);
  launch_pdl(kernel, grid, dim3(threads), smem, stream, pdl, lead..., a);
  check_launch(name);
}

template <class T, int HD, int ROWS>
void launch_decode(DecodeArgs<T> a, int n_rows, int batch, int kv_heads, int max_splits, DecodeWorkspace& ws,
                   cudaStream_t stream, bool pdl) {
  constexpr int NW = 4, U = ROWS >= 8 ? 2 : 4;  // 8 rows: fewer keys in flight, to stay in registers
  constexpr int STEP = NW * (32 / (HD / 8)) * U;  // keys one block handles per loop iteration
  if (a.span != kAllKeys) {
    static const int slots = resident_blocks(decode_kernel<T, HD, ROWS, NW, U, true>, NW * 32);
    launch_split<T, ROWS>(decode_kernel<T, HD, ROWS, NW, U, true>, NW * 32, 0, slots, STEP, a, n_rows, batch, kv_heads,
                          max_splits, ws, stream, "decode_kernel", pdl);
    return;
  }
  static const int slots = resident_blocks(decode_kernel<T, HD, ROWS, NW, U>, NW * 32);
  launch_split<T, ROWS>(decode_kernel<T, HD, ROWS, NW, U>, NW * 32, 0, slots, STEP, a, n_rows, batch, kv_heads, max_splits, ws,
                        stream, "decode_kernel", pdl);
}

/// Calls f.template operator()<R>() for the smallest block row count R in {1, 2, 4, 8} (at most
/// MAX) with n_rows <= R, or R = MAX when n_rows is larger (row groups then cover the rest).
template <int MAX, class F>
void with_block_rows(int n_rows, F&& f) {
  if (n_rows <= 1) f.template operator()<1>();
  else if (n_rows <= 2) f.template operator()<2>();
  else if constexpr (MAX == 4) f.template operator()<4>();
  else if (n_rows <= 4) f.template operator()<4>();
  else f.template operator()<8>();
}

template <class T, int HD>
void decode_rows(DecodeArgs<T> a, int n_rows, int batch, int kv_heads, int max_splits, DecodeWorkspace& ws,
                 cudaStream_t stream, bool pdl) {
  with_block_rows<8>(n_rows, [&]<int R>() { launch_decode<T, HD, R>(a, n_rows, batch, kv_heads, max_splits, ws, stream, pdl); });
}

template <class T, int HD, int ROWS>
void launch_decode_bulk(DecodeArgs<T> a, int n_rows, int batch, int kv_heads, int max_splits, DecodeWorkspace& ws,
                        cudaStream_t stream, bool pdl) {
  using B = DecodeBulkShape<ROWS>;
  using C = DecodeBulkConfig<T, HD, B::NW, B::U, B::S>;
  auto launch = [&]<bool W>() {  // one static per instantiation (both kernels have the same type)
    auto kernel = decode_bulk_kernel<T, HD, ROWS, B::NW, B::U, B::S, W>;
    static const int slots = [&] {  // once per instantiation: > 48 KB of dynamic shared memory
      ROPEX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::smem)));
      return resident_blocks(kernel, (C::NW + 1) * 32, C::smem);
    }();
    launch_split<T, ROWS>(kernel, (C::NW + 1) * 32, C::smem, slots, C::KB, a, n_rows, batch, kv_heads, max_splits, ws,
                          stream, "decode_bulk_kernel", pdl);
  };
  if (a.span != kAllKeys) launch.template operator()<true>();
  else launch.template operator()<false>();
}

template <class T, int HD>
void decode_rows_bulk(DecodeArgs<T> a, int n_rows, int batch, int kv_heads, int max_splits, DecodeWorkspace& ws,
                      cudaStream_t stream, bool pdl) {
  with_block_rows<4>(n_rows, [&]<int R>() {
    launch_decode_bulk<T, HD, R>(a, n_rows, batch, kv_heads, max_splits, ws, stream, pdl);
  });
}

/// Whether `kernel` was compiled for sm_90+ (not a trapping stub: its sm_90 body is guarded by
/// __CUDA_ARCH__) and the current device is sm_90+.
template <class Kernel>
bool runs_sm90_code(Kernel kernel) {
  cudaFuncAttributes attr{};
  ROPEX_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  int dev = 0, major = 0;
  ROPEX_CUDA_CHECK(cudaGetDevice(&dev));
  ROPEX_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return attr.binaryVersion >= 90 && major >= 9;
}

/// Whether the bulk-copy kernel can run here and read these K/V: compiled for sm_90+ (not just
/// a trapping stub), an sm_90+ device, keys contiguous per (batch, head), 16-byte aligned rows.
template <class T>
bool bulk_decode_usable(const KVView<T>& k, const KVView<T>& v, int head_dim) {
  static const bool compiled = runs_sm90_code(decode_bulk_kernel<T, 128, 1>);
  auto fits = [&](const KVView<T>& x) {
    constexpr int V = kVec<T>;
    return x.token_stride == head_dim && reinterpret_cast<uintptr_t>(x.data) % 16 == 0 && x.batch_stride % V == 0 &&
           x.head_stride % V == 0;
  };
  return compiled && fits(k) && fits(v);
}

/// K or V of a decode as the 4-d tensor a TMA map describes: [batch][kv head][key][dim], innermost first.
template <class T>
tma::Tensor4d kv_tensor(const KVView<T>& x, const attention::AttentionShape& s, int batch) {
  constexpr uint64_t E = sizeof(T);
  return {{static_cast<uint64_t>(s.head_dim), static_cast<uint64_t>(s.n_keys), static_cast<uint64_t>(s.n_kv_heads),
           static_cast<uint64_t>(batch)},
          {static_cast<uint64_t>(x.token_stride) * E, static_cast<uint64_t>(x.head_stride) * E,
           static_cast<uint64_t>(x.batch_stride) * E}};
}

/// Whether the TMA tensor-core kernel can run here and read these K/V: compiled for sm_90+ (not
/// a trapping stub), an sm_90+ device, head_dim 64/128/256, n_keys < 2^31 (copy coordinates are
/// 32-bit), and strides a tensor map can describe (16-byte aligned base and strides).
template <class T>
bool tma_decode_usable(const KVView<T>& k, const KVView<T>& v, const attention::AttentionShape& s, int batch) {
  static const bool compiled = runs_sm90_code(decode_tma_kernel<T, 128>);
  const bool hd_ok = s.head_dim == 64 || s.head_dim == 128 || s.head_dim == 256;
  return compiled && hd_ok && s.n_keys < (int64_t(1) << 31) && k.token_stride > 0 && v.token_stride > 0 &&
         tma::describable(k.data, kv_tensor(k, s, batch)) && tma::describable(v.data, kv_tensor(v, s, batch));
}

template <class T, int HD>
void launch_decode_tma(DecodeArgs<T> a, int n_rows, int batch, int kv_heads, int max_splits, DecodeWorkspace& ws,
                       cudaStream_t stream, bool pdl) {
  using Sh = DecodeTmaShape<HD>;
  using C = DecodeTmaConfig<T, HD, Sh::NW, Sh::U, Sh::S>;
  auto kernel = decode_tma_kernel<T, HD>;
  static const int slots = [&] {  // once per instantiation: > 48 KB of dynamic shared memory
    ROPEX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::smem)));
    return resident_blocks(kernel, (C::NW + 1) * 32, C::smem);
  }();
  const uint32_t box[4] = {64, static_cast<uint32_t>(C::KB), 1, 1};
  const CUtensorMap tk = tma::tensor_map(a.k.data, kv_tensor(a.k, a.shape, batch), box);
  const CUtensorMap tv = tma::tensor_map(a.v.data, kv_tensor(a.v, a.shape, batch), box);
  launch_split<T, C::ROWS>(kernel, (C::NW + 1) * 32, C::smem, slots, C::KB, a, n_rows, batch, kv_heads, max_splits, ws,
                           stream, "decode_tma_kernel", pdl, tk, tv);
}

template <class T, int HD, int NW, int STAGES>
void launch_decode_mma(DecodeArgs<T> a, int n_rows, int batch, int kv_heads, int max_splits, DecodeWorkspace& ws,
                       cudaStream_t stream, bool pdl) {
  constexpr size_t smem = DecodeMmaSmem<T, HD, NW, STAGES>::bytes;
  auto kernel = decode_mma_kernel<T, HD, NW, STAGES>;
  static const int slots = [&] {  // once per instantiation: > 48 KB of dynamic shared memory
    ROPEX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    return resident_blocks(kernel, NW * 32, smem);
  }();
  launch_split<T, kDecodeMaxRows>(kernel, NW * 32, smem, slots, NW * 16, a, n_rows, batch, kv_heads, max_splits, ws, stream,
                                  "decode_mma_kernel", pdl);
}

template <class T, int HD>
void decode_rows_mma(DecodeArgs<T> a, int n_rows, int batch, int kv_heads, int max_splits, DecodeWorkspace& ws,
                     cudaStream_t stream, bool pdl) {
  // 8 warps x 2 stages: on an H200 (32q/8kv, one token, 4K-512K keys) as fast as or faster than
  // 4x2, 4x3, 6x2, 6x4, 8x3 and 12x2 at every length (bench_gpu, docs/benchmarks.md).
  launch_decode_mma<T, HD, 8, 2>(a, n_rows, batch, kv_heads, max_splits, ws, stream, pdl);
}

}  // namespace detail

/// Decode attention:  o[b, t, h] = softmax(q[b, t, h] . K[b, :, h/group]^T * scale) V[b, :, h/group]
/// for n_queries new tokens per sequence (shape.query_offset = n_keys - n_queries for a cache that
/// already holds them; causal masks later keys per token). q, o: [batch, n_queries, n_heads,
/// head_dim] contiguous; K, V: any strides (token- or head-major caches); lse: [batch, n_heads,
/// n_queries] or nullptr. T = __nv_bfloat16 or __half; head_dim 64, 128 or 256.
/// max_splits = 1 runs without the split/merge step (for tests of both paths). kernel: automatic
/// takes, on sm_90+ with <= 8 rows per KV head and K/V a TMA map can describe (16-byte strides),
/// the tensor-core kernel fed by the tensor copy engine; else, on a head-major cache with <= 4
/// rows, the CUDA-core math fed by bulk copies; else the mma.sync kernel when a KV head serves
/// several query rows (GQA or several new tokens) and head_dim is 64 or 128, else the CUDA-core
/// one (one row: nothing to share).
/// pdl: launched as a programmatic dependent of the kernel before it (common.cuh): the kernel then
/// reads keys before n_keys - n_queries ahead of waiting for that kernel (they must be older; the
/// newest n_queries keys, and q, are read after the wait).
template <class T>
void decode_attention(const T* q, KVView<T> k, KVView<T> v, T* o, float* lse, int batch,
                      const attention::AttentionShape& shape, DecodeWorkspace& ws, int max_splits = 0,
                      cudaStream_t stream = nullptr, DecodeKernel kernel = DecodeKernel::automatic, bool pdl = false) {
  if (shape.n_heads <= 0 || shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0)
    throw make_error("cuda::decode_attention", "n_heads", "must be a positive multiple of n_kv_heads");
  if (shape.n_queries <= 0 || batch <= 0) return;
  if (shape.n_keys <= 0) throw make_error("cuda::decode_attention", "n_keys", "must be positive");
  if (shape.window < 0 || (shape.window > 0 && !shape.causal))
    throw make_error("cuda::decode_attention", "window", "must be >= 0, and a sliding window needs causal attention");
  detail::DecodeArgs<T> a{};
  a.q = q; a.k = k; a.v = v; a.o = o; a.lse = lse;
  a.shape = shape;
  a.scale_log2 = static_cast<float>(shape.scale) * kLog2e;
  // A window leaves the splits the keys of [first query's first key, n_keys): the cost of the
  // window, not of the whole cache. Without one, key_begin = 0 and every key below visible counts.
  a.key_begin = std::clamp<int64_t>(shape.first_key(0), 0, shape.n_keys - 1);
  a.span = shape.causal && shape.window > 0 ? static_cast<uint64_t>(shape.window) : detail::kAllKeys;
  const int n_rows = static_cast<int>(shape.n_queries * shape.group());
  const int kvh = static_cast<int>(shape.n_kv_heads);
  const bool mma_dim = shape.head_dim == 64 || shape.head_dim == 128;
  if (kernel == DecodeKernel::tensor_core && !mma_dim)
    throw make_error("cuda::decode_attention", "head_dim", "the tensor-core kernel takes 64 or 128");
  const bool hd_ok = shape.head_dim == 64 || shape.head_dim == 128 || shape.head_dim == 256;
  const bool bulk_ok = hd_ok && n_rows <= 4 && detail::bulk_decode_usable(k, v, static_cast<int>(shape.head_dim));
  if (kernel == DecodeKernel::bulk_copy && !bulk_ok)
    throw make_error("cuda::decode_attention", "kernel",
                     "bulk_copy needs an sm_90+ build and device, keys contiguous per head (token_stride == head_dim), "
                     "16-byte aligned K/V, head_dim 64/128/256 and <= 4 query rows per KV head");
  const bool tma_ok = detail::tma_decode_usable(k, v, shape, batch);
  if (kernel == DecodeKernel::tma_tensor_core && !tma_ok)
    throw make_error("cuda::decode_attention", "kernel",
                     "tma_tensor_core needs an sm_90+ build and device, head_dim 64/128/256, n_keys < 2^31 and K/V "
                     "whose base and strides are multiples of 16 bytes");
  // <= 8 rows per KV head: the TMA tensor-core kernel read fastest on both layouts, 1-16% above the
  // bulk-copy one (head-major) and 1-25% above the former kernels (token-major) on an H100 (bench_gpu).
  if (kernel == DecodeKernel::tma_tensor_core || (kernel == DecodeKernel::automatic && tma_ok && n_rows <= 8)) {
    if (shape.head_dim == 64) detail::launch_decode_tma<T, 64>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    else if (shape.head_dim == 128) detail::launch_decode_tma<T, 128>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    else detail::launch_decode_tma<T, 256>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    return;
  }
  // A head-major cache with <= 4 rows per KV head reads fastest through bulk copies (bench_gpu).
  if (kernel == DecodeKernel::bulk_copy || (kernel == DecodeKernel::automatic && bulk_ok)) {
    if (shape.head_dim == 64) detail::decode_rows_bulk<T, 64>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    else if (shape.head_dim == 128) detail::decode_rows_bulk<T, 128>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    else detail::decode_rows_bulk<T, 256>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    return;
  }
  if (kernel == DecodeKernel::tensor_core || (kernel == DecodeKernel::automatic && mma_dim && n_rows >= 2)) {
    if (shape.head_dim == 64) detail::decode_rows_mma<T, 64>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    else detail::decode_rows_mma<T, 128>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl);
    return;
  }
  switch (shape.head_dim) {
    case 64: detail::decode_rows<T, 64>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl); break;
    case 128: detail::decode_rows<T, 128>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl); break;
    case 256: detail::decode_rows<T, 256>(a, n_rows, batch, kvh, max_splits, ws, stream, pdl); break;
    default:
      throw make_error("cuda::decode_attention", "head_dim",
                       "must be 64, 128 or 256, got " + std::to_string(shape.head_dim));
  }
}

}  // namespace ropex::cuda
