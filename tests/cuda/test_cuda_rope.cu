// CUDA RoPE vs the CPU path (rope/apply.hpp) and a double reference, on fresh random inputs.
#include "cuda_test_util.cuh"

#include <ropex/backends/cuda/rope.cuh>
#include <ropex/rope/apply.hpp>
#include <ropex/rope/frequencies.hpp>

#include <algorithm>
#include <cstring>
#include <functional>
#include <type_traits>
#include <numeric>
#include <random>

using namespace ropex;
using namespace ropex::cuda;
using namespace ropex::cuda::test;

namespace {

/// YaRN x4 frequencies (an attention factor != 1 and a non-trivial inv_freq) for rotary dim d.
std::vector<double> yarn_inv_freq(int d, double* attention_factor_out) {
  RopeParams p;
  p.type = RopeType::yarn;
  p.base = 500000;
  p.factor = 4;
  p.original_max_position_embeddings = 8192;
  std::vector<double> f(static_cast<size_t>(d / 2));
  for (int i = 0; i < d / 2; ++i) f[static_cast<size_t>(i)] = inv_freq(p, i, d);
  *attention_factor_out = attention_factor(p);
  return f;
}

std::vector<int64_t> random_positions(int64_t n, int64_t max_pos) {
  std::uniform_int_distribution<int64_t> u(0, max_pos);
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (auto& x : p) x = u(rng());
  p[0] = max_pos;  // always include the far end (angles at ~1M+ positions)
  return p;
}

/// Rotates q and k ([n_tokens, heads, head_dim] on the device) in place by positions / freq.
template <class T>
using Rotate = std::function<void(DeviceHeads<T> q, DeviceHeads<T> k, int64_t n_tokens, int head_dim,
                                  const int64_t* positions, const RopeFrequencies& freq, RopeLayout layout)>;

/// Rotates fresh random q and k with `rotate` (default rope_inplace) and holds the result to the
/// double reference; dims past the rotary dim must come back untouched.
template <class T>
void check_rope(int64_t n_tokens, int hq, int hkv, int head_dim, int rotary_dim, RopeLayout layout,
                int heads_per_thread = 8, Rotate<T> rotate = {}) {
  if (!rotate)
    rotate = [heads_per_thread](DeviceHeads<T> q, DeviceHeads<T> k, int64_t n, int hd, const int64_t* pos,
                                const RopeFrequencies& freq, RopeLayout lay) {
      rope_inplace(q, k, n, hd, pos, freq, lay, nullptr, heads_per_thread);
    };
  CAPTURE(heads_per_thread);
  CAPTURE(n_tokens); CAPTURE(hq); CAPTURE(hkv); CAPTURE(head_dim); CAPTURE(rotary_dim);
  CAPTURE(static_cast<int>(layout)); CAPTURE(sizeof(T));
  double af = 1;
  const auto inv = yarn_inv_freq(rotary_dim, &af);
  const auto pos = random_positions(n_tokens, 2'000'000);
  const auto q0 = random_vector<T>(static_cast<size_t>(n_tokens * hq * head_dim));
  const auto k0 = random_vector<T>(static_cast<size_t>(n_tokens * hkv * head_dim));

  DeviceArray<T> q(q0), k(k0);
  DeviceArray<int64_t> dpos(pos);
  RopeFrequencies freq(inv, af);
  rotate(DeviceHeads<T>::contiguous(q.ptr, hq, head_dim), DeviceHeads<T>::contiguous(k.ptr, hkv, head_dim), n_tokens,
         head_dim, dpos.ptr, freq, layout);
  const auto q_gpu = q.download(), k_gpu = k.download();

  // Oracle: double inputs, double table. Naive same-precision: the CPU path in T with a float table.
  const auto table_d = rope_table<double>(inv, pos, af);
  const auto table_f = rope_table<float>(inv, pos, af);
  auto oracle = [&](const std::vector<T>& x0, int heads) {
    std::vector<double> x(x0.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = to_double(x0[i]);
    apply_rope(x.data(), n_tokens, heads, head_dim, table_d, layout);
    return x;
  };
  auto naive = [&](std::vector<T> x, int heads) {
    apply_rope(x.data(), n_tokens, heads, head_dim, table_f, layout);
    return x;
  };
  const auto q_ref = oracle(q0, hq), k_ref = oracle(k0, hkv);
  const auto q_naive = naive(q0, hq), k_naive = naive(k0, hkv);
  for (int which = 0; which < 2; ++which) {
    const auto& got = which == 0 ? q_gpu : k_gpu;
    const auto& ref = which == 0 ? q_ref : k_ref;
    const auto& nai = which == 0 ? q_naive : k_naive;
    const auto& orig = which == 0 ? q0 : k0;
    const ErrorStats e = compare(got, ref), en = compare(nai, ref);
    INFO("tensor " << (which == 0 ? "q" : "k") << ": max err " << e.max_abs << " (naive " << en.max_abs
                   << "), nmse " << e.nmse);
    CHECK(e.all_finite);
    if constexpr (std::is_same_v<T, float>) {
      CHECK(e.nmse <= 1e-7);
      CHECK(e.max_abs <= 1e-5);  // a float32 pos*inv_freq at 2e6 would be off by ~0.1
    } else {
      CHECK(e.max_abs <= 2 * en.max_abs);
    }
    // Dims past the rotary dim are untouched, bit for bit.
    bool untouched = true;
    const int heads = which == 0 ? hq : hkv;
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int h = 0; h < heads; ++h)
        for (int d = rotary_dim; d < head_dim; ++d) {
          const size_t i = static_cast<size_t>((t * heads + h) * head_dim + d);
          untouched &= std::memcmp(&got[i], &orig[i], sizeof(T)) == 0;
        }
    CHECK(untouched);
  }
}

}  // namespace

