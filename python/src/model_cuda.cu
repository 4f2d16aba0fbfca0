// The GPU half of ropex.Model(device="cuda"), compiled by nvcc when the module is built with
// ROPEX_CUDA=ON: the Llama forward over ops<cuda_bf16> or ops<cuda_f32>, with the CLI's settings
// (examples/ropex/cmd_model_cuda.cu): 8192-token chunks, lm_head on 2^27 logits at a time.
#include "runner.hpp"

#include <ropex/backends/cuda/ops.cuh>
#include <ropex/error.hpp>

#include <algorithm>

namespace ropex_py {

std::unique_ptr<Runner> make_cuda_runner(const ropex::model::Checkpoint& ck, const std::string& dtype) {
  constexpr int64_t chunk = 8192;
  const int64_t logits_rows = std::max<int64_t>(64, (int64_t(1) << 27) / ck.config().vocab_size);
  if (dtype == "f32") return std::make_unique<LlamaRunner<ropex::backends::cuda_f32>>(ck, chunk, logits_rows);
  if (dtype == "bf16") return std::make_unique<LlamaRunner<ropex::backends::cuda_bf16>>(ck, chunk, logits_rows);
  throw ropex::make_error("Model", "dtype", "must be \"bf16\" or \"f32\" on cuda, got \"" + dtype + "\"");
}

}  // namespace ropex_py
