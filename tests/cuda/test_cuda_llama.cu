// The LLaMA stack on the GPU (Llama<cuda_f32>, Llama<cuda_bf16>) against the CPU model, which is
// itself checked against HF transformers (tests/test_hf_parity.cpp) and llama2.c (test_llama.cpp):
//   fp32 path: logits within 1e-3 of the CPU's (and of HF's) on every HF fixture variant;
//   bf16 path: NMSE <= 5e-4 against the CPU's fp32 logits, top-1 agreement >= 99% on the HF
//              fixtures and the bf16 checkpoint; on stories260K no worse than HF transformers' own
//              bf16 forward (the 5e-4 is below that model's bf16 floor); flash prefill, chunked prefill and split-KV decode on a head_dim
//              128 GQA model; the layer-streamed perplexity equal to the CPU's.
// Run from the repository root (CTest does): fixtures are read from tests/fixtures/hf;
// stories260K from $ROPEX_STORIES260K or ../shared/data/stories260K.bin (skipped when absent).
#include <ropex/backends/cuda/ops.cuh>
#include <ropex/eval/perplexity.hpp>
#include <ropex/io/npy.hpp>
#include <ropex/io/tokens.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include "random_model.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace fs = std::filesystem;
using ropex::backends::cuda_bf16;
using ropex::backends::cuda_f32;
using ropex::model::Checkpoint;
using ropex::model::Llama;

namespace {

const fs::path kFixtures = fs::path("tests") / "fixtures" / "hf";

fs::path temp_root() { return fs::temp_directory_path() / ("ropex_cuda_llama_" + std::to_string(::getpid())); }
struct TempCleanup {
  ~TempCleanup() {
    std::error_code ec;
    fs::remove_all(temp_root(), ec);
  }
};

// A model directory for one HF fixture variant: the shared weights + that variant's config.json.
fs::path assemble(const std::string& variant) {
  const fs::path dir = temp_root() / variant;
  fs::create_directories(dir);
  fs::copy_file(kFixtures / (variant + ".config.json"), dir / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(kFixtures / "weights" / "model.safetensors", dir / "model.safetensors", fs::copy_options::overwrite_existing);
  return dir;
}

std::string stories_path() {
  if (const char* p = std::getenv("ROPEX_STORIES260K")) return p;
  return "../shared/data/stories260K.bin";
}

struct Compare {
  double max_abs = 0, nmse = 0, top1 = 0;  // top1: fraction of rows whose argmax agrees
};
// got vs ref, both [rows, cols] row-major.
Compare compare(const float* got, const float* ref, int64_t rows, int64_t cols) {
  Compare c;
  double num = 0, den = 0;
  int64_t agree = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t ag = 0, ar = 0;
    for (int64_t v = 0; v < cols; ++v) {
      const double g = got[r * cols + v], f = ref[r * cols + v];
      const double d = std::isfinite(g) ? g - f : INFINITY;
      c.max_abs = std::max(c.max_abs, std::abs(d));
      num += d * d, den += f * f;
      if (got[r * cols + v] > got[r * cols + ag]) ag = v;
      if (ref[r * cols + v] > ref[r * cols + ar]) ar = v;
    }
    agree += ag == ar;
  }
  c.nmse = num / std::max(den, 1e-300);
  c.top1 = double(agree) / double(std::max<int64_t>(rows, 1));
  return c;
}

template <class B>
Llama<>::HostMatrix gpu_logits(const Checkpoint& ck, std::span<const int32_t> tokens, int64_t chunk = 512) {
  Llama<B> model(ck, chunk);
  auto cache = model.make_cache(int64_t(tokens.size()));
  return model.logits(tokens, cache);
}

Llama<>::HostMatrix cpu_logits(const Checkpoint& ck, std::span<const int32_t> tokens) {
  Llama<> model(ck);
  auto cache = model.make_cache(int64_t(tokens.size()));
  return model.logits(tokens, cache);
}


// A random-weight model under this test's temp directory (random_model.hpp).
fs::path write_random_model(const std::string& name, int64_t hidden, int64_t heads, int64_t kv_heads, int64_t head_dim,
                            int64_t inter, int64_t layers, int64_t vocab, uint64_t seed,
                            const nlohmann::json& extra = nlohmann::json::object()) {
  return ropex::test::write_random_llama(temp_root() / name, hidden, heads, kv_heads, head_dim, inter, layers, vocab, seed,
                                         extra);
}
using ropex::test::random_tokens;

// A decode schedule over `tokens` (as a generation loop feeds them): a 20-token prompt, one token
// at a time to 100 (short contexts: the split-KV decode kernel's split count grows with the keys,
// from 1), a 460-token chunk, then one at a time to the end (long contexts, many splits). With pdl
// (kernels launched as programmatic dependents, where the GPU has it) it is switched off for steps
// 80..89, so the recorded graphs' launches change (updates must follow). graph_layers: layers per
// recorded graph. Returns every row's logits and how the steps ran.
template <class B>
std::pair<Llama<>::HostMatrix, typename ropex::backends::ops<B>::GraphStats> decode_schedule(
    const Checkpoint& ck, std::span<const int32_t> tokens, bool graphs, int graph_layers = 4, bool pdl = true) {
  Llama<B> model(ck);
  model.ops().st->graphs = graphs;
  model.ops().st->graph_layers = graph_layers;
  const bool pdl_here = model.ops().st->pdl && pdl;
  const int64_t V = ck.config().vocab_size;
  auto cache = model.make_cache(int64_t(tokens.size()));
  Llama<>::HostMatrix out(int64_t(tokens.size()), V);
  size_t t = 0;
  auto feed = [&](size_t n) {
    model.ops().st->pdl = pdl_here && (t < 80 || t >= 90);
    const auto h = model.forward(tokens.subspan(t, n), cache);
    model.logits(h.data(), h.rows(), out.data() + int64_t(t) * V);
    t += n;
  };
  feed(20);
  while (t < 100) feed(1);
  feed(460);
  while (t < tokens.size()) feed(1);
  return {std::move(out), model.ops().st->graph_stats};
}

// Greedy continuation of `prompt` by `steps` tokens (forward + logits of the last row, argmax).
template <class M>
std::vector<int32_t> greedy(M& model, std::span<const int32_t> prompt, int64_t steps) {
  auto cache = model.make_cache(int64_t(prompt.size()) + steps);
  std::vector<float> row(size_t(model.config().vocab_size));
  auto h = model.forward(prompt, cache);
  model.logits(h.data() + (h.rows() - 1) * h.cols(), 1, row.data());
  std::vector<int32_t> out;
  for (int64_t i = 0; i < steps; ++i) {
    const int32_t next = int32_t(std::max_element(row.begin(), row.end()) - row.begin());
    out.push_back(next);
    h = model.forward(std::span(&next, 1), cache);
    model.logits(h.data(), 1, row.data());
  }
  return out;
}

}  // namespace

