// Sliding-window attention cost, and the window-0 paths against an older tree (bench/gpu/run_window.sh
// builds this one file against both): one process, CUDA events, median of repeats.
//   prefill: flash attention, bf16, head_dim 128, causal; window 0 and 4096 at seq 16K (32q/8kv),
//            window 0 at seq 4K x 4 sequences (causal and not), Hopper kernel and the mma.sync one;
//            TFLOP/s of the work done: 4 * head_dim * heads * (query, key) pairs attended
//   decode:  one token, 32q/8kv, 4K / 32K / 128K keys, every kernel; window 4096 at 32K and 128K
//   model:   a LLaMA-2-7B-shaped bf16 model with random weights (hidden 4096, 32 heads, inter 11008,
//            vocab 32000; `layers` of its 32), prefill of 4096 tokens and decode at 4K context
//   usage: window OUT.json [MODEL_DIR [layers]]   (MODEL_DIR is written when it does not exist)
// Windows are set only where AttentionShape has the field (older trees time window 0 alone).
#include <ropex/backends/cuda/decode.cuh>
#include <ropex/backends/cuda/flash_prefill.cuh>
#include <ropex/backends/cuda/ops.cuh>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include "timing.cuh"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace ropex;
using namespace ropex::cuda;
using bf16 = __nv_bfloat16;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

template <class S>
bool set_window(S& s, int64_t w) {  // false where the tree has no windows
  if constexpr (requires { s.window = w; }) {
    s.window = w;
    return true;
  } else {
    return w == 0;
  }
}

__global__ void fill_kernel(bf16* x, size_t n, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    x[i] = __float2bfloat16(amp * (static_cast<float>(z >> 40) / 16777216.f * 2.f - 1.f));
  }
}
struct Buf {
  bf16* p = nullptr;
  size_t n;
  explicit Buf(size_t count, float amp = 1.f) : n(count) {
    ROPEX_CUDA_CHECK(cudaMalloc(&p, n * sizeof(bf16)));
    static uint64_t seed = 7;
    fill_kernel<<<1024, 256>>>(p, n, seed++, amp);
  }
  ~Buf() { cudaFree(p); }
};

double median_ms(const std::function<void(int)>& f, int warmup, int reps) { return bench::event_median_ms(f, warmup, reps); }

// (query, key) pairs attended by one head of one sequence.
double pairs(int64_t nq, int64_t nk, bool causal, int64_t window) {
  double p = 0;
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t vis = causal ? std::min(nk, nk - nq + i + 1) : nk;
    const int64_t first = causal && window > 0 ? std::max<int64_t>(0, nk - nq + i + 1 - window) : 0;
    p += double(vis - first);
  }
  return p;
}

json bench_prefill() {
  json out = json::array();
  const int hq = 32, d = 128;
  struct P {
    int batch;
    int64_t seq;
    int hkv;
    bool causal;
    int64_t window;
  };
  const std::vector<P> cases = {{1, 16384, 8, true, 0},  {1, 16384, 8, true, 4096}, {4, 4096, 8, true, 0},
                                {4, 4096, 8, false, 0},  {4, 4096, 32, true, 0},    {1, 16384, 8, true, 1024}};
  for (const P& c : cases) {
    attention::AttentionShape s;
    s.n_queries = s.n_keys = c.seq; s.n_heads = hq; s.n_kv_heads = c.hkv; s.head_dim = d;
    s.causal = c.causal; s.scale = 1.0 / std::sqrt(double(d));
    if (!set_window(s, c.window)) continue;
    const size_t tokens = size_t(c.batch) * c.seq;
    Buf q(tokens * hq * d, 2.f), k(tokens * c.hkv * d, 2.f), v(tokens * c.hkv * d), o(tokens * hq * d);
    const double flops = 4.0 * d * hq * c.batch * pairs(c.seq, c.seq, c.causal, c.window);
    for (FlashKernel kernel : {FlashKernel::automatic, FlashKernel::fa2}) {
      FlashTiling t;
      t.kernel = kernel;
      auto run = [&](int) { flash_attention(q.p, k.p, v.p, o.p, nullptr, c.batch, s, {}, t); };
      median_ms(run, 3, 3);
      const double ms = median_ms(run, 5, 20);
      const char* kn = kernel == FlashKernel::fa2 ? "fa2" : "auto";
      out.push_back({{"op", "prefill"}, {"kernel", kn}, {"batch", c.batch}, {"seq", c.seq}, {"heads_q", hq},
                     {"heads_kv", c.hkv}, {"head_dim", d}, {"causal", c.causal}, {"window", c.window}, {"ms", ms},
                     {"tflops_done", flops / ms / 1e9}});
      std::printf("prefill %s b=%d seq=%lld hkv=%d causal=%d window=%lld: %.3f ms, %.1f TFLOP/s of work done\n", kn,
                  c.batch, (long long)c.seq, c.hkv, c.causal, (long long)c.window, ms, flops / ms / 1e9);
    }
  }
  return out;
}

