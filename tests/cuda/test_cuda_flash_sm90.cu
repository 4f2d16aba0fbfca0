// The Hopper wgmma flash kernel (backends/cuda/flash_prefill_sm90.cuh) vs the double-precision
// reference, with the calibrated tolerance of test_cuda_attention.cu: max error and NMSE <= 2x
// those of the same-precision naive kernel. Fresh random inputs, poisoned outputs.
#include "attention_test_util.cuh"

#include <ropex/backends/cuda/flash_prefill.cuh>
#include <ropex/backends/cuda/rope.cuh>
#include <ropex/rope/frequencies.hpp>

#include <cstring>

using namespace ropex;
using namespace ropex::cuda;
using namespace ropex::cuda::test;
using attention::AttentionShape;

namespace {

bool on_sm90() { return sm90::device_is_sm90(); }

/// Runs flash_attention with `kernel` forced and checks it against the oracle (calibrated ratio).
template <class T>
void check(const Case& c, FlashKernel kernel = FlashKernel::sm90) {
  CAPTURE(static_cast<int>(kernel));
  const Inputs<T> in(c);
  FlashTiling t;
  t.kernel = kernel;
  check_against_oracle<T>(c, in, [&](T* o, float* lse) {
    flash_attention<T>(in.q.ptr, in.k.ptr, in.v.ptr, o, lse, c.batch, shape_of(c), {}, t);
  }, kernel == FlashKernel::sm90 ? "flash sm90" : "flash fa2");
}

/// Keeps un-rotated copies of in.q / in.k (for the fused kernel), then rotates in.q / in.k by
/// rope_inplace at per-token positions qpos / kpos (for the oracle).
template <class T>
struct Unrotated {
  DeviceArray<T> q, k;
  Unrotated(Inputs<T>& in, const Case& c, const std::vector<int64_t>& qpos, const std::vector<int64_t>& kpos,
            const RopeFrequencies& freq, RopeLayout layout, bool rot_q, bool rot_k)
      : q(in.q.n), k(in.k.n) {
    ROPEX_CUDA_CHECK(cudaMemcpy(q.ptr, in.q.ptr, in.q.n * sizeof(T), cudaMemcpyDeviceToDevice));
    ROPEX_CUDA_CHECK(cudaMemcpy(k.ptr, in.k.ptr, in.k.n * sizeof(T), cudaMemcpyDeviceToDevice));
    DeviceArray<int64_t> dq(qpos), dk(kpos);
    if (rot_q)
      rope_inplace(DeviceHeads<T>::contiguous(in.q.ptr, c.hq, c.d), DeviceHeads<T>{}, c.batch * c.nq, c.d, dq.ptr, freq, layout);
    if (rot_k)
      rope_inplace(DeviceHeads<T>::contiguous(in.k.ptr, c.hkv, c.d), DeviceHeads<T>{}, c.batch * c.nk, c.d, dk.ptr, freq, layout);
  }
};

/// The sm90 kernel with RoPE in the kernel (q/k un-rotated in memory, rotated as their tiles land)
/// against the oracle on inputs rotated by rope_inplace first. Queries and keys have their own
/// tables (a 1M-token position shift for both, keys strided), so a swapped table would show.
template <class T>
void check_rope(const Case& c, RopeLayout layout, int rotary, bool rot_q, bool rot_k, bool in_kernel = true,
                bool force_sm90 = true) {
  CAPTURE(static_cast<int>(layout)); CAPTURE(rotary); CAPTURE(rot_q); CAPTURE(rot_k); CAPTURE(in_kernel);
  Inputs<T> in(c);
  const int half = rotary / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) inv[static_cast<size_t>(i)] = default_inv_freq(10000.0, i, rotary);
  const RopeFrequencies freq(inv, 1.1);  // attention factor != 1
  std::vector<int64_t> qpos(static_cast<size_t>(c.batch * c.nq)), kpos(static_cast<size_t>(c.batch * c.nk));
  for (size_t t = 0; t < qpos.size(); ++t) qpos[t] = 1'000'000 + 7 * static_cast<int64_t>(t) + 3;
  for (size_t t = 0; t < kpos.size(); ++t) kpos[t] = 1'000'000 + 5 * static_cast<int64_t>(t);
  DeviceArray<int64_t> dq(qpos), dk(kpos);
  DeviceArray<float2> qt(qpos.size() * static_cast<size_t>(half)), kt(kpos.size() * static_cast<size_t>(half));
  rope_cos_sin_table(qt.ptr, dq.ptr, static_cast<int64_t>(qpos.size()), freq);
  rope_cos_sin_table(kt.ptr, dk.ptr, static_cast<int64_t>(kpos.size()), freq);
  const Unrotated<T> raw(in, c, qpos, kpos, freq, layout, rot_q, rot_k);
  FlashTiling t;
  t.kernel = force_sm90 ? FlashKernel::sm90 : FlashKernel::automatic;
  // in_kernel = false on this kernel: K rotated once into scratch, Q in the kernel.
  const FusedRope rope{rot_q ? qt.ptr : nullptr, rot_k ? kt.ptr : nullptr, half, layout, in_kernel};
  check_against_oracle<T>(c, in, [&](T* o, float* lse) {
    flash_attention<T>(raw.q.ptr, raw.k.ptr, in.v.ptr, o, lse, c.batch, shape_of(c), rope, t);
  }, in_kernel ? "flash sm90 + rope in kernel" : "flash sm90 + q rope in kernel, k once");
}

