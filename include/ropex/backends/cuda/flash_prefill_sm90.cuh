// Flash attention forward (prefill) for Hopper (sm_90a): warpgroup tensor cores (wgmma), after
// FlashAttention-3 (Shah, Bikshandi, Zhang, Thakkar, Ramani, Dao 2024), kept small:
//
//   block = 2 warpgroups (256 threads) x 64 query rows each (BM = 128), 128-key tiles (BN = 128)
//   S = Q K^T    wgmma m64n128k16, Q and K from shared memory (both K-major, 128-byte swizzle)
//   softmax      online, base 2, in the S accumulators (as flash_prefill.cuh)
//   O += P V     wgmma with A = P from registers (the S accumulators re-packed to 16 bits, FA3 §3.1)
//                and B = V straight from its [keys, dims] tile ("MN-major", the transpose bit)
// K/V tiles stream through two shared stages by cp.async: tile j+1 loads while tile j is computed.
// Not (yet) used from FA3: TMA + a producer warp, ping-pong scheduling of the two warpgroups, and
// overlapping the softmax of one tile with the GEMMs of the next.
//
// Shared tiles (R rows x 128 dims of 16-bit) are two 64-column blocks of R x 128 bytes; in each,
// 16-byte chunk c of row r sits at r*128 + ((c ^ r%8) * 16) (the 128-byte swizzle wgmma reads
// without bank conflicts; PTX ISA "Shared Memory Matrix Layout"). Tiles are 1024-byte aligned.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/backends/cuda/mma.cuh>

namespace ropex::cuda::sm90 {

// wgmma needs the arch-specific sm_90a target; other targets compile a stub that traps.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ROPEX_SM90_WGMMA 1
#endif

/// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): start address >> 4 in
/// bits 0-13, leading byte offset >> 4 in 16-29, stride byte offset >> 4 in 32-45, base offset 0
/// (tiles are 1024-byte aligned), layout 1 = 128-byte swizzle in bits 62-63.
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | static_cast<uint64_t>(lbo >> 4) << 16 |
         static_cast<uint64_t>(sbo >> 4) << 32 | static_cast<uint64_t>(1) << 62;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/// Pins accumulators in place around async wgmma: without it the compiler may move their reads
/// above the wait (it does not know the asm writes them late).
template <int N>
__device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
/// Orders this thread's generic-proxy shared writes (cp.async) before async-proxy reads (wgmma).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}

#if defined(ROPEX_SM90_WGMMA)
/// D(64x128, fp32) (+)= A(64x16) B(16x128): A and B from shared memory, both K-major.
/// scale_d = 0 overwrites D.
template <class T>
__device__ __forceinline__ void wgmma_ss(float (&d)[64], uint64_t da, uint64_t db, int scale_d);
/// D(64x128, fp32) += A(64x16, registers, mma.sync A-fragment layout per warp) B(16x128): B MN-major.
template <class T>
__device__ __forceinline__ void wgmma_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t db);

template <>
__device__ __forceinline__ void wgmma_ss<__nv_bfloat16>(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d));
}
template <>
__device__ __forceinline__ void wgmma_rs<__nv_bfloat16>(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<__half>(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d));
}
template <>
__device__ __forceinline__ void wgmma_rs<__half>(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(1));
}
#endif  // ROPEX_SM90_WGMMA

template <class T>
struct Sm90Args {
  const T* q;  // [batch, n_queries, n_heads, 128]
  const T* k;  // [batch, n_keys, n_kv_heads, 128]
  const T* v;  // [batch, n_keys, n_kv_heads, 128]
  T* o;        // [batch, n_queries, n_heads, 128]
  float* lse;  // [batch, n_heads, n_queries] or nullptr
  attention::AttentionShape shape;
  float scale_log2;
};

struct Sm90Config {
  static constexpr int HD = 128, BM = 128, BN = 128, NT = 256;
  static constexpr uint32_t TILE = 128 * HD * 2;                 // bytes of one 128-row tile
  static constexpr size_t smem_bytes = 5 * size_t(TILE) + 1024;  // Q + 2 stages of K and V + alignment
};

