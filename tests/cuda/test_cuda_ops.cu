// ops<cuda_*>::matmul, the projections of the LLaMA stack: cuBLAS, and for one token the gemv kernel
// (ops.cuh) where it applies; both, with and without accumulating into y (the residual adds),
// against a double-precision product of the same (bf16-exact) inputs. Odd row counts, rows that
// are not whole 16-byte vectors (cuBLAS fallback), MLP-sized inputs, poisoned outputs.
#include <ropex/backends/cuda/ops.cuh>

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace {

uint16_t bf16_bits(float x) {  // round to nearest even, finite inputs
  const uint32_t u = std::bit_cast<uint32_t>(x);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
using ropex::model::bfloat16_to_float;

// A [rows, in] weight as a checkpoint tensor of T's dtype (bf16 bits kept alive alongside).
struct HostWeight {
  std::vector<uint16_t> bits;
  ropex::model::TensorView view;
  HostWeight(const std::vector<float>& w, int64_t rows, int64_t in, bool bf) {
    if (bf) {
      bits.resize(w.size());
      for (size_t i = 0; i < w.size(); ++i) bits[i] = bf16_bits(w[i]);
    }
    view.name = "w", view.shape = {rows, in};
    view.dtype = bf ? ropex::model::DType::bf16 : ropex::model::DType::f32;
    view.data = bf ? reinterpret_cast<const std::byte*>(bits.data()) : reinterpret_cast<const std::byte*>(w.data());
    view.nbytes = w.size() * (bf ? 2 : 4);
  }
};

// Host floats as T (bf16 rounded to nearest even), and back.
template <class T>
std::vector<T> to_t(const std::vector<float>& v) {
  std::vector<T> t(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      const uint16_t b = bf16_bits(v[i]);
      std::memcpy(&t[i], &b, 2);
    } else {
      t[i] = v[i];
    }
  }
  return t;
}
template <class T>
double to_double(const T& x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    uint16_t b;
    std::memcpy(&b, &x, 2);
    return bfloat16_to_float(b);
  } else {
    return x;
  }
}