/// RoPE from starts (FusedRope::from_starts: query i of sequence b at q_start[b] + i): the sm90
/// kernel's anchors (in_kernel) and the per-token-table path, against the oracle on inputs rotated
/// by rope_inplace at the same positions. Each sequence and each side has its own start, one near
/// 1M, so a swapped start or a wrong anchor row would show.
template <class T>
void check_rope_starts(const Case& c, RopeLayout layout, int rotary, bool rot_q, bool rot_k, bool in_kernel = true,
                       FlashKernel kernel = FlashKernel::sm90) {
  CAPTURE(static_cast<int>(layout)); CAPTURE(rotary); CAPTURE(rot_q); CAPTURE(rot_k); CAPTURE(in_kernel);
  CAPTURE(static_cast<int>(kernel));
  Inputs<T> in(c);
  const int half = rotary / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) inv[static_cast<size_t>(i)] = default_inv_freq(10000.0, i, rotary);
  const RopeFrequencies freq(inv, 1.1);  // attention factor != 1
  std::vector<int64_t> qs(static_cast<size_t>(c.batch)), ks(static_cast<size_t>(c.batch));
  for (int b = 0; b < c.batch; ++b) {
    ks[static_cast<size_t>(b)] = b % 2 ? 37 : 1'000'003 + 1000 * b;
    qs[static_cast<size_t>(b)] = ks[static_cast<size_t>(b)] + (c.nk - c.nq) + 11;  // not 16-aligned against K
  }
  std::vector<int64_t> qpos, kpos;
  for (int b = 0; b < c.batch; ++b) {
    for (int64_t i = 0; i < c.nq; ++i) qpos.push_back(qs[static_cast<size_t>(b)] + i);
    for (int64_t i = 0; i < c.nk; ++i) kpos.push_back(ks[static_cast<size_t>(b)] + i);
  }
  DeviceArray<int64_t> dqs(qs), dks(ks);
  const Unrotated<T> raw(in, c, qpos, kpos, freq, layout, rot_q, rot_k);
  FlashTiling t;
  t.kernel = kernel;
  const FusedRope rope = FusedRope::from_starts(freq, rot_q ? dqs.ptr : nullptr, rot_k ? dks.ptr : nullptr, layout, in_kernel);
  check_against_oracle<T>(c, in, [&](T* o, float* lse) {
    flash_attention<T>(raw.q.ptr, raw.k.ptr, in.v.ptr, o, lse, c.batch, shape_of(c), rope, t);
  }, in_kernel ? "flash + rope from starts, in kernel" : "flash + rope from starts, tables");
}

}  // namespace