TEST_CASE("cuda rope_inplace matches the double reference (bf16, fp16, fp32; both layouts; partial rotary)") {
  for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved}) {
    for (int64_t n : {1, 7, 129, 4097}) {
      check_rope<__nv_bfloat16>(n, 4, 2, 128, 128, layout);
      check_rope<__half>(n, 3, 1, 64, 64, layout);
      check_rope<float>(n, 2, 2, 128, 128, layout);
    }
    check_rope<__nv_bfloat16>(129, 4, 1, 80, 40, layout);   // partial rotary 0.5, half = 20 (scalar path)
    check_rope<__nv_bfloat16>(129, 2, 2, 128, 32, layout);  // partial rotary 0.25
    check_rope<__nv_bfloat16>(33, 2, 1, 64, 20, layout);    // rotary 20: scalar path in both layouts
    check_rope<__nv_bfloat16>(129, 3, 2, 128, 128, layout, 1);  // one head per thread
    check_rope<__half>(129, 3, 2, 128, 128, layout, 2);         // 5 heads: the last pair is half empty
    check_rope<__half>(129, 3, 4, 128, 128, layout, 3);         // 7 heads in groups of 3: the last has 1
    check_rope<__nv_bfloat16>(65, 32, 8, 128, 128, layout, 64);  // all 40 heads in one group
    check_rope<__nv_bfloat16>(65, 5, 0, 128, 128, layout);       // q alone
    check_rope<float>(33, 3, 1, 96, 48, layout);
    check_rope<__nv_bfloat16>(33, 40, 32, 128, 128, layout);  // > 512 chunks a token: several blocks a token
  }
}

