// CUDA flash prefill and split-KV decode vs the double-precision reference kernel, with the
// FlashAttention calibrated tolerance: max error <= 2x the error of the same-precision naive
// kernel (eager-framework numerics) against the same oracle. Fresh random inputs, poisoned outputs.
#include "attention_test_util.cuh"

#include <ropex/attention/reference.hpp>
#include <ropex/backends/cuda/decode.cuh>
#include <ropex/backends/cuda/flash_prefill.cuh>
#include <ropex/backends/cuda/reference.cuh>
#include <ropex/backends/cuda/rope.cuh>

#include <cstdlib>
#include <cstring>
#include <utility>

using namespace ropex;
using namespace ropex::cuda;
using namespace ropex::cuda::test;
using attention::AttentionShape;

namespace {

template <class T>
void check_flash(const Case& c, FlashTiling tiling = {}) {
  Inputs<T> in(c);
  check_against_oracle<T>(c, in, [&](T* o, float* lse) {
    flash_attention<T>(in.q.ptr, in.k.ptr, in.v.ptr, o, lse, c.batch, shape_of(c), {}, tiling);
  }, "flash");
}

template <class T>
void check_decode(const Case& c, int max_splits, DecodeKernel kernel = DecodeKernel::automatic) {
  Inputs<T> in(c);
  DecodeWorkspace ws;
  CAPTURE(static_cast<int>(kernel));
  check_against_oracle<T>(c, in, [&](T* o, float* lse) {
    decode_attention<T>(in.q.ptr, KVView<T>::token_major(in.k.ptr, c.nk, c.hkv, c.d),
                        KVView<T>::token_major(in.v.ptr, c.nk, c.hkv, c.d), o, lse, c.batch, shape_of(c), ws,
                        max_splits, nullptr, kernel);
  }, max_splits == 1 ? "decode (one split)" : "decode (split-KV)");
}

/// Whether the TMA tensor-core decode runs here (an sm_90 build and device): its cases skip otherwise.
template <class T>
bool tma_decode_here() {
  DeviceArray<T> probe(16);
  const KVView<T> kv{probe.ptr, 0, 128, 128};
  const bool ok = detail::tma_decode_usable(kv, kv, shape_of({1, 1, 1, 1, 1, 128, true}), 1);
  if (!ok) MESSAGE("TMA tensor-core decode not available here (needs sm_90 build and device): its cases are skipped");
  return ok;
}

}  // namespace

TEST_CASE("GPU reference kernel agrees with the CPU oracle (attention/reference.hpp)") {
  const Case c{1, 7, 129, 4, 2, 64, true};
  Inputs<float> in(c);
  const AttentionShape s = shape_of(c);
  DeviceArray<double> o(static_cast<size_t>(c.nq * c.hq * c.d)), lse(static_cast<size_t>(c.hq * c.nq));
  attention_reference(in.q.ptr, KVView<float>::token_major(in.k.ptr, c.nk, c.hkv, c.d),
                      KVView<float>::token_major(in.v.ptr, c.nk, c.hkv, c.d), o.ptr, lse.ptr, 1, s);
  const auto q = in.q.download(), k = in.k.download(), v = in.v.download();
  const auto cpu = attention::attention_reference<float>(
      attention::token_major<const float>(q.data(), c.hq, c.d), attention::token_major<const float>(k.data(), c.hkv, c.d),
      attention::token_major<const float>(v.data(), c.hkv, c.d), s);
  const ErrorStats e = compare(o.download(), cpu);
  INFO("max err " << e.max_abs);
  CHECK(e.max_abs <= 1e-12);
}

