// Flash attention forward (prefill) for Hopper (sm_90a): warpgroup tensor cores (wgmma), after
// FlashAttention-3 (Shah, Bikshandi, Zhang, Thakkar, Ramani, Dao 2024), kept small:
//
//   block = 3 warpgroups; BM = 128 query rows, 128-key tiles (BN = 128), head_dim 128
//   warpgroup 0  producer (FA3 §3.1 warp specialization): one thread streams Q and the K/V tiles
//                in with the tensor copy engine (TMA; the copy applies the 128-byte swizzle)
//                through two shared stages guarded by mbarriers (full: bytes landed; empty:
//                consumers done), then gives its registers to the consumers (setmaxnreg)
//   warpgroups 1, 2  consumers, 64 query rows each, free-running (no block-wide barrier per tile):
//     S = Q K^T    wgmma m64n128k16, Q and K from shared memory (both K-major)
//     softmax      online, base 2, in the S accumulators (as flash_prefill.cuh)
//     O += P V     wgmma with A = P from registers (the S accumulators re-packed to 16 bits) and
//                  B = V straight from its [keys, dims] tile ("MN-major", the transpose bit)
//   the consumers take turns issuing S = Q K^T (FA3 §3.2 ping-pong, named barriers 1 and 2)
// Not used from FA3: overlapping the softmax of tile j+1 with O += P_j V_j inside a warpgroup
// (§3.2): measured no faster here on an H200, -5..+3% with ping-pong, and it needs 64 more registers.
//
// Shared tiles (128 rows x 128 dims of 16-bit) are two 64-column blocks of 128 x 128 bytes; in
// each, 16-byte chunk c of row r sits at r*128 + ((c ^ r%8) * 16) (the 128-byte swizzle wgmma
// reads without bank conflicts; PTX ISA "Shared Memory Matrix Layout"). Tiles are 1024-byte aligned.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/backends/cuda/mma.cuh>
#include <ropex/backends/cuda/rope.cuh>
#include <ropex/backends/cuda/tma.cuh>
#include <ropex/rope/frequencies.hpp>

#include <type_traits>

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
#if defined(ROPEX_SM90_WGMMA)
/// D(64x128, fp32) (+)= A(64x16) B(16x128): A and B from shared memory, both K-major.
/// scale_d = 0 overwrites D.
template <class T>
__device__ __forceinline__ void wgmma_ss(float (&d)[64], uint64_t da, uint64_t db, int scale_d);
/// D(64x128, fp32) += A(64x16, registers, mma.sync A-fragment layout per warp) B(16x128): B MN-major.
template <class T>
__device__ __forceinline__ void wgmma_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t db);

// The 64 fp32 accumulators of one m64n128 wgmma as asm operands %0..%63.
#define ROPEX_WGMMA_D_REGS "{" "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63" "}"
#define ROPEX_WGMMA_D_OUT(d) \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
// wgmma_ss / wgmma_rs for one 16-bit type (PTX_AB: "bf16.bf16" or "f16.f16"); the last immediates
// are scale-a, scale-b and the transposes (ss: none; rs: B transposed, i.e. MN-major V).
#define ROPEX_DEFINE_WGMMA(T, PTX_AB)                                                                        \
  template <>                                                                                                \
  __device__ __forceinline__ void wgmma_ss<T>(float(&d)[64], uint64_t da, uint64_t db, int scale_d) {        \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX_AB " " ROPEX_WGMMA_D_REGS                  \
                 ", %64, %65, p, 1, 1, 0, 0;\n}\n"                                                            \
                 : ROPEX_WGMMA_D_OUT(d)                                                                      \
                 : "l"(da), "l"(db), "r"(scale_d));                                                           \
  }                                                                                                          \
  template <>                                                                                                \
  __device__ __forceinline__ void wgmma_rs<T>(float(&d)[64], const uint32_t(&a)[4], uint64_t db) {           \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX_AB " " ROPEX_WGMMA_D_REGS                  \
                 ", {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"                                                 \
                 : ROPEX_WGMMA_D_OUT(d)                                                                      \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(1));                              \
  }
