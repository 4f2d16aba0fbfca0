// The CUDA-core decode kernel (decode_kernel): lanes split a key's dims, shuffles reduce the scores.
// A warp reads KPW = 32 / (head_dim/8) keys per 16-byte load (head_dim/8 lanes per key row), U key
// steps ahead for K and V (loads in flight), the running max/sum kept in base 2 (exp2 of scores
// pre-scaled by log2 e), and merged across lanes and warps with attention/online_softmax.hpp's
// softmax_merge, then across splits by finish_block (split.cuh). A block serves 1, 2, 4 or 8 query
// rows of a KV head. Runs on any card; decode.cuh says when it is chosen.
#pragma once
#include <ropex/backends/cuda/decode/split.cuh>

namespace ropex::cuda::detail {

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

/// The CUDA-core kernel's per-lane work: a lane holds 8 dims (16 bytes) of one key row, LPK lanes a
/// row, KPW rows a warp; q rows pre-scaled by scale * log2(e).
template <int HD>
struct CudaCoreLanes {
  static constexpr int LPK = HD / 8;    // lanes per key row (8 elements = 16 bytes each)
  static constexpr int KPW = 32 / LPK;  // keys per warp per load
  static_assert(32 % LPK == 0, "head_dim must be 64, 128 or 256");
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
/// CUDA-core kernel is instantiated both ways: the window's test cost them 4-7% at 32K-128K keys).
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

/// The CUDA-core kernel's end: merges the KPW key streams of each warp (lanes ks = 0..KPW-1 hold
/// separate states), stages the NW warps' rows in shared memory and calls finish_block.
template <class T, int HD, int ROWS, int NW>
__device__ __forceinline__ void cuda_core_finish(const DecodeArgs<T>& a, const float (&m2)[ROWS],
                                                 const float (&l)[ROWS], float (&acc)[ROWS][8], int rg, int kvh, int b,
                                                 int split) {
  using State = attention::SoftmaxState<float>;
  constexpr int LPK = CudaCoreLanes<HD>::LPK;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, ks = lane / LPK, d0 = (lane % LPK) * 8;
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
  // Merge the NW warps through shared memory (finish_block).
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
  cuda_core_finish<T, HD, ROWS, NW>(a, m2, l, acc, rg, kvh, b, split);
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

/// Launches the CUDA-core kernel with the smallest block row count R in {1, 2, 4, 8} with
/// n_rows <= R, or R = 8 when n_rows is larger (row groups then cover the rest).
template <class T, int HD>
void decode_rows(DecodeArgs<T> a, int n_rows, int batch, int kv_heads, int max_splits, DecodeWorkspace& ws,
                 cudaStream_t stream, bool pdl) {
  if (n_rows <= 1) launch_decode<T, HD, 1>(a, n_rows, batch, kv_heads, max_splits, ws, stream, pdl);
  else if (n_rows <= 2) launch_decode<T, HD, 2>(a, n_rows, batch, kv_heads, max_splits, ws, stream, pdl);
  else if (n_rows <= 4) launch_decode<T, HD, 4>(a, n_rows, batch, kv_heads, max_splits, ws, stream, pdl);
  else launch_decode<T, HD, 8>(a, n_rows, batch, kv_heads, max_splits, ws, stream, pdl);
}

}  // namespace ropex::cuda::detail
