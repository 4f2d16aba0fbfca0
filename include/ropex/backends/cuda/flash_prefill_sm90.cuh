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
// Persistent (FA3 §3.1 also): one block an SM takes work items (query block, head, sequence) from
// a counter; Q is double-buffered and the next item's Q and first K/V tiles are copied in while the
// consumers finish this one, so no block pays its pipeline fill and epilogue alone (+1-17% over a
// block per item on an H100, the most at seq 1K). With Q RoPE the producer's warps 1-3 rotate
// each item's Q as it lands.
// With RoPE on K in the kernel (Sm90Rope below) the producer's 128 threads rotate each K tile in
// shared memory instead, blocks take one item each, and the second consumer's first thread issues
// the copies after the first two tiles.
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

#include <algorithm>
#include <limits>
#include <type_traits>

namespace ropex::cuda {

/// attention::AttentionShape as the prefill kernels take it (FlashArgs, Sm90Args): its fields up to
/// `scale`, in the layout they had before sliding windows. The window is kept apart, as the last
/// field of the kernels' arguments, so every other argument sits at the parameter offset it always
/// had and the window-0 kernels compile to the same machine code as before windows
/// (bench/gpu/sass_window0.sh); only the WINDOW instantiations read it.
struct FlashShape {
  int64_t n_queries = 0, n_keys = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t query_offset = 0;
  bool causal = true;
  double scale = 0;
  FlashShape() = default;
  ROPEX_HD FlashShape(const attention::AttentionShape& s)  // NOLINT: converts where a shape is passed
      : n_queries(s.n_queries), n_keys(s.n_keys), n_heads(s.n_heads), n_kv_heads(s.n_kv_heads), head_dim(s.head_dim),
        query_offset(s.query_offset), causal(s.causal), scale(s.scale) {}
  ROPEX_HD int64_t group() const { return n_heads / n_kv_heads; }
  /// AttentionShape::visible_keys.
  ROPEX_HD int64_t visible_keys(int64_t i) const {
    if (!causal) return n_keys;
    const int64_t v = query_offset + i + 1;
    return v < n_keys ? v : n_keys;
  }
  /// AttentionShape::first_key for that window.
  ROPEX_HD int64_t first_key(int64_t i, int64_t window) const {
    if (!causal || window <= 0) return 0;
    const int64_t f = query_offset + i + 1 - window;
    return f > 0 ? f : 0;
  }
};
static_assert(sizeof(FlashShape) == 64 && alignof(FlashShape) == 8, "the kernels' argument layout before windows");

}  // namespace ropex::cuda

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
  FlashShape shape;  // attention::AttentionShape less the window (below)
  float scale_log2;
  // Fused RoPE (flash_prefill.cuh's FusedRope, in kernel): per-token cos/sin rows [batch * n_queries,
  // rope_half] and [batch * n_keys, rope_half]; nullptr leaves that side as it is.
  const float2* q_table = nullptr;
  const float2* k_table = nullptr;
  int rope_half = 0;
  RopeLayout rope_layout = RopeLayout::half;
  // Or RoPE from anchors (rope.cuh rope_anchors; positions that run on within each sequence):
  // [batch][ceil(tokens / 16)][rope_half] for Q and K, and the 16 steps [16][rope_half]; a row's
  // cos/sin are the product of its anchor and step, made in shared memory. Replaces the tables.
  const float2* q_anchors = nullptr;
  const float2* k_anchors = nullptr;
  const float2* steps = nullptr;
  // Persistent modes: the work counter (0 at launch) and the number of items (sm90_items).
  int* next_item = nullptr;
  int n_items = 0;
  // attention::AttentionShape::window (the WINDOW kernels alone read it; last, see FlashShape).
  int64_t window = 0;
};

/// RoPE in shared memory as tiles land. ROPE = Sm90Rope::q: the producer warpgroup's warps 1-3
/// rotate each item's Q tile as it lands, with its rows of Q's table. Sm90Rope::k (Q optionally too): the
/// producer warpgroup's 128 threads rotate each K tile with its cos/sin table rows (a TMA box into
/// shared memory) and release it to the consumers on rot_k; they need 56 registers, so the consumers
/// get 224 instead of 240. anchors_q / anchors_k: the same with cos/sin made from anchors and steps
/// (Sm90Args), 4 KB a K tile instead of a 64 KB table box.
enum class Sm90Rope { none, q, k, anchors_q, anchors_k };
/// Whether the producer rotates K tiles / the cos/sin come from anchors.
constexpr bool rotates_k(Sm90Rope r) { return r == Sm90Rope::k || r == Sm90Rope::anchors_k; }
constexpr bool from_anchors(Sm90Rope r) { return r == Sm90Rope::anchors_q || r == Sm90Rope::anchors_k; }
/// Persistent modes: a block takes work items (query blocks) one after another from a counter, and
/// the producer copies in the next item's Q and first K/V tiles while the consumers finish the
/// current one. The K-rotating modes keep one item a block (their copies are issued by a consumer).
constexpr bool persistent(Sm90Rope r) { return !rotates_k(r); }
/// Q buffers: two where the next item's Q lands during this one, one in one-item blocks.
constexpr int q_buffers(Sm90Rope r) { return persistent(r) ? 2 : 1; }
/// Whether the producer warpgroup's warps 1-3 rotate each item's Q as it lands (persistent modes
/// with Q RoPE), ahead of the consumers' use: rotated by the consumers, each item's Q cost
/// a proxy fence (MEMBAR.ALL.CTA in SASS) that waited on the last item's O stores, +9% at 16K.
/// The limit, measured: ~+30% at causal seq 1K, 0-10% from 4K. The 3 warps take about an item's time
/// to rotate one Q tile there, and the cost tracks their instructions a pair (~14; they share issue
/// slots with the consumers), not their loads: cos/sin computed instead of read was slower (MUFU
/// +31-40%, FMA polynomials +62-73%), packed bf16 math (~7) halved it but is not exact
/// (docs/kernels.md, "RoPE fused into prefill").
constexpr bool producer_rotates_q(Sm90Rope r) { return r == Sm90Rope::q || r == Sm90Rope::anchors_q; }
/// Registers a thread (setmaxnreg), producer + 2 x consumer = 504 a thread slot: the producer keeps
/// 24 to issue copies, 56 to rotate K tiles, 40 to rotate Q (56 left the persistent consumers 224,
/// and they reloaded a spilled value every tile: +5% at seq 16K, against +1% with 40).
constexpr int producer_regs(Sm90Rope r) { return rotates_k(r) ? 56 : producer_rotates_q(r) ? 40 : 24; }
constexpr int consumer_regs(Sm90Rope r) { return (504 - producer_regs(r)) / 2; }

