// Shared by the CUDA attention tests: a case (sizes), fresh random inputs for it, its
// AttentionShape, and the calibrated check of a fast kernel against the double-precision oracle
// (max error and NMSE <= 2x those of the same-precision naive kernel, eager-framework numerics).
#pragma once
#include "cuda_test_util.cuh"

#include <ropex/attention/layout.hpp>
#include <ropex/backends/cuda/decode.cuh>
#include <ropex/backends/cuda/reference.cuh>

#include <cmath>
#include <cstdlib>

namespace ropex::cuda::test {

using attention::AttentionShape;

/// Quick mode (compute-sanitizer run): smaller sizes only.
inline bool quick() { return std::getenv("ROPEX_CUDA_TEST_QUICK") != nullptr; }

struct Case {
  int batch;
  int64_t nq, nk;
  int hq, hkv, d;
  bool causal;
  int64_t window = 0;  // sliding window (causal only): query i sees its `window` most recent keys
};

template <class T>
struct Inputs {
  DeviceArray<T> q, k, v;
  explicit Inputs(const Case& c)
      : q(random_vector<T>(static_cast<size_t>(c.batch * c.nq * c.hq * c.d), -2.f, 2.f)),
        k(random_vector<T>(static_cast<size_t>(c.batch * c.nk * c.hkv * c.d), -2.f, 2.f)),
        v(random_vector<T>(static_cast<size_t>(c.batch * c.nk * c.hkv * c.d))) {}
};

inline AttentionShape shape_of(const Case& c) {
  AttentionShape s;
  s.n_queries = c.nq; s.n_keys = c.nk; s.n_heads = c.hq; s.n_kv_heads = c.hkv; s.head_dim = c.d;
  s.query_offset = c.nk - c.nq;  // new tokens at the end of the key sequence
  s.causal = c.causal;
  s.window = c.window;
  s.scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  return s;
}

/// Runs `fast` (writes o, lse) and checks it against the oracle with the calibrated ratio.
template <class T, class Fast>
void check_against_oracle(const Case& c, const Inputs<T>& in, Fast fast, const char* what) {
  CAPTURE(what); CAPTURE(c.batch); CAPTURE(c.nq); CAPTURE(c.nk); CAPTURE(c.hq); CAPTURE(c.hkv); CAPTURE(c.d);
  CAPTURE(c.causal); CAPTURE(c.window); CAPTURE(sizeof(T));
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
  fast(o_fast.ptr, lse_fast.ptr);
  const auto ref = o_ref.download(), lref = lse_ref.download();
  const ErrorStats e = compare(o_fast.download(), ref), en = compare(o_naive.download(), ref);
  const ErrorStats el = compare(lse_fast.download(), lref), eln = compare(lse_naive.download(), lref);
  INFO("out: max err " << e.max_abs << " (naive " << en.max_abs << "), nmse " << e.nmse << " (naive " << en.nmse
                       << "); lse: max err " << el.max_abs << " (naive " << eln.max_abs << ")");
  CHECK(e.all_finite);
  CHECK(el.all_finite);
  CHECK(e.max_abs <= 2 * en.max_abs);
  CHECK(e.nmse <= 2 * en.nmse);
  CHECK(el.max_abs <= 2 * eln.max_abs + 1e-6);  // fp32 LSE: naive's rounded scores dominate its error
}

}  // namespace ropex::cuda::test