TEST_CASE("cuda rope_apply by a cos/sin table matches the double reference (in place and out of place)") {
  // The path the LLaMA stack and fused-RoPE prefill take: a table made once, applied by rope_apply.
  auto by_table = [](int heads_per_thread, bool out_of_place) {
    return [=](auto q, auto k, int64_t n, int hd, const int64_t* pos, const RopeFrequencies& freq, RopeLayout layout) {
      using T = std::remove_pointer_t<decltype(q.data)>;
      DeviceArray<float2> table(static_cast<size_t>(n) * freq.half());
      table.poison();
      rope_cos_sin_table(table.ptr, pos, n, freq);
      if (!out_of_place) {
        rope_apply(q, k, n, hd, table.ptr, freq.half(), layout, nullptr, heads_per_thread);
        return;
      }
      // Out of place: read copies, write the rotated dims into q and k (their other dims stay).
      const size_t nq = static_cast<size_t>(n) * q.heads * hd, nk = static_cast<size_t>(n) * k.heads * hd;
      DeviceArray<T> qs(nq), ks(nk);
      ROPEX_CUDA_CHECK(cudaMemcpy(qs.ptr, q.data, nq * sizeof(T), cudaMemcpyDeviceToDevice));
      ROPEX_CUDA_CHECK(cudaMemcpy(ks.ptr, k.data, nk * sizeof(T), cudaMemcpyDeviceToDevice));
      const auto q_before = qs.download(), k_before = ks.download();
      rope_apply(DeviceHeads<T>::contiguous(qs.ptr, q.heads, hd), DeviceHeads<T>::contiguous(ks.ptr, k.heads, hd), n, hd,
                 table.ptr, freq.half(), layout, nullptr, heads_per_thread, q, k);
      const auto q_after = qs.download(), k_after = ks.download();
      CHECK(std::memcmp(q_after.data(), q_before.data(), nq * sizeof(T)) == 0);  // the source is only read
      CHECK(std::memcmp(k_after.data(), k_before.data(), nk * sizeof(T)) == 0);
    };
  };
  for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved})
    for (int hpt : {1, 2})
      for (bool oop : {false, true}) {
        CAPTURE(oop);
        check_rope<__nv_bfloat16>(131, 6, 3, 128, 128, layout, hpt, by_table(hpt, oop));
        check_rope<__half>(131, 6, 3, 80, 40, layout, hpt, by_table(hpt, oop));  // scalar path
        check_rope<float>(131, 6, 3, 64, 32, layout, hpt, by_table(hpt, oop));
      }
}

TEST_CASE("cuda rope_cos_sin_table matches rope_table (angles reduced in double at 2M positions)") {
  double af = 1;
  const auto inv = yarn_inv_freq(128, &af);
  const auto pos = random_positions(1000, 2'000'000);
  DeviceArray<int64_t> dpos(pos);
  DeviceArray<float2> table(pos.size() * inv.size());
  table.poison();
  RopeFrequencies freq(inv, af);
  rope_cos_sin_table(table.ptr, dpos.ptr, static_cast<int64_t>(pos.size()), freq);
  const auto got = table.download();
  const auto ref = rope_table<double>(inv, pos, af);
  double max_err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::max(std::abs(got[i].x - ref.cos[i]), std::abs(got[i].y - ref.sin[i]));
    max_err = std::isfinite(e) ? std::max(max_err, e) : INFINITY;
  }
  INFO("max error " << max_err);
  CHECK(max_err <= 1e-6);
}

