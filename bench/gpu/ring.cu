// Context-parallel ring attention on one GPU: what the ring itself costs. The ranks run on one
// device (as streams, or as a one-device NCCL communicator sending to itself), so the total
// attention work equals one flash call's and the difference is the ring's overhead: block-sized
// flash calls, the fp32 LSE merges, the K/V copies and the synchronisation between steps.
//   usage: ring [OUT.json]     bf16, head_dim 128, 32 query / 8 KV heads, causal
#include <ropex/backends/cuda/flash_prefill.cuh>
#include <ropex/backends/cuda/ring_attention.cuh>
#include <ropex/parallel/zigzag.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <initializer_list>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <vector>

using namespace ropex;
using namespace ropex::cuda;
using bf16 = __nv_bfloat16;

namespace {

__global__ void fill_kernel(bf16* x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z ^= z >> 31;
    x[i] = __float2bfloat16(2.f * (static_cast<float>(z >> 40) / 16777216.f * 2.f - 1.f));
  }
}

// Median wall time of f() with the device synchronised around each call (the ring's streams are
// non-blocking, so events on the legacy stream would not see them).
template <class F>
double median_ms(F&& f, int warmup = 2, int reps = 7) {
  for (int i = 0; i < warmup; ++i) f();
  ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return ms[static_cast<size_t>(reps / 2)];
}

}  // namespace

int main(int argc, char** argv) {
  const int H = 32, KVH = 8, HD = 128;
  nlohmann::json out = nlohmann::json::array();
  for (int64_t T : {16384, 65536}) {
    const size_t qn = size_t(T) * H * HD, kvn = size_t(T) * KVH * HD;
    DeviceBuffer<bf16> q(qn), k(kvn), v(kvn), o(qn);
    fill_kernel<<<1024, 256>>>(q.data(), qn, 1);
    fill_kernel<<<1024, 256>>>(k.data(), kvn, 2);
    fill_kernel<<<1024, 256>>>(v.data(), kvn, 3);
    attention::AttentionShape s;
    s.n_queries = s.n_keys = T; s.n_heads = H; s.n_kv_heads = KVH; s.head_dim = HD; s.causal = true;
    s.scale = 1.0 / std::sqrt(double(HD));
    const double flops = 4.0 * HD * H * (double(T) * (T + 1) / 2);
    const double one = median_ms([&] { flash_attention<bf16>(q.data(), k.data(), v.data(), o.data(), nullptr, 1, s); });
    std::printf("T=%lld flash (one call): %.3f ms, %.0f TFLOP/s\n", (long long)T, one, flops / one / 1e9);
    for (ring::Transport t : {ring::Transport::streams, ring::Transport::nccl})
      for (int n : {1, 2, 4, 8}) {
        const parallel::Zigzag z(T, n);
        ring::Ring<bf16> ring(std::vector<int>(size_t(n), 0), t);
        std::vector<ring::RankIO<bf16>> io;
        for (int r = 0; r < n; ++r) {  // rank r's rows: the window's rows at the same offsets (contents do not matter)
          const int64_t row = z.chunk(r).begin;
          io.push_back({q.data() + row * H * HD, k.data() + row * KVH * HD, v.data() + row * KVH * HD,
                        o.data() + row * H * HD, nullptr});
        }
        // the local rows of a rank are z.local_tokens(r) contiguous rows: keep them inside the window
        bool fits = true;
        for (int r = 0; r < n; ++r) fits = fits && z.chunk(r).begin + z.local_tokens(r) <= T;
        if (!fits) continue;
        const double ms = median_ms([&] { ring.attention(io, s); });
        const char* tn = t == ring::Transport::nccl ? "nccl" : "streams";
        std::printf("T=%lld ring %-7s ranks=%d: %.3f ms (%.2fx one flash call)\n", (long long)T, tn, n, ms, ms / one);
        out.push_back({{"tokens", T}, {"transport", tn}, {"ranks", n}, {"ring_ms", ms}, {"flash_ms", one},
                       {"ratio", ms / one}});
      }
  }
  if (argc > 1) std::ofstream(argv[1]) << out.dump(1) << "\n";
}