struct Sm90Config {
  static constexpr int HD = 128, BM = 128, BN = 128, NT = 384, STAGES = 2;
  static constexpr uint32_t TILE = 128 * HD * 2;
  static constexpr uint32_t TABLE = 128 * 64 * 8;  // the cos/sin rows of one K tile (rope_half <= 64)
  // Anchor RoPE: 8 anchor rows (4 KB) a Q buffer, the 16 steps (8 KB), 8 anchor rows per K stage (4 KB).
  static constexpr uint32_t Q_ANCHORS = 0, STEPS = 2 * 4096, K_ANCHORS = STEPS + 8192;
  static constexpr uint32_t ANCHORS = K_ANCHORS + STAGES * 4096;
  // Barriers bar_q[2], q_empty[2], q_ready[2], full_k, full_v, empty [STAGES each], full_t, rot_k,
  // empty_k [STAGES each], then the two Q buffers' work items (int).
  static constexpr uint32_t BARRIERS = 8 * (7 + 5 * STAGES) + 8;
  /// Q cos/sin in shared memory: anchors, or (Sm90Rope::k) one K tile's table box; Sm90Rope::q
  /// reads Q's table rows from global memory.
  static constexpr uint32_t region(Sm90Rope r) { return from_anchors(r) ? ANCHORS : r == Sm90Rope::k ? TABLE : 0; }
  /// Q buffers, the K/V stages, 1 KB of alignment slack, the RoPE region and the barriers.
  static constexpr size_t smem_bytes(Sm90Rope r) {
    return (q_buffers(r) + 2 * STAGES) * size_t(TILE) + 1024 + region(r) + BARRIERS;
  }
};

