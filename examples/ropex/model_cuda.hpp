// `--device cuda` for ropex logits | generate | perplexity: the GPU half of cmd_model.cpp lives in
// cmd_model_cuda.cu (compiled by nvcc when ropex is configured with -DROPEX_CUDA=ON, which
// defines ROPEX_CLI_HAS_CUDA); a CPU-only build gets versions that say CUDA was not compiled in.
#pragma once
#include <ropex/error.hpp>
#include <ropex/eval/perplexity.hpp>
#include <ropex/eval/scorer.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ropex::cli {

/// GPU settings from the command line.
struct CudaOptions {
  std::string dtype = "bf16";  ///< bf16 (weights, activations, KV cache) or f32 (the parity path)
  int64_t chunk = 8192;        ///< tokens through a layer at a time
};

/// What a GPU perplexity run measured (printed with the result).
struct CudaRunStats {
  std::string device;   ///< the card's name
  double seconds = 0;   ///< forward + loss, all windows
  double peak_gb = 0;   ///< most device memory in use (GB, 1e9 bytes), weights included
};

/// Context parallelism (perplexity --gpus): each window split zigzag over ranks, ring attention.
struct ContextParallelCli {
  std::string gpus;               ///< "N" (devices 0..N-1) or "0,1,..." (repeats: ranks on one GPU)
  std::string transport = "nccl";  ///< nccl or streams
};

#if defined(ROPEX_CLI_HAS_CUDA) && defined(ROPEX_CLI_HAS_NCCL)
/// eval::perplexity with every window split over the ranks of `cp` (bf16; non-overlapping windows).
eval::PerplexityResult cuda_cp_perplexity(const model::Checkpoint& ck, std::span<const int32_t> tokens,
                                          eval::PerplexityOptions po, const CudaOptions& o,
                                          const ContextParallelCli& cp, CudaRunStats* stats);
#else
inline eval::PerplexityResult cuda_cp_perplexity(const model::Checkpoint&, std::span<const int32_t>,
                                                 eval::PerplexityOptions, const CudaOptions&,
                                                 const ContextParallelCli& cp, CudaRunStats*) {
#if defined(ROPEX_CLI_HAS_CUDA)
  throw make_error("--gpus", cp.gpus, "this ropex was built without NCCL (the CUDA toolkit's, or NCCL_HOME at configure)");
#else
  throw make_error("--gpus", cp.gpus, "this ropex was built without CUDA (configure with -DROPEX_CUDA=ON)");
#endif
}
#endif

#if defined(ROPEX_CLI_HAS_CUDA)
/// logits [n, vocab] (host) of `tokens` on the GPU.
model::Llama<>::HostMatrix cuda_logits(const model::Checkpoint& ck, std::span<const int32_t> tokens,
                                       const CudaOptions& o);
/// Prefill `prompt`, then `steps` tokens chosen by pick(logits row); stops early when stop(token).
std::vector<int32_t> cuda_generate(const model::Checkpoint& ck, std::span<const int32_t> prompt, int64_t steps,
                                   const std::function<int32_t(const float*)>& pick,
                                   const std::function<bool(int32_t)>& stop, const CudaOptions& o);
/// eval::perplexity on the GPU: layer-streamed windows, losses computed on the device; per-layer
/// progress on stderr for windows of 32K tokens and more.
eval::PerplexityResult cuda_perplexity(const model::Checkpoint& ck, std::span<const int32_t> tokens,
                                       eval::PerplexityOptions po, const CudaOptions& o, CudaRunStats* stats);
/// A Scorer (eval/scorer.hpp) over the model on the GPU, for passkey and check; one sequence per
/// forward (the CUDA model API has no batch dimension).
std::unique_ptr<eval::Scorer> cuda_scorer(const model::Checkpoint& ck, const CudaOptions& o);
#else
[[noreturn]] inline void no_cuda() {
  throw make_error("--device", "cuda", "this ropex was built without CUDA (configure with -DROPEX_CUDA=ON)");
}
inline model::Llama<>::HostMatrix cuda_logits(const model::Checkpoint&, std::span<const int32_t>, const CudaOptions&) {
  no_cuda();
}
inline std::vector<int32_t> cuda_generate(const model::Checkpoint&, std::span<const int32_t>, int64_t,
                                          const std::function<int32_t(const float*)>&,
                                          const std::function<bool(int32_t)>&, const CudaOptions&) {
  no_cuda();
}
inline eval::PerplexityResult cuda_perplexity(const model::Checkpoint&, std::span<const int32_t>, eval::PerplexityOptions,
                                              const CudaOptions&, CudaRunStats*) {
  no_cuda();
}
inline std::unique_ptr<eval::Scorer> cuda_scorer(const model::Checkpoint&, const CudaOptions&) { no_cuda(); }
#endif

}  // namespace ropex::cli