TEST_CASE("CUDA graphs: recorded decode steps give the op-by-op logits bit for bit, and the CPU's") {
  TempCleanup cleanup;
  const fs::path dir = write_random_model("graphs", 512, 4, 2, 128, 1024, 2, 1000, 13);
  const Checkpoint ck = Checkpoint::open(dir);
  const int64_t V = ck.config().vocab_size, N = 640;
  const std::vector<int32_t> tokens = random_tokens(N, V, 17);
  const auto cpu = cpu_logits(ck, tokens);
  const auto [plain16, ps16] = decode_schedule<cuda_bf16>(ck, tokens, false);
  const auto [plain32, ps32] = decode_schedule<cuda_f32>(ck, tokens, false);
  CHECK(ps16.recorded + ps32.recorded == 0);
  {  // programmatic dependent launch changes when kernels start, not what they compute
    const auto [nopdl16, ns16] = decode_schedule<cuda_bf16>(ck, tokens, false, 4, false);
    CHECK(compare(nopdl16.data(), plain16.data(), N, V).max_abs == 0);
  }
  // 2 layers: graph_layers 4 records a step as one graph, 1 as three (layer, layer, final norm).
  for (const int graph_layers : {4, 1}) {
    auto check_backend = [&]<class B>(const std::string& name, const Llama<>::HostMatrix& plain, double tolerance) {
      const auto [graph, gs] = decode_schedule<B>(ck, tokens, true, graph_layers);
      const Compare same = compare(graph.data(), plain.data(), N, V);
      const Compare ref = compare(graph.data(), cpu.data(), N, V);
      const int64_t one_token_steps = (100 - 20) + (N - 560);
      const int64_t per_step = graph_layers == 1 ? 3 : 1;
      MESSAGE(name << ", " << graph_layers << " layers per graph: graph vs op-by-op max abs " << same.max_abs
                   << "; vs cpu NMSE " << ref.nmse << ", max abs " << ref.max_abs << "; " << gs.recorded
                   << " steps recorded as " << gs.segments << " graphs (" << gs.updated << " updates, " << gs.instantiated
                   << " instantiations), " << gs.host_ms / double(std::max<int64_t>(gs.recorded, 1)) << " ms host per step");
      CHECK(same.max_abs == 0);  // the same kernels with the same arguments: identical bits
      if (tolerance > 0) CHECK(ref.max_abs <= tolerance);
      else CHECK(ref.nmse <= 5e-4);
      CHECK(gs.recorded == one_token_steps - 1);  // all but the first one-token step
      CHECK(gs.segments == gs.recorded * per_step);
      CHECK(gs.updated + gs.instantiated == gs.segments);
      CHECK(gs.instantiated >= per_step);                   // each segment once
      CHECK(gs.updated >= gs.segments - 3 * per_step);      // the rest patched in (PDL on/off included)
    };
    check_backend.operator()<cuda_bf16>("cuda_bf16", plain16, 0);
    check_backend.operator()<cuda_f32>("cuda_f32", plain32, 1e-3);
  }
}

