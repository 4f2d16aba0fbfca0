// The TMA tensor-core decode kernel (decode_tma_kernel, sm_90+): swizzled K/V boxes from the tensor
// copy engine into mma.sync with the query rows on the N side, 8 query rows a block. decode.cuh
// says when it is chosen.
#pragma once
#include <ropex/backends/cuda/decode/split.cuh>
#include <ropex/backends/cuda/mma.cuh>
#include <ropex/backends/cuda/tma.cuh>

namespace ropex::cuda::detail {

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
/// The CUDA-core math on bulk-copied stages was issue-bound with 4 rows (151 registers, one block
/// an SM), and the copy of decode_mma_kernel (cp.async by every warp) slower than the copy engine.
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

}  // namespace ropex::cuda::detail