TEST_CASE_TEMPLATE("flash prefill: odd sizes, head dims 64/80/128, every GQA ratio, causal and not", T,
                   __nv_bfloat16, __half) {
  for (bool causal : {false, true}) {
    for (int d : {64, 80, 128}) {
      for (int64_t n : {1, 7, 129}) check_flash<T>({2, n, n, 4, 2, d, causal});
      check_flash<T>({1, 7, 300, 6, 3, d, causal});    // queries after a 293-token cache (query_offset)
    }
    for (int hkv : {1, 2, 4, 8}) check_flash<T>({1, 129, 129, 8, hkv, 128, causal});  // GQA 8, 4, 2, 1
    check_flash<T>({1, 65, 65, 6, 2, 64, causal});  // ratio 3
    check_flash<T>({1, 65, 65, 5, 1, 80, causal});  // ratio 5
  }
  if (!quick()) {
    check_flash<T>({1, 4097, 4097, 4, 1, 128, true});
    check_flash<T>({1, 4097, 4097, 2, 2, 64, false});
  }
}

TEST_CASE("flash prefill: every tiling variant gives the same accuracy") {
  for (FlashTiling t : {FlashTiling{4, 1, 64}, FlashTiling{8, 1, 64}, FlashTiling{4, 2, 64}, FlashTiling{4, 2, 32}})
    for (int d : {64, 128}) check_flash<__nv_bfloat16>({1, 257, 257, 4, 2, d, true}, t);
}

TEST_CASE("flash prefill with fused RoPE matches rope_inplace followed by the oracle") {
  using T = __nv_bfloat16;
  for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved}) {
    for (auto [d, rotary] : {std::pair{128, 128}, std::pair{128, 64}, std::pair{80, 80}, std::pair{80, 40}}) {
      for (int64_t window : {int64_t{0}, int64_t{50}}) {  // 50: the windowed kernel with its RoPE tiling
      const Case c{2, 130, 130, 4, 2, d, true, window};  // full and partial rotary; rotary 40 takes the scalar path
      Inputs<T> in(c);
      const int half = rotary / 2;
      std::vector<double> inv(static_cast<size_t>(half));
      for (int i = 0; i < half; ++i) inv[static_cast<size_t>(i)] = default_inv_freq(10000.0, i, rotary);
      CAPTURE(rotary);
      RopeFrequencies freq(inv, 1.1);  // attention factor != 1
      std::vector<int64_t> pos(static_cast<size_t>(c.batch * c.nq));
      for (size_t t = 0; t < pos.size(); ++t) pos[t] = 1'000'000 + 3 * static_cast<int64_t>(t);  // shifted positions
      DeviceArray<int64_t> dpos(pos);
      DeviceArray<float2> table(pos.size() * static_cast<size_t>(half));
      rope_cos_sin_table(table.ptr, dpos.ptr, static_cast<int64_t>(pos.size()), freq);
      // Keep the un-rotated q/k for the fused kernel; rotate `in` for the oracle.
      DeviceArray<T> q0(in.q.n), k0(in.k.n);
      ROPEX_CUDA_CHECK(cudaMemcpy(q0.ptr, in.q.ptr, in.q.n * sizeof(T), cudaMemcpyDeviceToDevice));
      ROPEX_CUDA_CHECK(cudaMemcpy(k0.ptr, in.k.ptr, in.k.n * sizeof(T), cudaMemcpyDeviceToDevice));
      rope_inplace(DeviceHeads<T>::contiguous(in.q.ptr, c.hq, c.d), DeviceHeads<T>::contiguous(in.k.ptr, c.hkv, c.d),
                   c.batch * c.nq, c.d, dpos.ptr, freq, layout);
      for (bool in_kernel : {false, true}) {  // rotate-once-into-scratch, and in shared memory per tile
        CAPTURE(in_kernel);
        check_against_oracle<T>(c, in, [&](T* o, float* lse) {
          flash_attention<T>(q0.ptr, k0.ptr, in.v.ptr, o, lse, c.batch, shape_of(c),
                             FusedRope{table.ptr, table.ptr, half, layout, in_kernel});
        }, in_kernel ? "flash + rope in kernel" : "flash + rope once");
      }
      // The inputs were only read: q0 / k0 are still un-rotated (the scratch path is out of place).
      std::vector<T> a(in.q.n), b(in.q.n);
      ROPEX_CUDA_CHECK(cudaMemcpy(a.data(), q0.ptr, in.q.n * sizeof(T), cudaMemcpyDeviceToHost));
      ROPEX_CUDA_CHECK(cudaMemcpy(b.data(), in.q.ptr, in.q.n * sizeof(T), cudaMemcpyDeviceToHost));
      CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) != 0);
      }
    }
  }
}