TEST_CASE("CUDA graphs: greedy generation is unchanged (graphs on = off; = the CPU's on stories260K in fp32)") {
  TempCleanup cleanup;
  {
    const Checkpoint ck = Checkpoint::open(write_random_model("gen", 512, 4, 2, 128, 1024, 2, 1000, 19));
    const std::vector<int32_t> prompt = random_tokens(70, 1000, 23);
    Llama<cuda_bf16> on(ck), off(ck);
    on.ops().st->graphs = true;
    off.ops().st->graphs = false;
    const auto a = greedy(on, prompt, 120), b = greedy(off, prompt, 120);
    MESSAGE("hd128 bf16: " << on.ops().st->graph_stats.recorded << " steps recorded");
    CHECK(on.ops().st->graph_stats.recorded == 119);
    CHECK(a == b);
  }
  const std::string path = stories_path();
  if (!fs::exists(path)) {
    MESSAGE("stories260K part skipped: " << path << " not found (set ROPEX_STORIES260K)");
    return;
  }
  const Checkpoint ck = Checkpoint::open(path);
  const std::vector<int32_t> seq = ropex::io::read_tokens(fs::path("tests") / "fixtures" / "stories260K" / "tokens.npy");
  const auto prompt = std::span(seq).subspan(0, 8);
  Llama<> cpu(ck);
  Llama<cuda_f32> g32(ck);
  Llama<cuda_bf16> on(ck), off(ck);
  g32.ops().st->graphs = on.ops().st->graphs = true;
  off.ops().st->graphs = false;
  const auto want = greedy(cpu, prompt, 100);
  CHECK(greedy(g32, prompt, 100) == want);
  CHECK(g32.ops().st->graph_stats.recorded == 99);
  CHECK(greedy(on, prompt, 100) == greedy(off, prompt, 100));
}

TEST_CASE("fp32 path: CUDA logits equal the CPU's (and HF's) on every HF fixture variant (<= 1e-3)") {
  TempCleanup cleanup;
  const std::vector<int32_t> tokens = ropex::io::read_tokens(kFixtures / "tokens.npy");
  for (const std::string variant : {"default", "base1e6", "base500", "linear", "dynamic", "yarn", "yarn_mscale",
                                    "llama3", "longrope", "default.legacy"}) {
    INFO("variant " << variant);
    const Checkpoint ck = Checkpoint::open(assemble(variant));
    const auto cpu = cpu_logits(ck, tokens);
    const auto hf = ropex::io::read_npy_f32(kFixtures / (variant + ".logits.npy"));
    const auto gpu = gpu_logits<cuda_f32>(ck, tokens);
    const auto gpu7 = gpu_logits<cuda_f32>(ck, tokens, 7);  // chunked: 7 tokens through a layer at a time
    const Compare c = compare(gpu.data(), cpu.data(), gpu.rows(), gpu.cols());
    const Compare h = compare(gpu.data(), hf.data.data(), gpu.rows(), gpu.cols());
    const Compare c7 = compare(gpu7.data(), cpu.data(), gpu.rows(), gpu.cols());
    MESSAGE(variant << ": max |cuda_f32 - cpu| = " << c.max_abs << ", vs HF " << h.max_abs << ", chunked " << c7.max_abs);
    CHECK(c.max_abs <= 1e-3);
    CHECK(h.max_abs <= 1e-3);
    CHECK(c7.max_abs <= 1e-3);
  }
}