template <class T>
void check_matmul(int64_t rows, int64_t in, int64_t n, bool accumulate, std::mt19937& rng) {
  CAPTURE(rows);
  CAPTURE(in);
  CAPTURE(n);
  CAPTURE(accumulate);
  constexpr bool bf = std::is_same_v<T, __nv_bfloat16>;
  std::normal_distribution<float> nd(0.f, 1.f);
  // Host values exactly representable in T, so the reference sees what the GPU sees.
  auto exact = [&](float v) { return bf ? bfloat16_to_float(bf16_bits(v)) : v; };
  std::vector<float> w(size_t(rows * in)), x(size_t(n * in)), y0(size_t(n * rows));
  for (auto& e : w) e = exact(nd(rng));
  for (auto& e : x) e = exact(nd(rng));
  for (auto& e : y0) e = exact(nd(rng));
  const HostWeight hw(w, rows, in, bf);
  ropex::cuda::Ops<T> ops;
  const auto dw = ops.upload(hw.view);
  ropex::cuda::DeviceBuffer<T> dx(x.size()), dy(y0.size());
  const auto hx = to_t<T>(x);
  ROPEX_CUDA_CHECK(cudaMemcpy(dx.data(), hx.data(), hx.size() * sizeof(T), cudaMemcpyHostToDevice));
  if (accumulate) {
    const auto hy = to_t<T>(y0);
    ROPEX_CUDA_CHECK(cudaMemcpy(dy.data(), hy.data(), hy.size() * sizeof(T), cudaMemcpyHostToDevice));
  } else {
    ROPEX_CUDA_CHECK(cudaMemset(dy.data(), 0xff, y0.size() * sizeof(T)));  // NaN poison
  }
  ops.matmul(dw, dx.data(), n, dy.data(), accumulate);
  std::vector<T> hy(y0.size());
  ROPEX_CUDA_CHECK(cudaMemcpy(hy.data(), dy.data(), hy.size() * sizeof(T), cudaMemcpyDeviceToHost));

  int bad = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double ref = accumulate ? y0[size_t(t * rows + r)] : 0.0, mag = std::abs(ref);
      for (int64_t i = 0; i < in; ++i) {
        const double p = double(w[size_t(r * in + i)]) * x[size_t(t * in + i)];
        ref += p, mag += std::abs(p);
      }
      const double got = to_double(hy[size_t(t * rows + r)]);
      // fp32 accumulation error (~1e-6 of sum |w x|) + one rounding of the output to T.
      const double tol = 2e-6 * mag + (bf ? std::ldexp(std::abs(ref), -8) : 1e-6 * std::abs(ref)) + 1e-6;
      if (!(std::abs(got - ref) <= tol) && bad++ < 5) CHECK_MESSAGE(false, "y[" << t << ", " << r << "] = " << got << ", want " << ref);
    }
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE_TEMPLATE("cuda matmul: gemv (one token) and cuBLAS (several) vs double, with and without accumulate", T,
                   __nv_bfloat16, float) {
  std::mt19937 rng(5);
  for (bool acc : {false, true}) {
    for (int64_t rows : {1, 7, 129, 4104}) check_matmul<T>(rows, 4096, 1, acc, rng);
    check_matmul<T>(300, 11008, 1, acc, rng);  // an MLP down projection's input width
    check_matmul<T>(33, 8, 1, acc, rng);       // one 16-byte vector per row (bf16)
    check_matmul<T>(33, 20, 1, acc, rng);      // rows not whole vectors (bf16): cuBLAS
    check_matmul<T>(65, 256, 3, acc, rng);     // several tokens: cuBLAS
  }
}

