// The Hopper wgmma flash kernel (backends/cuda/flash_prefill_sm90.cuh) vs the double-precision
// reference, with the calibrated tolerance of test_cuda_attention.cu: max error and NMSE <= 2x
// those of the same-precision naive kernel. Fresh random inputs, poisoned outputs.
#include "attention_test_util.cuh"

#include <ropex/backends/cuda/flash_prefill.cuh>

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

}  // namespace

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
  if (!quick()) {
    check<T>({1, 4097, 4097, 4, 1, 128, true});
    check<T>({1, 4097, 4097, 2, 2, 128, false});
  }
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
