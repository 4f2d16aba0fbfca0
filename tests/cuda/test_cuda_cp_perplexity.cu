// Context-parallel perplexity on the GPU (backends/cuda/cp_perplexity.cuh): 1, 2 and 4 ranks on
// device 0, over NCCL (self-sends) and over streams, equal the one-GPU bf16 perplexity.
// Tolerance, per position (summed NLL of the targets at that window position): twice the largest
// per-position difference between the one-GPU bf16 and fp32 runs of the same model and tokens —
// both bf16 runs round the same products differently (rows per GEMM, attention blocks merged in
// fp32 and rounded once), each within that bf16 scale of the fp32 run. Mean NLL within 1e-3
// relative. Models: stories260K (llama2.c, head_dim 8: the ring's row kernel), a random 2-layer
// GQA model with head_dim 64 (the flash kernel), and the HF fixtures' 2-layer GQA model under
// default, dynamic NTK, YaRN and LongRoPE at windows past max_position_embeddings (every rank
// rotates with the whole window's frequencies).
// Run from the repository root (CTest does); stories260K from $ROPEX_STORIES260K or
// ../shared/data/stories260K.bin (skipped when absent).
#include <ropex/backends/cuda/cp_perplexity.cuh>
#include <ropex/eval/perplexity.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include "random_model.hpp"

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using ropex::backends::cuda_bf16;
using ropex::backends::cuda_f32;
using ropex::model::Checkpoint;
using ropex::model::Llama;

namespace {

fs::path temp_root() { return fs::temp_directory_path() / ("ropex_cuda_cp_" + std::to_string(::getpid())); }
struct TempCleanup {
  ~TempCleanup() {
    std::error_code ec;
    fs::remove_all(temp_root(), ec);
  }
};

fs::path fixture_model(const std::string& variant) {
  const fs::path src = fs::path("tests") / "fixtures" / "hf";
  const fs::path dir = temp_root() / variant;
  fs::create_directories(dir);
  fs::copy_file(src / (variant + ".config.json"), dir / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(src / "weights" / "model.safetensors", dir / "model.safetensors", fs::copy_options::overwrite_existing);
  return dir;
}

double max_position_diff(const ropex::eval::PerplexityResult& a, const ropex::eval::PerplexityResult& b) {
  double d = 0;
  for (size_t p = 0; p < a.position_nll_sum.size(); ++p)
    d = std::max(d, std::abs(a.position_nll_sum[p] - b.position_nll_sum[p]));
  return d;
}

// The one-GPU bf16 and fp32 runs, then every (ranks, transport) context-parallel run against them.
void check_model(const std::string& name, const Checkpoint& ck, const std::vector<int32_t>& tokens, int64_t context) {
  ropex::eval::PerplexityOptions po;
  po.context = context;
  Llama<cuda_bf16> g16(ck, 64);  // 64-token chunks: the one-GPU run chunks its windows, the ranks do not
  Llama<cuda_f32> g32(ck, 64);
  const auto one = ropex::eval::perplexity(g16, tokens, po);
  const auto f32 = ropex::eval::perplexity(g32, tokens, po);
  const double tol = 2 * max_position_diff(one, f32);
  MESSAGE(name << ": one GPU bf16 perplexity " << one.perplexity << ", fp32 " << f32.perplexity
               << "; per-position tolerance " << tol << " (2x max |bf16 - fp32|)");
  REQUIRE(tol > 0);
  for (int ranks : {1, 2, 4})
    for (auto transport : {ropex::cuda::ring::Transport::nccl, ropex::cuda::ring::Transport::streams}) {
      ropex::cuda::ContextParallelOptions o;
      o.devices.assign(size_t(ranks), 0);
      o.transport = transport;
      const auto cp = ropex::cuda::context_parallel_perplexity(ck, tokens, po, o);
      const double d = max_position_diff(cp, one);
      MESSAGE(name << ": " << ranks << " ranks, " << (transport == ropex::cuda::ring::Transport::nccl ? "nccl" : "streams")
                   << ": perplexity " << cp.perplexity << ", max per-position |diff| " << d);
      CAPTURE(ranks);
      CHECK(cp.tokens == one.tokens);
      CHECK(cp.windows == one.windows);
      CHECK(cp.position_count == one.position_count);
      CHECK(d <= tol);
      CHECK(cp.mean_nll == doctest::Approx(one.mean_nll).epsilon(1e-3));
    }
}

}  // namespace

TEST_CASE("context-parallel perplexity on one GPU (1, 2, 4 ranks; NCCL and streams) equals the one-GPU run") {
  TempCleanup cleanup;
  SUBCASE("random 2-layer GQA model, head_dim 64 (flash blocks)") {
    const Checkpoint ck =
        Checkpoint::open(ropex::test::write_random_llama(temp_root() / "hd64", 256, 4, 2, 64, 512, 2, 500, 31));
    // 4 windows of 384 and a last one of 208: windows not divisible by 2N, a last window of its own length
    check_model("random hd64", ck, ropex::test::random_tokens(4 * 384 + 208, 500, 37), 384);
  }
  SUBCASE("HF fixture model under RoPE rules that depend on the window length") {
    for (const std::string variant : {"default", "dynamic", "yarn", "longrope", "llama3"}) {
      const Checkpoint ck = Checkpoint::open(fixture_model(variant));
      // windows of 96 (max_position_embeddings 32): dynamic NTK rescales, LongRoPE takes its long factors
      check_model(variant, ck, ropex::test::random_tokens(300, ck.config().vocab_size, 41), 96);
    }
  }
  SUBCASE("stories260K") {
    const char* env = std::getenv("ROPEX_STORIES260K");
    const std::string path = env ? env : "../shared/data/stories260K.bin";
    if (!fs::exists(path)) {
      MESSAGE("skipped: " << path << " not found (set ROPEX_STORIES260K)");
      return;
    }
    const Checkpoint ck = Checkpoint::open(path);
    check_model("stories260K", ck, ropex::test::random_tokens(1000, ck.config().vocab_size, 43), 256);
  }
}

TEST_CASE("context-parallel perplexity refuses what it cannot run, with one line naming the flag") {
  TempCleanup cleanup;
  const Checkpoint ck = Checkpoint::open(fixture_model("default"));
  const auto tokens = ropex::test::random_tokens(100, ck.config().vocab_size, 5);
  ropex::eval::PerplexityOptions po;
  po.context = 40;
  ropex::cuda::ContextParallelOptions o;
  int count = 0;
  REQUIRE(cudaGetDeviceCount(&count) == cudaSuccess);
  o.devices = {0, count};
  CHECK_THROWS_WITH_AS(ropex::cuda::context_parallel_perplexity(ck, tokens, po, o), doctest::Contains("--gpus"),
                       ropex::Error);
  o.devices = {0, 0};
  po.stride = 20;
  CHECK_THROWS_WITH_AS(ropex::cuda::context_parallel_perplexity(ck, tokens, po, o),
                       doctest::Contains("non-overlapping windows only"), ropex::Error);
}