ROPEX_DEFINE_WGMMA(__nv_bfloat16, "bf16.bf16")
ROPEX_DEFINE_WGMMA(__half, "f16.f16")
#undef ROPEX_DEFINE_WGMMA
#undef ROPEX_WGMMA_D_OUT
#undef ROPEX_WGMMA_D_REGS
#endif  // ROPEX_SM90_WGMMA

#if defined(ROPEX_SM90_WGMMA)
// ---- mbarriers and the tensor copy engine (TMA) -------------------------------------------------
using mma::mbar_arrive;
using mma::mbar_expect_tx;
using mma::mbar_init;
using mma::mbar_wait;
using tma::load_4d;
template <int N>
__device__ __forceinline__ void regs_dealloc() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void regs_alloc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }

#endif

template <class T>
struct Sm90Args {
  const T* q;  // [batch, n_queries, n_heads, 128]
  const T* k;  // [batch, n_keys, n_kv_heads, 128]
  const T* v;  // [batch, n_keys, n_kv_heads, 128]
  T* o;        // [batch, n_queries, n_heads, 128]
  float* lse;  // [batch, n_heads, n_queries] or nullptr
  attention::AttentionShape shape;
  float scale_log2;
  // Fused RoPE (flash_prefill.cuh's FusedRope, in kernel): per-token cos/sin rows [batch * n_queries,
  // rope_half] and [batch * n_keys, rope_half]; nullptr leaves that side as it is.
  const float2* q_table = nullptr;
  const float2* k_table = nullptr;
  int rope_half = 0;
  RopeLayout rope_layout = RopeLayout::half;
};

struct Sm90Config {
  static constexpr int HD = 128, BM = 128, BN = 128, NT = 384, STAGES = 2;
  static constexpr uint32_t TILE = 128 * HD * 2;
  static constexpr uint32_t TABLE = 128 * 64 * 8;  // the cos/sin rows of one K tile (rope_half <= 64)
  static constexpr size_t smem_bytes = (1 + 2 * STAGES) * size_t(TILE) + 1024 + 8 * (1 + 3 * STAGES);
  static constexpr size_t smem_bytes_rope = smem_bytes + TABLE + 8 * (1 + STAGES);
};

/// Whether the in-kernel RoPE of the sm90 kernel takes this rotary half-dim: whole 16-frequency
/// rows of 128-byte table boxes, and 16-byte chunks of dims for both layouts.
inline bool sm90_rope_half_ok(int half) { return half > 0 && half <= 64 && half % 16 == 0; }

