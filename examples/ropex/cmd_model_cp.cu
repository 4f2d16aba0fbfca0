// `ropex perplexity --device cuda --gpus N`: context-parallel perplexity (see model_cuda.hpp and
// include/ropex/backends/cuda/cp_perplexity.cuh), compiled where NCCL was found.
#include "model_cuda.hpp"

#include <ropex/backends/cuda/cp_perplexity.cuh>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace ropex::cli {

namespace {

// "4": devices 0..3; "0,1,3" or "0,0": that list (repeats: ranks sharing a GPU).
std::vector<int> parse_gpus(const std::string& spec) {
  const auto bad = [&](const std::string& why) { return make_error("--gpus", spec, why); };
  std::vector<int> out;
  size_t at = 0;
  while (at <= spec.size()) {
    const size_t comma = std::min(spec.find(',', at), spec.size());
    const std::string item = spec.substr(at, comma - at);
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 6)
      throw bad("expected a GPU count or a comma-separated list of device ids");
    out.push_back(std::stoi(item));
    at = comma + 1;
  }
  if (spec.find(',') != std::string::npos) return out;
  if (out[0] < 1) throw bad("needs at least one GPU");
  std::vector<int> all(static_cast<size_t>(out[0]));
  for (int i = 0; i < out[0]; ++i) all[size_t(i)] = i;
  return all;
}

}  // namespace

eval::PerplexityResult cuda_cp_perplexity(const model::Checkpoint& ck, std::span<const int32_t> tokens,
                                          eval::PerplexityOptions po, const CudaOptions& o,
                                          const ContextParallelCli& cp, CudaRunStats* stats) {
  if (o.dtype != "bf16") throw make_error("--dtype", o.dtype, "context parallel (--gpus) runs bf16 only");
  cuda::ContextParallelOptions cpo;
  cpo.devices = parse_gpus(cp.gpus);
  cpo.chunk = o.chunk;
  if (cp.transport == "streams") cpo.transport = cuda::ring::Transport::streams;
  else if (cp.transport != "nccl") throw make_error("--cp-transport", cp.transport, "must be nccl or streams");
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;  // no driver / no device: refused below
  const int ranks = static_cast<int>(cpo.devices.size());
  if (count == 0) throw make_error("--gpus", cp.gpus, "no GPU visible");
  if (cp.gpus.find(',') == std::string::npos && ranks > count)
    throw make_error("--gpus", cp.gpus, std::to_string(ranks) + " GPUs asked, " + std::to_string(count) + " visible");
  cuda::check_devices(cpo.devices, "--gpus");
  const int64_t window = std::min<int64_t>(po.context, int64_t(tokens.size()));
  if (window < 2 * int64_t(ranks))
    throw make_error("--gpus", cp.gpus,
                     "a window of " + std::to_string(window) + " tokens cannot be split over " + std::to_string(ranks) +
                         " ranks (each holds 2 chunks: needs >= " + std::to_string(2 * ranks) + ")");
  if (po.stride != 0 && po.stride != po.context)
    throw make_error("--stride", std::to_string(po.stride),
                     "context parallel (--gpus) runs non-overlapping windows only (stride = context)");
  po.logits_rows = std::max<int64_t>(64, (int64_t(1) << 27) / ck.config().vocab_size);  // as the one-GPU run
  size_t peak = 0;
  double seconds = 0;
  cpo.peak_bytes = &peak, cpo.seconds = &seconds;
  auto r = cuda::context_parallel_perplexity(ck, tokens, po, cpo);
  if (stats) {
    cudaDeviceProp p{};
    ROPEX_CUDA_CHECK(cudaGetDeviceProperties(&p, cpo.devices[0]));
    std::string devs;
    for (int d : cpo.devices) devs += (devs.empty() ? "" : ",") + std::to_string(d);
    stats->device = std::string(p.name) + " (context parallel: " + std::to_string(ranks) + " ranks on devices " + devs +
                    ", " + cp.transport + ")";
    stats->seconds = seconds;
    stats->peak_gb = double(peak) * 1e-9;
  }
  return r;
}

}  // namespace ropex::cli
