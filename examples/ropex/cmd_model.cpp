// ropex logits | generate | perplexity: run a real checkpoint (HF directory, GGUF file or llama2.c
// .bin) on the CPU, optionally at another RoPE base or scaling than it was trained with. Text goes
// through the model's own tokenizer (a GGUF file's metadata, else the directory's tokenizer files).
#include "cli.hpp"
#include "model_cuda.hpp"  // --device cuda (cmd_model_cuda.cu)
#include "vocab.hpp"

#include <ropex/error.hpp>
#include <ropex/eval/perplexity.hpp>
#include <ropex/io/json_file.hpp>
#include <ropex/io/memory_budget.hpp>
#include <ropex/io/npy.hpp>
#include <ropex/io/progress.hpp>
#include <ropex/io/output_file.hpp>
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
  std::string subcommand;  // for errors: "perplexity needs a model path"
  CLI::Option *o_rope_base = nullptr, *o_rope_scaling = nullptr, *o_threads = nullptr, *o_device = nullptr,
              *o_dtype = nullptr;
  std::optional<double> rope_base;
  std::string rope_scaling;
  int threads = 0;
  std::string device = "cpu";
  bool fast = false;  // --fast: int8 activations against quantized blocks (CPU)
  bool quiet = false;  // --quiet: no progress on stderr
  bool no_weight_check = false;  // --no-weight-check: skip the load-time NaN/inf scan of the weights
  ropex::cli::CudaOptions cuda;
};