/// One work item of the kernel: query block m_block (rows m0..m0+127) of head h of sequence b,
/// key tiles j0 .. n_tiles-1. Items run m fastest, so a head's blocks run together and share its
/// K/V in L2; causal blocks longest first. With a sliding window (WINDOW) j0 is the tile of the
/// block's first row's first key, so an item costs min(its causal tiles, window / 128 + 2): still
/// non-increasing in that order (equal once the window is full), so longest first holds.
struct Sm90Item {
  int b, h, kvh, j0, n_tiles;
  int64_t m0;
};
__host__ __device__ inline int64_t sm90_query_blocks(const FlashShape& s) {
  return ceil_div(s.n_queries, int64_t{Sm90Config::BM});
}
__host__ __device__ inline int64_t sm90_items(const FlashShape& s, int batch) {
  return sm90_query_blocks(s) * s.n_heads * batch;
}
template <bool WINDOW = false>
__device__ __forceinline__ Sm90Item sm90_item(const FlashShape& s, int w, int64_t window = 0) {
  const int nm = static_cast<int>(sm90_query_blocks(s)), nh = static_cast<int>(s.n_heads);
  const int mi = w % nm, m_block = s.causal ? nm - 1 - mi : mi;
  Sm90Item it;
  it.h = (w / nm) % nh;
  it.b = w / nm / nh;
  it.kvh = it.h / static_cast<int>(s.group());
  it.m0 = static_cast<int64_t>(m_block) * Sm90Config::BM;
  const int64_t last_row = min(it.m0 + Sm90Config::BM, s.n_queries) - 1;
  it.n_tiles = static_cast<int>(ceil_div(s.visible_keys(last_row), int64_t{Sm90Config::BN}));
  it.j0 = 0;
  if constexpr (WINDOW) it.j0 = max(0, min(static_cast<int>(s.first_key(it.m0, window) / Sm90Config::BN), it.n_tiles - 1));
  return it;
}

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
/// swizzled boxes of 16 frequencies (float2) x `rows` rows, as the tensor copy lands a [rows][half] table.
__device__ __forceinline__ float4 table_cos_sin4(const unsigned char* table, int r, int f, int rows = 128) {
  return *reinterpret_cast<const float4*>(table + (f / 16) * rows * 128 + tma::swizzled(r, (f % 16) / 2));
}
/// The same for row r of a 128-row tile from its anchors (8 rows, one per 16) and the 16 steps
/// (rope.cuh rope_anchors): cos/sin(anchor + step) by angle addition, a complex product.
__device__ __forceinline__ float4 anchor_cos_sin4(const unsigned char* anchors, const unsigned char* steps, int r, int f) {
  const float4 a = table_cos_sin4(anchors, r / 16, f, 8), t = table_cos_sin4(steps, r % 16, f, 16);
  return make_float4(a.x * t.x - a.y * t.y, a.y * t.x + a.x * t.y, a.z * t.z - a.w * t.w, a.w * t.z + a.z * t.w);
}
/// Rotates, in place, rows r0 + D i (i < N, D = 128 / NC, r0 = row0 + t / NC) of a 128 x 128 tile
/// held as Sm90 boxes `cb` bytes apart, 8 bytes (4 dims) of each: piece p = t % NC (with its partner
/// in the half layout). Positions run on down the tile, so only the first row's cos/sin come from
/// the anchors (anchor_cos_sin4); each next row's are the last ones times rot(D theta), angle
/// addition in registers (4 FMAs a pair; rot(D theta) is a step row, or step 8 squared). A thread
/// keeps to its 2-4 pairs, which leaves the producer warpgroup's 56 registers enough (16-byte pieces,
/// 8 pairs, spilled), and a row costs its loads and stores and ~10 instructions a pair; the
/// per-chunk path (rotate_tile_chunk with anchor_cos_sin4, ~28) was slower than the consumers.
/// 16 lanes a phase read one 128-byte row of a box: no bank conflicts where NC >= 16.
template <class T, RopeLayout L, int NC, int N>
__device__ __forceinline__ void rotate_run_rows(unsigned char* tile, uint32_t cb, const unsigned char* anchors,
                                                const unsigned char* steps, int t, int row0, int half) {
  struct alignas(8) Piece {
    T v[4];
  };
  constexpr int P = L == RopeLayout::half ? 4 : 2;  // pairs a piece
  constexpr int D = 128 / NC;
  const int p = t % NC, r0 = row0 + t / NC, f0 = p * P;
  float2 cur[P], step[P];
#pragma unroll
  for (int k = 0; k < P / 2; ++k) {
    const float4 a = anchor_cos_sin4(anchors, steps, r0, f0 + 2 * k);
    const float4 d = table_cos_sin4(steps, D < 8 ? D : 8, f0 + 2 * k, 16);
    cur[2 * k] = make_float2(a.x, a.y);
    cur[2 * k + 1] = make_float2(a.z, a.w);
    step[2 * k] = make_float2(d.x, d.y);
    step[2 * k + 1] = make_float2(d.z, d.w);
  }
  auto times = [](float2 x, float2 y) { return make_float2(x.x * y.x - x.y * y.y, x.y * y.x + x.x * y.y); };
#pragma unroll
  for (int sq = 8; sq < D; sq *= 2)
#pragma unroll
    for (int e = 0; e < P; ++e) step[e] = times(step[e], step[e]);
  auto at = [&](int q, int r) {  // piece q (dims 4q..4q+3) of row r
    return reinterpret_cast<Piece*>(tile + (q / 16) * cb + tma::swizzled(r, (q / 2) % 8) + (q % 2) * 8);
  };
  const int pb = p + half / 4;  // the half layout's partner piece
#pragma unroll 2
  for (int i = 0; i < N; ++i) {
    const int r = r0 + D * i;
    struct {
      Piece a, b;
    } v;
    Piece* xa = at(p, r);
    Piece* xb = at(pb, r);
    v.a = *xa;
    if constexpr (L == RopeLayout::half) v.b = *xb;
    cuda::detail::rotate_chunk_values(v, L, [&](int e) { return cur[e]; });
    *xa = v.a;
    if constexpr (L == RopeLayout::half) *xb = v.b;
#pragma unroll
    for (int e = 0; e < P; ++e) cur[e] = times(cur[e], step[e]);
  }
}
/// Calls f(layout, nc) with rotate_run_rows' layout and pieces a row (NC) as compile-time constants
/// (std::integral_constant) for this rotary half and layout; false where it has no shape (rotary
/// half 48: 12 or 24 pieces do not divide the 128 rows), for the per-chunk path.
template <class F>
__device__ __forceinline__ bool with_run_shape(RopeLayout layout, int half, F&& f) {
  using HalfL = std::integral_constant<RopeLayout, RopeLayout::half>;
  using InterL = std::integral_constant<RopeLayout, RopeLayout::interleaved>;
  if (layout == RopeLayout::half) {  // 4 dims, 4 pairs a piece: half / 4 pieces
    if (half == 16) return f(HalfL{}, std::integral_constant<int, 4>{}), true;
    if (half == 32) return f(HalfL{}, std::integral_constant<int, 8>{}), true;
    if (half == 64) return f(HalfL{}, std::integral_constant<int, 16>{}), true;
  } else {  // 2 pairs a piece: half / 2 pieces
    if (half == 16) return f(InterL{}, std::integral_constant<int, 8>{}), true;
    if (half == 32) return f(InterL{}, std::integral_constant<int, 16>{}), true;
    if (half == 64) return f(InterL{}, std::integral_constant<int, 32>{}), true;
  }
  return false;
}
/// Makes this thread's shared-memory writes visible to the async proxy (wgmma reads the tile next).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void named_bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
#endif

