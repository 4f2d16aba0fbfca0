// Flash attention forward (prefill), FlashAttention-2 style on mma.sync tensor cores.
//
//   O[b, i, h] = softmax_j(Q[b, i, h] . K[b, j, h/group] * scale, j visible from i) V[b, j, h/group]
//   LSE[b, h, i] = log sum_j exp(scale * q_i . k_j)                       (natural log)
//
// grid = (query blocks of BM rows, heads, batch). A block keeps its BM x head_dim Q tile, streams
// BN-key tiles of K and V through shared memory (cp.async, two stages: tile j+1 loads while tile j
// is multiplied), and each warp owns 16*MT query rows:
//   S = Q K^T      (mma m16n8k16, fp32 accumulators, K fragments by ldmatrix)
//   online softmax (attention/online_softmax.hpp's recurrence, in base 2: exp2 of scale*log2e*s)
//   O += P V       (P re-packed from the S accumulators in registers, V by ldmatrix.trans)
// Causal masking follows attention::AttentionShape (query i sees keys <= query_offset + i), so a
// prefill that extends a KV cache is the same kernel. GQA: head h reads KV head h / group.
// Optional fused RoPE: after a Q or K tile lands in shared memory it is rotated there with a
// per-token cos/sin table (rope_cos_sin_table), so an un-rotated KV cache can be attended at any
// positions / base without writing a rotated copy.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/backends/cuda/flash_prefill_sm90.cuh>
#include <ropex/backends/cuda/mma.cuh>
#include <ropex/backends/cuda/rope.cuh>
#include <ropex/rope/frequencies.hpp>

#include <string>

namespace ropex::cuda {

/// Fused RoPE for flash attention: cos/sin tables from rope_cos_sin_table (attention factor
/// included), one row per query token [batch * n_queries, half] and per key token [batch * n_keys, half].
struct FusedRope {
  const float2* q_table = nullptr;
  const float2* k_table = nullptr;
  int half = 0;
  RopeLayout layout = RopeLayout::half;
  /// false (default): Q and K are rotated once, out of place into stream-ordered scratch, then the
  /// plain kernel runs; on the Hopper kernel only K is, and Q is rotated in the kernel as its tile
  /// lands (each Q tile has one reader; the producer's spare warps rotate the next work item's Q):
  /// -4% to +59% over no RoPE on an H100 at 16K tokens (<= 5% at 6 of 20 sizes; the K pass is a
  /// fixed ~0.1 ms, a third of causal seq-1K attention). true: every query block rotates its Q and
  /// every K tile in shared memory as they land, no scratch, but each K tile is rotated once per
  /// query block: on sm90 (head_dim 128, rotary half 16/32/48/64) the Hopper kernel's producer
  /// warpgroup rotates them (+62-118%), elsewhere the FA2-style kernel (+200-252%). The case for
  /// true: no memory for the scratch (a rotated copy of K, as large as K; docs/kernels.md).
  bool in_kernel = false;
  /// Or, instead of tables, positions that run on within each sequence: query i of sequence b at
  /// q_start[b] + i, key i at k_start[b] + i (device arrays [batch]; nullptr leaves that side
  /// un-rotated), as FlashAttention's rotary seqlen offsets, with the frequencies below. With
  /// in_kernel on sm90 (rotary half 16/32/64, and 48 per chunk) the Hopper kernel makes each tile's
  /// cos/sin itself from 16-row anchors (rope.cuh rope_anchors: 4 KB a K tile instead of a 64 KB
  /// table box) and needs neither scratch nor a per-token table: +40-74% over no RoPE on an H100 at
  /// 16K tokens, against +62-118% for in-kernel tables. Otherwise per-token tables are made from the
  /// starts and the table path runs (in_kernel = false is the faster default there).
  const int64_t* q_start = nullptr;
  const int64_t* k_start = nullptr;
  const double* inv_freq = nullptr;  // [half], device (RopeFrequencies::inv_freq())
  const float2* steps = nullptr;     // [16][half], device (RopeFrequencies::steps())
  float attention_factor = 1.f;