void add_model_options(CLI::App* s, ModelOptions& o) {
  o.subcommand = s->get_name();
  s->add_option("--model", o.model, "HF model directory, GGUF file or llama2.c .bin (a preset name has no weights)")->required();
  o.o_rope_base = s->add_option("--rope-base", o.rope_base, "override the checkpoint's rope_theta");
  o.o_rope_scaling = s->add_option("--rope-scaling", o.rope_scaling,
                "override its rope scaling, HF JSON, e.g. '{\"rope_type\":\"yarn\",\"factor\":4}'");
  o.o_threads = s->add_option("--threads", o.threads, "CPU threads (default: all)")->check(CLI::Range(1, 4096));
  o.o_device = s->add_option("--device", o.device, "cpu (default) or cuda (one GPU; needs a build with -DROPEX_CUDA=ON)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  o.o_dtype = s->add_option("--dtype", o.cuda.dtype, "GPU precision: bf16 (default) or f32")->check(CLI::IsMember({"bf16", "f32"}));
  s->add_flag("--fast", o.fast,
              "CPU, quantized GGUF weights: int8 activations per 32-block against the blocks (llama.cpp's way; "
              "measured +0.25% perplexity on SmolLM2 Q4_1). Default: exact (blocks decoded to f32, f32 activations, "
              "as HF computes)");
  s->add_flag("--quiet", o.quiet, "no progress on stderr");
  s->add_flag("--no-weight-check", o.no_weight_check,
              "skip the load-time check that every weight is finite (it names a tensor holding NaN/inf; "
              "costs one read of the weights)");
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
  ropex::cli::resolve_model_path(o.model, o.subcommand);
  set_cpu_threads(o.threads);
  Checkpoint ck = Checkpoint::open(o.model);
  std::optional<nlohmann::json> scaling;  // strict: depth-limited, no NUL, no duplicate keys
  if (!o.rope_scaling.empty()) scaling = ropex::parse_json_arg(o.rope_scaling, "--rope-scaling");
  if (o.rope_base || scaling) ropex::apply_rope_override(ck.config().rope, o.rope_base, scaling ? &*scaling : nullptr);
  if (!o.no_weight_check) ck.check_weights_finite();
  return ck;
}

using ojson = nlohmann::ordered_json;

// The model options in a JSON "inputs" object: each value and where it came from (the RoPE
// settings as the run used them: the flag's, or the checkpoint's own).
ojson model_inputs_json(const ModelOptions& o, const Checkpoint& ck) {
  using ropex::cli::flag_origin;
  using ropex::cli::input_json;
  const auto& rope = ck.config().rope;
  const std::string from_ck = ck.path().string() + " (the checkpoint's)";
  ojson j;
  j["model"] = ropex::cli::resolve_model_path(o.model, o.subcommand).json();
  j["rope_base"] = input_json(rope.base, o.rope_base ? "flag --rope-base" : from_ck);
  j["rope_scaling"] = input_json(ropex::to_string(rope.type), o.rope_scaling.empty() ? from_ck : "flag --rope-scaling");
  j["rope_factor"] = input_json(rope.factor, o.rope_scaling.empty() ? from_ck : "flag --rope-scaling");
  j["device"] = input_json(o.device, flag_origin(o.o_device, "default cpu"));
  j["dtype"] = o.device == "cuda" ? input_json(o.cuda.dtype, flag_origin(o.o_dtype, "default bf16"))
                                  : input_json(nullptr, "not used (--device cpu)");
  j["threads"] = input_json(o.threads ? ojson(o.threads) : ojson(nullptr), flag_origin(o.o_threads, "default: all cores"));
  j["fast"] = input_json(o.fast, o.fast ? "flag --fast" : "default off (exact)");
  return j;
}

// The files a run reads, which no output may overwrite.
std::vector<std::filesystem::path> run_inputs(const ModelOptions& o, std::initializer_list<std::string> files) {
  auto v = ropex::cli::model_files(o.model);
  for (const auto& f : files)
    if (!f.empty()) v.emplace_back(f);
  return v;
}

// Refuses, naming `flag`, a CPU forward whose KV cache and activations (plus `extra` bytes) would
// not fit in the memory available now.
void require_forward_memory(const char* flag, const Checkpoint& ck, int64_t window, int64_t cache_tokens,
                            bool layer_streamed, double extra, const char* what) {
  const auto& c = ck.config();
  ropex::io::require_memory(
      flag,
      ropex::io::forward_bytes(double(window), double(cache_tokens), layer_streamed ? 1.0 : double(c.num_hidden_layers),
                               double(c.num_key_value_heads * c.head_dim), double(c.hidden_size), double(c.head_dim)) +
          extra,
      what);
}

// Stops with the likely cause when a forward's logits hold NaN or inf.
void check_logits_finite(const float* logits, size_t n, int64_t vocab, const Checkpoint& ck) {
  if (const size_t i = ropex::model::first_nonfinite(logits, n); i < n)
    throw ropex::make_error("logits", "", "not finite (NaN or inf) at token " + std::to_string(i / size_t(vocab)) +
                                              ": " + ropex::model::nonfinite_cause(ck.config(), ck.weights_checked()));
}

std::vector<int32_t> read_token_file(const std::string& path, const char* flag, int64_t vocab) {
  std::error_code ec;  // the throwing overload reports a symlink loop as a bare "filesystem error"
  if (!std::filesystem::exists(path, ec)) throw ropex::make_error(flag, path, "no such file");
  auto ids = ropex::io::read_tokens(path);
  for (size_t i = 0; i < ids.size(); ++i)  // named here: the forward's own check knows no file
    if (ids[i] < 0 || ids[i] >= vocab)
      throw ropex::make_error(flag, path, "id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                                              " is outside the vocabulary [0, " + std::to_string(vocab) + ") of the model");
  return ids;
}

// ---------------------------------------------------------------------------------------- logits
struct LogitsOptions {
  ModelOptions m;
  std::string tokens, out;
  bool json = false;
};

void run_logits(const LogitsOptions& o) {
  const Checkpoint ck = open_model(o.m);
  ropex::io::refuse_if_input(o.out, "--out", run_inputs(o.m, {o.tokens}));  // before the forward, not after
  const auto tokens = read_token_file(o.tokens, "--tokens", ck.config().vocab_size);
  if (tokens.empty()) throw ropex::make_error("--tokens", o.tokens, "no token ids");
  Llama<>::HostMatrix logits;  // [n, vocab]
  if (o.m.device == "cuda") {
    logits = ropex::cli::cuda_logits(ck, tokens, o.m.cuda);
  } else {
    require_forward_memory("--tokens", ck, int64_t(tokens.size()), int64_t(tokens.size()), false,
                           4.0 * double(tokens.size()) * double(ck.config().vocab_size), "the forward and its logits");
    Llama<> model = cpu_model(ck, o.m);
    auto cache = model.make_cache(int64_t(tokens.size()));
    logits = model.logits(tokens, cache);
  }
  check_logits_finite(logits.data(), size_t(logits.size()), ck.config().vocab_size, ck);
  ropex::io::write_npy_f32(o.out, logits.data(), {size_t(logits.rows()), size_t(logits.cols())}, "--out",
                           run_inputs(o.m, {o.tokens}));
  if (o.json) {
    ojson j;
    j["out"] = o.out;
    j["shape"] = {logits.rows(), logits.cols()};
    j["inputs"] = model_inputs_json(o.m, ck);
    j["inputs"]["tokens"] = ropex::cli::input_json(o.tokens, "flag --tokens");
    std::cout << j.dump(2) << "\n";
  }
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
  CLI::Option *o_temperature = nullptr, *o_seed = nullptr;
};

using ropex::model::pick_token;  // greedy, or a draw from softmax(logits / T)

void run_generate(const GenerateOptions& o) {
  const Checkpoint ck = open_model(o.m);
  std::vector<int32_t> prompt;
  std::optional<ropex::tokenizer::Tokenizer> tok;
  if (!o.prompt.empty()) prompt = read_token_file(o.prompt, "--prompt-tokens", ck.config().vocab_size);
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
  std::optional<std::chrono::steady_clock::time_point> t_decode;  // after set-up and prefill (CPU)
  // Progress: a line every tenth of the steps (a redrawn line on a terminal).
  ropex::io::Progress progress("generate", o.steps, "tokens", !o.m.quiet);
  int64_t picked = 0;
  const int64_t every = std::max<int64_t>(1, o.steps / 10);
  const auto pick = [&](const float* lg) {
    check_logits_finite(lg, size_t(vocab), vocab, ck);
    const int32_t t = pick_token(lg, vocab, o.temperature, rng);
    if (++picked % every == 0 || picked == o.steps) progress.update(picked);
    return t;
  };
  if (o.m.device == "cuda") {
    out = ropex::cli::cuda_generate(
        ck, prompt, o.steps, pick,
        [&](int32_t t) { return o.stop_at_eos && is_eos(t); }, o.m.cuda);
  } else {
    require_forward_memory("--steps", ck, int64_t(prompt.size()), int64_t(prompt.size()) + o.steps, false, 0,
                           "the KV cache of the prompt and the steps");
    Llama<> model = cpu_model(ck, o.m);
    auto cache = model.make_cache(int64_t(prompt.size()) + o.steps);
    std::vector<float> logits(static_cast<size_t>(vocab));
    auto hidden = model.forward(prompt, cache);  // prefill; the last row predicts the first new token
    model.logits(hidden.data() + (hidden.rows() - 1) * hidden.cols(), 1, logits.data());
    t_decode = std::chrono::steady_clock::now();
    for (int64_t step = 0; step < o.steps; ++step) {
      const int32_t next = pick(logits.data());
      out.push_back(next);
      if (o.stop_at_eos && is_eos(next)) break;
      if (step + 1 == o.steps) break;
      hidden = model.forward(std::span(&next, 1), cache);
      model.logits(hidden.data(), 1, logits.data());
    }
  }
  progress.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.json) {  // one key set: "text" is null without --prompt
    using ropex::cli::flag_origin;
    using ropex::cli::input_json;
    ojson j;
    j["tokens"] = out;
    // --prompt: the continuation as text (special tokens and ids the tokenizer lacks dropped)
    j["text"] = tok ? ojson(tok->decode(out, /*skip_special=*/true, /*strict=*/false)) : ojson(nullptr);
    j["prompt_tokens"] = prompt.size();
    ojson in = model_inputs_json(o.m, ck);
    in["prompt"] = o.prompt_text.empty() ? input_json(nullptr, "not given") : input_json(o.prompt_text, "flag --prompt");
    in["prompt_tokens"] = o.prompt.empty() ? input_json(nullptr, o.prompt_text.empty() ? "not given (BOS only)" : "not given")
                                           : input_json(o.prompt, "flag --prompt-tokens");
    in["steps"] = input_json(o.steps, "flag --steps");
    in["temperature"] = input_json(o.temperature, flag_origin(o.o_temperature, "default 0 (greedy)"));
    in["seed"] = input_json(o.seed, flag_origin(o.o_seed, "default 0"));
    in["stop_at_eos"] = input_json(o.stop_at_eos, o.stop_at_eos ? "flag --stop-at-eos" : "default off");
    j["inputs"] = in;
    std::cout << j.dump(-1, ' ', false, ojson::error_handler_t::replace) << "\n";
  } else if (tok) {  // --prompt: the continuation as text
    std::cout << tok->decode(out, /*skip_special=*/true, /*strict=*/false) << "\n";
  } else {
    for (size_t i = 0; i < out.size(); ++i) std::cout << (i ? " " : "") << out[i];
    std::cout << "\n";
  }
  // The rate of the decode steps alone where they are timed apart (the CPU path: what llama-bench's
  // tg figure measures); else of the whole call, model set-up and prefill included.
  if (t_decode) {  // the first token comes from the prefill's logits; each further one is a step
    const double dec = std::chrono::duration<double>(std::chrono::steady_clock::now() - *t_decode).count();
    const size_t steps = out.empty() ? 0 : out.size() - 1;
    std::fprintf(stderr, "%zu tokens: %zu decode steps in %.3f s (%.1f tokens/s), prompt %zu tokens and model set-up %.3f s\n",
                 out.size(), steps, dec, dec > 0 ? double(steps) / dec : 0.0, prompt.size(), secs - dec);
  } else {
    std::fprintf(stderr, "%zu tokens in %.3f s (%.1f tokens/s, prompt %zu, set-up included)\n", out.size(), secs,
                 secs > 0 ? double(out.size()) / secs : 0.0, prompt.size());
  }
}

// ------------------------------------------------------------------------------------ perplexity
struct PerplexityCliOptions {
  ModelOptions m;
  std::string tokens, text, out;
  int64_t context = 0, stride = 0, bins = 32;
  bool json = false, csv = false, bos_windows = false;
  CLI::Option *o_stride = nullptr, *o_bins = nullptr;
  ropex::cli::ContextParallelCli cp;  // --gpus, --cp-transport
};

// The unbinned per-position loss curve (--csv to stdout, --out to a file).
std::string position_csv(const ropex::eval::PerplexityResult& r) {
  std::ostringstream csv;
  csv << "position,count,mean_nll\n";
  for (size_t p = 0; p < r.position_count.size(); ++p)
    if (r.position_count[p])
      csv << p << "," << r.position_count[p] << "," << r.position_nll_sum[p] / double(r.position_count[p]) << "\n";
  return csv.str();
}

// --text: the model directory's tokenizer (tokenizer.json byte-level BPE, else tokenizer.model),
// with the config's BOS first, as a document starts in training.
std::vector<int32_t> tokenize_text(const std::string& text_path, const Checkpoint& ck) {
  const auto tok = ropex::tokenizer::Tokenizer::from_model(ck.path());
  std::string text;
  try {  // regular files only, opened non-blocking: a FIFO or a directory is refused, not waited on
    text = ropex::read_regular_file(text_path);
  } catch (const ropex::Error& e) {
    throw ropex::make_error("--text", "", e.what());
  }
  std::vector<int32_t> tokens;
  if (ck.format() == "gguf") {
    tokens = tok.encode(text, /*add_special_tokens=*/true);
  } else {
    if (ck.config().bos_token_id >= 0) tokens.push_back(int32_t(ck.config().bos_token_id));
    const auto ids = tok.encode(text);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  }
  if (tokens.size() < 2)
    throw ropex::make_error("--text", text_path, "gives " + std::to_string(tokens.size()) +
                                                     " tokens; perplexity needs at least 2 (is the file empty?)");
  const int64_t vocab = ck.config().vocab_size;
  for (int32_t id : tokens)
    if (id < 0 || id >= vocab)
      throw ropex::make_error(tok.file().string(), "", "gives token id " + std::to_string(id) +
                                                           ", outside the model's vocabulary of " + std::to_string(vocab) +
                                                           " (tokenizer and model do not match)");
  std::fprintf(stderr, "--text: %zu tokens (%s)\n", tokens.size(), tok.file().string().c_str());
  return tokens;
}

void run_perplexity(const PerplexityCliOptions& o) {
  if (o.tokens.empty() == o.text.empty()) throw ropex::cli::UsageError("perplexity: give exactly one of --tokens or --text");
  const Checkpoint ck = open_model(o.m);
  if (!o.out.empty()) ropex::io::refuse_if_input(o.out, "--out", run_inputs(o.m, {o.tokens, o.text}));
  const std::vector<int32_t> tokens = o.text.empty() ? read_token_file(o.tokens, "--tokens", ck.config().vocab_size) : tokenize_text(o.text, ck);
  ropex::eval::PerplexityOptions po;
  po.context = o.context, po.stride = o.stride, po.bins = o.bins;
  if (o.bos_windows) po.window_bos = int32_t(ck.config().bos_token_id);
  po.nonfinite_hint = ropex::model::nonfinite_cause(ck.config(), ck.weights_checked());
  ropex::io::Progress progress("perplexity", int64_t(tokens.size()) - 1, "tokens", !o.m.quiet);
  int64_t windows = 0;
  po.progress = [&](int64_t done, int64_t total) {
    progress.set_total(total);
    progress.update(done, "window " + std::to_string(++windows));
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
    const int64_t window = std::min<int64_t>(o.context, int64_t(tokens.size()));
    require_forward_memory("--context", ck, window, window, true, 0, "a window's KV cache and activations");
    Llama<> model = cpu_model(ck, o.m);
    r = ropex::eval::perplexity(model, tokens, po);
  }
  progress.finish();
  if (!o.out.empty()) ropex::io::write_file_atomic(o.out, "--out", position_csv(r), run_inputs(o.m, {o.tokens, o.text}));
  if (o.csv) {
    std::cout << position_csv(r);
  } else if (o.json) {
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& b : r.curve)
      curve.push_back({{"begin", b.begin}, {"end", b.end}, {"count", b.count}, {"mean_nll", b.mean_nll},
                       {"perplexity", b.count ? std::exp(b.mean_nll) : 0.0}});
    nlohmann::json j{{"perplexity", r.perplexity}, {"mean_nll", r.mean_nll}, {"tokens", r.tokens},
                     {"context", r.context}, {"stride", r.stride}, {"windows", r.windows}, {"curve", curve}};
    j["gpu"] = nullptr;  // CPU run
    if (o.m.device == "cuda")
      j["gpu"] = {{"device", gpu.device}, {"dtype", o.m.cuda.dtype}, {"seconds", gpu.seconds}, {"peak_gb", gpu.peak_gb}};
    using ropex::cli::flag_origin;
    using ropex::cli::input_json;
    ojson in = model_inputs_json(o.m, ck);
    in["tokens"] = o.tokens.empty() ? input_json(nullptr, "not given") : input_json(o.tokens, "flag --tokens");
    in["text"] = o.text.empty() ? input_json(nullptr, "not given") : input_json(o.text, "flag --text");
    in["context"] = input_json(o.context, "flag --context");
    in["stride"] = input_json(r.stride, flag_origin(o.o_stride, "default = context"));
    in["bins"] = input_json(o.bins, flag_origin(o.o_bins, "default 32"));
    in["bos_windows"] = input_json(o.bos_windows, o.bos_windows ? "flag --bos-windows" : "default off");
    in["out"] = o.out.empty() ? input_json(nullptr, "not given") : input_json(o.out, "flag --out");
    j["inputs"] = nlohmann::json::parse(in.dump());
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
  s->add_option("--out", o->out, "output .npy (written atomically; never one of the inputs)")->required();
  s->add_flag("--json", o->json, "print JSON: out, shape, inputs");
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
  o->o_temperature = s->add_option("--temperature", o->temperature, "0 = greedy (default), else sample softmax(logits/T)")
      ->check(CLI::Range(0.0, 1e6));
  o->o_seed = s->add_option("--seed", o->seed, "sampling seed (default 0)");
  s->add_flag("--stop-at-eos", o->stop_at_eos, "stop after the model emits any of the config's eos_token_id (a GGUF file's eos, eot and eom ids)");
  s->add_flag("--json", o->json,
              "print JSON: tokens (generated ids), text (with --prompt, else null), prompt_tokens, inputs");
  s->callback([o] { run_generate(*o); });
});

