// A LLaMA-2-7B-shaped model (32 layers, hidden 4096, 32 heads, bf16; random weights written by
// bench/gpu/llama7b_hf.py, which times HF transformers on the same weights) on ropex's CUDA stack:
//   prefill 4K / 16K tokens (tok/s; forward + last-row logits, from an empty cache)
//   decode at 4K context (ms/token, one token + its logits to the host, vs the floor: weight +
//     KV bytes over the copy bandwidth measured here)
//   layer-streamed perplexity: all 32 layers at 128K, and 1M tokens through a few layers
//     (seconds, peak GB, time per layer x 32 as the full-model estimate, vs the FLOP floor at
//     the bf16 matmul rate measured here)
//   usage: llama7b MODEL_DIR MODEL_DIR_FEW_LAYERS OUT.json [--quick] [--decode-only]
#include <ropex/backends/cuda/ops.cuh>
#include <ropex/eval/perplexity.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

using namespace ropex;
using json = nlohmann::json;
using Model = model::Llama<backends::cuda_bf16>;
using Clock = std::chrono::steady_clock;

namespace {

bool g_quick = false;

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }
void device_sync() { ROPEX_CUDA_CHECK(cudaDeviceSynchronize()); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
size_t used_bytes() {
  size_t f = 0, t = 0;
  ROPEX_CUDA_CHECK(cudaMemGetInfo(&f, &t));
  return t - f;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int32_t> u(3, int32_t(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = u(g);
  return t;
}

// Copy bandwidth (bytes read + written per second) and the bf16 GEMM rate (8192^3, cuBLAS).
json ceilings() {
  const size_t bytes = g_quick ? (size_t(256) << 20) : (size_t(4) << 30);
  cuda::DeviceBuffer<char> a(bytes), b(bytes);
  ROPEX_CUDA_CHECK(cudaMemset(a.data(), 1, bytes));
  auto time_ms = [](auto&& f, int reps) {
    f();
    device_sync();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      const double t0 = now_s();
      f();
      device_sync();
      t.push_back((now_s() - t0) * 1e3);
    }
    return median(t);
  };
  const double copy_ms = time_ms([&] { ROPEX_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice)); }, 10);
  const int n = 8192;
  cuda::DeviceBuffer<__nv_bfloat16> x(size_t(n) * n), y(size_t(n) * n), z(size_t(n) * n);
  ROPEX_CUDA_CHECK(cudaMemset(x.data(), 0x3c, x.size() * 2));
  ROPEX_CUDA_CHECK(cudaMemset(y.data(), 0x3c, y.size() * 2));
  cublasHandle_t h;
  cuda::check_cublas(cublasCreate(&h), "cublasCreate");
  const float one = 1.f, zero = 0.f;
  const double mm_ms = time_ms([&] {
    cuda::check_cublas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, x.data(), CUDA_R_16BF, n, y.data(), CUDA_R_16BF,
                                    n, &zero, z.data(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                       "gemm");
  }, 10);
  cublasDestroy(h);
  return {{"copy_bandwidth_gbs", 2.0 * double(bytes) / copy_ms / 1e6},
          {"matmul_bf16_tflops", 2.0 * double(n) * n * n / mm_ms / 1e9}};
}

// Linear-layer parameters per layer (q, k, v, o, gate, up, down).
double layer_params(const model::LlamaConfig& c) {
  const double d = double(c.hidden_size), kv = double(c.num_key_value_heads * c.head_dim),
               q = double(c.num_attention_heads * c.head_dim), f = double(c.intermediate_size);
  return d * q * 2 + d * kv * 2 + 3 * d * f;
}

json bench_prefill(Model& m, const model::LlamaConfig& c, int64_t tokens) {
  const auto ids = random_tokens(tokens, c.vocab_size, 1);
  auto cache = m.make_cache(tokens);
  std::vector<float> logits(size_t(c.vocab_size));
  auto run = [&] {
    cache.clear();
    const auto h = m.forward(ids, cache);
    m.logits(h.data() + (h.rows() - 1) * h.cols(), 1, logits.data());  // syncs
  };
  run();  // warm-up (cuBLAS heuristics, workspaces)
  std::vector<double> t;
  for (int i = 0; i < (g_quick ? 1 : 3); ++i) {
    const double t0 = now_s();
    run();
    t.push_back(now_s() - t0);
  }
  const double s = median(t);
  std::fprintf(stderr, "prefill %lld tokens: %.3f s, %.0f tok/s\n", (long long)tokens, s, double(tokens) / s);
  return {{"op", "llama7b_prefill"}, {"unit", "tok/s"}, {"shape", {{"tokens", tokens}}}, {"ropex", double(tokens) / s},
          {"seconds", s}};
}