TEST_CASE("cuda matmul: several projections of one token in one launch equal separate projections, bit for bit") {
  using T = __nv_bfloat16;
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> bits(0x3c00, 0x3fff);  // bf16 values in [2^-7, 2): finite, varied
  const int64_t in = 512, rows[3] = {96, 40, 40};
  std::vector<std::vector<uint16_t>> host(3);
  std::vector<ropex::model::TensorView> views(3);
  ropex::cuda::Ops<T> ops;
  std::vector<ropex::cuda::Ops<T>::Weight> ws;
  for (int i = 0; i < 3; ++i) {
    host[i].resize(size_t(rows[i] * in));
    for (auto& b : host[i]) b = uint16_t(bits(rng) | (rng() & 1 ? 0x8000 : 0));
    views[i].name = "w" + std::to_string(i), views[i].dtype = ropex::model::DType::bf16, views[i].shape = {rows[i], in};
    views[i].data = reinterpret_cast<const std::byte*>(host[i].data()), views[i].nbytes = host[i].size() * 2;
    ws.push_back(ops.upload(views[i]));
  }
  std::vector<uint16_t> hx(static_cast<size_t>(in));
  for (auto& b : hx) b = uint16_t(bits(rng));
  ropex::cuda::DeviceBuffer<T> x{static_cast<size_t>(in)}, fused{size_t{176}}, apart{size_t{176}};
  ROPEX_CUDA_CHECK(cudaMemcpy(x.data(), hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
  ROPEX_CUDA_CHECK(cudaMemset(fused.data(), 0xff, 176 * 2));
  ops.matmul(x.data(), 1, {{ws[0], fused.data()}, {ws[1], fused.data() + 96}, {ws[2], fused.data() + 136}});
  ops.matmul(ws[0], x.data(), 1, apart.data());
  ops.matmul(ws[1], x.data(), 1, apart.data() + 96);
  ops.matmul(ws[2], x.data(), 1, apart.data() + 136);
  std::vector<uint16_t> a(176), b(176);
  ROPEX_CUDA_CHECK(cudaMemcpy(a.data(), fused.data(), 176 * 2, cudaMemcpyDeviceToHost));
  ROPEX_CUDA_CHECK(cudaMemcpy(b.data(), apart.data(), 176 * 2, cudaMemcpyDeviceToHost));
  CHECK(a == b);
  int nan = 0;
  for (uint16_t v : a) nan += (v & 0x7f80) == 0x7f80;
  CHECK(nan == 0);
}

// One token: input width 256 goes through the gemv kernel; 260 (rows not whole 16-byte vectors,
// which the gemv kernel refuses) through one cuBLAS GEMM over the stacked weights.
TEST_CASE("cuda matmul: stacked q|k|v weights and back-to-back outputs run as one GEMM, equal to the reference") {
  using T = __nv_bfloat16;
  std::mt19937 rng(21);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t rows[3] = {128, 32, 32}, total = 192;
  for (const int64_t in : {int64_t(256), int64_t(260)}) {
    CAPTURE(in);
    std::vector<std::vector<uint16_t>> host(3);
    std::vector<ropex::model::TensorView> views(3);
    for (int i = 0; i < 3; ++i) {
      host[i].resize(size_t(rows[i] * in));
      for (auto& b : host[i]) b = bf16_bits(nd(rng));
      views[i].name = "w" + std::to_string(i), views[i].dtype = ropex::model::DType::bf16, views[i].shape = {rows[i], in};
      views[i].data = reinterpret_cast<const std::byte*>(host[i].data()), views[i].nbytes = host[i].size() * 2;
    }
    std::vector<uint16_t> hx(static_cast<size_t>(in));
    for (auto& b : hx) b = bf16_bits(nd(rng));
    ropex::cuda::Ops<T> ops;
    auto ws = ops.upload_stacked({&views[0], &views[1], &views[2]});
    REQUIRE(ws.size() == 3);
    CHECK(ws[1].data() == ws[0].data() + rows[0] * in);  // back to back in one allocation
    ropex::cuda::DeviceBuffer<T> x{static_cast<size_t>(in)}, y{static_cast<size_t>(total)};
    ROPEX_CUDA_CHECK(cudaMemcpy(x.data(), hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
    ROPEX_CUDA_CHECK(cudaMemset(y.data(), 0xff, size_t(total) * 2));
    ops.matmul(x.data(), 1, {{ws[0], y.data()}, {ws[1], y.data() + 128}, {ws[2], y.data() + 160}});
    std::vector<uint16_t> hy(static_cast<size_t>(total));
    ROPEX_CUDA_CHECK(cudaMemcpy(hy.data(), y.data(), hy.size() * 2, cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int64_t r = 0, part = 0, base = 0; r < total; ++r) {
      if (r - base >= rows[part]) base += rows[part++];
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < in; ++i) {
        const double p = double(bfloat16_to_float(host[size_t(part)][size_t((r - base) * in + i)])) * bfloat16_to_float(hx[size_t(i)]);
        ref += p, mag += std::abs(p);
      }
      const double got = bfloat16_to_float(hy[size_t(r)]);
      if (!(std::abs(got - ref) <= 2e-6 * mag + std::ldexp(std::abs(ref), -8) + 1e-6)) ++bad;
    }
    CHECK(bad == 0);
  }
}

// One token: norm_matmul / swiglu_matmul run as one gemv launch that computes rmsnorm(x) or
// silu(gate) * up while staging its input. Against the two-kernel path (rmsnorm or swiglu, then
// matmul) on the same data: the staged inputs are rounded to T the same way, only the rmsnorm's
// sum of squares is added in another order, so outputs agree to a rounding of T (a wrong weight,
// eps or index is an O(1) error).
TEST_CASE_TEMPLATE("cuda norm_matmul and swiglu_matmul: the fused one-token gemv equals the two-kernel path", T,
                   __nv_bfloat16, float) {
  constexpr bool bf = std::is_same_v<T, __nv_bfloat16>;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (const int64_t in : {int64_t(4096), int64_t(11008), int64_t(64)}) {
    CAPTURE(in);
    const int64_t rows = 777;
    const size_t n_in = static_cast<size_t>(in);
    std::vector<float> w(static_cast<size_t>(rows) * n_in), x(n_in), up(n_in), g(n_in);
    for (auto& e : w) e = nd(rng);
    for (auto& e : x) e = 3.f * nd(rng);
    for (auto& e : up) e = nd(rng);
    for (auto& e : g) e = 1.f + 0.1f * nd(rng);
    const HostWeight hw(w, rows, in, bf);
    ropex::cuda::Ops<T> ops;
    const auto dw = ops.upload(hw.view);
    auto upload = [&](const std::vector<float>& v) {
      ropex::cuda::DeviceBuffer<T> d(v.size());
      const auto t = to_t<T>(v);
      ROPEX_CUDA_CHECK(cudaMemcpy(d.data(), t.data(), t.size() * sizeof(T), cudaMemcpyHostToDevice));
      return d;
    };
    auto host = [&](const ropex::cuda::DeviceBuffer<T>& d) {
      std::vector<T> t(d.size());
      ROPEX_CUDA_CHECK(cudaMemcpy(t.data(), d.data(), t.size() * sizeof(T), cudaMemcpyDeviceToHost));
      std::vector<double> out(t.size());
      for (size_t i = 0; i < t.size(); ++i) out[i] = to_double(t[i]);
      return out;
    };
    auto agree = [&](const std::vector<double>& fused, const std::vector<double>& split) {
      int bad = 0;
      for (size_t i = 0; i < fused.size(); ++i)
        if (!(std::abs(fused[i] - split[i]) <= std::ldexp(std::abs(split[i]), -7) + 1e-3) && bad++ < 5)
          CHECK_MESSAGE(false, "y[" << i << "] fused " << fused[i] << ", two kernels " << split[i]);
      CHECK(bad == 0);
    };
    ropex::cuda::DeviceBuffer<float> dg(g.size());
    ROPEX_CUDA_CHECK(cudaMemcpy(dg.data(), g.data(), g.size() * 4, cudaMemcpyHostToDevice));
    auto dx = upload(x), dup = upload(up);
    ropex::cuda::DeviceBuffer<T> xb(n_in), y1(static_cast<size_t>(rows)), y2(static_cast<size_t>(rows));
    {  // rmsnorm(x) W^T
      ROPEX_CUDA_CHECK(cudaMemset(y1.data(), 0xff, y1.size() * sizeof(T)));  // NaN poison
      ops.norm_matmul(xb.data(), dx.data(), dg.data(), 1, in, 1e-5, {{dw, y1.data()}});
      ops.rmsnorm(xb.data(), dx.data(), dg.data(), 1, in, 1e-5);
      ops.matmul(dw, xb.data(), 1, y2.data());
      INFO("norm_matmul");
      agree(host(y1), host(y2));
    }
    {  // y += (silu(x) * up) W^T
      const auto y0 = upload(std::vector<float>(static_cast<size_t>(rows), 0.5f));
      ROPEX_CUDA_CHECK(cudaMemcpy(y1.data(), y0.data(), rows * sizeof(T), cudaMemcpyDeviceToDevice));
      ROPEX_CUDA_CHECK(cudaMemcpy(y2.data(), y0.data(), rows * sizeof(T), cudaMemcpyDeviceToDevice));
      auto gate = upload(x);
      ops.swiglu_matmul(dw, gate.data(), dup.data(), 1, in, y1.data(), true);
      ops.swiglu(dx.data(), dup.data(), in);
      ops.matmul(dw, dx.data(), 1, y2.data(), true);
      INFO("swiglu_matmul");
      agree(host(y1), host(y2));
    }
  }
}