ROPEX_SUBCOMMAND(52, [](CLI::App& app) {
  auto o = std::make_shared<PerplexityCliOptions>();
  auto* s = app.add_subcommand("perplexity", "long-context perplexity over windows, with the per-position loss curve");
  add_model_options(s, o->m);
  s->add_option("--tokens", o->tokens, "token ids file (.npy or text)");
  s->add_option("--text", o->text, "text file, tokenized with the model's tokenizer (a GGUF file's own; a directory's tokenizer.json or tokenizer.model)");
  s->add_option("--context", o->context, "window length N")->required()->check(CLI::Range(int64_t(2), int64_t(1) << 30));
  o->o_stride = s->add_option("--stride", o->stride, "window step S (default N)")->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  o->o_bins = s->add_option("--bins", o->bins, "bins of the per-position curve (default 32)")->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  s->add_flag("--bos-windows", o->bos_windows,
              "start every window after the first with BOS (in place of its first token), like a document start");
  s->add_option("--gpus", o->cp.gpus,
                "--device cuda: split every window over GPUs (context parallel, ring attention): N for devices "
                "0..N-1, or a device list such as 0,1 (repeats put ranks on one GPU); non-overlapping windows only");
  s->add_option("--cp-transport", o->cp.transport, "with --gpus: how K/V move around the ring: nccl (default) or streams")
      ->check(CLI::IsMember({"nccl", "streams"}));
  s->add_option("--out", o->out, "write the unbinned per-position mean loss here as CSV (atomically; never an input)");
  auto* js = s->add_flag("--json", o->json, "print JSON: perplexity, mean_nll, tokens, context, stride, windows, curve, gpu, inputs");
  s->add_flag("--csv", o->csv, "print the unbinned per-position mean loss as CSV (position,count,mean_nll)")->excludes(js);
  s->callback([o] { run_perplexity(*o); });
});