#if defined(ROPEX_SM90_WGMMA)
/// Rotates rows row0..row0+n_rows-1 of item `it`'s Q tile in shared memory as it lands, with
/// n_threads threads (this one t): a consumer warpgroup's 64 rows (K-rotating modes) or the whole
/// tile by the producer's warps 1-3 (producer_rotates_q). cos/sin: Sm90Rope::q and k from Q's
/// per-token table in global memory (rows past the sequence are not read); anchors from Q's anchors
/// and the steps in shared memory, by rows that run on (rotate_run_rows) where a warpgroup's 128
/// threads take 64 rows, else per chunk. Inlined: ptxas keeps a function it calls to the register
/// count of the kernel, not the caller's setmaxnreg (the producer's 40).
template <class T, Sm90Rope ROPE>
__device__ __forceinline__ void rotate_q_rows(unsigned char* q_tile, const unsigned char* q_anchors, const unsigned char* steps,
                                              const Sm90Args<T>& a, const Sm90Item& it, int t, int n_threads, int row0,
                                              int n_rows) {
  constexpr uint32_t CB = Sm90Config::TILE / 2;
  const int half = a.rope_half;
  const RopeLayout layout = a.rope_layout;
  const int64_t rows_left = a.shape.n_queries - it.m0;
  const float2* q_table_rows = nullptr;  // the tile's first row of Q's table
  if constexpr (!from_anchors(ROPE)) q_table_rows = a.q_table + (static_cast<int64_t>(it.b) * a.shape.n_queries + it.m0) * half;
  if constexpr (from_anchors(ROPE)) {
    if (n_threads == 128 && n_rows == 64) {
      const bool done = with_run_shape(layout, half, [&](auto l, auto nc) {
        rotate_run_rows<T, decltype(l)::value, decltype(nc)::value, decltype(nc)::value / 2>(q_tile, CB, q_anchors, steps, t, row0, half);
      });
      if (done) return;
    }
  }
  // Per chunk: lanes take consecutive rows of one chunk, which the swizzle spreads over the banks.
  const int n_chunks = layout == RopeLayout::half ? half / 8 : half / 4;
  for (int idx = t; idx < n_rows * n_chunks; idx += n_threads) {
    const int r = row0 + idx % n_rows, ch = idx / n_rows;
    if (r >= rows_left) continue;
    auto cs = [&](int f) {
      if constexpr (from_anchors(ROPE)) return anchor_cos_sin4(q_anchors, steps, r, f);
      else return *reinterpret_cast<const float4*>(q_table_rows + static_cast<int64_t>(r) * half + f);
    };
    rotate_tile_chunk<T>(q_tile, CB, r, ch, half, layout, cs);
  }
}
#endif