TEST_CASE("bf16 path: HF fixtures by NMSE <= 5e-4; the bf16 checkpoint also by top-1 >= 99%") {
  TempCleanup cleanup;
  const std::vector<int32_t> tokens = ropex::io::read_tokens(kFixtures / "tokens.npy");
  for (const std::string variant : {"default", "yarn", "llama3", "longrope"}) {
    INFO("variant " << variant);
    const Checkpoint ck = Checkpoint::open(assemble(variant));
    const auto cpu = cpu_logits(ck, tokens);
    const auto gpu = gpu_logits<cuda_bf16>(ck, tokens);
    const Compare c = compare(gpu.data(), cpu.data(), gpu.rows(), gpu.cols());
    MESSAGE(variant << ": cuda_bf16 vs cpu: NMSE " << c.nmse << ", max abs " << c.max_abs << ", top-1 " << c.top1);
    CHECK(c.nmse <= 5e-4);
  }
  // Stored in bf16: the weights are exact on the bf16 path; only the arithmetic differs.
  const Checkpoint ck = Checkpoint::open(kFixtures / "bf16");
  const auto cpu = cpu_logits(ck, tokens);
  const auto gpu = gpu_logits<cuda_bf16>(ck, tokens);
  const auto hf16 = ropex::io::read_npy_f32(kFixtures / "bf16.hf_bf16.logits.npy");
  const Compare c = compare(gpu.data(), cpu.data(), gpu.rows(), gpu.cols());
  const Compare h = compare(gpu.data(), hf16.data.data(), gpu.rows(), gpu.cols());
  const Compare hc = compare(hf16.data.data(), cpu.data(), gpu.rows(), gpu.cols());
  MESSAGE("bf16 checkpoint: cuda_bf16 vs cpu NMSE " << c.nmse << " top-1 " << c.top1 << "; vs HF-bf16 NMSE " << h.nmse
                                                     << "; HF-bf16 vs cpu NMSE " << hc.nmse << " top-1 " << hc.top1);
  CHECK(c.nmse <= 5e-4);
  CHECK(c.top1 >= 0.99);
  CHECK(h.nmse <= 5e-4);
  // fp32 path on the bf16 checkpoint: the CPU math exactly (bf16 weights widened).
  const auto g32 = gpu_logits<cuda_f32>(ck, tokens);
  CHECK(compare(g32.data(), cpu.data(), gpu.rows(), gpu.cols()).max_abs <= 1e-3);
}

// stories260K in bf16 is held to HF transformers' own bf16 forward on the same text
// (tests/fixtures/stories260K, scripts/make_stories_bf16_fixture.py): this small trained model is
// so sensitive that rounding only its weights to bf16 moves the logits by NMSE ~9e-4 / top-1 96%
// (meta.json), so the fixtures' 5e-4 / 99% bound cannot be met by any bf16-weight forward; it is reported.
TEST_CASE("stories260K on the GPU: fp32 within 1e-3, bf16 no worse than HF transformers' bf16, KV-cache decode") {
  const std::string path = stories_path();
  if (!fs::exists(path)) {
    MESSAGE("skipped: " << path << " not found (set ROPEX_STORIES260K)");
    return;
  }
  const Checkpoint ck = Checkpoint::open(path);
  const fs::path fixture = fs::path("tests") / "fixtures" / "stories260K";
  const std::vector<int32_t> seq = ropex::io::read_tokens(fixture / "tokens.npy");  // HF's greedy text
  const auto hf16 = ropex::io::read_npy_f32(fixture / "hf_bf16.logits.npy");
  const auto cpu = cpu_logits(ck, seq);
  const auto f32 = gpu_logits<cuda_f32>(ck, seq);
  const auto bf = gpu_logits<cuda_bf16>(ck, seq, 100);
  const Compare c32 = compare(f32.data(), cpu.data(), cpu.rows(), cpu.cols());
  const Compare c16 = compare(bf.data(), cpu.data(), cpu.rows(), cpu.cols());
  const Compare hf = compare(hf16.data.data(), cpu.data(), cpu.rows(), cpu.cols());
  MESSAGE("stories260K: cuda_f32 max abs " << c32.max_abs << "; vs cpu fp32: cuda_bf16 NMSE " << c16.nmse << " top-1 "
                                           << c16.top1 << ", HF bf16 NMSE " << hf.nmse << " top-1 " << hf.top1
                                           << " (the fixtures' bound 5e-4 / 0.99 is below this model's bf16 floor)");
  CHECK(c32.max_abs <= 1e-3);
  REQUIRE_MESSAGE(hf.nmse < 1e-2, "the fixture was made from another stories260K.bin (see meta.json's md5)");
  CHECK(c16.nmse <= hf.nmse);
  CHECK(c16.top1 >= hf.top1 - 0.03);
  // Token-by-token through the GPU cache: the same logits as the full forward.
  Llama<cuda_f32> model(ck);
  auto cache = model.make_cache(int64_t(seq.size()));
  std::vector<float> row(size_t(ck.config().vocab_size));
  double err = 0;
  for (size_t t = 0; t < seq.size(); ++t) {
    const auto h = model.forward(std::span(seq).subspan(t, 1), cache);
    model.logits(h.data(), 1, row.data());
    for (size_t v = 0; v < row.size(); ++v) err = std::max(err, double(std::abs(row[v] - cpu(int64_t(t), int64_t(v)))));
  }
  MESSAGE("stories260K: cuda_f32 decode vs cpu full forward: " << err);
  CHECK(err <= 1e-3);
}