TEST_CASE_TEMPLATE("sm90 flash prefill with RoPE in the kernel (or Q in it, K once): both layouts, partial rotary, q or k alone", T,
                   __nv_bfloat16, __half) {
  if (!on_sm90()) {
    MESSAGE("sm_90a kernel unavailable: in-kernel RoPE cases skipped");
    return;
  }
  for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved}) {
    for (bool causal : {false, true}) {
      for (int rotary : {128, 64, 32})
        for (bool in_kernel : {true, false}) check_rope<T>({2, 200, 517, 4, 2, 128, causal}, layout, rotary, true, true, in_kernel);
      check_rope<T>({1, 129, 129, 8, 1, 128, causal}, layout, 96, true, true);  // GQA 8, rotary 96 (half 48)
      check_rope<T>({1, 7, 300, 6, 3, 128, causal}, layout, 128, true, true);   // ratio 3, 7 queries after 293
    }
    check_rope<T>({2, 255, 255, 4, 4, 128, true}, layout, 128, false, true);  // K alone (a cache re-rotated)
    check_rope<T>({2, 255, 255, 4, 4, 128, true}, layout, 128, true, false);  // Q alone
    check_rope<T>({2, 255, 255, 4, 4, 128, true}, layout, 128, true, false, false);
  }
  if (!quick()) check_rope<T>({1, 4097, 4097, 4, 1, 128, true}, RopeLayout::half, 128, true, true);
  // Far more query blocks than SMs: each persistent block runs several items (Q rotated from its
  // table in the kernel, K once through scratch), across sequences and heads.
  for (bool causal : {false, true}) check_rope<T>({3, 1000, 1000, 32, 8, 128, causal}, RopeLayout::half, 128, true, true, false);
  // Rotary dims the kernel's table boxes cannot take are refused when the kernel is forced.
  FlashTiling t;
  t.kernel = FlashKernel::sm90;
  DeviceArray<float2> table(64);
  const AttentionShape s = shape_of({1, 8, 8, 2, 2, 128, true});
  DeviceArray<T> x(8 * 2 * 128);
  CHECK_THROWS_AS(flash_attention<T>(x.ptr, x.ptr, x.ptr, x.ptr, nullptr, 1, s,
                                     FusedRope{table.ptr, table.ptr, 20, RopeLayout::half, true}, t),
                  ropex::Error);
}

TEST_CASE_TEMPLATE("flash prefill with RoPE from starts: anchors in the sm90 kernel, tables elsewhere", T, __nv_bfloat16,
                   __half) {
  if (!on_sm90()) {
    MESSAGE("sm_90a kernel unavailable: only the FA2-kernel cases run");
    check_rope_starts<T>({2, 200, 517, 4, 2, 128, true}, RopeLayout::half, 128, true, true, true, FlashKernel::fa2);
    return;
  }
  for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved}) {
    for (bool causal : {false, true}) {
      for (int rotary : {128, 64, 32})
        for (bool in_kernel : {true, false}) check_rope_starts<T>({2, 200, 517, 4, 2, 128, causal}, layout, rotary, true, true, in_kernel);
      check_rope_starts<T>({1, 129, 129, 8, 1, 128, causal}, layout, 96, true, true);  // GQA 8, rotary 96 (half 48)
      check_rope_starts<T>({3, 7, 300, 6, 3, 128, causal}, layout, 128, true, true);   // ratio 3, 7 queries after 293
      check_rope_starts<T>({2, 1, 1, 2, 2, 128, causal}, layout, 128, true, true);     // one token
    }
    check_rope_starts<T>({2, 255, 255, 4, 4, 128, true}, layout, 128, false, true);  // K alone (a cache re-rotated)
    check_rope_starts<T>({2, 255, 255, 4, 4, 128, true}, layout, 128, true, false);  // Q alone
    check_rope_starts<T>({2, 300, 300, 4, 2, 128, true}, layout, 64, true, true, true, FlashKernel::fa2);
  }
  if (!quick()) check_rope_starts<T>({1, 4097, 4097, 4, 1, 128, true}, RopeLayout::half, 128, true, true);
  // Several items a persistent block, Q from its anchors in the kernel (two Q buffers).
  for (bool causal : {false, true}) check_rope_starts<T>({3, 1000, 1000, 32, 8, 128, causal}, RopeLayout::interleaved, 128, true, false);
  // Tables and starts together, or starts without frequencies, are refused.
  DeviceArray<float2> table(64);
  DeviceArray<int64_t> start(std::vector<int64_t>{0});
  const AttentionShape s = shape_of({1, 8, 8, 2, 2, 128, true});
  DeviceArray<T> x(8 * 2 * 128);
  FusedRope both{table.ptr, table.ptr, 32, RopeLayout::half, true};
  both.q_start = start.ptr;
  both.inv_freq = nullptr;
  CHECK_THROWS_AS(flash_attention<T>(x.ptr, x.ptr, x.ptr, x.ptr, nullptr, 1, s, both), ropex::Error);
  FusedRope no_freq;
  no_freq.half = 32;
  no_freq.k_start = start.ptr;
  CHECK_THROWS_AS(flash_attention<T>(x.ptr, x.ptr, x.ptr, x.ptr, nullptr, 1, s, no_freq), ropex::Error);
}

