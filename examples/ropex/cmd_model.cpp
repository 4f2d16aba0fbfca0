// ropex logits | generate | perplexity: run a real checkpoint (HF directory, GGUF file or llama2.c
// .bin) on the CPU, optionally at another RoPE base or scaling than it was trained with. Text goes
// through the model's own tokenizer (a GGUF file's metadata, else the directory's tokenizer files).
#include "cli.hpp"
#include "model_cuda.hpp"  // --device cuda (cmd_model_cuda.cu)

#include <ropex/error.hpp>
#include <ropex/eval/perplexity.hpp>
#include <ropex/io/npy.hpp>
#include <ropex/io/tokens.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>
#include <ropex/backends/eigen/threads.hpp>
#include <ropex/model/sampling.hpp>
#include <ropex/tokenizer/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using ropex::model::Checkpoint;
using ropex::model::Llama;

// Options every model subcommand shares.
struct ModelOptions {
  std::string model;
  std::optional<double> rope_base;
  std::string rope_scaling;
  int threads = 0;
  std::string device = "cpu";
  bool fast = false;  // --fast: int8 activations against quantized blocks (CPU)
  ropex::cli::CudaOptions cuda;
};

void add_model_options(CLI::App* s, ModelOptions& o) {
  s->add_option("--model", o.model, "HF model directory, GGUF file or llama2.c .bin")->required();
  s->add_option("--rope-base", o.rope_base, "override the checkpoint's rope_theta");
  s->add_option("--rope-scaling", o.rope_scaling,
                "override its rope scaling, HF JSON, e.g. '{\"rope_type\":\"yarn\",\"factor\":4}'");
  s->add_option("--threads", o.threads, "CPU threads (default: all)")->check(CLI::Range(1, 4096));
  s->add_option("--device", o.device, "cpu (default) or cuda (one GPU; needs a build with -DROPEX_CUDA=ON)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  s->add_option("--dtype", o.cuda.dtype, "GPU precision: bf16 (default) or f32")->check(CLI::IsMember({"bf16", "f32"}));
  s->add_flag("--fast", o.fast,
              "CPU, quantized GGUF weights: int8 activations per 32-block against the blocks (llama.cpp's way; "
              "measured +0.25% perplexity on SmolLM2 Q4_1). Default: exact (blocks decoded to f32, f32 activations, "
              "as HF computes)");
}

// The CPU model with the requested arithmetic for quantized weights (exact unless --fast).
Llama<> cpu_model(const Checkpoint& ck, const ModelOptions& o) {
  using ropex::backends::QuantMode;
  return Llama<>(ck, 512, ropex::backends::ops<ropex::backends::cpu>{o.fast ? QuantMode::fast : QuantMode::exact});
}

using ropex::backends::set_cpu_threads;  // --threads: OpenMP, Eigen and OpenBLAS pools

Checkpoint open_model(const ModelOptions& o) {
  if (o.fast && o.device != "cpu")
    throw ropex::make_error("--fast", "", "is a CPU mode (quantized GGUF weights); --device cuda decodes the blocks to bf16/f32");
  set_cpu_threads(o.threads);
  Checkpoint ck = Checkpoint::open(o.model);
  std::optional<nlohmann::json> scaling;
  if (!o.rope_scaling.empty()) {
    try {
      scaling = nlohmann::json::parse(o.rope_scaling);
    } catch (const nlohmann::json::parse_error& e) {
      throw ropex::make_error("--rope-scaling", "", std::string("invalid JSON: ") + e.what());
    }
  }
  if (o.rope_base || scaling) ropex::apply_rope_override(ck.config().rope, o.rope_base, scaling ? &*scaling : nullptr);
  return ck;
}

std::vector<int32_t> read_token_file(const std::string& path, const char* flag) {
  if (!std::filesystem::exists(path)) throw ropex::make_error(flag, path, "no such file");
  return ropex::io::read_tokens(path);
}

// ---------------------------------------------------------------------------------------- logits
struct LogitsOptions {
  ModelOptions m;
  std::string tokens, out;
};

void run_logits(const LogitsOptions& o) {
  const Checkpoint ck = open_model(o.m);
  const auto tokens = read_token_file(o.tokens, "--tokens");
  if (tokens.empty()) throw ropex::make_error("--tokens", o.tokens, "no token ids");
  Llama<>::HostMatrix logits;  // [n, vocab]
  if (o.m.device == "cuda") {
    logits = ropex::cli::cuda_logits(ck, tokens, o.m.cuda);
  } else {
    Llama<> model = cpu_model(ck, o.m);
    auto cache = model.make_cache(int64_t(tokens.size()));
    logits = model.logits(tokens, cache);
  }
  ropex::io::write_npy_f32(o.out, logits.data(), {size_t(logits.rows()), size_t(logits.cols())});
}

// -------------------------------------------------------------------------------------- generate
struct GenerateOptions {
  ModelOptions m;
  std::string prompt;       // --prompt-tokens: a token file
  std::string prompt_text;  // --prompt: text, through the model directory's tokenizer
  int64_t steps = 0;
  double temperature = 0;
  uint64_t seed = 0;
  bool json = false, stop_at_eos = false;
};

using ropex::model::pick_token;  // greedy, or a draw from softmax(logits / T)

void run_generate(const GenerateOptions& o) {
  const Checkpoint ck = open_model(o.m);
  std::vector<int32_t> prompt;
  std::optional<ropex::tokenizer::Tokenizer> tok;
  if (!o.prompt.empty()) prompt = read_token_file(o.prompt, "--prompt-tokens");
  if (!o.prompt_text.empty()) {
    tok = ropex::tokenizer::Tokenizer::from_model(ck.path());
    prompt = tok->encode(o.prompt_text, /*add_special_tokens=*/true);  // BOS where the tokenizer adds one
    const int64_t vocab = ck.config().vocab_size;
    for (int32_t id : prompt)
      if (id >= vocab)
        throw ropex::make_error("--prompt", tok->file().string(),
                                "token id " + std::to_string(id) + " is outside the model's vocabulary (" + std::to_string(vocab) + ")");
  }
  if (prompt.empty() && ck.config().bos_token_id >= 0) prompt.push_back(int32_t(ck.config().bos_token_id));
  if (prompt.empty()) throw ropex::cli::UsageError("generate: the model has no bos_token_id; give --prompt or --prompt-tokens");
  // Stop at any of the config's eos ids (eos_token_id may be a list: Llama-3 instruct ends turns with eot).
  const auto& eos = ck.config().eos_token_ids;
  const auto is_eos = [&](int32_t t) { return std::find(eos.begin(), eos.end(), int64_t(t)) != eos.end(); };
  const int64_t vocab = ck.config().vocab_size;
  std::mt19937_64 rng(o.seed);
  std::vector<int32_t> out;
  const auto t0 = std::chrono::steady_clock::now();
  if (o.m.device == "cuda") {
    out = ropex::cli::cuda_generate(
        ck, prompt, o.steps, [&](const float* lg) { return pick_token(lg, vocab, o.temperature, rng); },
        [&](int32_t t) { return o.stop_at_eos && is_eos(t); }, o.m.cuda);
  } else {
    Llama<> model = cpu_model(ck, o.m);
    auto cache = model.make_cache(int64_t(prompt.size()) + o.steps);
    std::vector<float> logits(static_cast<size_t>(vocab));
    auto hidden = model.forward(prompt, cache);  // prefill; the last row predicts the first new token
    model.logits(hidden.data() + (hidden.rows() - 1) * hidden.cols(), 1, logits.data());
    for (int64_t step = 0; step < o.steps; ++step) {
      const int32_t next = pick_token(logits.data(), vocab, o.temperature, rng);
      out.push_back(next);
      if (o.stop_at_eos && is_eos(next)) break;
      if (step + 1 == o.steps) break;
      hidden = model.forward(std::span(&next, 1), cache);
      model.logits(hidden.data(), 1, logits.data());
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (tok) {  // --prompt: the continuation as text (special tokens and ids the tokenizer lacks dropped)
    const std::string text = tok->decode(out, /*skip_special=*/true, /*strict=*/false);
    if (o.json)
      std::cout << nlohmann::json{{"tokens", out}, {"text", text}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    else
      std::cout << text << "\n";
  } else if (o.json) {
    std::cout << nlohmann::json{{"tokens", out}}.dump() << "\n";
  } else {
    for (size_t i = 0; i < out.size(); ++i) std::cout << (i ? " " : "") << out[i];
    std::cout << "\n";
  }
  std::fprintf(stderr, "%zu tokens in %.3f s (%.1f tokens/s, prompt %zu)\n", out.size(), secs,
               secs > 0 ? double(out.size()) / secs : 0.0, prompt.size());
}

// ------------------------------------------------------------------------------------ perplexity
struct PerplexityCliOptions {
  ModelOptions m;
  std::string tokens, text, csv;
  int64_t context = 0, stride = 0, bins = 32;
  bool json = false, bos_windows = false;
  ropex::cli::ContextParallelCli cp;  // --gpus, --cp-transport
};

// --text: the model directory's tokenizer (tokenizer.json byte-level BPE, else tokenizer.model),
// with the config's BOS first, as a document starts in training.
std::vector<int32_t> tokenize_text(const std::string& text_path, const Checkpoint& ck) {
  const auto tok = ropex::tokenizer::Tokenizer::from_model(ck.path());
  std::ifstream in(text_path, std::ios::binary);
  if (!in) throw ropex::make_error("--text", text_path, "cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<int32_t> tokens;
  if (ck.format() == "gguf") {
    tokens = tok.encode(ss.str(), /*add_special_tokens=*/true);
  } else {
    if (ck.config().bos_token_id >= 0) tokens.push_back(int32_t(ck.config().bos_token_id));
    const auto ids = tok.encode(ss.str());
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  }
  std::fprintf(stderr, "--text: %zu tokens (%s)\n", tokens.size(), tok.file().string().c_str());
  return tokens;
}

void run_perplexity(const PerplexityCliOptions& o) {
  if (o.tokens.empty() == o.text.empty()) throw ropex::cli::UsageError("perplexity: give exactly one of --tokens or --text");
  const Checkpoint ck = open_model(o.m);
  const std::vector<int32_t> tokens = o.text.empty() ? read_token_file(o.tokens, "--tokens") : tokenize_text(o.text, ck);
  ropex::eval::PerplexityOptions po;
  po.context = o.context, po.stride = o.stride, po.bins = o.bins;
  if (o.bos_windows) po.window_bos = int32_t(ck.config().bos_token_id);
  const bool tty = isatty(STDERR_FILENO);
  if (tty)
    po.progress = [](int64_t done, int64_t total) {
      const int width = 40, filled = int(double(width) * double(done) / double(std::max<int64_t>(total, 1)));
      std::fprintf(stderr, "\r[%s%s] %lld/%lld tokens", std::string(size_t(filled), '#').c_str(),
                   std::string(size_t(width - filled), ' ').c_str(), (long long)done, (long long)total);
      std::fflush(stderr);
    };
  ropex::cli::CudaRunStats gpu;
  ropex::eval::PerplexityResult r;
  if (!o.cp.gpus.empty() && o.m.device != "cuda")
    throw ropex::make_error("--gpus", o.cp.gpus, "context parallel runs on GPUs: add --device cuda");
  if (!o.cp.gpus.empty()) {
    r = ropex::cli::cuda_cp_perplexity(ck, tokens, po, o.m.cuda, o.cp, &gpu);
  } else if (o.m.device == "cuda") {
    r = ropex::cli::cuda_perplexity(ck, tokens, po, o.m.cuda, &gpu);
  } else {
    Llama<> model = cpu_model(ck, o.m);
    r = ropex::eval::perplexity(model, tokens, po);
  }
  if (tty) std::fprintf(stderr, "\n");
  if (!o.csv.empty()) {
    std::ofstream csv(o.csv);
    if (!csv) throw ropex::make_error("--csv", o.csv, "cannot open for writing");
    csv << "position,count,mean_nll\n";
    for (size_t p = 0; p < r.position_count.size(); ++p)
      if (r.position_count[p])
        csv << p << "," << r.position_count[p] << "," << r.position_nll_sum[p] / double(r.position_count[p]) << "\n";
  }
  if (o.json) {
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& b : r.curve)
      curve.push_back({{"begin", b.begin}, {"end", b.end}, {"count", b.count}, {"mean_nll", b.mean_nll},
                       {"perplexity", b.count ? std::exp(b.mean_nll) : 0.0}});
    nlohmann::json j{{"perplexity", r.perplexity}, {"mean_nll", r.mean_nll}, {"tokens", r.tokens},
                     {"context", r.context}, {"stride", r.stride}, {"windows", r.windows}, {"curve", curve}};
    if (o.m.device == "cuda")
      j["gpu"] = {{"device", gpu.device}, {"dtype", o.m.cuda.dtype}, {"seconds", gpu.seconds}, {"peak_gb", gpu.peak_gb}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("perplexity %.4f over %lld tokens (context %lld, stride %lld, %lld windows)\n", r.perplexity,
                (long long)r.tokens, (long long)r.context, (long long)r.stride, (long long)r.windows);
    std::printf("%-18s %8s %10s %12s\n", "positions", "count", "mean_nll", "perplexity");
    for (const auto& b : r.curve)
      if (b.count)
        std::printf("[%6lld, %6lld)   %8lld %10.4f %12.4f\n", (long long)b.begin, (long long)b.end, (long long)b.count,
                    b.mean_nll, std::exp(b.mean_nll));
  }
}

}  // namespace

ROPEX_SUBCOMMAND(50, [](CLI::App& app) {
  auto o = std::make_shared<LogitsOptions>();
  auto* s = app.add_subcommand("logits", "run a checkpoint on token ids, write float32 logits [n, vocab] as .npy");
  add_model_options(s, o->m);
  s->add_option("--tokens", o->tokens, "token ids: 1-D .npy (int32/int64) or text of whitespace/comma separated ids")
      ->required();
  s->add_option("--out", o->out, "output .npy")->required();
  s->callback([o] { run_logits(*o); });
});

ROPEX_SUBCOMMAND(51, [](CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  auto* s = app.add_subcommand("generate", "continue a prompt with the KV cache (greedy at --temperature 0)");
  add_model_options(s, o->m);
  s->add_option("--prompt-tokens", o->prompt, "prompt token ids (default: just BOS)");
  s->add_option("--prompt", o->prompt_text,
                "prompt text, tokenized with the model's tokenizer (a GGUF file's own, or the directory's "
                "tokenizer.json / tokenizer.model); prints the continuation as text")
      ->excludes("--prompt-tokens");
  s->add_option("--steps", o->steps, "tokens to generate")->required()->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  s->add_option("--temperature", o->temperature, "0 = greedy (default), else sample softmax(logits/T)")
      ->check(CLI::Range(0.0, 1e6));
  s->add_option("--seed", o->seed, "sampling seed (default 0)");
  s->add_flag("--stop-at-eos", o->stop_at_eos, "stop after the model emits any of the config's eos_token_id (a GGUF file's eos, eot and eom ids)");
  s->add_flag("--json", o->json, "print {\"tokens\": [...]} (generated ids only; with --prompt also \"text\")");
  s->callback([o] { run_generate(*o); });
});

ROPEX_SUBCOMMAND(52, [](CLI::App& app) {
  auto o = std::make_shared<PerplexityCliOptions>();
  auto* s = app.add_subcommand("perplexity", "long-context perplexity over windows, with the per-position loss curve");
  add_model_options(s, o->m);
  s->add_option("--tokens", o->tokens, "token ids file (.npy or text)");
  s->add_option("--text", o->text, "text file, tokenized with the model's tokenizer (a GGUF file's own; a directory's tokenizer.json or tokenizer.model)");
  s->add_option("--context", o->context, "window length N")->required()->check(CLI::Range(int64_t(2), int64_t(1) << 30));
  s->add_option("--stride", o->stride, "window step S (default N)")->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  s->add_option("--bins", o->bins, "bins of the per-position curve (default 32)")->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  s->add_flag("--bos-windows", o->bos_windows,
              "start every window after the first with BOS (in place of its first token), like a document start");
  s->add_option("--gpus", o->cp.gpus,
                "--device cuda: split every window over GPUs (context parallel, ring attention): N for devices "
                "0..N-1, or a device list such as 0,1 (repeats put ranks on one GPU); non-overlapping windows only");
  s->add_option("--cp-transport", o->cp.transport, "with --gpus: how K/V move around the ring: nccl (default) or streams")
      ->check(CLI::IsMember({"nccl", "streams"}));
  s->add_option("--csv", o->csv, "write the unbinned per-position mean loss here");
  s->add_flag("--json", o->json, "print JSON: perplexity, tokens, context, stride, windows, curve");
  s->callback([o] { run_perplexity(*o); });
});