  /// RoPE of runs of positions (q_start / k_start above) by `freq`.
  static FusedRope from_starts(const RopeFrequencies& freq, const int64_t* q_start, const int64_t* k_start,
                               RopeLayout layout, bool in_kernel = false) {
    FusedRope r;
    r.half = freq.half();
    r.layout = layout;
    r.in_kernel = in_kernel;
    r.q_start = q_start;
    r.k_start = k_start;
    r.inv_freq = freq.inv_freq();
    r.steps = freq.steps();
    r.attention_factor = freq.attention_factor();
    return r;
  }
  __host__ __device__ bool from_tables() const { return q_table != nullptr || k_table != nullptr; }
  __host__ __device__ bool from_starts() const { return q_start != nullptr || k_start != nullptr; }
  __host__ __device__ bool enabled() const { return from_tables() || from_starts(); }
};

namespace detail {

template <class T>
struct FlashArgs {
  const T* q;  // [batch, n_queries, n_heads, HD]
  const T* k;  // [batch, n_keys, n_kv_heads, HD]
  const T* v;  // [batch, n_keys, n_kv_heads, HD]
  T* o;        // [batch, n_queries, n_heads, HD]
  float* lse;  // [batch, n_heads, n_queries] or nullptr
  FlashShape shape;  // attention::AttentionShape less the window (last, see FlashShape)
  float scale_log2;
  FusedRope rope;
  int64_t window;  // attention::AttentionShape::window (the WINDOW kernels alone read it)
};

/// Copies rows [row0, row0 + ROWS) of one head of a [tokens, heads, HD] tensor into a shared tile
/// with row stride LDS (16 bytes per cp.async; rows past n_rows become zeros).
template <class T, int HD, int LDS, int ROWS, int NT>
__device__ __forceinline__ void load_tile(T* tile, const T* head_base, int64_t token_stride, int64_t row0,
                                          int64_t n_rows) {
  constexpr int CH = HD / 8;  // 16-byte chunks per row
#pragma unroll
  for (int idx = threadIdx.x; idx < ROWS * CH; idx += NT) {
    const int r = idx / CH, c = idx - r * CH;
    const bool valid = row0 + r < n_rows;
    const T* src = head_base + (valid ? (row0 + r) * token_stride + c * 8 : 0);
    mma::cp_async16(tile + r * LDS + c * 8, src, valid);
  }
}

/// Rotates the first 2*half dims of rows [0, n_valid) of a shared tile, row r with the cos/sin
/// row cs + r*cs_stride (staged in shared memory by load_cos_sin). Same 16-byte chunk rotation as
/// the standalone RoPE kernel (rope.cuh). Lanes walk 8 rows for one chunk column: with the padded
/// strides of the tile and of the cos/sin rows, each quarter-warp hits 8 distinct bank groups.
template <class T, int LDS, int ROWS, int NT>
__device__ __forceinline__ void rope_tile(T* tile, const float2* cs, int cs_stride, int64_t n_valid, int half,
                                          RopeLayout layout) {
  static_assert(ROWS % 8 == 0, "rows come in groups of 8");
  constexpr int V = kVec<T>;
  const bool vec = layout == RopeLayout::half ? half % V == 0 : (2 * half) % V == 0;
  const int chunks = vec ? (layout == RopeLayout::half ? half / V : 2 * half / V) : half;  // scalar: one pair each
  for (int idx = threadIdx.x; idx < ROWS * chunks; idx += NT) {
    const int group = idx / (8 * chunks), rem = idx - group * 8 * chunks;
    const int r = group * 8 + rem % 8, c = rem / 8;
    if (r >= n_valid) continue;
    if (vec) rotate_chunk<T, V>(tile + r * LDS, tile + r * LDS, c, half, layout, cs + r * cs_stride);
    else rotate_chunk<T, 1>(tile + r * LDS, tile + r * LDS, c, half, layout, cs + r * cs_stride);
  }
}

/// Stages cos/sin rows [row0, row0 + ROWS) of a [rows, half] float2 table into shared memory with
/// row stride half + 2 (cp.async, 16 bytes = 2 pairs per copy; half is even). Rows past n_rows are
/// not copied.
template <int ROWS, int NT>
__device__ __forceinline__ void load_cos_sin(float2* dst, const float2* table, int64_t row0, int64_t n_rows, int half) {
  const int per_row = half / 2;
  for (int idx = threadIdx.x; idx < ROWS * per_row; idx += NT) {
    const int r = idx / per_row, c = idx - r * per_row;
    const bool valid = row0 + r < n_rows;
    mma::cp_async16(dst + r * (half + 2) + 2 * c, table + (valid ? (row0 + r) * half + 2 * c : 0), valid);
  }
}

template <class T, int HD, int NW, int MT, int BN>
struct FlashConfig {
  static constexpr int BM = 16 * MT * NW;  // query rows per block
  static constexpr int LDS = HD + 8;       // padded smem row: ldmatrix rows fall in distinct banks
  static constexpr int NT = NW * 32;
  static constexpr bool Q_IN_REGS = MT == 1;
  static constexpr size_t smem_bytes = sizeof(T) * (BM + 4 * BN) * LDS;  // Q + 2 stages of K and V
  static constexpr size_t rope_smem_bytes = smem_bytes + sizeof(float2) * BN * (HD / 2 + 2);  // + one cos/sin tile
};

/// WINDOW (shape.window > 0, a separate instantiation so window 0 runs the code it always ran):
/// a block's key tiles start at the tile of its first row's first key, and only the tiles that
/// cross a row's window start are masked there; the tiles before it are never loaded.
template <class T, int HD, int NW, int MT, int BN, bool WINDOW = false>
__global__ void __launch_bounds__(NW * 32) flash_forward_kernel(FlashArgs<T> a) {
  using C = FlashConfig<T, HD, NW, MT, BN>;
  constexpr int BM = C::BM, LDS = C::LDS, NT = C::NT;
  constexpr int KC = HD / 16;  // k-steps of S = Q K^T, and pairs of 8-wide output column tiles
  constexpr int NTILE = BN / 8;
  static_assert(HD % 16 == 0 && BN % 16 == 0, "head_dim and BN must be multiples of 16");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + BM * LDS;        // [2][BN][LDS]
  T* sV = sK + 2 * BN * LDS;    // [2][BN][LDS]

  const FlashShape& s = a.shape;
  // Causal: the longest query blocks first, so the short ones fill the tail of the grid.
  const int m_block = s.causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / static_cast<int>(s.group());
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c4 = lane % 4;
  const int64_t m0 = static_cast<int64_t>(m_block) * BM;
  const int64_t nq = s.n_queries, nk = s.n_keys;

  const int64_t q_ts = s.n_heads * HD, kv_ts = s.n_kv_heads * HD;
  const T* q_head = a.q + b * nq * q_ts + h * HD;
  const T* k_head = a.k + b * nk * kv_ts + kvh * HD;
  const T* v_head = a.v + b * nk * kv_ts + kvh * HD;

  // Keys this block needs: causal stops at the last row's diagonal.
  const int64_t last_row = min(m0 + BM, nq) - 1;
  const int n_tiles = static_cast<int>(ceil_div(s.visible_keys(last_row), BN));
  // The first tile (WINDOW: the one holding the first row's first key); stage of tile j: (j - j0) & 1.
  int j0 = 0;
  if constexpr (WINDOW) j0 = max(0, min(static_cast<int>(s.first_key(m0, a.window) / BN), n_tiles - 1));

  load_tile<T, HD, LDS, BM, NT>(sQ, q_head, q_ts, m0, nq);
  mma::cp_async_commit();
  if (n_tiles > 0) {
    load_tile<T, HD, LDS, BN, NT>(sK, k_head, kv_ts, int64_t(j0) * BN, nk);
    load_tile<T, HD, LDS, BN, NT>(sV, v_head, kv_ts, int64_t(j0) * BN, nk);
  }
  mma::cp_async_commit();
  mma::cp_async_wait<0>();
  __syncthreads();
  const bool rope_k = a.rope.k_table != nullptr;
  float2* sCS = reinterpret_cast<float2*>(sV + 2 * BN * LDS);  // [BN][half] cos/sin (fused RoPE only)
  if (a.rope.q_table) {  // rotate Q once, BN rows of cos/sin at a time
    for (int r0 = 0; r0 < BM; r0 += BN) {
      load_cos_sin<BN, NT>(sCS, a.rope.q_table, b * nq + m0 + r0, b * nq + nq, a.rope.half);
      mma::cp_async_commit();
      mma::cp_async_wait<0>();
      __syncthreads();
      rope_tile<T, LDS, BN, NT>(sQ + r0 * LDS, sCS, a.rope.half + 2, nq - m0 - r0, a.rope.half, a.rope.layout);
      __syncthreads();
    }
  }
  if (rope_k && n_tiles > 0) {
    load_cos_sin<BN, NT>(sCS, a.rope.k_table, b * nk + int64_t(j0) * BN, b * nk + nk, a.rope.half);
    mma::cp_async_commit();
    mma::cp_async_wait<0>();
    __syncthreads();
    rope_tile<T, LDS, BN, NT>(sK, sCS, a.rope.half + 2, nk - int64_t(j0) * BN, a.rope.half, a.rope.layout);
    __syncthreads();
  }

  const int wr0 = warp * 16 * MT;  // this warp's first row within the block
  // A-operand (Q) ldmatrix address pattern: lane -> row (lane%8) + 8*((lane/8)%2), col 8*(lane/16).
  const int a_row = (lane % 8) + ((lane / 8) % 2) * 8, a_col = (lane / 16) * 8;
  // B-operand (K) pattern: key (lane%8) + 8*(lane/16), dim 8*((lane/8)%2).
  const int k_row = (lane % 8) + (lane / 16) * 8, k_col = ((lane / 8) % 2) * 8;
  // V (transposed) pattern: key (lane%8) + 8*((lane/8)%2), dim 8*(lane/16).
  const int v_row = a_row, v_col = a_col;

  uint32_t qf[C::Q_IN_REGS ? MT : 1][C::Q_IN_REGS ? KC : 1][4];
  if constexpr (C::Q_IN_REGS) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kc = 0; kc < KC; ++kc)
        mma::ldmatrix_x4(qf[mt][kc], sQ + (wr0 + mt * 16 + a_row) * LDS + kc * 16 + a_col);
  }

