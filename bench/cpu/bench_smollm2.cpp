// A GGUF model end to end on the CPU, the numbers bench/cpu/run_smollm2.sh reports:
//   prefill   forward of the first P tokens + the last row's logits (what `ropex generate` does first)
//   decode    D greedy steps after it (one token forward + logits + argmax each), tokens/s
//   ppl       perplexity over all tokens in windows of C (eval/perplexity.hpp), optional
// in exact mode or, with --mode fast, QuantMode::fast (int8 activations). Peak RSS at the end.
// Compiles against headers without QuantMode too (then only exact), so the same file times an
// older checkout. Usage:
//   bench_smollm2 MODEL.gguf TOKENS.npy [--prefill 2048] [--decode 128] [--reps 3] [--mode exact|fast]
//                 [--ppl CONTEXT] [--threads N]
#include <ropex/eval/perplexity.hpp>
#include <ropex/io/tokens.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if __has_include(<ropex/quant/dot.hpp>)
#define BENCH_HAS_QUANT_MODE 1
#endif

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
// CPU seconds of the whole process (all threads): with --threads 1 a measure that other tenants'
// load on a shared machine does not inflate (wall time does).
double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.gguf TOKENS.npy [--prefill N] [--decode N] [--reps N] [--mode exact|fast] "
                         "[--ppl CONTEXT] [--threads N]\n", argv[0]);
    return 2;
  }
  int64_t prefill = 2048, decode = 128, reps = 3, ppl = 0;
  int threads = 0;
  std::string mode = "exact";
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--prefill") prefill = std::atoll(v);
    else if (k == "--decode") decode = std::atoll(v);
    else if (k == "--reps") reps = std::atoll(v);
    else if (k == "--ppl") ppl = std::atoll(v);
    else if (k == "--threads") threads = std::atoi(v);
    else if (k == "--mode") mode = v;
    else { std::fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
  }
  if (threads > 0) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    using SetFn = void (*)(int);
    if (auto f = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(threads);
  }
  const auto ck = ropex::model::Checkpoint::open(argv[1]);
  const std::vector<int32_t> all = ropex::io::read_tokens(argv[2]);
  using Ops = ropex::backends::ops<ropex::backends::cpu>;
  Ops ops;
#ifdef BENCH_HAS_QUANT_MODE
  if (mode == "fast") ops.quant_mode = ropex::backends::QuantMode::fast;
#else
  if (mode == "fast") { std::fprintf(stderr, "this ropex has no fast mode\n"); return 2; }
#endif
  ropex::model::Llama<> model(ck, 512, ops);
  const int64_t vocab = ck.config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(vocab));
  const std::vector<int32_t> prompt(all.begin(), all.begin() + std::min<int64_t>(prefill, int64_t(all.size())));
  std::vector<double> t_pre, t_dec, c_pre, c_dec;
  std::vector<int32_t> generated;
  for (int64_t r = 0; r < reps && prefill > 0; ++r) {
    auto cache = model.make_cache(int64_t(prompt.size()) + decode);
    const double t0 = now(), u0 = cpu_now();
    auto h = model.forward(prompt, cache);
    model.logits(h.data() + (h.rows() - 1) * h.cols(), 1, logits.data());
    const double t1 = now(), u1 = cpu_now();
    generated.clear();
    for (int64_t s = 0; s < decode; ++s) {
      const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      generated.push_back(next);
      h = model.forward(std::span(&next, 1), cache);
      model.logits(h.data(), 1, logits.data());
    }
    const double t2 = now(), u2 = cpu_now();
    t_pre.push_back(double(prompt.size()) / (t1 - t0));
    c_pre.push_back(double(prompt.size()) / (u1 - u0));
    if (decode > 0) t_dec.push_back(double(decode) / (t2 - t1)), c_dec.push_back(double(decode) / (u2 - u1));
  }
  std::printf("{\"mode\": \"%s\", \"prefill_tokens\": %zu, \"prefill_tok_s\": [", mode.c_str(), prompt.size());
  for (size_t i = 0; i < t_pre.size(); ++i) std::printf("%s%.2f", i ? ", " : "", t_pre[i]);
  std::printf("], \"prefill_median\": %.2f, \"decode_tokens\": %lld, \"decode_tok_s\": [", median(t_pre), (long long)decode);
  for (size_t i = 0; i < t_dec.size(); ++i) std::printf("%s%.2f", i ? ", " : "", t_dec[i]);
  std::printf("], \"decode_median\": %.2f, \"first_tokens\": [", median(t_dec));
  for (size_t i = 0; i < std::min<size_t>(generated.size(), 16); ++i) std::printf("%s%d", i ? ", " : "", generated[i]);
  std::printf("], \"prefill_tok_per_cpu_s\": %.2f, \"decode_tok_per_cpu_s\": %.2f", median(c_pre), median(c_dec));
  if (ppl > 0) {
    ropex::eval::PerplexityOptions po;
    po.context = ppl;
    const double t0 = now();
    const auto res = ropex::eval::perplexity(model, all, po);
    std::printf(", \"ppl_context\": %lld, \"ppl\": %.6f, \"mean_nll\": %.8f, \"ppl_tokens\": %lld, \"ppl_seconds\": %.2f",
                (long long)ppl, res.perplexity, res.mean_nll, (long long)res.tokens, now() - t0);
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf(", \"peak_rss_mb\": %.1f}\n", double(ru.ru_maxrss) / 1024.0);
  return 0;
}