json bench_decode() {
  json out = json::array();
  const int hq = 32, hkv = 8, d = 128;
  struct D {
    int64_t len, window;
  };
  for (const D& c : std::vector<D>{{4096, 0}, {32768, 0}, {32768, 4096}, {131072, 0}, {131072, 4096}}) {
    attention::AttentionShape s;
    s.n_queries = 1; s.n_keys = c.len; s.n_heads = hq; s.n_kv_heads = hkv; s.head_dim = d;
    s.query_offset = c.len - 1; s.causal = true; s.scale = 1.0 / std::sqrt(double(d));
    if (!set_window(s, c.window)) continue;
    const size_t elems = size_t(c.len) * hkv * d;
    const int sets = static_cast<int>(std::clamp<double>(std::ceil(400e6 / (4.0 * elems)), 1, 64));
    std::vector<std::unique_ptr<Buf>> ks, vs;
    for (int i = 0; i < sets; ++i) ks.emplace_back(new Buf(elems, 2.f)), vs.emplace_back(new Buf(elems));
    Buf q(size_t(hq) * d, 2.f), o(size_t(hq) * d);
    DecodeWorkspace ws;
    struct K {
      const char* name;
      DecodeKernel kernel;
      bool head_major;
    };
    for (const K& k : std::vector<K>{{"auto token-major", DecodeKernel::automatic, false},
                                     {"auto head-major", DecodeKernel::automatic, true},
                                     {"cuda_core", DecodeKernel::cuda_core, false},
                                     {"tensor_core", DecodeKernel::tensor_core, false}}) {
      auto view = [&](bf16* p) {
        return k.head_major ? KVView<bf16>{p, 0, d, c.len * d} : KVView<bf16>::token_major(p, c.len, hkv, d);
      };
      auto run = [&](int i) {
        const int j = i % sets;
        decode_attention(q.p, view(ks[j]->p), view(vs[j]->p), o.p, nullptr, 1, s, ws, 0, nullptr, k.kernel);
      };
      median_ms(run, 30, 50);
      const double ms = median_ms(run, 30, 50);
      const double read = 4.0 * double(c.window > 0 ? std::min(c.window, c.len) : c.len) * hkv * d;  // K + V bytes needed
      out.push_back({{"op", "decode"}, {"kernel", k.name}, {"kv_len", c.len}, {"window", c.window}, {"ms", ms},
                     {"gbps_needed", read / ms / 1e6}});
      std::printf("decode %-16s L=%6lld window=%4lld: %.4f ms (%.0f GB/s of the K/V it needs)\n", k.name, (long long)c.len,
                  (long long)c.window, ms, read / ms / 1e6);
    }
  }
  return out;
}