TEST_CASE("tensor-core paths (head_dim 128, GQA 2): flash prefill, chunked prefill and split-KV decode vs the CPU") {
  TempCleanup cleanup;
  const fs::path dir = write_random_model("hd128", 512, 4, 2, 128, 1024, 2, 1000, 7);
  const Checkpoint ck = Checkpoint::open(dir);
  const std::vector<int32_t> tokens = random_tokens(300, 1000, 11);
  const auto cpu = cpu_logits(ck, tokens);
  const int64_t V = ck.config().vocab_size;
  {
    const auto g = gpu_logits<cuda_bf16>(ck, tokens);  // one chunk: flash attention over 300 keys
    const Compare c = compare(g.data(), cpu.data(), cpu.rows(), V);
    MESSAGE("hd128 prefill (flash): NMSE " << c.nmse << " top-1 " << c.top1);
    CHECK(c.nmse <= 5e-4);  // (top-1 is reported, not asserted: random weights have near-ties)
  }
  {
    const auto g = gpu_logits<cuda_bf16>(ck, tokens, 37);  // chunks: queries at offsets into the cache
    const Compare c = compare(g.data(), cpu.data(), cpu.rows(), V);
    MESSAGE("hd128 chunked prefill (37): NMSE " << c.nmse);
    CHECK(c.nmse <= 5e-4);
  }
  {
    // 200 tokens of prefill, then 1 token at a time (decode kernel), then a chunk of 5 (decode
    // kernel with 10 query rows per KV head), then single tokens again.
    Llama<cuda_bf16> model(ck);
    auto cache = model.make_cache(int64_t(tokens.size()));
    Llama<>::HostMatrix got(int64_t(tokens.size()), V);
    size_t t = 0;
    auto step = [&](size_t n) {
      const auto lg = model.logits(std::span(tokens).subspan(t, n), cache);
      std::copy(lg.data(), lg.data() + lg.size(), got.data() + int64_t(t) * V);
      t += n;
    };
    step(200);
    for (int i = 0; i < 40; ++i) step(1);
    step(5);
    while (t < tokens.size()) step(1);
    const Compare c = compare(got.data(), cpu.data(), cpu.rows(), V);
    const Compare tail = compare(got.data() + 200 * V, cpu.data() + 200 * V, 100, V);
    MESSAGE("hd128 incremental decode: NMSE " << c.nmse << ", decoded rows only " << tail.nmse);
    CHECK(c.nmse <= 5e-4);
    CHECK(tail.nmse <= 5e-4);
  }
}

