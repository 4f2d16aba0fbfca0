// The split-KV scheme every decode kernel shares (FlashDecoding style): the arguments, the launch
// that spreads a (batch, KV head, row group) unit's keys over blocks, and the merge at the end.
//
//   grid = (splits, kv_heads * row_groups, batch): block (s, kvh, b) reads keys [s*chunk, (s+1)*chunk)
//   of KV head kvh ONCE for every query row that uses it (all `group` query heads x n_q tokens:
//   grouped-query attention costs no extra KV traffic), keeps an online-softmax state per row,
//   and writes (o, lse) of its chunk. The last block of each (b, kvh) to finish (atomic counter)
//   merges the splits (finish_block), so the whole op is one launch.
// Memory-bound: every K and V byte is read exactly once; the FLOP floor is ~1 FLOP/byte.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/attention/online_softmax.hpp>
#include <ropex/backends/cuda/common.cuh>
#include <ropex/backends/cuda/mma.cuh>

#include <algorithm>

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

/// Query rows one decode block serves at most (the tensor-core kernel's M side; the CUDA-core
/// kernel takes up to 8): each block stages at most this many partial rows.
inline constexpr int kDecodeMaxRows = 16;

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

  // Threads past the NW warps (the TMA kernel's copy warp) only meet the barriers.
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

/// The query rows of a block (CUDA-core and TMA kernels): row r -> token t = gr / group, head kvh*group + gr % group;
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

/// The tensor-core kernels' online softmax: the running max of a lane's two rows moves to mx (base 2), if it moved for any
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

/// Block slots of one full wave of `kernel`: resident blocks per SM x SMs.
template <class Kernel>
int resident_blocks(Kernel kernel, int threads, size_t smem = 0) {
  int per_sm = 0;
  ROPEX_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  return std::max(1, per_sm) * device_sm_count();
}

/// Splits the keys of each (batch, kv head, row group) unit over blocks and launches `kernel`:
/// one full wave, as many equal splits as the resident block slots allow (a partial second wave
/// would leave SMs idle for a whole block's time), but at least `step` keys per split.
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

}  // namespace detail

}  // namespace ropex::cuda