  float o[MT][HD / 8][4];
  float row_max[MT][2], row_sum[MT][2];  // raw-score running max; this thread's partial sum
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int d = 0; d < HD / 8; ++d)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][d][e] = 0.f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.f;
  }

  for (int j = j0; j < n_tiles; ++j) {
    const int buf = (j - j0) & 1;
    if (!rope_k) {
      if (j + 1 < n_tiles) {  // prefetch the next K/V tile into the other stage
        load_tile<T, HD, LDS, BN, NT>(sK + (buf ^ 1) * BN * LDS, k_head, kv_ts, int64_t(j + 1) * BN, nk);
        load_tile<T, HD, LDS, BN, NT>(sV + (buf ^ 1) * BN * LDS, v_head, kv_ts, int64_t(j + 1) * BN, nk);
      }
      mma::cp_async_commit();
      if (j > j0) {
        mma::cp_async_wait<1>();  // tile j landed (tile j+1 may still be in flight)
        __syncthreads();
      }
    } else {
      // Fused RoPE: tile j and its cos/sin landed -> rotate K in place -> only then prefetch tile
      // j+1 with its cos/sin (one cos/sin buffer), still overlapping this tile's math.
      if (j > j0) {
        mma::cp_async_wait<0>();
        __syncthreads();
        rope_tile<T, LDS, BN, NT>(sK + buf * BN * LDS, sCS, a.rope.half + 2, nk - int64_t(j) * BN, a.rope.half,
                                  a.rope.layout);
        __syncthreads();
      }
      if (j + 1 < n_tiles) {
        load_tile<T, HD, LDS, BN, NT>(sK + (buf ^ 1) * BN * LDS, k_head, kv_ts, int64_t(j + 1) * BN, nk);
        load_tile<T, HD, LDS, BN, NT>(sV + (buf ^ 1) * BN * LDS, v_head, kv_ts, int64_t(j + 1) * BN, nk);
        load_cos_sin<BN, NT>(sCS, a.rope.k_table, b * nk + int64_t(j + 1) * BN, b * nk + nk, a.rope.half);
      }
      mma::cp_async_commit();
    }
    const T* tK = sK + buf * BN * LDS;
    const T* tV = sV + buf * BN * LDS;

    // ---- S = Q K^T -------------------------------------------------------------------------
    float sc[MT][NTILE][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < NTILE; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[mt][n][e] = 0.f;
#pragma unroll
    for (int kc = 0; kc < KC; ++kc) {
      uint32_t qa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (C::Q_IN_REGS) {
#pragma unroll
          for (int e = 0; e < 4; ++e) qa[mt][e] = qf[mt][kc][e];
        } else {
          mma::ldmatrix_x4(qa[mt], sQ + (wr0 + mt * 16 + a_row) * LDS + kc * 16 + a_col);
        }
      }
#pragma unroll
      for (int np = 0; np < NTILE / 2; ++np) {
        uint32_t kb[4];
        mma::ldmatrix_x4(kb, tK + (np * 16 + k_row) * LDS + kc * 16 + k_col);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma::mma_16816<T>(sc[mt][2 * np], qa[mt], kb[0], kb[1]);
          mma::mma_16816<T>(sc[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }

    // ---- mask: keys past the end, or past the causal diagonal --------------------------------
    const int64_t key0 = int64_t(j) * BN;
    bool need_mask = key0 + BN > s.visible_keys(m0);  // the block's first row sees the fewest
    if constexpr (WINDOW) need_mask = need_mask || key0 < s.first_key(last_row, a.window);  // the last row starts latest
    if (need_mask) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const int64_t row = m0 + wr0 + mt * 16 + g + 8 * hr;
          const int64_t limit = s.visible_keys(row);
          const int64_t start = WINDOW ? s.first_key(row, a.window) : 0;
#pragma unroll
          for (int n = 0; n < NTILE; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int64_t key = key0 + n * 8 + 2 * c4 + e;
              if (key >= limit || (WINDOW && key < start)) sc[mt][n][2 * hr + e] = -INFINITY;
            }
        }
    }

    // ---- online softmax (base 2): m' = max(m, rowmax S); alpha = 2^((m - m') s log2e) -----------
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        float mx = row_max[mt][hr];
#pragma unroll
        for (int n = 0; n < NTILE; ++n) mx = fmaxf(mx, fmaxf(sc[mt][n][2 * hr], sc[mt][n][2 * hr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_scaled = mx == -INFINITY ? 0.f : mx * a.scale_log2;
        const float alpha = mma::fast_exp2(row_max[mt][hr] * a.scale_log2 - m_scaled);  // 0 on the first tile
        row_max[mt][hr] = mx;
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < NTILE; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = mma::fast_exp2(fmaf(sc[mt][n][2 * hr + e], a.scale_log2, -m_scaled));
            sc[mt][n][2 * hr + e] = p;
            sum += p;
          }
        row_sum[mt][hr] = row_sum[mt][hr] * alpha + sum;
#pragma unroll
        for (int d = 0; d < HD / 8; ++d) {
          o[mt][d][2 * hr] *= alpha;
          o[mt][d][2 * hr + 1] *= alpha;
        }
      }

    // ---- O += P V ----------------------------------------------------------------------------
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pa[mt][0] = mma::pack2<T>(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
        pa[mt][1] = mma::pack2<T>(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
        pa[mt][2] = mma::pack2<T>(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
        pa[mt][3] = mma::pack2<T>(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < KC; ++dp) {
        uint32_t vb[4];
        mma::ldmatrix_x4_trans(vb, tV + (kk * 16 + v_row) * LDS + dp * 16 + v_col);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma::mma_16816<T>(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
          mma::mma_16816<T>(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
    __syncthreads();  // everyone is done with this stage before it is refilled
  }

  // ---- epilogue: O / l, LSE = scale * m + ln l ------------------------------------------------
  const float scale = a.scale_log2 * kLn2;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float l = row_sum[mt][hr];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int64_t row = m0 + wr0 + mt * 16 + g + 8 * hr;
      if (row >= nq) continue;
      T* orow = a.o + (b * nq + row) * q_ts + h * HD;
#pragma unroll
      for (int d = 0; d < HD / 8; ++d)
        *reinterpret_cast<uint32_t*>(orow + d * 8 + 2 * c4) =
            mma::pack2<T>(o[mt][d][2 * hr] * inv, o[mt][d][2 * hr + 1] * inv);
      if (a.lse && c4 == 0)
        a.lse[(static_cast<int64_t>(b) * s.n_heads + h) * nq + row] =
            l > 0.f ? row_max[mt][hr] * scale + logf(l) : -INFINITY;
    }
}

template <class T, int HD, int NW, int MT, int BN, bool WINDOW = false>
void launch_flash(const FlashArgs<T>& a, int batch, cudaStream_t stream) {
  using C = FlashConfig<T, HD, NW, MT, BN>;
  auto kernel = flash_forward_kernel<T, HD, NW, MT, BN, WINDOW>;
  static bool configured = false;  // once per instantiation: allow > 48 KB of dynamic smem
  if (!configured) {
    ROPEX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(C::rope_smem_bytes)));
    configured = true;
  }
  const size_t smem = a.rope.enabled() ? C::rope_smem_bytes : C::smem_bytes;
  dim3 grid(static_cast<unsigned>(ceil_div(a.shape.n_queries, C::BM)), static_cast<unsigned>(a.shape.n_heads),
            static_cast<unsigned>(batch));
  kernel<<<grid, C::NT, smem, stream>>>(a);
  check_launch("flash_forward_kernel");
}

}  // namespace detail

/// Which flash kernel runs: automatic = the Hopper wgmma kernel (flash_prefill_sm90.cuh) on a
/// compute-capability 9.x device for head_dim 128, 16-bit T, no in-kernel RoPE and default tiling;
/// else the mma.sync kernel (fa2). Forcing sm90 where it cannot run throws.
enum class FlashKernel { automatic, fa2, sm90 };

/// Tile shape of the mma.sync kernel: warps per block, 16-row m-tiles per warp, keys per tile
/// (0 = default: 4 warps x 2 m-tiles x 64 keys, the fastest on H100 in bench/gpu).
struct FlashTiling {
  int warps = 0, m_tiles = 0, block_n = 0;
  FlashKernel kernel = FlashKernel::automatic;
};

/// Flash attention forward. q, o: [batch, n_queries, n_heads, head_dim]; k, v: [batch, n_keys,
/// n_kv_heads, head_dim], contiguous; lse: [batch, n_heads, n_queries] (natural log) or nullptr.
/// shape.scale is the softmax scale (1/sqrt(head_dim) times any attention factor not already
/// folded into q/k). T = __nv_bfloat16 or __half; head_dim 64, 80 or 128. rope: optional rotation
/// of Q and/or K by per-token cos/sin tables (un-rotated inputs, e.g. a KV cache attended at
/// shifted positions or another base): see FusedRope for the two strategies.
template <class T>
void flash_attention(const T* q, const T* k, const T* v, T* o, float* lse, int batch,
                     const attention::AttentionShape& shape, FusedRope rope = {}, FlashTiling tiling = {},
                     cudaStream_t stream = nullptr) {
  if (shape.n_heads <= 0 || shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0)
    throw make_error("cuda::flash_attention", "n_heads", "must be a positive multiple of n_kv_heads");
  if (shape.n_keys < 0 || shape.n_queries < 0 || shape.query_offset < 0)
    throw make_error("cuda::flash_attention", "shape", "sizes must be non-negative");
  if (shape.window < 0 || (shape.window > 0 && !shape.causal))
    throw make_error("cuda::flash_attention", "window", "must be >= 0, and a sliding window needs causal attention");
  if (rope.enabled() && (2 * rope.half > shape.head_dim || rope.half % 2 != 0 || rope.half <= 0))
    throw make_error("cuda::flash_attention", "rope.half", "rotary dim must be a multiple of 4 and <= head_dim");
  if (rope.from_tables() && rope.from_starts())
    throw make_error("cuda::flash_attention", "rope.q_start", "give per-token tables or starts, not both");
  if (rope.from_starts() && (!rope.inv_freq || !rope.steps))
    throw make_error("cuda::flash_attention", "rope.inv_freq", "starts need the frequencies and steps (from_starts)");
  if (shape.n_queries == 0 || batch == 0) return;
  if (shape.n_keys == 0) throw make_error("cuda::flash_attention", "n_keys", "must be positive");
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };  // TMA
  const bool default_tiling = tiling.warps == 0 && tiling.m_tiles == 0 && tiling.block_n == 0;
  // Whether the Hopper kernel runs this call with RoPE `r`: in-kernel RoPE there takes rotary half-dims
  // 16/32/48/64 (16-frequency table boxes).
  auto sm90_takes = [&](const FusedRope& r) {
    const bool rope_fits = !r.enabled() || (sm90::sm90_rope_half_ok(r.half) && aligned(r.q_table) && aligned(r.k_table));
    // A sliding window runs there without RoPE or with Q's table only (the persistent modes).
    const bool window_fits = shape.window == 0 || !r.enabled() || (r.q_table && !r.k_table && !r.from_starts());
    return tiling.kernel != FlashKernel::fa2 && window_fits && (tiling.kernel == FlashKernel::sm90 || default_tiling) &&
           shape.head_dim == 128 && rope_fits && aligned(q) && aligned(k) && aligned(v) && sm90::device_is_sm90();
  };
  if (rope.from_starts()) {
    const int half = rope.half;
    auto scratch = [&](int64_t n) {
      float2* p = nullptr;
      ROPEX_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&p), static_cast<size_t>(n) * sizeof(float2), stream));
      return p;
    };
    if (rope.in_kernel && sm90_takes(rope)) {  // anchors and steps, the tiles' cos/sin made in the kernel
      const int64_t naq = ceil_div(shape.n_queries, int64_t{16}), nak = ceil_div(shape.n_keys, int64_t{16});
      float2* qa = rope.q_start ? scratch(batch * naq * half) : nullptr;
      float2* ka = rope.k_start ? scratch(batch * nak * half) : nullptr;
      if (qa) rope_anchors(qa, rope.q_start, batch, naq, rope.inv_freq, half, rope.attention_factor, stream);
      if (ka) rope_anchors(ka, rope.k_start, batch, nak, rope.inv_freq, half, rope.attention_factor, stream);
      sm90::Sm90Args<T> sa{q, k, v, o, lse, shape, static_cast<float>(shape.scale) * kLog2e};
      sa.window = shape.window;
      sa.rope_half = half;
      sa.rope_layout = rope.layout;
      sa.q_anchors = qa;
      sa.k_anchors = ka;
      sa.steps = rope.steps;
      sm90::launch_flash_sm90<T>(sa, batch, stream);
      for (float2* p : {qa, ka})
        if (p) ROPEX_CUDA_CHECK(cudaFreeAsync(p, stream));
      return;
    }
    // Per-token tables from the starts, then the table path.
    float2* qt = rope.q_start ? scratch(batch * shape.n_queries * half) : nullptr;
    float2* kt = rope.k_start ? scratch(batch * shape.n_keys * half) : nullptr;
    if (qt) rope_cos_sin_table_runs(qt, rope.q_start, batch, shape.n_queries, rope.inv_freq, half, rope.attention_factor, stream);
    if (kt) rope_cos_sin_table_runs(kt, rope.k_start, batch, shape.n_keys, rope.inv_freq, half, rope.attention_factor, stream);
    flash_attention<T>(q, k, v, o, lse, batch, shape, FusedRope{qt, kt, half, rope.layout, rope.in_kernel}, tiling, stream);
    for (float2* p : {qt, kt})
      if (p) ROPEX_CUDA_CHECK(cudaFreeAsync(p, stream));
    return;
  }
  if (rope.enabled() && !rope.in_kernel) {  // rotate once into scratch, then the plain kernel
    const int hd = static_cast<int>(shape.head_dim), hq = static_cast<int>(shape.n_heads);
    const int hk = static_cast<int>(shape.n_kv_heads);
    const int64_t nq = batch * shape.n_queries, nk = batch * shape.n_keys;
    T *qr = nullptr, *kr = nullptr;
    auto rotated = [&](const T* src, const float2* table, int64_t tokens, int heads) -> T* {
      if (!table) return nullptr;
      const size_t bytes = static_cast<size_t>(tokens) * heads * hd * sizeof(T);
      T* dst = nullptr;
      ROPEX_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&dst), bytes, stream));
      if (2 * rope.half < hd) ROPEX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
      auto in = DeviceHeads<T>::contiguous(const_cast<T*>(src), heads, hd);  // read only (out of place)
      rope_apply<T>(in, {}, tokens, hd, table, rope.half, rope.layout, stream, 1,
                    DeviceHeads<T>::contiguous(dst, heads, hd), {});
      return dst;
    };
    // On the Hopper kernel Q is rotated in it, once per query block as its tile lands (no K tile is
    // rotated twice that way), and only K goes through scratch: half the traffic of rotating both for
    // 32/32 heads, a fifth for 32q/8kv.
    const FusedRope q_in_kernel{rope.q_table, nullptr, rope.half, rope.layout, true};
    const bool hybrid = rope.q_table && sm90_takes(q_in_kernel);
    if (!hybrid) qr = rotated(q, rope.q_table, nq, hq);
    kr = rotated(k, rope.k_table, nk, hk);
    flash_attention<T>(qr ? qr : q, kr ? kr : k, v, o, lse, batch, shape, hybrid ? q_in_kernel : FusedRope{}, tiling,
                       stream);
    if (qr) ROPEX_CUDA_CHECK(cudaFreeAsync(qr, stream));
    if (kr) ROPEX_CUDA_CHECK(cudaFreeAsync(kr, stream));
    return;
  }
  const float scale_log2 = static_cast<float>(shape.scale) * kLog2e;
  if (tiling.kernel != FlashKernel::fa2) {
    const bool fits = sm90_takes(rope);
    if (tiling.kernel == FlashKernel::sm90 && !fits)
      throw make_error("cuda::flash_attention", "tiling.kernel",
                       "sm90 needs a build for sm_90a (ROPEX_CUDA_SM90A), a compute capability 9.x device, head_dim 128, "
                       "16-byte aligned q/k/v and, with in-kernel RoPE, rope.half 16/32/48/64");
    if (fits) {
      sm90::Sm90Args<T> sa{q, k, v, o, lse, shape, scale_log2};
      sa.window = shape.window;
      sa.q_table = rope.q_table;
      sa.k_table = rope.k_table;
      sa.rope_half = rope.half;
      sa.rope_layout = rope.layout;
      sm90::launch_flash_sm90<T>(sa, batch, stream);
      return;
    }
  }
  detail::FlashArgs<T> a{q, k, v, o, lse, shape, scale_log2, rope, shape.window};
  // Variants: 4x2x64 (default), 4x2x32, 8x1x64 and 4x1x64 (Q fragments kept in registers).
  const int w = tiling.warps ? tiling.warps : 4, mt = tiling.m_tiles ? tiling.m_tiles : 2;
  // Fused RoPE stages a cos/sin tile in shared memory too: 32-key tiles keep two blocks per SM.
  const int bn = tiling.block_n ? tiling.block_n : (rope.enabled() && mt == 2 ? 32 : 64);
  if (shape.causal && shape.window > 0) {  // sliding window: the default tilings (block_n 32 with fused RoPE)
    switch (shape.head_dim) {
      case 64:
        if (bn == 32) detail::launch_flash<T, 64, 4, 2, 32, true>(a, batch, stream);
        else detail::launch_flash<T, 64, 4, 2, 64, true>(a, batch, stream);
        return;
      case 80: detail::launch_flash<T, 80, 4, 1, 64, true>(a, batch, stream); return;
      case 128:
        if (bn == 32) detail::launch_flash<T, 128, 4, 2, 32, true>(a, batch, stream);
        else detail::launch_flash<T, 128, 4, 2, 64, true>(a, batch, stream);
        return;
      default: break;  // refused below
    }
  }
  switch (shape.head_dim) {
    case 64:
      if (mt == 2 && bn == 32) detail::launch_flash<T, 64, 4, 2, 32>(a, batch, stream);
      else if (mt == 2) detail::launch_flash<T, 64, 4, 2, 64>(a, batch, stream);
      else if (w == 8) detail::launch_flash<T, 64, 8, 1, 64>(a, batch, stream);
      else detail::launch_flash<T, 64, 4, 1, 64>(a, batch, stream);
      break;
    case 80:  // 80 = 5 k-steps: the 2-m-tile variant would spill
      if (w == 8) detail::launch_flash<T, 80, 8, 1, 64>(a, batch, stream);
      else detail::launch_flash<T, 80, 4, 1, 64>(a, batch, stream);
      break;
    case 128:
      if (mt == 2 && bn == 32) detail::launch_flash<T, 128, 4, 2, 32>(a, batch, stream);
      else if (mt == 2) detail::launch_flash<T, 128, 4, 2, 64>(a, batch, stream);
      else if (w == 8) detail::launch_flash<T, 128, 8, 1, 64>(a, batch, stream);
      else detail::launch_flash<T, 128, 4, 1, 64>(a, batch, stream);
      break;
    default:
      throw make_error("cuda::flash_attention", "head_dim",
                       "must be 64, 80 or 128, got " + std::to_string(shape.head_dim));
  }
}

}  // namespace ropex::cuda