// The model families (tests/fixtures/families, scripts/make_family_fixtures.py): Llama-3 biases,
// SmolLM2, Mistral / Qwen2 / Phi-3 sliding windows, Qwen2 q/k/v biases, Qwen3 per-head q/k norm,
// Phi-3 fused projections + longrope, against HF transformers' eager fp32 logits of the same bf16
// weights: one prefill over the 48 tokens, and HF's incremental decoding (5-token prompt, then one
// token per call; the one-token steps after the first are recorded as CUDA graphs, biases included).
//   fp32 path: max |diff| <= 1e-3 (as the CPU is held to).
//   bf16 path: NMSE <= 5e-4 against HF's fp32, the bound this file holds the bf16 path to on the HF
//   fixtures (the bf16 checkpoint's cuda_bf16 error vs fp32 is of that order and HF's own bf16
//   forward no closer); max |diff| reported.
namespace {
const fs::path kFamilies = fs::path("tests") / "fixtures" / "families";

// Logits of HF's decoding schedule: 5 tokens, then one per call.
template <class B>
Llama<>::HostMatrix decode_logits(const Checkpoint& ck, std::span<const int32_t> tokens) {
  Llama<B> model(ck);
  auto cache = model.make_cache(int64_t(tokens.size()));
  const int64_t V = ck.config().vocab_size;
  Llama<>::HostMatrix out(int64_t(tokens.size()), V);
  const auto first = model.logits(tokens.first(5), cache);
  std::copy(first.data(), first.data() + first.size(), out.data());
  for (size_t t = 5; t < tokens.size(); ++t) {
    const auto row = model.logits(tokens.subspan(t, 1), cache);
    std::copy(row.data(), row.data() + row.size(), out.data() + int64_t(t) * V);
  }
  return out;
}
}  // namespace

TEST_CASE("model families on the GPU: f32 within 1e-3 of HF, bf16 NMSE <= 5e-4, prefill and decode") {
  const std::vector<int32_t> tokens = ropex::io::read_tokens(kFamilies / "tokens.npy");
  REQUIRE(tokens.size() == 48);
  for (const std::string name : {"llama_bias", "smollm2", "mistral", "qwen2", "qwen3", "phi3"}) {
    INFO("family " << name);
    const Checkpoint ck = Checkpoint::open(kFamilies / name);
    const auto hf = ropex::io::read_npy_f32(kFamilies / (name + ".logits.npy"));
    const auto hf_dec = ropex::io::read_npy_f32(kFamilies / (name + ".decode.logits.npy"));
    const int64_t n = int64_t(tokens.size()), V = ck.config().vocab_size;
    REQUIRE(hf.data.size() == size_t(n * V));
    const auto f32 = gpu_logits<cuda_f32>(ck, tokens), f32c = gpu_logits<cuda_f32>(ck, tokens, 7);
    const auto f32d = decode_logits<cuda_f32>(ck, tokens);
    const auto b16 = gpu_logits<cuda_bf16>(ck, tokens), b16d = decode_logits<cuda_bf16>(ck, tokens);
    const Compare p = compare(f32.data(), hf.data.data(), n, V), pc = compare(f32c.data(), hf.data.data(), n, V);
    const Compare d = compare(f32d.data(), hf_dec.data.data(), n, V);
    const Compare bp = compare(b16.data(), hf.data.data(), n, V), bd = compare(b16d.data(), hf_dec.data.data(), n, V);
    MESSAGE(name << ": cuda_f32 max |diff| vs HF: prefill " << p.max_abs << ", chunks of 7 " << pc.max_abs << ", decode "
                 << d.max_abs << "; cuda_bf16: prefill NMSE " << bp.nmse << " max " << bp.max_abs << " top-1 " << bp.top1
                 << ", decode NMSE " << bd.nmse << " max " << bd.max_abs << " top-1 " << bd.top1);
    CHECK(p.max_abs <= 1e-3);
    CHECK(pc.max_abs <= 1e-3);
    CHECK(d.max_abs <= 1e-3);
    CHECK(bp.nmse <= 5e-4);
    CHECK(bd.nmse <= 5e-4);
  }
}

