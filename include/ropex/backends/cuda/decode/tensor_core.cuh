// The tensor-core decode kernel (decode_mma_kernel): up to 16 query rows of a KV head ride
// mma.sync m16n8k16, 16 keys a warp step, K/V staged by cp.async. Runs on any card from sm_80;
// decode.cuh says when it is chosen.
#pragma once
#include <ropex/backends/cuda/decode/split.cuh>
#include <ropex/backends/cuda/mma.cuh>

namespace ropex::cuda::detail {

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

}  // namespace ropex::cuda::detail
