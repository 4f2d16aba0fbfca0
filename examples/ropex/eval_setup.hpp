// What `ropex passkey` and `ropex check` share: the checkpoint with the rope settings asked for, a
// Scorer over it on the CPU or the GPU (eval/scorer.hpp), and the model's own tokenizer
// (eval/model_codec.hpp).
#pragma once
#include "cli.hpp"
#include "model_cuda.hpp"

#include <ropex/backends/eigen/threads.hpp>
#include <ropex/error.hpp>
#include <ropex/eval/model_codec.hpp>
#include <ropex/eval/passkey.hpp>
#include <ropex/eval/scorer.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>
#include <ropex/tokenizer/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>

namespace ropex::cli {

/// Options of the commands that evaluate a model (passkey, check).
struct EvalModelOptions {
  std::string model, tokenizer;
  int threads = 0;
  std::string device = "cpu";
  CudaOptions cuda;
  bool quiet = false;
};

inline void add_eval_model_options(CLI::App* s, EvalModelOptions& o) {
  s->add_option("--model", o.model, "HF model directory, GGUF file or llama2.c .bin")->required();
  s->add_option("--tokenizer", o.tokenizer,
                "tokenizer to use instead of the model's own: a directory, tokenizer.json, tokenizer.model or GGUF file");
  s->add_option("--threads", o.threads, "CPU threads (default: all)")->check(CLI::Range(1, 4096));
  s->add_option("--device", o.device,
                "cpu (default) or cuda (one GPU, one sequence per forward: the CUDA model has no batch dimension)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  s->add_option("--dtype", o.cuda.dtype, "GPU precision: bf16 (default) or f32")->check(CLI::IsMember({"bf16", "f32"}));
  s->add_flag("--quiet", o.quiet, "no progress lines on stderr");
}

/// `--rope-scaling` text as JSON (one clear line when it is not).
inline nlohmann::json parse_rope_scaling(const std::string& text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw make_error("--rope-scaling", text, std::string("invalid JSON: ") + e.what());
  }
}

/// A scorer on the chosen device; the checkpoint must outlive it (rope settings are read from
/// ck.config() at every forward, so changing them between calls takes effect).
inline std::unique_ptr<eval::Scorer> make_scorer(const model::Checkpoint& ck, const EvalModelOptions& o) {
  if (o.device == "cuda") return cuda_scorer(ck, o.cuda);
  backends::set_cpu_threads(o.threads);
  using Cpu = model::Llama<>;
  return std::make_unique<eval::OwningScorer<Cpu>>(64, ck, 512, backends::ops<backends::cpu>{backends::QuantMode::exact});
}

using eval::model_codec;
using eval::ModelCodec;

}  // namespace ropex::cli