TEST_CASE_TEMPLATE("decode: KV 1..100K, every GQA ratio, one and several query tokens, with and without splits", T,
                   __nv_bfloat16, __half) {
  // Every kernel on every head_dim-64/128 case (the tensor-core ones pad rows to 16 or 8, so one row
  // is their worst case; 40 rows are 3 or 5 row groups); head_dim 256 is not the mma.sync kernel's.
  std::vector<DecodeKernel> kernels = {DecodeKernel::cuda_core, DecodeKernel::tensor_core};
  const bool tma = tma_decode_here<T>();
  if (tma) kernels.push_back(DecodeKernel::tma_tensor_core);
  for (DecodeKernel kernel : kernels) {
    for (int max_splits : {0, 1}) {
      for (int64_t nk : {1, 7, 129, 4097}) {
        check_decode<T>({1, 1, nk, 8, 2, 128, true}, max_splits, kernel);
        check_decode<T>({2, 1, nk, 4, 4, 64, true}, max_splits, kernel);
      }
      for (int hkv : {1, 2, 4, 8}) check_decode<T>({1, 1, 1000, 8, hkv, 128, true}, max_splits, kernel);  // GQA 8..1
      check_decode<T>({1, 1, 1000, 12, 4, 128, true}, max_splits, kernel);  // ratio 3
      check_decode<T>({1, 3, 777, 8, 2, 128, true}, max_splits, kernel);    // 3 new tokens, causal among them (12 rows)
      check_decode<T>({2, 5, 300, 32, 4, 64, true}, max_splits, kernel);    // 40 rows: 3 row groups of 16
    }
    if (!quick()) check_decode<T>({1, 1, 100'003, 32, 8, 128, true}, 0, kernel);
  }
  // head_dim 256 with several rows a KV head: the CUDA-core kernel's 8-row blocks take more than 8
  // rows on sm_90 (32 here, 4 groups); before sm_90 its 2- and 4-row blocks take 2 and 4 rows.
  for (int max_splits : {0, 1}) {
    check_decode<T>({1, 2, 500, 16, 1, 256, true}, max_splits);
    if (tma) check_decode<T>({1, 2, 500, 16, 1, 256, true}, max_splits, DecodeKernel::tma_tensor_core);
    check_decode<T>({1, 1, 500, 8, 4, 256, true}, max_splits, DecodeKernel::cuda_core);  // 2 rows
    check_decode<T>({2, 1, 500, 8, 2, 256, true}, max_splits, DecodeKernel::cuda_core);  // 4 rows
  }
  if (!quick()) check_decode<T>({1, 1, 100'003, 8, 8, 128, true}, 0);
}

/// Decode on a head-major cache [batch, hkv, capacity, d] (capacity > n_keys; the slots past
/// n_keys hold NaN, so a kernel that reads past the keys fails the check) built from the
/// token-major inputs the oracle reads.
template <class T>
void check_decode_head_major(const Case& c, int64_t cap, int max_splits, DecodeKernel kernel) {
  CAPTURE(cap); CAPTURE(max_splits); CAPTURE(static_cast<int>(kernel));
  Inputs<T> in(c);
  const auto kt = in.k.download(), vt = in.v.download();
  const size_t n = static_cast<size_t>(c.batch) * c.hkv * cap * c.d;
  std::vector<T> kh(n), vh(n);
  std::memset(kh.data(), 0xFF, n * sizeof(T));  // NaN
  std::memset(vh.data(), 0xFF, n * sizeof(T));
  for (int b = 0; b < c.batch; ++b)
    for (int64_t t = 0; t < c.nk; ++t)
      for (int h = 0; h < c.hkv; ++h)
        for (int d = 0; d < c.d; ++d) {
          const size_t from = static_cast<size_t>(((b * c.nk + t) * c.hkv + h) * c.d + d);
          const size_t to = static_cast<size_t>(((b * c.hkv + h) * cap + t) * c.d + d);
          kh[to] = kt[from];
          vh[to] = vt[from];
        }
  DeviceArray<T> dkh(kh), dvh(vh);
  const KVView<T> k{dkh.ptr, c.hkv * cap * c.d, c.d, cap * c.d}, v{dvh.ptr, c.hkv * cap * c.d, c.d, cap * c.d};
  DecodeWorkspace ws;
  check_against_oracle<T>(c, in, [&](T* o, float* lse) {
    decode_attention<T>(in.q.ptr, k, v, o, lse, c.batch, shape_of(c), ws, max_splits, nullptr, kernel);
  }, "decode head-major");
}

TEST_CASE_TEMPLATE("decode reads a head-major KV cache through strides (every kernel)", T, __nv_bfloat16, __half) {
  std::vector<DecodeKernel> kernels = {DecodeKernel::automatic, DecodeKernel::cuda_core};
  if (tma_decode_here<T>()) kernels.push_back(DecodeKernel::tma_tensor_core);
  for (DecodeKernel kernel : kernels) {
    for (int max_splits : {0, 1}) {
      for (int64_t nk : {1, 7, 129, 4097}) {
        check_decode_head_major<T>({1, 1, nk, 8, 8, 128, true}, nk + 40, max_splits, kernel);  // one row per KV head
        check_decode_head_major<T>({2, 1, nk, 4, 4, 64, true}, nk + 3, max_splits, kernel);
      }
      check_decode_head_major<T>({1, 1, 333, 4, 4, 256, true}, 400, max_splits, kernel);
      check_decode_head_major<T>({1, 1, 1000, 8, 2, 128, true}, 1024, max_splits, kernel);  // 4 rows per KV head
      check_decode_head_major<T>({1, 1, 1000, 8, 4, 128, true}, 1001, max_splits, kernel);  // 2 rows
      check_decode_head_major<T>({2, 2, 500, 4, 4, 128, true}, 512, max_splits, kernel);    // 2 new tokens, causal
    }
    if (!quick()) check_decode_head_major<T>({1, 1, 100'003, 8, 8, 128, true}, 100'100, 0, kernel);
  }
  // Through the tensor-core kernel (GQA rows), on the same layout.
  check_decode_head_major<T>({1, 1, 777, 8, 2, 128, true}, 800, 0, DecodeKernel::tensor_core);
  // 8 rows a KV head (one full TMA-kernel block) and 3 new tokens x 4 heads (12 rows: two row groups).
  for (DecodeKernel kernel : {DecodeKernel::automatic, DecodeKernel::tensor_core})
    check_decode_head_major<T>({1, 1, 2000, 16, 2, 128, true}, 2048, 0, kernel);
  if (tma_decode_here<T>()) {
    check_decode_head_major<T>({1, 1, 2000, 16, 2, 128, true}, 2048, 0, DecodeKernel::tma_tensor_core);
    check_decode_head_major<T>({2, 3, 999, 16, 4, 64, true}, 1000, 0, DecodeKernel::tma_tensor_core);
  }
}

// Sliding windows (Mistral, Qwen2, Phi-3): window 1 (each query sees itself), smaller than a key
// tile (64 here), equal to it, not a multiple of it, larger than the sequence; queries after a cache
// (query_offset > 0), GQA, batches. The kernels skip the tiles / splits left of the window.
const int64_t kWindows[] = {1, 17, 64, 100, 5000};

TEST_CASE_TEMPLATE("sliding window: flash prefill (mma.sync kernel) vs the oracle", T, __nv_bfloat16, __half) {
  FlashTiling fa2;
  fa2.kernel = FlashKernel::fa2;
  for (int64_t w : kWindows) {
    check_flash<T>({1, 300, 300, 8, 2, 128, true, w}, fa2);   // GQA 4
    check_flash<T>({2, 129, 129, 4, 4, 64, true, w}, fa2);    // batch 2, head_dim 64
    check_flash<T>({1, 77, 500, 6, 3, 80, true, w}, fa2);     // 77 queries after a 423-token cache
    check_flash<T>({1, 7, 300, 4, 1, 128, true, w}, fa2);     // 7 queries after 293 (one query block)
  }
  if (!quick()) check_flash<T>({1, 4097, 4097, 4, 1, 128, true, 1000}, fa2);
  // A window on non-causal attention is refused (attention::validate's rule).
  CHECK_THROWS_AS(flash_attention<T>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, shape_of({1, 4, 4, 2, 2, 64, false, 2})),
                  ropex::Error);
}

TEST_CASE_TEMPLATE("sliding window: split-KV decode (every kernel, one and several tokens) vs the oracle", T, __nv_bfloat16,
                   __half) {
  std::vector<DecodeKernel> kernels = {DecodeKernel::automatic, DecodeKernel::cuda_core, DecodeKernel::tensor_core};
  if (tma_decode_here<T>()) kernels.push_back(DecodeKernel::tma_tensor_core);
  for (DecodeKernel kernel : kernels) {
    for (int max_splits : {0, 1}) {
      for (int64_t w : kWindows) {
        check_decode<T>({1, 1, 4097, 8, 2, 128, true, w}, max_splits, kernel);
        check_decode<T>({2, 5, 300, 32, 4, 64, true, w}, max_splits, kernel);  // 5 tokens, 40 rows
      }
      check_decode<T>({1, 3, 777, 8, 8, 128, true, 64}, max_splits, kernel);  // one row a KV head, 3 tokens
    }
    if (!quick()) check_decode<T>({1, 1, 100'003, 32, 8, 128, true, 4096}, 0, kernel);
  }
  for (int64_t w : kWindows) {
    for (int max_splits : {0, 1}) check_decode_head_major<T>({1, 1, 4097, 8, 8, 128, true, w}, 4100, max_splits, DecodeKernel::automatic);
    check_decode_head_major<T>({2, 2, 500, 4, 4, 128, true, w}, 512, 0, DecodeKernel::automatic);
  }
}

TEST_CASE("flash and decode reject bad shapes with ropex::Error") {
  using T = __nv_bfloat16;
  AttentionShape s = shape_of({1, 4, 4, 6, 4, 128, true});  // 6 heads over 4 kv heads
  DecodeWorkspace ws;
  CHECK_THROWS_AS(flash_attention<T>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, s), ropex::Error);
  CHECK_THROWS_AS(decode_attention<T>(nullptr, {}, {}, nullptr, nullptr, 1, s, ws), ropex::Error);
  s = shape_of({1, 4, 4, 4, 4, 96, true});
  CHECK_THROWS_AS(flash_attention<T>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, s), ropex::Error);
  s = shape_of({1, 1, 4, 4, 4, 256, true});  // the tensor-core decode takes head_dim 64 or 128
  CHECK_THROWS_AS(decode_attention<T>(nullptr, {}, {}, nullptr, nullptr, 1, s, ws, 0, nullptr, DecodeKernel::tensor_core),
                  ropex::Error);
  DeviceArray<T> kv(4 * 4 * 128);
  s = shape_of({1, 1, 4, 4, 4, 128, true});
  // Tensor maps need strides that are multiples of 16 bytes: rows padded by 4 elements are refused.
  const KVView<T> padded{kv.ptr, 0, 132, 4 * 132};
  CHECK_THROWS_AS(decode_attention<T>(kv.ptr, padded, padded, kv.ptr, nullptr, 1, s, ws, 0, nullptr,
                                      DecodeKernel::tma_tensor_core),
                  ropex::Error);
}