TEST_CASE("cuda rope_cos_sin_table_runs and rope_anchors match rope_table at start + i (near 2M)") {
  double af = 1;
  const auto inv = yarn_inv_freq(128, &af);
  const int half = static_cast<int>(inv.size()), batch = 3;
  const int64_t n = 77;  // not a multiple of 16
  const std::vector<int64_t> starts = {0, 1'999'937, 12'345};
  std::vector<int64_t> pos;
  for (int b = 0; b < batch; ++b)
    for (int64_t i = 0; i < n; ++i) pos.push_back(starts[static_cast<size_t>(b)] + i);
  const auto ref = rope_table<double>(inv, pos, af);
  RopeFrequencies freq(inv, af);
  DeviceArray<int64_t> dstarts(starts);
  auto max_error = [&](auto&& value) {  // value(t, i) = (cos, sin) the device gave for row t, pair i
    double m = 0;
    for (size_t t = 0; t < pos.size(); ++t)
      for (int i = 0; i < half; ++i) {
        const float2 g = value(t, i);
        const size_t k = t * static_cast<size_t>(half) + static_cast<size_t>(i);
        const double e = std::max(std::abs(g.x - ref.cos[k]), std::abs(g.y - ref.sin[k]));
        m = std::isfinite(e) ? std::max(m, e) : INFINITY;
      }
    return m;
  };
  DeviceArray<float2> table(pos.size() * static_cast<size_t>(half));
  table.poison();
  rope_cos_sin_table_runs(table.ptr, dstarts.ptr, batch, n, freq.inv_freq(), half, freq.attention_factor());
  const auto got = table.download();
  const double e_table = max_error([&](size_t t, int i) { return got[t * static_cast<size_t>(half) + static_cast<size_t>(i)]; });
  INFO("table from starts: max error " << e_table);
  CHECK(e_table <= 1e-6);
  // Anchors x steps (angle addition, as the Hopper kernel forms a tile's cos/sin).
  const int64_t na = (n + 15) / 16;
  DeviceArray<float2> anchors(static_cast<size_t>(batch * na * half));
  anchors.poison();
  rope_anchors(anchors.ptr, dstarts.ptr, batch, na, freq.inv_freq(), half, freq.attention_factor());
  std::vector<float2> st(static_cast<size_t>(16 * half));
  ROPEX_CUDA_CHECK(cudaMemcpy(st.data(), freq.steps(), st.size() * sizeof(float2), cudaMemcpyDeviceToHost));
  const auto a = anchors.download();
  const double e_anchor = max_error([&](size_t t, int i) {
    const size_t b = t / static_cast<size_t>(n), r = t % static_cast<size_t>(n);
    const float2 x = a[(b * static_cast<size_t>(na) + r / 16) * static_cast<size_t>(half) + static_cast<size_t>(i)];
    const float2 y = st[(r % 16) * static_cast<size_t>(half) + static_cast<size_t>(i)];
    return make_float2(x.x * y.x - x.y * y.y, x.y * y.x + x.x * y.y);
  });
  INFO("anchors x steps: max error " << e_anchor);
  CHECK(e_anchor <= 2e-6);
}

TEST_CASE("FastDiv divides exactly (the RoPE kernel's index math)") {
  std::mt19937 rng(7);
  std::vector<uint32_t> divisors = {1, 2, 3, 5, 7, 8, 48, 64, 96, 100, 127, 640, 1000, 4095, 65537, 1000003,
                                    (1u << 30) + 3, (1u << 31) - 1};
  for (int i = 0; i < 50; ++i) divisors.push_back(1 + rng() % ((1u << 31) - 1));
  for (const uint32_t d : divisors) {
    const ropex::cuda::FastDiv f(d);
    std::vector<uint32_t> ns = {0, 1, d - 1, d, d + 1, 2 * d - 1, 0xffffffffu, 0xfffffffeu, 0x80000000u};
    for (int i = 0; i < 2000; ++i) ns.push_back(static_cast<uint32_t>(rng()));
    for (const uint32_t n : ns) {
      CAPTURE(d); CAPTURE(n);
      REQUIRE(f.div(n) == n / d);
    }
  }
  CHECK_THROWS_AS(ropex::cuda::FastDiv(0u), ropex::Error);
}

TEST_CASE("cuda rope_inplace rejects a rotary dim larger than head_dim") {
  std::vector<double> inv(80, 0.1);
  RopeFrequencies freq(inv, 1.0);
  DeviceArray<__nv_bfloat16> q(128);
  DeviceArray<int64_t> pos(1);
  CHECK_THROWS_AS(rope_inplace(DeviceHeads<__nv_bfloat16>::contiguous(q.ptr, 1, 128), DeviceHeads<__nv_bfloat16>{}, 1,
                               128, pos.ptr, freq, RopeLayout::half),
                  ropex::Error);
  std::vector<double> inv64(64, 0.1);
  RopeFrequencies freq64(inv64, 1.0);
  CHECK_THROWS_AS(rope_inplace(DeviceHeads<__nv_bfloat16>::contiguous(q.ptr, 1, 128), DeviceHeads<__nv_bfloat16>{}, 1,
                               128, pos.ptr, freq64, RopeLayout::half, nullptr, 0),
                  ropex::Error);  // heads_per_thread < 1
}