/// Rows [row0, row0 + ROWS) of one head (128 dims) of a [tokens, heads, 128] tensor into a swizzled
/// shared tile at dst; rows past n_rows become zeros (so padded V rows cannot inject NaN).
template <class T, int ROWS>
__device__ __forceinline__ void load_tile_sw128(uint32_t dst, const T* head, int64_t token_stride, int64_t row0,
                                                int64_t n_rows) {
  constexpr int CH = 16, NT = Sm90Config::NT;  // 16-byte chunks per row
#pragma unroll
  for (int i = 0; i < ROWS * CH / NT; ++i) {
    const int idx = static_cast<int>(threadIdx.x) + i * NT;
    const int r = idx / CH, c = idx % CH;
    const bool valid = row0 + r < n_rows;
    const T* src = head + (valid ? (row0 + r) * token_stride + c * 8 : 0);
    cp_async16(dst + (c / 8) * (ROWS * 128) + r * 128 + (((c % 8) ^ (r % 8)) << 4), src, valid);
  }
}

template <class T>
__global__ void __launch_bounds__(Sm90Config::NT, 1) flash_forward_sm90_kernel(Sm90Args<T> a) {
#if defined(ROPEX_SM90_WGMMA)
  using C = Sm90Config;
  constexpr int BM = C::BM, BN = C::BN, HD = C::HD;
  constexpr uint32_t TILE = C::TILE, CB = TILE / 2;  // CB: one 64-column block of a 128-row tile
  extern __shared__ unsigned char smem_raw[];
  const uint32_t sQ = (mma::smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t sK = sQ + TILE, sV = sQ + 3 * TILE;  // [2 stages] each

  const attention::AttentionShape& s = a.shape;
  const int m_block = s.causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;  // longest causal blocks first
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / static_cast<int>(s.group());
  const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
  const int g = lane / 4, c4 = lane % 4;
  const int64_t m0 = static_cast<int64_t>(m_block) * BM, nq = s.n_queries, nk = s.n_keys;
  const int64_t q_ts = s.n_heads * HD, kv_ts = s.n_kv_heads * HD;
  const T* q_head = a.q + b * nq * q_ts + h * HD;
  const T* k_head = a.k + b * nk * kv_ts + kvh * HD;
  const T* v_head = a.v + b * nk * kv_ts + kvh * HD;

  const int64_t last_row = min(m0 + BM, nq) - 1;
  const int64_t key_end = s.causal ? min(nk, s.query_offset + last_row + 1) : nk;
  const int n_tiles = static_cast<int>((key_end + BN - 1) / BN);

  load_tile_sw128<T, BM>(sQ, q_head, q_ts, m0, nq);
  load_tile_sw128<T, BN>(sK, k_head, kv_ts, 0, nk);
  load_tile_sw128<T, BN>(sV, v_head, kv_ts, 0, nk);
  mma::cp_async_commit();

  // This warpgroup's 64 Q rows start 64*wg rows into each column block. K-major operands: LBO
  // unused (1), SBO = 1024 bytes between 8-row groups; k-step kc of 16 dims is +32 bytes in block kc/4.
  const uint32_t q_rows = sQ + wg * 64 * 128;
  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};  // raw-score max; partial sums
  const int64_t row_base = m0 + wg * 64 + warp * 16 + g;                 // rows row_base and +8

  for (int j = 0; j < n_tiles; ++j) {
    const int buf = j & 1;
    mma::cp_async_wait<0>();  // tile j (and Q) landed
    fence_proxy_async();
    __syncthreads();          // ... for every thread; and everyone finished tile j-1 (other stage)
    if (j + 1 < n_tiles) {
      load_tile_sw128<T, BN>(sK + (buf ^ 1) * TILE, k_head, kv_ts, int64_t(j + 1) * BN, nk);
      load_tile_sw128<T, BN>(sV + (buf ^ 1) * TILE, v_head, kv_ts, int64_t(j + 1) * BN, nk);
    }
    mma::cp_async_commit();
    const uint32_t tK = sK + buf * TILE, tV = sV + buf * TILE;

    // ---- S = Q K^T (64 x 128 per warpgroup) ----------------------------------------------------
    float sc[64];
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < HD / 16; ++kc) {
      const uint32_t off = (kc / 4) * CB + (kc % 4) * 32;
      wgmma_ss<T>(sc, sw128_desc(q_rows + off, 16, 1024), sw128_desc(tK + off, 16, 1024), kc > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(sc);

    // ---- mask: keys past the end, or past the causal diagonal ------------------------------------
    // sc[4n + 2hr + e] = S[row g + 8hr][key 8n + 2c4 + e] (the m16n8 C layout, repeated along N).
    const int64_t key0 = int64_t(j) * BN;
    if (key0 + BN > nk || (s.causal && key0 + BN > s.query_offset + m0 + 1)) {
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int64_t row = row_base + 8 * hr;
        const int64_t limit = (s.causal ? min(nk, s.query_offset + row + 1) : nk) - key0;
#pragma unroll
        for (int n = 0; n < BN / 8; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e)
            if (n * 8 + 2 * c4 + e >= limit) sc[4 * n + 2 * hr + e] = -INFINITY;
      }
    }

    // ---- online softmax (base 2) ------------------------------------------------------------------
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float mx = row_max[hr];
#pragma unroll
      for (int n = 0; n < BN / 8; ++n) mx = fmaxf(mx, fmaxf(sc[4 * n + 2 * hr], sc[4 * n + 2 * hr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_scaled = mx == -INFINITY ? 0.f : mx * a.scale_log2;
      const float alpha = mma::fast_exp2(row_max[hr] * a.scale_log2 - m_scaled);  // 0 on the first tile
      row_max[hr] = mx;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < BN / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = mma::fast_exp2(fmaf(sc[4 * n + 2 * hr + e], a.scale_log2, -m_scaled));
          sc[4 * n + 2 * hr + e] = p;
          sum += p;
        }
      row_sum[hr] = row_sum[hr] * alpha + sum;
#pragma unroll
      for (int n = 0; n < HD / 8; ++n) {
        o[4 * n + 2 * hr] *= alpha;
        o[4 * n + 2 * hr + 1] *= alpha;
      }
    }

    // ---- O += P V: P as the register A operand (k-slice kk = keys 16kk..16kk+15) ----------------
    uint32_t pa[BN / 16][4];
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) pa[kk][r] = mma::pack2<T>(sc[8 * kk + 2 * r], sc[8 * kk + 2 * r + 1]);
    // V tile [keys][dims] is MN-major for this product: 8-key groups SBO = 1024 bytes apart, the
    // two 64-dim blocks LBO = 16 KB apart; k-slice kk starts 16 keys = 2048 bytes further.
    fence_regs(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) wgmma_rs<T>(o, pa[kk], sw128_desc(tV + kk * 2048, CB, 1024));
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(o);
  }

  // ---- epilogue: O / l, LSE = scale * m + ln l --------------------------------------------------
  const float scale = a.scale_log2 * 0.6931471805599453f;
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    float l = row_sum[hr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int64_t row = row_base + 8 * hr;
    if (row >= nq) continue;
    T* orow = a.o + (b * nq + row) * q_ts + h * HD;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n)
      *reinterpret_cast<uint32_t*>(orow + n * 8 + 2 * c4) =
          mma::pack2<T>(o[4 * n + 2 * hr] * inv, o[4 * n + 2 * hr + 1] * inv);
    if (a.lse && c4 == 0)
      a.lse[(static_cast<int64_t>(b) * s.n_heads + h) * nq + row] = l > 0.f ? row_max[hr] * scale + logf(l) : -INFINITY;
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // built without sm_90a: the host side never dispatches here on a correct build
#endif
}

/// True when the current device can run the sm_90a kernel (compute capability 9.x).
inline bool device_is_sm90() {
  int dev = 0, major = 0;
  ROPEX_CUDA_CHECK(cudaGetDevice(&dev));
  ROPEX_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major == 9;
}

template <class T>
void launch_flash_sm90(const Sm90Args<T>& a, int batch, cudaStream_t stream) {
  using C = Sm90Config;
  auto kernel = flash_forward_sm90_kernel<T>;
  static bool configured = false;  // once per instantiation: allow > 48 KB of dynamic smem
  if (!configured) {
    ROPEX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(C::smem_bytes)));
    configured = true;
  }
  dim3 grid(static_cast<unsigned>(ceil_div(a.shape.n_queries, C::BM)), static_cast<unsigned>(a.shape.n_heads),
            static_cast<unsigned>(batch));
  kernel<<<grid, C::NT, C::smem_bytes, stream>>>(a);
  check_launch("flash_forward_sm90_kernel");
}

}  // namespace ropex::cuda::sm90