#if defined(ROPEX_SM90_WGMMA)
/// Rotates, in place, 16-byte chunk `ch` of row r of a 128 x 128 tile held as two 128-byte
/// swizzled 64-dim boxes `cb` bytes apart (half layout: with its partner half/8 chunks on), by
/// rope.cuh's chunk rotation. cs4(f) = {cos f, sin f, cos f+1, sin f+1} for even f: the chunk's
/// cos/sin are read 16 bytes at a time, before any math (per-pair 8-byte reads of a shared table
/// took the in-kernel rotation from +8% to +14% over no RoPE in a probe).
template <class T, class CosSin4>
__device__ __forceinline__ void rotate_tile_chunk(unsigned char* tile, uint32_t cb, int r, int ch, int half,
                                                  RopeLayout layout, CosSin4 cs4) {
  using V = Vec16<T>;
  auto at = [&](int c) { return reinterpret_cast<V*>(tile + (c / 8) * cb + tma::swizzled(r, c % 8)); };
  const int f0 = cuda::detail::first_pair<T>(ch, layout);
  cuda::detail::Chunk16<T> d;
  V* pa = at(ch);
  d.a = *pa;
  if (layout == RopeLayout::half) {  // 8 pairs: 4 float4 of cos/sin
    float4 c[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) c[k] = cs4(f0 + 2 * k);
    V* pb = at(ch + half / 8);
    d.b = *pb;
    cuda::detail::rotate_chunk_values(d, RopeLayout::half, [&](int e) {
      return e % 2 ? make_float2(c[e / 2].z, c[e / 2].w) : make_float2(c[e / 2].x, c[e / 2].y);
    });
    *pa = d.a;
    *pb = d.b;
  } else {  // 4 pairs: 2 float4
    float4 c[2];
#pragma unroll
    for (int k = 0; k < 2; ++k) c[k] = cs4(f0 + 2 * k);
    cuda::detail::rotate_chunk_values(d, RopeLayout::interleaved, [&](int e) {
      return e % 2 ? make_float2(c[e / 2].z, c[e / 2].w) : make_float2(c[e / 2].x, c[e / 2].y);
    });
    *pa = d.a;
  }
}
/// cos/sin of frequencies f, f+1 (f even) of row r of a table tile in shared memory: 128-byte
/// swizzled boxes of 16 frequencies (float2) x 128 rows, as the tensor copy lands a [rows][half] table.
__device__ __forceinline__ float4 table_cos_sin4(const unsigned char* table, int r, int f) {
  return *reinterpret_cast<const float4*>(table + (f / 16) * 128 * 128 + tma::swizzled(r, (f % 16) / 2));
}
/// Makes this thread's shared-memory writes visible to the async proxy (wgmma reads the tile next).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void named_bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
#endif