json bench_decode(Model& m, const model::LlamaConfig& c, int64_t context, double copy_gbs) {
  const int steps = 4 + (g_quick ? 8 : 32);  // as llama7b_hf.py: 4 warm-up steps, median of the rest
  const auto ids = random_tokens(context + steps, c.vocab_size, 2);
  auto cache = m.make_cache(context + steps);
  std::vector<float> logits(size_t(c.vocab_size));
  m.forward(std::span(ids).subspan(0, size_t(context)), cache);
  std::vector<double> t;
  auto& gs = m.ops().st->graph_stats;
  int64_t recorded = 0;
  double host_ms = 0;
  for (int i = 0; i < steps; ++i) {  // one token at position context + i, its logits to the host
    const auto g0 = gs;
    const double t0 = now_s();
    const auto h = m.forward(std::span(ids).subspan(size_t(context + i), 1), cache);
    m.logits(h.data(), 1, logits.data());
    if (i >= 4) {
      t.push_back((now_s() - t0) * 1e3);
      recorded += gs.recorded - g0.recorded;
      host_ms += gs.host_ms - g0.host_ms;
    }
  }
  const double ms = median(t);
  // Floor: every weight byte a step reads (not the embedding table: one row) + the K/V of `context` tokens.
  const double weight_bytes = 2.0 * (layer_params(c) * double(c.num_hidden_layers) + double(c.vocab_size * c.hidden_size));
  const double kv_bytes = 2.0 * 2.0 * double(c.num_hidden_layers * context * c.num_key_value_heads * c.head_dim);
  const double floor_ms = (weight_bytes + kv_bytes) / (copy_gbs * 1e9) * 1e3;
  // Graphs: the host time of recording the step, updating the executable graph and launching it.
  const double graph_host_ms = recorded ? host_ms / double(recorded) : 0.0;
  const std::string how = m.ops().st->graphs ? "graphs of " + std::to_string(m.ops().st->graph_layers) + " layers" : "op by op";
  std::fprintf(stderr, "decode at %lld (%s%s, max splits %d): %.3f ms/token (floor %.3f ms: %.2f GB at %.0f GB/s)", (long long)context,
               how.c_str(), m.ops().st->pdl ? ", PDL" : "", m.ops().st->decode_max_splits, ms, floor_ms,
               (weight_bytes + kv_bytes) * 1e-9, copy_gbs);
  if (recorded) std::fprintf(stderr, "; %lld steps recorded, %.3f ms host per step", (long long)recorded, graph_host_ms);
  std::fprintf(stderr, "\n");
  json r = {{"op", "llama7b_decode"}, {"unit", "ms/token"}, {"shape", {{"context", context}}}, {"ropex", ms},
            {"floor", floor_ms}, {"bytes", weight_bytes + kv_bytes}};
  if (recorded) r["graph_host_ms"] = graph_host_ms;
  return r;
}

