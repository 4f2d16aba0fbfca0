// Context-parallel perplexity on GPUs: parallel::context_parallel_perplexity with one
// Llama<cuda_bf16> per rank (weights loaded on the rank's device; ranks that share a device each
// load their own copy), the window's attention at every layer done by ring::Ring over the ranks'
// own model streams — so the ring's kernels and transfers are ordered with each rank's layer.
#pragma once
#include <ropex/backends/cuda/ops.cuh>
#include <ropex/backends/cuda/ring_attention.cuh>
#include <ropex/model/llama.hpp>
#include <ropex/parallel/cp_perplexity.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace ropex::cuda {

/// Options of a context-parallel run. devices[r]: rank r's GPU (repeats put ranks on one GPU).
struct ContextParallelOptions {
  std::vector<int> devices;
  ring::Transport transport = ring::Transport::nccl;
  int64_t chunk = 8192;  ///< only a short last window (run by rank 0 alone) is chunked
  /// Non-null: the most device memory in use on any rank's device (bytes, every process's),
  /// sampled after each layer's ring attention, when the ring's buffers and the layer's
  /// activations are all allocated.
  size_t* peak_bytes = nullptr;
  /// Non-null: seconds of the windows (forward + loss, every rank done), weights loading excluded.
  double* seconds = nullptr;
};

/// Refuses device ids that are not visible: one line naming `flag`.
inline void check_devices(const std::vector<int>& devices, const std::string& flag) {
  int count = 0;
  ROPEX_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (devices.empty()) throw make_error(flag, "", "needs at least one GPU");
  for (int d : devices)
    if (d < 0 || d >= count)
      throw make_error(flag, std::to_string(d),
                       "no such GPU: " + std::to_string(count) + " visible (devices 0.." + std::to_string(count - 1) + ")");
}

/// eval::perplexity's result (non-overlapping windows) with each window split over the ranks; the
/// per-position curve has the one-GPU run's layout.
inline eval::PerplexityResult context_parallel_perplexity(
    const model::Checkpoint& ck, std::span<const int32_t> tokens, const eval::PerplexityOptions& po,
    const ContextParallelOptions& o) {
  using Model = model::Llama<backends::cuda_bf16>;
  using T = Model::Scalar;
  check_devices(o.devices, "--gpus");
  const int R = static_cast<int>(o.devices.size());
  int caller_device = 0;
  ROPEX_CUDA_CHECK(cudaGetDevice(&caller_device));
  std::vector<std::unique_ptr<Model>> models;
  std::vector<Model*> ranks;
  std::vector<cudaStream_t> streams;
  for (int r = 0; r < R; ++r) {
    // the model's State makes its stream (and reads the device's capabilities) on the current device
    ROPEX_CUDA_CHECK(cudaSetDevice(o.devices[size_t(r)]));
    ranks.push_back(models.emplace_back(std::make_unique<Model>(ck, o.chunk)).get());
    streams.push_back(models.back()->ops().st->stream);
  }
  ring::Ring<T> ring(o.devices, o.transport, streams);
  ROPEX_CUDA_CHECK(cudaSetDevice(caller_device));
  std::vector<ring::RankIO<T>> io(static_cast<size_t>(R));
  const parallel::AttendAll<T> attend = [&](const std::vector<parallel::RankAttention<T>>& a,
                                            const attention::AttentionShape& whole) {
    for (int r = 0; r < R; ++r) io[size_t(r)] = {a[size_t(r)].q, a[size_t(r)].k, a[size_t(r)].v, a[size_t(r)].o, nullptr};
    ring.attention(io, whole);  // selects each rank's device in turn
    if (o.peak_bytes)
      for (int d : o.devices) {
        size_t free_b = 0, total_b = 0;
        ROPEX_CUDA_CHECK(cudaSetDevice(d));
        ROPEX_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        *o.peak_bytes = std::max(*o.peak_bytes, total_b - free_b);
      }
    ROPEX_CUDA_CHECK(cudaSetDevice(o.devices[0]));  // back to rank 0's, whose thread this is
  };
  const auto t0 = std::chrono::steady_clock::now();
  auto r = parallel::context_parallel_perplexity(ranks, tokens, po, attend,
                                                 [&](int rank) { ROPEX_CUDA_CHECK(cudaSetDevice(o.devices[size_t(rank)])); });
  for (int d : o.devices) {
    ROPEX_CUDA_CHECK(cudaSetDevice(d));
    ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
  }
  if (o.seconds) *o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ROPEX_CUDA_CHECK(cudaSetDevice(caller_device));
  return r;
}

}  // namespace ropex::cuda