TEST_CASE("sliding window on the tensor-core paths (Mistral-shaped, head_dim 128): flash, chunks and decode vs the CPU") {
  TempCleanup cleanup;
  // Window 40 < 300 tokens: the windowed flash kernels (a 128-key tile holds the whole window), the
  // decode splits over the window only, and chunks of 37 whose windows reach into earlier chunks.
  const fs::path dir = write_random_model("mistral_hd128", 512, 4, 2, 128, 1024, 2, 1000, 9,
                                          {{"model_type", "mistral"}, {"architectures", {"MistralForCausalLM"}},
                                           {"sliding_window", 40}});
  const Checkpoint ck = Checkpoint::open(dir);
  REQUIRE(ck.config().window(0) == 40);
  const std::vector<int32_t> tokens = random_tokens(300, 1000, 13);
  const auto cpu = cpu_logits(ck, tokens);
  const int64_t V = ck.config().vocab_size;
  for (int64_t chunk : {512, 37}) {
    const auto g = gpu_logits<cuda_bf16>(ck, tokens, chunk);
    const Compare c = compare(g.data(), cpu.data(), cpu.rows(), V);
    MESSAGE("window 40, prefill chunk " << chunk << ": NMSE " << c.nmse << " top-1 " << c.top1);
    CHECK(c.nmse <= 5e-4);
  }
  Llama<cuda_bf16> model(ck);
  auto cache = model.make_cache(int64_t(tokens.size()));
  Llama<>::HostMatrix got(int64_t(tokens.size()), V);
  size_t t = 0;
  auto step = [&](size_t n) {
    const auto lg = model.logits(std::span(tokens).subspan(t, n), cache);
    std::copy(lg.data(), lg.data() + lg.size(), got.data() + int64_t(t) * V);
    t += n;
  };
  step(200);
  for (int i = 0; i < 40; ++i) step(1);
  step(5);
  while (t < tokens.size()) step(1);
  const Compare tail = compare(got.data() + 200 * V, cpu.data() + 200 * V, 100, V);
  MESSAGE("window 40, decoded rows: NMSE " << tail.nmse);
  CHECK(tail.nmse <= 5e-4);
  // The window matters here: the same weights without it give other logits.
  const auto full = cpu_logits(Checkpoint::open(write_random_model("llama_hd128", 512, 4, 2, 128, 1024, 2, 1000, 9)), tokens);
  CHECK(compare(full.data(), cpu.data(), cpu.rows(), V).nmse > 1e-2);
}

TEST_CASE("layer-streamed perplexity on the GPU equals the CPU's; a streamed cache serves one forward") {
  TempCleanup cleanup;
  const fs::path dir = write_random_model("ppl", 256, 4, 4, 64, 512, 3, 500, 3);
  const Checkpoint ck = Checkpoint::open(dir);
  const std::vector<int32_t> tokens = random_tokens(700, 500, 5);
  ropex::eval::PerplexityOptions po;
  po.context = 256, po.stride = 128, po.bins = 8;
  Llama<> cpu(ck, 64);
  const auto ref = ropex::eval::perplexity(cpu, tokens, po);
  Llama<cuda_f32> g32(ck, 64);
  const auto r32 = ropex::eval::perplexity(g32, tokens, po);
  Llama<cuda_bf16> g16(ck, 100);
  const auto r16 = ropex::eval::perplexity(g16, tokens, po);
  MESSAGE("perplexity cpu " << ref.perplexity << ", cuda_f32 " << r32.perplexity << ", cuda_bf16 " << r16.perplexity);
  CHECK(r32.tokens == ref.tokens);
  CHECK(r32.perplexity == doctest::Approx(ref.perplexity).epsilon(1e-5));
  CHECK(r16.perplexity == doctest::Approx(ref.perplexity).epsilon(2e-2));
  for (size_t b = 0; b < ref.curve.size(); ++b)
    CHECK(r32.curve[b].mean_nll == doctest::Approx(ref.curve[b].mean_nll).epsilon(1e-5));
  // The streamed cache holds one layer; a second call on it would attend to the wrong layer.
  auto cache = g16.make_cache(64, /*layer_streamed=*/true);
  CHECK(cache.n_layers() == 1);
  g16.forward(std::span(tokens).subspan(0, 10), cache);
  CHECK_THROWS_AS(g16.forward(std::span(tokens).subspan(10, 1), cache), ropex::Error);
}

TEST_CASE("bad input on the GPU model: clear errors, no crash") {
  TempCleanup cleanup;
  const Checkpoint ck = Checkpoint::open(assemble("default"));
  Llama<cuda_bf16> model(ck);
  auto cache = model.make_cache(4);
  const std::vector<int32_t> bad{1, 9999};
  CHECK_THROWS_WITH_AS(model.forward(bad, cache), doctest::Contains("outside the vocabulary"), ropex::Error);
  const std::vector<int32_t> five{1, 2, 3, 4, 5};
  CHECK_THROWS_WITH_AS(model.forward(five, cache), doctest::Contains("exceed"), ropex::Error);
  CHECK_THROWS_AS(Llama<cuda_bf16>(ck, 0), ropex::Error);
}
