// Device time of a piece of GPU work, the way every bench/gpu program measures it: warm-up calls,
// then CUDA events around each repetition, the median. f(i) gets the call's index so callers can
// rotate inputs (beyond L2) between repetitions.
#pragma once
#include <ropex/backends/cuda/common.cuh>

#include <algorithm>
#include <functional>
#include <vector>

namespace ropex::bench {

inline double event_median_ms(const std::function<void(int)>& f, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) f(i);
  ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<cudaEvent_t> ev(2 * static_cast<size_t>(reps));
  for (auto& e : ev) ROPEX_CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    ROPEX_CUDA_CHECK(cudaEventRecord(ev[2 * i]));
    f(warmup + i);
    ROPEX_CUDA_CHECK(cudaEventRecord(ev[2 * i + 1]));
  }
  ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> ms(static_cast<size_t>(reps));
  for (int i = 0; i < reps; ++i) ROPEX_CUDA_CHECK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) cudaEventDestroy(e);
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return ms[static_cast<size_t>(reps / 2)];
}

}  // namespace ropex::bench
