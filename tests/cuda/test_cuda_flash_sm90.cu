// The Hopper wgmma flash kernel (backends/cuda/flash_prefill_sm90.cuh) vs the double-precision
// reference, with the calibrated tolerance of test_cuda_attention.cu: max error and NMSE <= 2x
// those of the same-precision naive kernel. Fresh random inputs, poisoned outputs.
#include "cuda_test_util.cuh"

#include <ropex/backends/cuda/flash_prefill.cuh>
#include <ropex/backends/cuda/reference.cuh>

#include <cstdlib>

using namespace ropex;
using namespace ropex::cuda;
using namespace ropex::cuda::test;
using attention::AttentionShape;

namespace {

bool quick() { return std::getenv("ROPEX_CUDA_TEST_QUICK") != nullptr; }

struct Case {
  int batch;
  int64_t nq, nk;
  int hq, hkv, d;
  bool causal;
};

template <class T>
struct Inputs {
  DeviceArray<T> q, k, v;
  explicit Inputs(const Case& c)
      : q(random_vector<T>(static_cast<size_t>(c.batch * c.nq * c.hq * c.d), -2.f, 2.f)),
        k(random_vector<T>(static_cast<size_t>(c.batch * c.nk * c.hkv * c.d), -2.f, 2.f)),
        v(random_vector<T>(static_cast<size_t>(c.batch * c.nk * c.hkv * c.d))) {}
};

AttentionShape shape_of(const Case& c) {
  AttentionShape s;
  s.n_queries = c.nq; s.n_keys = c.nk; s.n_heads = c.hq; s.n_kv_heads = c.hkv; s.head_dim = c.d;
  s.query_offset = c.nk - c.nq;  // new tokens at the end of the key sequence
  s.causal = c.causal;
  s.scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  return s;
}

bool on_sm90() { return sm90::device_is_sm90(); }

/// Runs flash_attention with `kernel` forced and checks it against the oracle (calibrated ratio).
template <class T>
void check(const Case& c, FlashKernel kernel = FlashKernel::sm90) {
  CAPTURE(c.batch); CAPTURE(c.nq); CAPTURE(c.nk); CAPTURE(c.hq); CAPTURE(c.hkv); CAPTURE(c.d); CAPTURE(c.causal);
  CAPTURE(sizeof(T)); CAPTURE(static_cast<int>(kernel));
  const Inputs<T> in(c);
  const AttentionShape s = shape_of(c);
  const size_t n_out = static_cast<size_t>(c.batch * c.nq * c.hq * c.d), n_lse = static_cast<size_t>(c.batch * c.hq * c.nq);
  const auto kv = KVView<T>::token_major(in.k.ptr, c.nk, c.hkv, c.d);
  const auto vv = KVView<T>::token_major(in.v.ptr, c.nk, c.hkv, c.d);
  DeviceArray<double> o_ref(n_out), lse_ref(n_lse);
  DeviceArray<T> o_naive(n_out), o_fast(n_out);
  DeviceArray<float> lse_naive(n_lse), lse_fast(n_lse);
  attention_reference(in.q.ptr, kv, vv, o_ref.ptr, lse_ref.ptr, c.batch, s);
  attention_naive(in.q.ptr, kv, vv, o_naive.ptr, lse_naive.ptr, c.batch, s);
  o_fast.poison();
  lse_fast.poison();
  FlashTiling t;
  t.kernel = kernel;
  flash_attention<T>(in.q.ptr, in.k.ptr, in.v.ptr, o_fast.ptr, lse_fast.ptr, c.batch, s, {}, t);
  ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
  const auto ref = o_ref.download(), lref = lse_ref.download();
  const ErrorStats e = compare(o_fast.download(), ref), en = compare(o_naive.download(), ref);
  const ErrorStats el = compare(lse_fast.download(), lref), eln = compare(lse_naive.download(), lref);
  INFO("out: max err " << e.max_abs << " (naive " << en.max_abs << "), nmse " << e.nmse << " (naive " << en.nmse
                       << "); lse: max err " << el.max_abs << " (naive " << eln.max_abs << ")");
  CHECK(e.all_finite);
  CHECK(el.all_finite);
  CHECK(e.max_abs <= 2 * en.max_abs);
  CHECK(e.nmse <= 2 * en.nmse);
  CHECK(el.max_abs <= 2 * eln.max_abs + 1e-6);
}

}  // namespace

TEST_CASE_TEMPLATE("sm90 flash prefill: odd sizes, every GQA ratio, cache offsets, causal and not", T, __nv_bfloat16,
                   __half) {
  if (!on_sm90()) {
    MESSAGE("not a compute capability 9.x device: forcing the sm90 kernel must throw");
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
