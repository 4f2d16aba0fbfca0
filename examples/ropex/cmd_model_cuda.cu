// The GPU half of `ropex logits | generate | perplexity --device cuda` (see model_cuda.hpp): the
// same Llama forward() and eval::perplexity as the CPU, over ops<cuda_bf16> or ops<cuda_f32>.
#include "model_cuda.hpp"

#include <ropex/backends/cuda/ops.cuh>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

namespace ropex::cli {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Device memory in use now (bytes), for the peak-memory report.
size_t device_bytes_used() {
  size_t free_b = 0, total_b = 0;
  ROPEX_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b - free_b;
}

std::string device_name() {
  int dev = 0;
  cudaDeviceProp p{};
  ROPEX_CUDA_CHECK(cudaGetDevice(&dev));
  ROPEX_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return p.name;
}

// Calls f with a model of the requested precision.
template <class F>
auto with_model(const model::Checkpoint& ck, const CudaOptions& o, F&& f) {
  if (o.dtype == "f32") {
    model::Llama<backends::cuda_f32> m(ck, o.chunk);
    return f(m);
  }
  if (o.dtype != "bf16") throw make_error("--dtype", o.dtype, "must be bf16 or f32");
  model::Llama<backends::cuda_bf16> m(ck, o.chunk);
  return f(m);
}

}  // namespace

model::Llama<>::HostMatrix cuda_logits(const model::Checkpoint& ck, std::span<const int32_t> tokens,
                                       const CudaOptions& o) {
  return with_model(ck, o, [&](auto& m) {
    auto cache = m.make_cache(int64_t(tokens.size()));
    return m.logits(tokens, cache);
  });
}

std::vector<int32_t> cuda_generate(const model::Checkpoint& ck, std::span<const int32_t> prompt, int64_t steps,
                                   const std::function<int32_t(const float*)>& pick,
                                   const std::function<bool(int32_t)>& stop, const CudaOptions& o) {
  return with_model(ck, o, [&](auto& m) {
    auto cache = m.make_cache(int64_t(prompt.size()) + steps);
    std::vector<float> logits(size_t(ck.config().vocab_size));
    std::vector<int32_t> out;
    auto hidden = m.forward(prompt, cache);  // prefill; the last row predicts the first new token
    m.logits(hidden.data() + (hidden.rows() - 1) * hidden.cols(), 1, logits.data());
    for (int64_t step = 0; step < steps; ++step) {
      const int32_t next = pick(logits.data());
      out.push_back(next);
      if (stop(next) || step + 1 == steps) break;
      hidden = m.forward(std::span(&next, 1), cache);
      m.logits(hidden.data(), 1, logits.data());
    }
    return out;
  });
}

eval::PerplexityResult cuda_perplexity(const model::Checkpoint& ck, std::span<const int32_t> tokens,
                                       eval::PerplexityOptions po, const CudaOptions& o, CudaRunStats* stats) {
  size_t peak = device_bytes_used();
  const auto t_load = Clock::now();
  return with_model(ck, o, [&](auto& m) {
    std::fprintf(stderr, "weights on %s (%s): %.1f s, %.2f GB in use\n", device_name().c_str(), o.dtype.c_str(),
                 seconds_since(t_load), double(device_bytes_used()) * 1e-9);
    // Losses straight from the device: 2^27 logits (512 MB) per lm_head call.
    po.logits_rows = std::max<int64_t>(64, (int64_t(1) << 27) / ck.config().vocab_size);
    const int64_t window = std::min<int64_t>(po.context, int64_t(tokens.size()));
    const auto t0 = Clock::now();
    auto t_window = t0;
    int64_t window_no = 0;
    m.on_layer([&](int64_t done, int64_t layers) {
      peak = std::max(peak, device_bytes_used());
      if (done == 1) ++window_no;
      if (window >= 32768) {
        ROPEX_CUDA_CHECK(cudaDeviceSynchronize());  // honest per-layer times (long layers: cheap)
        const double s = seconds_since(t_window);
        std::fprintf(stderr, "window %lld: layer %lld/%lld  %.1f s (%.1f s/layer, ~%.0f s per window), %.2f GB peak\n",
                     (long long)window_no, (long long)done, (long long)layers, s, s / double(done),
                     s / double(done) * double(layers), double(peak) * 1e-9);
        if (done == layers) t_window = Clock::now();
      }
    });
    auto user_progress = po.progress;
    po.progress = [&](int64_t done, int64_t total) {
      t_window = Clock::now();
      if (user_progress) user_progress(done, total);
    };
    const auto r = eval::perplexity(m, tokens, po);
    ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
    if (stats) {
      stats->device = device_name();
      stats->seconds = seconds_since(t0);
      stats->peak_gb = double(std::max(peak, device_bytes_used())) * 1e-9;
    }
    return r;
  });
}

std::unique_ptr<eval::Scorer> cuda_scorer(const model::Checkpoint& ck, const CudaOptions& o) {
  // Losses from the device as cuda_perplexity computes them: 2^27 logits per lm_head call.
  const int64_t rows = std::max<int64_t>(64, (int64_t(1) << 27) / ck.config().vocab_size);
  if (o.dtype == "f32") return std::make_unique<eval::OwningScorer<model::Llama<backends::cuda_f32>>>(rows, ck, o.chunk);
  if (o.dtype != "bf16") throw make_error("--dtype", o.dtype, "must be bf16 or f32");
  return std::make_unique<eval::OwningScorer<model::Llama<backends::cuda_bf16>>>(rows, ck, o.chunk);
}

}  // namespace ropex::cli
