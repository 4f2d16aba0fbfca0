// Test helpers for the CUDA backend: device buffers, random fills, poisoning, error statistics.
#pragma once
#include <ropex/backends/cuda/common.cuh>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

namespace ropex::cuda::test {

/// Owning device array of n elements of T.
template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceArray(size_t count) : n(count) { ROPEX_CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T))); }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr); }
  void upload(const std::vector<T>& host) {
    ROPEX_CUDA_CHECK(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n);
    ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
    ROPEX_CUDA_CHECK(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  /// All bytes 0xFF: NaN in every float type, so an element the kernel forgot stays visible.
  void poison() { ROPEX_CUDA_CHECK(cudaMemset(ptr, 0xFF, n * sizeof(T))); }
};

inline std::mt19937_64& rng() {
  static std::mt19937_64 gen(std::random_device{}());  // fresh inputs every run
  return gen;
}

template <class T>
std::vector<T> random_vector(size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(u(rng()));
  return v;
}

template <class T>
double to_double(T x) {
  return static_cast<double>(static_cast<float>(x));
}
inline double to_double(double x) { return x; }

/// Error of `got` against `ref`: max |diff|, NMSE = sum diff^2 / sum ref^2, and whether every
/// element of got is finite (a poisoned element that was never written is NaN).
struct ErrorStats {
  double max_abs = 0, nmse = 0;
  bool all_finite = true;
};

template <class A, class B>
ErrorStats compare(const std::vector<A>& got, const std::vector<B>& ref) {
  REQUIRE(got.size() == ref.size());
  ErrorStats e;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = to_double(got[i]), r = to_double(ref[i]);
    if (!std::isfinite(g)) { e.all_finite = false; continue; }
    const double d = g - r;
    e.max_abs = std::max(e.max_abs, std::abs(d));
    num += d * d;
    den += r * r;
  }
  e.nmse = den > 0 ? num / den : num;
  return e;
}

}  // namespace ropex::cuda::test