TEST_CASE_TEMPLATE("sm90 flash prefill: odd sizes, every GQA ratio, cache offsets, causal and not", T, __nv_bfloat16,
                   __half) {
  if (!on_sm90()) {
    MESSAGE("sm_90a kernel unavailable (built without 90a, or not a 9.x device): forcing it must throw");
    FlashTiling t;
    t.kernel = FlashKernel::sm90;
    AttentionShape s = shape_of({1, 8, 8, 2, 2, 128, true});
    CHECK_THROWS_AS(flash_attention<T>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, s, {}, t), ropex::Error);
    return;
  }
  for (bool causal : {false, true}) {
    for (int64_t n : {1, 7, 128, 129, 255}) check<T>({2, n, n, 4, 2, 128, causal});
    check<T>({1, 7, 300, 6, 3, 128, causal});     // 7 queries after a 293-token cache (query_offset)
    check<T>({2, 200, 517, 4, 4, 128, causal});   // 200 queries, offset 317: the diagonal crosses tiles
    for (int hkv : {1, 2, 4, 8}) check<T>({1, 129, 129, 8, hkv, 128, causal});  // GQA 8, 4, 2, 1
    check<T>({1, 65, 65, 6, 2, 128, causal});     // ratio 3
  }
  // More work items (query blocks x heads x sequences) than SMs: each persistent block runs several.
  for (bool causal : {false, true}) check<T>({3, 1000, 1000, 32, 8, 128, causal});
  if (!quick()) {
    check<T>({1, 4097, 4097, 4, 1, 128, true});
    check<T>({1, 4097, 4097, 2, 2, 128, false});
  }
}

TEST_CASE_TEMPLATE("sm90 flash prefill with a sliding window: windows vs the 128-key tile, offsets, GQA, Q RoPE", T,
                   __nv_bfloat16, __half) {
  if (!on_sm90()) {
    MESSAGE("sm_90a kernel unavailable: sliding-window sm90 cases skipped");
    return;
  }
  // 1, smaller than a tile, equal to it, not a multiple of it, past the sequence.
  for (int64_t w : {1, 100, 128, 300, 2000}) {
    check<T>({1, 1000, 1000, 8, 2, 128, true, w});   // GQA 4, 8 query blocks
    check<T>({2, 300, 1000, 4, 4, 128, true, w});    // 300 queries after a 700-token cache
    check<T>({1, 7, 300, 6, 3, 128, true, w});       // ratio 3, one partial block after 293
  }
  // Far more items than SMs (each persistent block runs several, different tile ranges), and the
  // Q-RoPE-in-kernel mode (K once through scratch) with a window.
  check<T>({3, 1000, 1000, 32, 8, 128, true, 257});
  check_rope<T>({2, 300, 517, 4, 2, 128, true, 200}, RopeLayout::half, 128, true, true, false);
  check_rope<T>({2, 255, 255, 4, 4, 128, true, 64}, RopeLayout::interleaved, 128, true, false);
  // K rotated in the kernel is not a windowed mode here: the automatic path takes the fa2 kernel.
  check_rope<T>({2, 200, 517, 4, 2, 128, true, 150}, RopeLayout::half, 64, true, true, true, false);
  if (!quick()) check<T>({1, 4097, 4097, 4, 1, 128, true, 1000});
}

TEST_CASE("sm90 flash prefill: the default path runs it, and the forced fa2 kernel still agrees") {
  using T = __nv_bfloat16;
  if (!on_sm90()) return;
  for (bool causal : {false, true}) check<T>({2, 333, 333, 4, 2, 128, causal}, FlashKernel::fa2);
  // automatic == forced sm90, bit for bit (same kernel), for head_dim 128 and default tiling.
  const Case c{1, 300, 300, 4, 2, 128, true};
  const Inputs<T> in(c);
  const size_t n = static_cast<size_t>(c.nq * c.hq * c.d);
  DeviceArray<T> a(n), b(n);
  a.poison();
  b.poison();
  FlashTiling forced;
  forced.kernel = FlashKernel::sm90;
  flash_attention<T>(in.q.ptr, in.k.ptr, in.v.ptr, a.ptr, nullptr, 1, shape_of(c));
  flash_attention<T>(in.q.ptr, in.k.ptr, in.v.ptr, b.ptr, nullptr, 1, shape_of(c), {}, forced);
  const auto x = a.download(), y = b.download();
  CHECK(std::memcmp(x.data(), y.data(), n * sizeof(T)) == 0);
  // head_dim 64 is not served by it: forcing throws, automatic falls back.
  CHECK_THROWS_AS(flash_attention<T>(in.q.ptr, in.k.ptr, in.v.ptr, a.ptr, nullptr, 1,
                                     shape_of({1, 300, 300, 4, 2, 64, true}), {}, forced),
                  ropex::Error);
}