json bench_perplexity(Model& m, int64_t context, double tflops, const char* op) {
  const auto& c = m.config();
  const size_t base = used_bytes();
  const auto ids = random_tokens(context + 1, c.vocab_size, 3);
  size_t peak = used_bytes();
  const double t0 = now_s();
  double t_layers_end = t0;
  m.on_layer([&](int64_t done, int64_t layers) {
    device_sync();
    peak = std::max(peak, used_bytes());
    t_layers_end = now_s();
    std::fprintf(stderr, "  %s %lld tokens: layer %lld/%lld at %.1f s, %.2f GB in use\n", op, (long long)context,
                 (long long)done, (long long)layers, t_layers_end - t0, double(peak) * 1e-9);
  });
  eval::PerplexityOptions po;
  po.context = context;
  po.logits_rows = 4096;
  const auto r = eval::perplexity(m, ids, po);
  device_sync();
  m.on_layer({});  // the hook captures this frame's locals
  const double total = now_s() - t0, layers_s = t_layers_end - t0, loss_s = total - layers_s;
  peak = std::max(peak, used_bytes());
  const double L = double(c.num_hidden_layers), N = double(context), hd = double(c.head_dim);
  // FLOP floor per layer: linear layers 2*N*params, causal attention 4*N^2/2*head_dim*heads.
  const double layer_flops = 2.0 * N * layer_params(c) + 2.0 * N * N * hd * double(c.num_attention_heads);
  const double head_flops = 2.0 * N * double(c.hidden_size * c.vocab_size);
  const double floor_s = (L * layer_flops + head_flops) / (tflops * 1e12);
  const double per_layer = layers_s / L;
  const double est32 = per_layer * 32.0 + loss_s;
  const double floor32 = (32.0 * layer_flops + head_flops) / (tflops * 1e12);
  std::fprintf(stderr, "%s: %lld tokens, %lld layers: %.1f s (%.2f s/layer, loss %.1f s), peak %.1f GB, ppl %.3f; "
                       "32-layer estimate %.0f s vs floor %.0f s\n",
               op, (long long)context, (long long)c.num_hidden_layers, total, per_layer, loss_s, double(peak) * 1e-9,
               r.perplexity, est32, floor32);
  return {{"op", op}, {"unit", "s"}, {"shape", {{"tokens", context}, {"layers", c.num_hidden_layers}}},
          {"ropex", total}, {"seconds_per_layer", per_layer}, {"loss_seconds", loss_s},
          {"peak_gb", double(peak) * 1e-9}, {"gb_in_use_before", double(base) * 1e-9}, {"perplexity", r.perplexity},
          {"floor_s", floor_s}, {"estimate_32_layers_s", est32}, {"floor_32_layers_s", floor32}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: llama7b MODEL_DIR MODEL_DIR_FEW_LAYERS OUT.json [--quick] [--decode-only]\n");
    return 2;
  }
  bool decode_only = false;  // only the decode step (graphs on / off): a short device call
  for (int i = 4; i < argc; ++i) {
    g_quick = g_quick || std::string(argv[i]) == "--quick";
    decode_only = decode_only || std::string(argv[i]) == "--decode-only";
  }
  try {
    cudaDeviceProp p{};
    ROPEX_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
    json out{{"card", p.name}};
    const json ceil = ceilings();
    out["ceilings"] = ceil;
    std::fprintf(stderr, "%s: copy %.0f GB/s, bf16 matmul %.0f TFLOP/s\n", p.name, double(ceil["copy_bandwidth_gbs"]),
                 double(ceil["matmul_bf16_tflops"]));
    json cases = json::array();
    const double tf = double(ceil["matmul_bf16_tflops"]);
    {
      const double t0 = now_s();
      const model::Checkpoint ck = model::Checkpoint::open(argv[1]);
      Model m(ck, 8192);
      device_sync();
      out["load_seconds"] = now_s() - t0;
      out["weights_gb"] = double(used_bytes()) * 1e-9;
      std::fprintf(stderr, "loaded %s in %.1f s (%.1f GB on the device)\n", argv[1], now_s() - t0, double(used_bytes()) * 1e-9);
      const auto& c = ck.config();
      if (!decode_only) {
        cases.push_back(bench_prefill(m, c, 4096));
        cases.push_back(bench_prefill(m, c, g_quick ? 8192 : 16384));
      }
      {  // "ropex": the default step (CUDA graphs, gemv kernel, PDL); the same op by op (no graph)
         // and without PDL
        const double bw = double(ceil["copy_bandwidth_gbs"]);
        auto& st = *m.ops().st;
        st.graphs = false;
        const json plain = bench_decode(m, c, 4096, bw);
        st.graphs = true;
        const bool pdl = st.pdl;
        st.pdl = false;
        const json no_pdl = bench_decode(m, c, 4096, bw);
        st.pdl = pdl;
        const int default_layers = st.graph_layers;
        json layers = json::object();  // layers per recorded graph: fewer overlap more recording with running
        for (const int l : {32, 8, 4, 1}) {
          st.graph_layers = l;
          layers[std::to_string(l)] = bench_decode(m, c, 4096, bw)["ropex"];
        }
        st.graph_layers = default_layers;
        json by_splits = json::object();  // decode attention's split bound: fewer blocks leave room for the next product
        for (const int sp : {32, 16, 8}) {
          st.decode_max_splits = sp;
          by_splits[std::to_string(sp)] = bench_decode(m, c, 4096, bw)["ropex"];
        }
        st.decode_max_splits = 0;
        json d = bench_decode(m, c, 4096, bw);
        d["ropex_no_graph"] = plain["ropex"];
        d["ropex_no_pdl"] = no_pdl["ropex"];
        d["ropex_by_max_splits"] = by_splits;
        d["graph_layers"] = default_layers;
        d["ropex_by_graph_layers"] = layers;
        cases.push_back(d);
      }
      if (!decode_only) cases.push_back(bench_perplexity(m, g_quick ? 16384 : 131072, tf, "perplexity_128k"));  // all 32 layers
    }
    if (!decode_only) {  // 1M tokens through the first few layers (a full 32-layer pass would outlast one device command)
      const model::Checkpoint ck = model::Checkpoint::open(argv[2]);
      Model m(ck, 8192);
      cases.push_back(bench_perplexity(m, g_quick ? 65536 : 1048576, tf, "perplexity_1m"));
    }
    out["cases"] = cases;
    std::ofstream(argv[3]) << out.dump(1) << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llama7b: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