/// WINDOW (shape.window > 0; persistent modes only): each item's tiles start at j0 (Sm90Item) and
/// the consumers mask keys left of a row's window in the tiles that cross it. A separate
/// instantiation, so window 0 runs the code it always ran.
template <class T, Sm90Rope ROPE = Sm90Rope::none, bool WINDOW = false>
__global__ void __launch_bounds__(Sm90Config::NT, 1)
    flash_forward_sm90_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                                 const __grid_constant__ CUtensorMap tv, const __grid_constant__ CUtensorMap tcs,
                                 const __grid_constant__ CUtensorMap tka, const __grid_constant__ CUtensorMap tsteps,
                                 Sm90Args<T> a) {
#if defined(ROPEX_SM90_WGMMA)
  static_assert(!WINDOW || persistent(ROPE), "sliding windows run in the persistent modes");
  using C = Sm90Config;
  constexpr int BN = C::BN, HD = C::HD, S = C::STAGES, NQ = q_buffers(ROPE);
  constexpr uint32_t TILE = C::TILE, CB = TILE / 2;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = mma::smem_addr(smem_raw), sQ = (raw + 1023u) & ~1023u;  // [NQ] Q buffers
  const uint32_t sK = sQ + NQ * TILE, sV = sK + S * TILE;  // [S stages] each
  const uint32_t sT = sV + S * TILE;                       // ROPE: one tile's cos/sin rows, or the anchors
  constexpr uint32_t REGION = C::region(ROPE);
  const uint32_t sQA = sT + C::Q_ANCHORS, sSteps = sT + C::STEPS, sKA = sT + C::K_ANCHORS;  // ANCH
  // Q landed / rotated by the producer (producer_rotates_q) / consumers done with a Q buffer [2];
  // K, V landed and consumers done with a stage [S]
  const uint32_t bar_q = sT + REGION, q_ready = bar_q + 16, q_empty = q_ready + 16, full_k = q_empty + 16;
  const uint32_t full_v = full_k + 8 * S;
  const uint32_t empty = full_v + 8 * S;
  // rotates_k(ROPE): table landed (Sm90Rope::k); K tile rotated [S]; consumers done with a K tile [S]
  const uint32_t full_t = empty + 8 * S, rot_k = full_t + 8, empty_k = rot_k + 8 * S;
  auto generic = [&](uint32_t addr) { return smem_raw + (addr - raw); };
  int* item_slot = reinterpret_cast<int*>(generic(empty_k + 8 * S));  // [NQ]: the item in each Q buffer, -1: done

  const FlashShape& s = a.shape;
  const int tid = threadIdx.x, wg = tid / 128;
  const int64_t nq = s.n_queries;

  if (tid == 0) {
    for (int i = 0; i < NQ; ++i) {
      mbar_init(bar_q + 8 * i, 1);
      if (producer_rotates_q(ROPE)) mbar_init(q_ready + 8 * i, 96);  // producer warps 1-3, after rotating
      mbar_init(q_empty + 8 * i, 256);  // every consumer thread, after its item
    }
    for (int i = 0; i < S; ++i) {
      mbar_init(full_k + 8 * i, 1);
      mbar_init(full_v + 8 * i, 1);
      mbar_init(empty + 8 * i, 256);  // every consumer thread, after its O += P V
      if (rotates_k(ROPE)) mbar_init(rot_k + 8 * i, 128);  // every producer thread, after rotating its rows
      if (rotates_k(ROPE)) mbar_init(empty_k + 8 * i, 256);  // every consumer thread, after its S = Q K^T
    }
    if (rotates_k(ROPE)) mbar_init(full_t, 1);
    mma::mbar_init_fence();
  }
  __syncthreads();

  // Producer: an item's Q into Q buffer qb, then its K and V tile j into stage t % S (t counts the
  // block's tiles over its items) once the consumers are done with tile t - S.
  // Box = 64 dims x 1 head x 128 tokens x 1 batch: one swizzled 64-column block of a tile.
  // ANCH: with Q's anchors (tcs maps them then) and, with the block's first Q, the steps.
  const int n_boxes = a.rope_half / 16;  // 16 frequencies (128 bytes) a box
  auto issue_q = [&](const Sm90Item& it, int qb, bool first) {
    uint32_t extra = 0;
    if constexpr (from_anchors(ROPE)) extra = static_cast<uint32_t>(n_boxes) * ((a.q_anchors ? 1024 : 0) + (first ? 2048 : 0));
    const uint32_t bar = bar_q + 8 * qb;
    mbar_expect_tx(bar, TILE + extra);
    for (int cb = 0; cb < 2; ++cb) load_4d(sQ + qb * TILE + cb * CB, &tq, bar, 64 * cb, it.h, static_cast<int>(it.m0), it.b);
    if constexpr (from_anchors(ROPE)) {
      const int q_anchor_row = static_cast<int>(it.m0 / 16);
      for (int bx = 0; bx < n_boxes; ++bx) {
        if (a.q_anchors != nullptr) load_4d(sQA + qb * 4096 + bx * 1024, &tcs, bar, 32 * bx, q_anchor_row, it.b, 0);
        if (first) load_4d(sSteps + bx * 2048, &tsteps, bar, 32 * bx, 0, 0, 0);
      }
    }
  };
  auto issue_k = [&](const Sm90Item& it, int j, uint32_t t) {  // Sm90Rope::anchors_k: with the tile's 8 anchor rows
    const int st = t % S;
    mbar_expect_tx(full_k + 8 * st, TILE + (ROPE == Sm90Rope::anchors_k ? n_boxes * 1024 : 0));
    for (int cb = 0; cb < 2; ++cb) load_4d(sK + st * TILE + cb * CB, &tk, full_k + 8 * st, 64 * cb, it.kvh, j * BN, it.b);
    if constexpr (ROPE == Sm90Rope::anchors_k)
      for (int bx = 0; bx < n_boxes; ++bx) load_4d(sKA + st * 4096 + bx * 1024, &tka, full_k + 8 * st, 32 * bx, j * 8, it.b, 0);
  };
  auto issue_v = [&](const Sm90Item& it, int j, uint32_t t) {
    const int st = t % S;
    mbar_expect_tx(full_v + 8 * st, TILE);
    for (int cb = 0; cb < 2; ++cb) load_4d(sV + st * TILE + cb * CB, &tv, full_v + 8 * st, 64 * cb, it.kvh, j * BN, it.b);
  };
  auto issue_kv = [&](const Sm90Item& it, int j, uint32_t t) {
    if (t >= S) mbar_wait(empty + 8 * (t % S), ((t / S) - 1) & 1);
    issue_k(it, j, t);
    issue_v(it, j, t);
  };
  if (rotates_k(ROPE) && wg == 0) {  // ---- producer rotating K: all 128 threads rotate K tiles ----
    regs_dealloc<producer_regs(ROPE)>();
    const Sm90Item it = sm90_item(s, blockIdx.x);  // one item a block in these modes
    const int half = a.rope_half, n_tiles = it.n_tiles;
    const int64_t krow0 = static_cast<int64_t>(it.b) * s.n_keys;  // Sm90Rope::k: this sequence's first table row
    auto issue_table = [&](int j) {  // 16 frequencies (128 bytes) a box, 128 rows
      mbar_expect_tx(full_t, static_cast<uint32_t>(half) * 1024);
      for (int bx = 0; bx < n_boxes; ++bx) load_4d(sT + bx * 128 * 128, &tcs, full_t, 32 * bx, static_cast<int>(krow0 + j * BN), 0, 0);
    };
    // Thread 0 issues Q and the first S tiles; the later copies are issued by the second consumer
    // warpgroup's first thread as the consumers free each stage (it lags the first by half a tile
    // in the ping-pong), so no rotating thread ever waits on the consumers: a rotating thread that
    // issued (and so waited on them) held its warp, and rotation fell behind the consumers
    // (+128-155% over no RoPE at seq 16K, against +0-1% when the rotation was skipped).
    if (tid == 0) {
      item_slot[0] = blockIdx.x;
      issue_q(it, 0, true);
      if constexpr (ROPE == Sm90Rope::k) issue_table(0);
      for (int j = 0; j < min(n_tiles, S); ++j) issue_kv(it, j, j);
    }
    // The tile loop, for one way of rotating a tile (rotate(st): stage st's K tile): one loop per
    // rotary shape, so each keeps only its own invariants live in the 56 registers.
    auto tile_loop = [&](auto rotate) {
      for (int j = 0; j < n_tiles; ++j) {
        const int st = j % S;
        mbar_wait(full_k + 8 * st, (j / S) & 1);
        if constexpr (ROPE == Sm90Rope::k) mbar_wait(full_t, j & 1);
        else if (j == 0) mbar_wait(bar_q, 0);  // the steps land with Q
        rotate(st);
        fence_proxy_async();
        mbar_arrive(rot_k + 8 * st);
        if constexpr (ROPE == Sm90Rope::k) {
          named_bar_sync(3, 128);  // every thread is done with the table
          if (tid == 0 && j + 1 < n_tiles) issue_table(j + 1);
        }
      }
    };
    // Per chunk (tables, and anchors at rotary half 48): thread p rotates rows 32w + 8i + p%8 (i < 4),
    // chunks p%32/8 + 4n: 8 lanes a phase read the same chunk of 8 consecutive rows, which the
    // swizzle spreads over the 8 bank groups.
    auto per_chunk = [&](int st) {
      const int w = tid / 32, l = tid % 32;
      const int n_chunks = a.rope_layout == RopeLayout::half ? half / 8 : half / 4;
      for (int i = 0; i < 4; ++i) {
        const int r = 32 * w + 8 * i + l % 8;
        for (int ch = l / 8; ch < n_chunks; ch += 4)
          rotate_tile_chunk<T>(generic(sK + st * TILE), CB, r, ch, half, a.rope_layout, [&](int f) {
            if constexpr (ROPE == Sm90Rope::k) return table_cos_sin4(generic(sT), r, f);
            else return anchor_cos_sin4(generic(sKA + st * 4096), generic(sSteps), r, f);
          });
      }
    };
    if constexpr (ROPE == Sm90Rope::anchors_k) {  // rows that run on: rotate_run_rows
      const bool runs = with_run_shape(a.rope_layout, half, [&](auto layout, auto nc) {
        tile_loop([&](int st) {
          rotate_run_rows<T, decltype(layout)::value, decltype(nc)::value, decltype(nc)::value>(
              generic(sK + st * TILE), CB, generic(sKA + st * 4096), generic(sSteps), tid, 0, half);
        });
      });
      if (!runs) tile_loop(per_chunk);
    } else {
      tile_loop(per_chunk);
    }
    return;
  }
  if (wg == 0) {  // ---- producer ----------------------------------------------------------------
    // Item i's Q goes into Q buffer i % 2 once the consumers are done with item i - 2, and is copied
    // in S tiles into item i - 1 (item i - 2 is done by then), so the rotation below has most of an
    // item (three buffers, for two items of lead, were no faster: docs/kernels.md, "RoPE fused into prefill").
    // The issuing thread decodes an item again from its slot rather than keep two decoded items:
    // in its 24 registers that spilled.
    auto start_item = [&](int i) {  // thread 0: the next item, or -1 (the consumers stop there)
      const int qb = i % NQ;
      if (i >= NQ) mbar_wait(q_empty + 8 * qb, ((i / NQ) - 1) & 1);
      const int w = atomicAdd(a.next_item, 1);
      item_slot[qb] = w < a.n_items ? w : -1;
      if (w < a.n_items) issue_q(sm90_item(s, w), qb, i == 0);
      else mbar_arrive(bar_q + 8 * qb);
      return w < a.n_items;
    };
    regs_dealloc<producer_regs(ROPE)>();
    if constexpr (producer_rotates_q(ROPE)) {
      if (tid >= 32) {  // warps 1-3: rotate each item's Q as it lands, then release it on q_ready
        for (int i = 0;; ++i) {
          const int qb = i % NQ;
          mbar_wait(bar_q + 8 * qb, (i / NQ) & 1);
          const int w = item_slot[qb];
          if (w >= 0) {
            rotate_q_rows<T, ROPE>(generic(sQ + qb * TILE), generic(sQA + qb * 4096), generic(sSteps), a, sm90_item(s, w),
                                   tid - 32, 96, 0, 128);
            fence_proxy_async();
          }
          mbar_arrive(q_ready + 8 * qb);
          if (w < 0) return;
        }
      }
    }
    if (tid != 0) return;
    uint32_t t = 0;  // tiles issued
    bool more = start_item(0);
    for (int i = 0; more; ++i) {
      const Sm90Item it = sm90_item<WINDOW>(s, item_slot[i % NQ], a.window);
      const int j0 = WINDOW ? it.j0 : 0;
      const int next_at = min(j0 + S, it.n_tiles - 1);  // copy in item i + 1's Q after this tile
      for (int j = j0; j < it.n_tiles; ++j, ++t) {
        issue_kv(it, j, t);
        if (j == next_at) more = start_item(i + 1);
      }
    }
    return;
  }

  // ---- consumers: warpgroups 1 and 2, 64 query rows each ---------------------------------------
  regs_alloc<consumer_regs(ROPE)>();
  const int cw = wg - 1, warp = (tid / 32) % 4, lane = tid % 32;
  const int g = lane / 4, c4 = lane % 4;
  const int64_t q_ts = s.n_heads * HD;
  // The current item's: first query row, this thread's rows (row_base and + 8), Q rows in shared memory
  int64_t m0 = 0, row_base = 0;
  uint32_t q_rows = sQ;
  float o[64];
  float row_max[2], row_sum[2];

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
  // WINDOW: also the tiles that start left of the block's last row's first key (it starts latest),
  // where keys left of each row's window are masked.
  auto softmax = [&](float(&sc)[64], int j, float(&alpha)[2]) {
    const int64_t key0 = int64_t(j) * BN;
    if constexpr (WINDOW) {
      if (key0 + BN > s.visible_keys(m0) || key0 < s.first_key(min(m0 + C::BM, nq) - 1, a.window)) {
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const int64_t row = row_base + 8 * hr;
          const int64_t limit = s.visible_keys(row) - key0, start = s.first_key(row, a.window) - key0;
#pragma unroll
          for (int n = 0; n < BN / 8; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int c = n * 8 + 2 * c4 + e;
              if (c >= limit || c < start) sc[4 * n + 2 * hr + e] = -INFINITY;
            }
        }
      }
    } else if (key0 + BN > s.visible_keys(m0)) {  // the block's first row sees the fewest keys
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
  uint32_t t = 0;  // tiles consumed, over the block's items
  for (int item = 0;; ++item) {  // the block's item-th work item, in Q buffer qb
    const int qb = item % NQ;
    mbar_wait((producer_rotates_q(ROPE) ? q_ready : bar_q) + 8 * qb, (item / NQ) & 1);
    const int w = item_slot[qb];
    if (w < 0) break;
    const Sm90Item it = sm90_item<WINDOW>(s, w, a.window);
    const int n_tiles = it.n_tiles;
    m0 = it.m0;
    row_base = m0 + cw * 64 + warp * 16 + g;
    q_rows = sQ + qb * TILE + cw * 64 * 128;
    if constexpr (rotates_k(ROPE)) {  // one item a block: the consumers rotate their 64 Q rows, once
      if (from_anchors(ROPE) ? a.q_anchors != nullptr : a.q_table != nullptr) {
        rotate_q_rows<T, ROPE>(generic(sQ + qb * TILE), generic(sQA + qb * 4096), generic(sSteps), a, it, tid % 128, 128,
                               cw * 64, 64);
        fence_proxy_async();
        named_bar_sync(4 + cw, 128);  // the warpgroup's rows are rotated before its first wgmma
      }
    }
#pragma unroll
    for (int e = 0; e < 64; ++e) o[e] = 0.f;
    for (int hr = 0; hr < 2; ++hr) row_max[hr] = -INFINITY, row_sum[hr] = 0.f;
    for (int j = WINDOW ? it.j0 : 0; j < n_tiles; ++j, ++t) {
      const int st = t % S;
      const uint32_t phase = (t / S) & 1;
      mbar_wait((rotates_k(ROPE) ? rot_k : full_k) + 8 * st, phase);
      float sc[64], alpha[2];
      my_turn();
      wgmma_fence();
      issue_s(sc, sK + st * TILE);
      wgmma_commit();
      your_turn();
      wgmma_wait<0>();
      fence_regs(sc);
      if constexpr (rotates_k(ROPE)) {  // K tile j may be refilled: the second consumer copies in K tile j + S
        mbar_arrive(empty_k + 8 * st);
        if (tid == 256 && j + S < n_tiles) {
          mbar_wait(empty_k + 8 * st, phase);
          issue_k(it, j + S, t + S);
        }
      }
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
      if constexpr (rotates_k(ROPE))
        if (tid == 256 && j + S < n_tiles) {
          mbar_wait(empty + 8 * st, phase);
          issue_v(it, j + S, t + S);
        }
    }
    mbar_arrive(q_empty + 8 * qb);  // done with this Q buffer: the producer may copy in item + NQ

    const float scale = a.scale_log2 * kLn2;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float l = row_sum[hr];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int64_t row = row_base + 8 * hr;
      if (row >= nq) continue;
      T* orow = a.o + (it.b * nq + row) * q_ts + it.h * HD;
#pragma unroll
      for (int n = 0; n < HD / 8; ++n)
        *reinterpret_cast<uint32_t*>(orow + n * 8 + 2 * c4) =
            mma::pack2<T>(o[4 * n + 2 * hr] * inv, o[4 * n + 2 * hr + 1] * inv);
      if (a.lse && c4 == 0)
        a.lse[(static_cast<int64_t>(it.b) * s.n_heads + it.h) * nq + row] = l > 0.f ? row_max[hr] * scale + logf(l) : -INFINITY;
    }
    if constexpr (!persistent(ROPE)) break;
  }
  if (cw == 0) my_turn();  // consumes consumer 1's head-start arrival
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
  const bool tables = a.q_table || a.k_table, anchors = a.q_anchors || a.k_anchors;
  if ((tables || anchors) && !sm90_rope_half_ok(a.rope_half))
    throw make_error("cuda::sm90::launch_flash_sm90", "rope_half", "must be 16, 32, 48 or 64");
  if (tables && anchors) throw make_error("cuda::sm90::launch_flash_sm90", "q_anchors", "give tables or anchors, not both");
  if (anchors && !a.steps) throw make_error("cuda::sm90::launch_flash_sm90", "steps", "anchors need the steps");
  const Sm90Rope mode = a.k_anchors ? Sm90Rope::anchors_k
                        : a.q_anchors ? Sm90Rope::anchors_q
                        : a.k_table   ? Sm90Rope::k
                        : a.q_table   ? Sm90Rope::q
                                      : Sm90Rope::none;
  const bool window = a.shape.causal && a.window > 0;
  if (window && mode != Sm90Rope::none && mode != Sm90Rope::q)
    throw make_error("cuda::sm90::launch_flash_sm90", "shape.window", "a sliding window takes no RoPE or Q's table only");
  auto kernel = mode == Sm90Rope::anchors_k   ? flash_forward_sm90_kernel<T, Sm90Rope::anchors_k>
                : mode == Sm90Rope::anchors_q ? flash_forward_sm90_kernel<T, Sm90Rope::anchors_q>
                : mode == Sm90Rope::k         ? flash_forward_sm90_kernel<T, Sm90Rope::k>
                : mode == Sm90Rope::q         ? (window ? flash_forward_sm90_kernel<T, Sm90Rope::q, true>
                                                        : flash_forward_sm90_kernel<T, Sm90Rope::q>)
                : window                      ? flash_forward_sm90_kernel<T, Sm90Rope::none, true>
                                              : flash_forward_sm90_kernel<T, Sm90Rope::none>;
  const size_t smem = C::smem_bytes(mode);
  static const bool configured = [] {  // once per type: > 48 KB of dynamic shared memory
    auto set = [](auto f, Sm90Rope m) {
      ROPEX_CUDA_CHECK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::smem_bytes(m))));
    };
    set(flash_forward_sm90_kernel<T, Sm90Rope::none>, Sm90Rope::none);
    set(flash_forward_sm90_kernel<T, Sm90Rope::q>, Sm90Rope::q);
    set(flash_forward_sm90_kernel<T, Sm90Rope::k>, Sm90Rope::k);
    set(flash_forward_sm90_kernel<T, Sm90Rope::anchors_q>, Sm90Rope::anchors_q);
    set(flash_forward_sm90_kernel<T, Sm90Rope::anchors_k>, Sm90Rope::anchors_k);
    set(flash_forward_sm90_kernel<T, Sm90Rope::none, true>, Sm90Rope::none);
    set(flash_forward_sm90_kernel<T, Sm90Rope::q, true>, Sm90Rope::q);
    return true;
  }();
  (void)configured;
  const auto& s = a.shape;
  const CUtensorMap tq = head_tile_map(a.q, batch, s.n_queries, s.n_heads);
  const CUtensorMap tk = head_tile_map(a.k, batch, s.n_keys, s.n_kv_heads);
  const CUtensorMap tv = head_tile_map(a.v, batch, s.n_keys, s.n_kv_heads);
  // The K table as [batch * n_keys rows][2 * half floats]: boxes of 16 frequencies x one K tile.
  CUtensorMap tcs = tq;  // unused without RoPE (Sm90Rope::q reads Q's table rows directly)
  if (a.k_table) {
    const uint64_t row = 2 * static_cast<uint64_t>(a.rope_half);
    tcs = tma::tensor_map(a.k_table, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4,
                          tma::Tensor4d{{row, static_cast<uint64_t>(batch * s.n_keys), 1, 1}, {row * 4, 0, 0}},
                          {32, static_cast<uint32_t>(C::BN), 1, 1});
  }
  // Anchors as [batch][ceil(tokens / 16)][2 * half floats]: boxes of 16 frequencies x 8 anchor rows
  // (one 128-row tile); the steps [16][2 * half floats], boxes of 16 frequencies x 16 rows.
  CUtensorMap tka = tq, tsteps = tq;  // unused without anchors
  if (anchors) {
    const uint64_t row = 2 * static_cast<uint64_t>(a.rope_half), row_bytes = row * 4;
    auto anchor_map = [&](const float2* p, int64_t tokens) {
      const uint64_t n = static_cast<uint64_t>(ceil_div(tokens, int64_t{16}));
      return tma::tensor_map(p, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4,
                             tma::Tensor4d{{row, n, static_cast<uint64_t>(batch), 1}, {row_bytes, row_bytes * n, row_bytes * n * batch}},
                             {32, 8, 1, 1});
    };
    if (a.q_anchors) tcs = anchor_map(a.q_anchors, s.n_queries);
    if (a.k_anchors) tka = anchor_map(a.k_anchors, s.n_keys);
    tsteps = tma::tensor_map(a.steps, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4,
                             tma::Tensor4d{{row, 16, 1, 1}, {row_bytes, row_bytes * 16, row_bytes * 16}}, {32, 16, 1, 1});
  }
  const int64_t items = sm90_items(s, batch);
  if (items > std::numeric_limits<int>::max())
    throw make_error("cuda::sm90::launch_flash_sm90", "batch", "batch x heads x query blocks exceeds 2^31 work items");
  Sm90Args<T> args = a;
  args.n_items = static_cast<int>(items);
  unsigned grid = static_cast<unsigned>(items);  // one item a block
  if (persistent(mode)) {  // a block an SM, taking items from a counter that starts at 0
    int dev = 0, sms = 0;
    ROPEX_CUDA_CHECK(cudaGetDevice(&dev));
    ROPEX_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    grid = static_cast<unsigned>(std::min<int64_t>(items, sms));
    ROPEX_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&args.next_item), sizeof(int), stream));
    ROPEX_CUDA_CHECK(cudaMemsetAsync(args.next_item, 0, sizeof(int), stream));
  }
  kernel<<<grid, C::NT, smem, stream>>>(tq, tk, tv, tcs, tka, tsteps, args);
  check_launch("flash_forward_sm90_kernel");
  if (args.next_item) ROPEX_CUDA_CHECK(cudaFreeAsync(args.next_item, stream));
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