/// RoPE in shared memory as tiles land (Sm90Args' tables). ROPE = Sm90Rope::q: each consumer
/// warpgroup rotates its 64 Q rows once, their cos/sin rows copied in with Q. Sm90Rope::k (Q optionally too): the producer warpgroup's
/// 128 threads rotate each K tile with its cos/sin rows (a TMA box into shared memory) and release
/// it to the consumers on rot_k; they need 56 registers, so the consumers get 224 instead of 240.
enum class Sm90Rope { none, q, k };
template <class T, Sm90Rope ROPE = Sm90Rope::none>
__global__ void __launch_bounds__(Sm90Config::NT, 1)
    flash_forward_sm90_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                                 const __grid_constant__ CUtensorMap tv, const __grid_constant__ CUtensorMap tcs,
                                 Sm90Args<T> a) {
#if defined(ROPEX_SM90_WGMMA)
  using C = Sm90Config;
  constexpr int BM = C::BM, BN = C::BN, HD = C::HD, S = C::STAGES;
  constexpr uint32_t TILE = C::TILE, CB = TILE / 2;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = mma::smem_addr(smem_raw), sQ = (raw + 1023u) & ~1023u;
  const uint32_t sK = sQ + TILE, sV = sK + S * TILE;  // [S stages] each
  const uint32_t sT = sV + S * TILE;                  // ROPE: one K tile's cos/sin rows
  constexpr bool ROT_K = ROPE == Sm90Rope::k;
  const uint32_t bar_q = sT + (ROPE != Sm90Rope::none ? C::TABLE : 0), full_k = bar_q + 8, full_v = full_k + 8 * S, empty = full_v + 8 * S;
  const uint32_t full_t = empty + 8 * S, rot_k = full_t + 8;  // ROPE: table landed; K tile rotated [S]
  auto generic = [&](uint32_t addr) { return smem_raw + (addr - raw); };

  const attention::AttentionShape& s = a.shape;
  const int m_block = s.causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;  // longest causal blocks first
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / static_cast<int>(s.group());
  const int tid = threadIdx.x, wg = tid / 128;
  const int64_t m0 = static_cast<int64_t>(m_block) * BM, nq = s.n_queries;
  const int64_t last_row = min(m0 + BM, nq) - 1;
  const int n_tiles = static_cast<int>(ceil_div(s.visible_keys(last_row), BN));

  if (tid == 0) {
    mbar_init(bar_q, 1);
    for (int i = 0; i < S; ++i) {
      mbar_init(full_k + 8 * i, 1);
      mbar_init(full_v + 8 * i, 1);
      mbar_init(empty + 8 * i, 256);  // every consumer thread, after its O += P V
      if (ROT_K) mbar_init(rot_k + 8 * i, 128);  // every producer thread, after rotating its rows
    }
    if (ROT_K) mbar_init(full_t, 1);
    mma::mbar_init_fence();
  }
  __syncthreads();

  // Producer: Q, then K and V tile j into stage j % S once the consumers are done with tile j - S.
  // Box = 64 dims x 1 head x 128 tokens x 1 batch: one swizzled 64-column block of a tile.
  auto issue_q = [&] {  // Sm90Rope::q: with the Q rows' cos/sin (tcs maps the Q table then) on the same barrier
    const uint32_t q_table_bytes = ROPE == Sm90Rope::q ? static_cast<uint32_t>(a.rope_half) * 1024 : 0;
    mbar_expect_tx(bar_q, TILE + q_table_bytes);
    for (int cb = 0; cb < 2; ++cb) load_4d(sQ + cb * CB, &tq, bar_q, 64 * cb, h, static_cast<int>(m0), b);
    if constexpr (ROPE == Sm90Rope::q)
      for (int bx = 0; bx < a.rope_half / 16; ++bx)
        load_4d(sT + bx * 128 * 128, &tcs, bar_q, 32 * bx, static_cast<int>(b * s.n_queries + m0), 0, 0);
  };
  auto issue_kv = [&](int j) {
    const int st = j % S;
    if (j >= S) mbar_wait(empty + 8 * st, ((j / S) - 1) & 1);
    mbar_expect_tx(full_k + 8 * st, TILE);
    for (int cb = 0; cb < 2; ++cb) load_4d(sK + st * TILE + cb * CB, &tk, full_k + 8 * st, 64 * cb, kvh, j * BN, b);
    mbar_expect_tx(full_v + 8 * st, TILE);
    for (int cb = 0; cb < 2; ++cb) load_4d(sV + st * TILE + cb * CB, &tv, full_v + 8 * st, 64 * cb, kvh, j * BN, b);
  };
  if (ROT_K && wg == 0) {  // ---- producer rotating K: thread 0 issues, all 128 rotate K tiles ----
    regs_dealloc<56>();
    const int half = a.rope_half;
    const uint32_t table_bytes = static_cast<uint32_t>(half) * 1024;  // 128 rows x half float2
    const int64_t krow0 = static_cast<int64_t>(b) * s.n_keys;          // this sequence's first table row
    auto issue_table = [&](int j) {  // 16 frequencies (128 bytes) a box, 128 rows
      mbar_expect_tx(full_t, table_bytes);
      for (int bx = 0; bx < half / 16; ++bx) load_4d(sT + bx * 128 * 128, &tcs, full_t, 32 * bx, static_cast<int>(krow0 + j * BN), 0, 0);
    };
    if (tid == 0) {
      issue_q();
      issue_kv(0);
      issue_table(0);
    }
    // Thread p rotates rows 32w + 8i + p%8 (i < 4), chunks p%32/8 + 4n: 8 lanes a phase read the same
    // chunk of 8 consecutive rows, which the swizzle spreads over the 8 bank groups.
    const int w = tid / 32, l = tid % 32;
    const int n_chunks = a.rope_layout == RopeLayout::half ? half / 8 : half / 4;
    const unsigned char* table = generic(sT);
    for (int j = 0; j < n_tiles; ++j) {
      const int st = j % S;
      {
        mbar_wait(full_k + 8 * st, (j / S) & 1);
        mbar_wait(full_t, j & 1);
        for (int i = 0; i < 4; ++i) {
          const int r = 32 * w + 8 * i + l % 8;
          for (int ch = l / 8; ch < n_chunks; ch += 4)
            rotate_tile_chunk<T>(generic(sK + st * TILE), CB, r, ch, half, a.rope_layout,
                                 [&](int f) { return table_cos_sin4(table, r, f); });
        }
        fence_proxy_async();
      }
      mbar_arrive(rot_k + 8 * st);
      named_bar_sync(3, 128);  // every thread is done with the table
      if (tid == 0 && j + 1 < n_tiles) {
        issue_table(j + 1);
        issue_kv(j + 1);
      }
    }
    return;
  }
  if (wg == 0) {  // ---- producer ----------------------------------------------------------------
    regs_dealloc<24>();
    if (tid != 0) return;
    issue_q();
    for (int j = 0; j < n_tiles; ++j) issue_kv(j);
    return;
  }

  // ---- consumers: warpgroups 1 and 2, 64 query rows each ---------------------------------------
  if constexpr (ROT_K) regs_alloc<224>();  // 56 + 2 x 224 = 504 registers a thread slot, as 24 + 2 x 240
  else regs_alloc<240>();
  const int cw = wg - 1, warp = (tid / 32) % 4, lane = tid % 32;
  const int g = lane / 4, c4 = lane % 4;
  const int64_t q_ts = s.n_heads * HD;
  const uint32_t q_rows = sQ + cw * 64 * 128;
  const int64_t row_base = m0 + cw * 64 + warp * 16 + g;  // rows row_base and +8
  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

  auto issue_s = [&](float(&sc)[64], uint32_t tK) {
#pragma unroll
    for (int kc = 0; kc < HD / 16; ++kc) {
      const uint32_t off = (kc / 4) * CB + (kc % 4) * 32;
      wgmma_ss<T>(sc, sw128_desc(q_rows + off, 16, 1024), sw128_desc(tK + off, 16, 1024), kc > 0);
    }
  };
  // Masks tile j of S (keys past the end or the causal diagonal), then the online softmax (base 2):
  // S becomes P = 2^(S scale log2e - m'); alpha = 2^((m - m') scale log2e) rescales O and l.
  // sc[4n + 2hr + e] = S[row g + 8hr][key 8n + 2c4 + e] (the m16n8 C layout, repeated along N).
  auto softmax = [&](float(&sc)[64], int j, float(&alpha)[2]) {
    const int64_t key0 = int64_t(j) * BN;
    if (key0 + BN > s.visible_keys(m0)) {  // the block's first row sees the fewest keys
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int64_t row = row_base + 8 * hr;
        const int64_t limit = s.visible_keys(row) - key0;
#pragma unroll
        for (int n = 0; n < BN / 8; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e)
            if (n * 8 + 2 * c4 + e >= limit) sc[4 * n + 2 * hr + e] = -INFINITY;
      }
    }
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float mx = row_max[hr];
#pragma unroll
      for (int n = 0; n < BN / 8; ++n) mx = fmaxf(mx, fmaxf(sc[4 * n + 2 * hr], sc[4 * n + 2 * hr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_scaled = mx == -INFINITY ? 0.f : mx * a.scale_log2;
      alpha[hr] = mma::fast_exp2(row_max[hr] * a.scale_log2 - m_scaled);  // 0 on the first tile
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
      row_sum[hr] = row_sum[hr] * alpha[hr] + sum;
    }
  };
  auto rescale_o = [&](const float(&alpha)[2]) {
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      o[4 * n] *= alpha[0];
      o[4 * n + 1] *= alpha[0];
      o[4 * n + 2] *= alpha[1];
      o[4 * n + 3] *= alpha[1];
    }
  };
  // P as the register A operand of O += P V: k-slice kk = keys 16kk..16kk+15.
  uint32_t pa[BN / 16][4];
  auto pack_p = [&](const float(&sc)[64]) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) pa[kk][r] = mma::pack2<T>(sc[8 * kk + 2 * r], sc[8 * kk + 2 * r + 1]);
  };
  // V_j [keys][dims] is MN-major for O += P V: 8-key groups SBO = 1024 bytes apart, the two 64-dim
  // blocks LBO = 16 KB apart; k-slice kk starts 16 keys = 2048 bytes further.
  auto issue_pv = [&](uint32_t tV) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) wgmma_rs<T>(o, pa[kk], sw128_desc(tV + kk * 2048, CB, 1024));
  };
  // Ping-pong (FA3 §3.2): the two consumers take turns issuing S = Q K^T, so one's softmax runs
  // under the other's GEMMs. Named barrier 1 + cw means "consumer cw's turn"; consumer 0 starts.
  auto my_turn = [&] { asm volatile("bar.sync %0, 256;\n" ::"r"(1 + cw) : "memory"); };
  auto your_turn = [&] { asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - cw) : "memory"); };
  if (cw == 1) your_turn();
  mbar_wait(bar_q, 0);
  if constexpr (ROPE != Sm90Rope::none) {
    if (a.q_table) {  // this warpgroup's 64 Q rows, once: rows cw*64 + 16*warp + 8i + lane%8, chunks lane/8 + 4n
      const int half = a.rope_half;
      const int n_chunks = a.rope_layout == RopeLayout::half ? half / 8 : half / 4;
      const unsigned char* table = generic(sT);
      for (int i = 0; i < 2; ++i) {
        const int r = cw * 64 + 16 * warp + 8 * i + lane % 8;
        if (m0 + r >= nq) continue;
        const float2* row = a.q_table + (static_cast<int64_t>(b) * nq + m0 + r) * half;
        // Sm90Rope::q: the rows' cos/sin came in beside Q (the table tile); Sm90Rope::k: that tile
        // holds K's, so from global memory.
        auto cs = [&](int f) {
          if constexpr (ROPE == Sm90Rope::q) return table_cos_sin4(table, r, f);
          else return *reinterpret_cast<const float4*>(row + f);
        };
        for (int ch = lane / 8; ch < n_chunks; ch += 4) rotate_tile_chunk<T>(generic(sQ), CB, r, ch, half, a.rope_layout, cs);
      }
      fence_proxy_async();
      named_bar_sync(4 + cw, 128);  // the warpgroup's rows are rotated before its first wgmma
    }
  }

  for (int j = 0; j < n_tiles; ++j) {
    const int st = j % S;
    const uint32_t phase = (j / S) & 1;
    mbar_wait((ROT_K ? rot_k : full_k) + 8 * st, phase);
    float sc[64], alpha[2];
    my_turn();
    wgmma_fence();
    issue_s(sc, sK + st * TILE);
    wgmma_commit();
    your_turn();
    wgmma_wait<0>();
    fence_regs(sc);
    softmax(sc, j, alpha);
    rescale_o(alpha);
    pack_p(sc);
    mbar_wait(full_v + 8 * st, phase);
    fence_regs(o);
    wgmma_fence();
    issue_pv(sV + st * TILE);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(o);
    mbar_arrive(empty + 8 * st);  // this thread's reads of stage st are done
  }
  if (cw == 0) my_turn();  // consumes consumer 1's head-start arrival

  const float scale = a.scale_log2 * kLn2;
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
  __trap();