// A LLaMA-2-7B-shaped checkpoint (bf16 safetensors, random weights) with `layers` layers.
void write_model(const fs::path& dir, int layers) {
  fs::create_directories(dir);
  const int64_t hidden = 4096, inter = 11008, vocab = 32000;
  json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", hidden},
              {"intermediate_size", inter}, {"num_hidden_layers", layers}, {"num_attention_heads", 32},
              {"num_key_value_heads", 32}, {"vocab_size", vocab}, {"max_position_embeddings", 4096},
              {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"tie_word_embeddings", false}, {"hidden_act", "silu"}};
  std::ofstream(dir / "config.json") << cfg.dump(2);
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes{{"model.embed_tokens.weight", {vocab, hidden}}};
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (auto n : {"input_layernorm.weight", "post_attention_layernorm.weight"}) shapes.push_back({p + n, {hidden}});
    for (auto n : {"q_proj", "k_proj", "v_proj", "o_proj"}) shapes.push_back({p + "self_attn." + n + ".weight", {hidden, hidden}});
    shapes.push_back({p + "mlp.gate_proj.weight", {inter, hidden}});
    shapes.push_back({p + "mlp.up_proj.weight", {inter, hidden}});
    shapes.push_back({p + "mlp.down_proj.weight", {hidden, inter}});
  }
  shapes.push_back({"model.norm.weight", {hidden}});
  shapes.push_back({"lm_head.weight", {vocab, hidden}});
  json header = json::object();
  size_t off = 0;
  for (const auto& [name, shape] : shapes) {
    size_t n = 1;
    for (int64_t x : shape) n *= size_t(x);
    header[name] = {{"dtype", "BF16"}, {"shape", shape}, {"data_offsets", {off, off + 2 * n}}};
    off += 2 * n;
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::ofstream f(dir / "model.safetensors", std::ios::binary);
  const uint64_t len = h.size();
  f.write(reinterpret_cast<const char*>(&len), 8);
  f.write(h.data(), std::streamsize(h.size()));
  // Weights uniform in +-0.02 (norms near 1): one 64 MB random block, written over and over.
  std::mt19937 gen(1);
  std::vector<uint16_t> block(size_t(32) << 20);
  auto bits = [](float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return uint16_t(u >> 16);
  };
  std::uniform_real_distribution<float> u(-0.02f, 0.02f);
  for (auto& b : block) b = bits(u(gen));
  const std::vector<uint16_t> ones(size_t(hidden), bits(1.f));
  for (const auto& [name, shape] : shapes) {
    size_t n = 1;
    for (int64_t x : shape) n *= size_t(x);
    if (shape.size() == 1) {
      f.write(reinterpret_cast<const char*>(ones.data()), std::streamsize(2 * n));
      continue;
    }
    for (size_t i = 0; i < n; i += block.size())
      f.write(reinterpret_cast<const char*>(block.data()), std::streamsize(2 * std::min(block.size(), n - i)));
  }
}

json bench_model(const fs::path& dir, int layers) {
  if (!fs::exists(dir / "model.safetensors")) write_model(dir, layers);
  const model::Checkpoint ck = model::Checkpoint::open(dir);
  model::Llama<backends::cuda_bf16> m(ck, 4096);
  const int64_t vocab = ck.config().vocab_size, n = 4096;
  std::mt19937_64 g(3);
  std::vector<int32_t> tokens(size_t(n) + 64);
  for (auto& t : tokens) t = int32_t(g() % uint64_t(vocab - 3)) + 3;
  std::vector<float> row(static_cast<size_t>(vocab));
  using Clock = std::chrono::steady_clock;
  auto secs = [](Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); };
  std::vector<double> prefill, decode;
  for (int r = 0; r < 4; ++r) {  // prefill 4096 tokens from an empty cache (first one discarded)
    auto cache = m.make_cache(n + 64);
    ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
    const auto t0 = Clock::now();
    const auto h = m.forward(std::span(tokens).first(size_t(n)), cache);
    m.logits(h.data() + (n - 1) * h.cols(), 1, row.data());
    if (r > 0) prefill.push_back(secs(t0));
    if (r == 3) {  // decode at 4K context: 36 steps, the first 4 discarded
      for (int i = 0; i < 36; ++i) {
        const auto t1 = Clock::now();
        const auto hd = m.forward(std::span(tokens).subspan(size_t(n + i), 1), cache);
        m.logits(hd.data(), 1, row.data());
        if (i >= 4) decode.push_back(secs(t1));
      }
    }
  }
  auto med = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double p = med(prefill), dm = med(decode);
  std::printf("model (7B-shaped, %d layers): prefill 4096 tokens %.1f ms (%.0f tok/s); decode at 4K %.3f ms/token\n", layers,
              1e3 * p, n / p, 1e3 * dm);
  return {{"op", "model"}, {"layers", layers}, {"prefill_4096_ms", 1e3 * p}, {"decode_4k_ms", 1e3 * dm}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: window OUT.json [MODEL_DIR [layers]]\n");
    return 2;
  }
  try {
    cudaDeviceProp prop{};
    ROPEX_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    json r = {{"card", prop.name}};
    const char* ops_env = std::getenv("ROPEX_BENCH_OPS");
    const std::string ops = ops_env ? ops_env : "prefill,decode,model";
    if (ops.find("decode") != std::string::npos) r["decode"] = bench_decode();
    if (ops.find("prefill") != std::string::npos) r["prefill"] = bench_prefill();
    if (argc > 2 && ops.find("model") != std::string::npos) r["model"] = bench_model(argv[2], argc > 3 ? std::atoi(argv[3]) : 32);
    std::ofstream(argv[1]) << r.dump(1) << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "window: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
