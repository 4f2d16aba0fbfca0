// One LLaMA-2-7B-shaped layer (hidden 4096, 32 heads x 128, MLP 11008) with random BF16 weights,
// run through the real model code (Checkpoint + Llama<cpu>, a 1-layer model, vocab 256):
//   BM_layer_prefill/512   forward of 512 tokens: 2*512*202.4M weight FLOPs + causal attention
//   BM_decode_step/4096    one new token against a 4096-token KV cache (bandwidth-bound)
//   BM_memory_read         streaming read bandwidth: the floor for decode is
//                          (BF16 weights + KV cache bytes) / bandwidth
// The checkpoint (~410 MB) is written once to $TMPDIR/ropex_bench_layer7b.
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <vector>

namespace fs = std::filesystem;

namespace {

constexpr int64_t kHidden = 4096, kHeads = 32, kHeadDim = 128, kInter = 11008, kVocab = 256;
constexpr double kWeightsPerToken = 4.0 * kHidden * kHidden + 3.0 * kHidden * kInter;  // 202.4M MACs

// Writes a safetensors file of BF16 tensors filled with small random values.
void write_checkpoint(const fs::path& dir) {
  fs::create_directories(dir);
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors = {
      {"model.embed_tokens.weight", {kVocab, kHidden}},
      {"model.layers.0.input_layernorm.weight", {kHidden}},
      {"model.layers.0.self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}},
      {"model.layers.0.self_attn.k_proj.weight", {kHeads * kHeadDim, kHidden}},
      {"model.layers.0.self_attn.v_proj.weight", {kHeads * kHeadDim, kHidden}},
      {"model.layers.0.self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}},
      {"model.layers.0.post_attention_layernorm.weight", {kHidden}},
      {"model.layers.0.mlp.gate_proj.weight", {kInter, kHidden}},
      {"model.layers.0.mlp.up_proj.weight", {kInter, kHidden}},
      {"model.layers.0.mlp.down_proj.weight", {kHidden, kInter}},
      {"model.norm.weight", {kHidden}},
      {"lm_head.weight", {kVocab, kHidden}},
  };
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  size_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    header[name] = {{"dtype", "BF16"}, {"shape", shape}, {"data_offsets", {offset, offset + 2 * n}}};
    offset += 2 * n;
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::ofstream f(dir / "model.safetensors", std::ios::binary);
  const uint64_t len = h.size();
  f.write(reinterpret_cast<const char*>(&len), 8);
  f.write(h.data(), std::streamsize(h.size()));
  std::mt19937 rng(7);
  std::vector<uint16_t> buf(1 << 20);
  for (const auto& [name, shape] : tensors) {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    const bool norm = shape.size() == 1;
    for (size_t done = 0; done < n; done += buf.size()) {
      const size_t m = std::min(buf.size(), n - done);
      for (size_t i = 0; i < m; ++i) {
        const float x = norm ? 1.0f : (float(int32_t(rng() % 2001) - 1000) * 2e-5f);  // |w| <= 0.02
        uint32_t bits;
        std::memcpy(&bits, &x, 4);
        buf[i] = uint16_t(bits >> 16);
      }
      f.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(2 * m));
    }
  }
  std::ofstream(dir / "config.json") << nlohmann::json{
      {"vocab_size", kVocab}, {"hidden_size", kHidden}, {"intermediate_size", kInter}, {"num_hidden_layers", 1},
      {"num_attention_heads", kHeads}, {"num_key_value_heads", kHeads}, {"max_position_embeddings", 4096},
      {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"tie_word_embeddings", false}}.dump(2);
}

ropex::model::Checkpoint& checkpoint() {
  static std::unique_ptr<ropex::model::Checkpoint> ck;
  if (!ck) {
    const fs::path dir = fs::temp_directory_path() / "ropex_bench_layer7b";
    if (!fs::exists(dir / "config.json")) write_checkpoint(dir);
    ck = std::make_unique<ropex::model::Checkpoint>(ropex::model::Checkpoint::open(dir));
  }
  return *ck;
}

std::vector<int32_t> random_tokens(int64_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[size_t(i)] = int32_t((i * 37 + 11) % kVocab);
  return t;
}

void BM_layer_prefill(benchmark::State& st) {
  const int64_t n = st.range(0);
  ropex::model::Llama<> model(checkpoint());
  auto cache = model.make_cache(n);
  const auto tokens = random_tokens(n);
  for (auto _ : st) {
    cache.clear();
    auto h = model.forward(tokens, cache);
    benchmark::DoNotOptimize(h.data());
  }
  const double flops = 2.0 * double(n) * kWeightsPerToken + 2.0 * 2.0 * double(n) * double(n) / 2.0 * kHidden;
  st.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["tokens/s"] = benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_decode_step(benchmark::State& st) {
  const int64_t ctx = st.range(0);
  ropex::model::Llama<> model(checkpoint());
  auto cache = model.make_cache(ctx + 1);
  {  // fill the cache with random keys/values (a real prefill of 4K tokens would take ~a minute here)
    std::vector<float> kv(size_t(256 * kHeads * kHeadDim));
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    for (auto& x : kv) x = nd(rng);
    for (int64_t t = 0; t < ctx; t += 256) {
      const int64_t m = std::min<int64_t>(256, ctx - t);
      cache.append(0, kv.data(), kv.data(), m);
      cache.commit(m);
    }
  }
  const int32_t token = 5;
  for (auto _ : st) {
    cache.truncate(ctx);
    auto h = model.forward(std::span(&token, 1), cache);
    benchmark::DoNotOptimize(h.data());
  }
  // Bytes a decode step must read: BF16 weights + this layer's K and V cache (float32).
  const double bytes = 2.0 * kWeightsPerToken + 2.0 * double(ctx) * kHeads * kHeadDim * 4.0;
  st.counters["bytes"] = bytes;
  st.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_memory_read(benchmark::State& st) {
  const size_t n = size_t(1) << 28;  // 1 GiB of floats, far past every cache
  std::vector<float> a(n, 1.0f);
  for (auto _ : st) {
    double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (int64_t blk = 0; blk < int64_t(n / 4096); ++blk) {
      float s = 0;
      const float* p = a.data() + blk * 4096;
#pragma omp simd reduction(+ : s)
      for (int i = 0; i < 4096; ++i) s += p[i];
      total += s;
    }
    benchmark::DoNotOptimize(total);
  }
  st.counters["bytes/s"] = benchmark::Counter(double(n) * 4, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_memory_read)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_layer_prefill)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
BENCHMARK(BM_decode_step)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();