#endif
}

/// Tensor map of a [batch, tokens, heads, 128] 16-bit tensor for 64-dim x 128-token boxes of one
/// head, 128-byte swizzled; tokens past the end read as zeros.
template <class T>
CUtensorMap head_tile_map(const T* base, int batch, int64_t tokens, int64_t heads) {
  const uint64_t row = 128 * sizeof(T);
  const tma::Tensor4d t{{128, static_cast<uint64_t>(heads), static_cast<uint64_t>(tokens), static_cast<uint64_t>(batch)},
                        {row, static_cast<uint64_t>(heads) * row, static_cast<uint64_t>(tokens * heads) * row}};
  return tma::tensor_map(base, t, {64, 1, 128, 1});
}

template <class T>
void launch_flash_sm90(const Sm90Args<T>& a, int batch, cudaStream_t stream) {
  using C = Sm90Config;
  if ((a.q_table || a.k_table) && !sm90_rope_half_ok(a.rope_half))
    throw make_error("cuda::sm90::launch_flash_sm90", "rope_half", "must be 16, 32, 48 or 64");
  const Sm90Rope mode = a.k_table ? Sm90Rope::k : a.q_table ? Sm90Rope::q : Sm90Rope::none;
  auto kernel = mode == Sm90Rope::k   ? flash_forward_sm90_kernel<T, Sm90Rope::k>
                : mode == Sm90Rope::q ? flash_forward_sm90_kernel<T, Sm90Rope::q>
                                      : flash_forward_sm90_kernel<T, Sm90Rope::none>;
  const size_t smem = mode == Sm90Rope::none ? C::smem_bytes : C::smem_bytes_rope;
  static const bool configured = [] {  // once per type: > 48 KB of dynamic shared memory
    auto set = [](auto f, size_t bytes) {
      ROPEX_CUDA_CHECK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    };
    set(flash_forward_sm90_kernel<T, Sm90Rope::none>, C::smem_bytes);
    set(flash_forward_sm90_kernel<T, Sm90Rope::q>, C::smem_bytes_rope);
    set(flash_forward_sm90_kernel<T, Sm90Rope::k>, C::smem_bytes_rope);
    return true;
  }();
  (void)configured;
  const auto& s = a.shape;
  const CUtensorMap tq = head_tile_map(a.q, batch, s.n_queries, s.n_heads);
  const CUtensorMap tk = head_tile_map(a.k, batch, s.n_keys, s.n_kv_heads);
  const CUtensorMap tv = head_tile_map(a.v, batch, s.n_keys, s.n_kv_heads);
  // The K table as [batch * n_keys rows][2 * half floats]: boxes of 16 frequencies x one K tile.
  CUtensorMap tcs = tq;  // unused without RoPE
  if (mode == Sm90Rope::q) {  // the Q table, [batch * n_queries rows][2 * half floats], one Q tile's rows a copy
    const uint64_t row = 2 * static_cast<uint64_t>(a.rope_half);
    tcs = tma::tensor_map(a.q_table, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4,
                          tma::Tensor4d{{row, static_cast<uint64_t>(batch * s.n_queries), 1, 1}, {row * 4, 0, 0}},
                          {32, static_cast<uint32_t>(C::BM), 1, 1});
  }
  if (a.k_table) {
    const uint64_t row = 2 * static_cast<uint64_t>(a.rope_half);
    tcs = tma::tensor_map(a.k_table, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4,
                          tma::Tensor4d{{row, static_cast<uint64_t>(batch * s.n_keys), 1, 1}, {row * 4, 0, 0}},
                          {32, static_cast<uint32_t>(C::BN), 1, 1});
  }
  dim3 grid(static_cast<unsigned>(ceil_div(s.n_queries, C::BM)), static_cast<unsigned>(s.n_heads),
            static_cast<unsigned>(batch));
  kernel<<<grid, C::NT, smem, stream>>>(tq, tk, tv, tcs, a);
  check_launch("flash_forward_sm90_kernel");
}

/// Whether this program carries the sm_90a kernel. CMake defines ROPEX_CUDA_SM90A for targets
/// whose CUDA_ARCHITECTURES include 90a (define it by hand with -gencode ...sm_90a elsewhere);
/// without it the kernel is a trapping stub and must never be chosen.
constexpr bool sm90_compiled() {
#if defined(ROPEX_CUDA_SM90A)
  return true;
#else
  return false;
#endif
}

/// True when the sm_90a kernel is compiled in and the current device runs it (compute capability 9.x).
inline bool device_is_sm90() {
  if (!sm90_compiled()) return false;
  int dev = 0, major = 0;
  ROPEX_CUDA_CHECK(cudaGetDevice(&dev));
  ROPEX_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major == 9;
}

}  // namespace ropex::cuda::sm90
