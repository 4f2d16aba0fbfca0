// One-token projections (decode's weight stream) on the GPU: ropex's gemv kernel (gemv.cuh)
// against cuBLAS n = 1 and a plain streaming read, LLaMA-2-7B's projection sizes, bf16; then the
// products of a whole 32-layer step in a row (q|k|v, o +=, gate|up, down +=, each layer its own
// weights) as one CUDA graph: cuBLAS, the gemv kernel, and the gemv kernel launched as
// programmatic dependents (PDL). CUDA events, medians. Prints GB/s of weight bytes.
//   build/bin/gemv
#include <ropex/backends/cuda/buffer.cuh>
#include <ropex/backends/cuda/gemv.cuh>

#include "timing.cuh"

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

using namespace ropex::cuda;
using bf16 = __nv_bfloat16;

namespace {

double median_ms(const std::function<void(int)>& f, int reps = 50) { return ropex::bench::event_median_ms(f, 5, reps); }

__global__ void read_sum(const int4* __restrict__ p, int64_t n, int* out) {
  int acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int4 v = __ldg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x7fffffff) *out = acc;  // keeps the loads
}

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw ropex::Error(std::string("cublas: ") + what);
}

// Small random-ish values so sums do not overflow and differences show.
__global__ void fill_kernel(bf16* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = __float2bfloat16((float(h & 0xffff) / 65535.f - 0.5f) * 0.1f);
  }
}
void fill(bf16* p, size_t n, uint32_t seed = 1) {
  fill_kernel<<<1024, 256>>>(p, n, seed);
  ROPEX_CUDA_CHECK(cudaGetLastError());
}

struct Shape {
  const char* name;
  int rows, in;
};

}  // namespace

int main() {
  cudaDeviceProp prop{};
  ROPEX_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("card: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  {
    const int64_t bytes = int64_t(1) << 31;
    DeviceBuffer<int4> big(size_t(bytes / 16));
    DeviceBuffer<int> out(1);
    ROPEX_CUDA_CHECK(cudaMemset(big.data(), 1, size_t(bytes)));
    const double ms = median_ms([&](int) { read_sum<<<prop.multiProcessorCount * 8, 512>>>(big.data(), bytes / 16, out.data()); }, 20);
    std::printf("streaming read of 2 GiB: %.0f GB/s\n", double(bytes) / ms / 1e6);
  }
  cublasHandle_t h;
  check_cublas(cublasCreate(&h), "create");
  cudaStream_t stream;
  ROPEX_CUDA_CHECK(cudaStreamCreate(&stream));
  cudaStream_t cur = nullptr;  // part 1 on the legacy stream (where the events go), part 2 on `stream`
  const float one = 1.f, zero = 0.f;
  auto cublas_gemv = [&](const bf16* w, const bf16* x, bf16* y, int rows, int in, bool acc) {
    check_cublas(cublasSetStream(h, cur), "stream");
    check_cublas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, rows, 1, in, &one, w, CUDA_R_16BF, in, x, CUDA_R_16BF, in,
                              acc ? &one : &zero, y, CUDA_R_16BF, rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "gemm");
  };
  auto ours = [&](const bf16* w, const bf16* x, bf16* y, int rows, int in, bool acc, bool pdl) {
    const GemvPart<bf16> part{w, y, rows};
    if (!gemv<bf16, bf16>(std::span(&part, 1), in, GemvInput<bf16>{x}, acc, cur, pdl)) throw ropex::Error("gemv does not apply");
  };

  // 1. Each product alone.
  for (const Shape s : {Shape{"q/k/v/o 4096x4096", 4096, 4096}, Shape{"q|k|v 12288x4096", 12288, 4096},
                        Shape{"gate|up 22016x4096", 22016, 4096}, Shape{"down 4096x11008", 4096, 11008},
                        Shape{"lm_head 32000x4096", 32000, 4096}}) {
    const size_t n = size_t(s.rows) * size_t(s.in);
    const int copies = int(std::max<size_t>(2, ceil_div(int64_t(160) << 20, int64_t(n * 2))));  // > L2 in all
    std::vector<DeviceBuffer<bf16>> w;
    for (int c = 0; c < copies; ++c) {
      w.emplace_back(n);
      fill(w.back().data(), n, 7u + c);
    }
    DeviceBuffer<bf16> x(size_t(s.in)), y(size_t(s.rows)), y2(size_t(s.rows));
    fill(x.data(), size_t(s.in), 3u);
    const double gb = double(n) * 2 / 1e9;
    const double cub = median_ms([&](int i) { cublas_gemv(w[size_t(i) % w.size()].data(), x.data(), y.data(), s.rows, s.in, false); });
    const double own = median_ms([&](int i) { ours(w[size_t(i) % w.size()].data(), x.data(), y2.data(), s.rows, s.in, false, false); });
    // Same products as cuBLAS (both accumulate in fp32; the bf16 outputs may differ by a rounding).
    cublas_gemv(w[0].data(), x.data(), y.data(), s.rows, s.in, false);
    ours(w[0].data(), x.data(), y2.data(), s.rows, s.in, false, false);
    std::vector<bf16> a(size_t(s.rows)), b(size_t(s.rows));
    ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
    ROPEX_CUDA_CHECK(cudaMemcpy(a.data(), y.data(), a.size() * 2, cudaMemcpyDeviceToHost));
    ROPEX_CUDA_CHECK(cudaMemcpy(b.data(), y2.data(), b.size() * 2, cudaMemcpyDeviceToHost));
    double md = 0, mx = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      md = std::max(md, std::abs(double(__bfloat162float(a[i])) - double(__bfloat162float(b[i]))));
      mx = std::max(mx, std::abs(double(__bfloat162float(a[i]))));
    }
    std::printf("%-20s cuBLAS %6.1f us %5.0f GB/s | gemv %6.1f us %5.0f GB/s (max |diff| %.2e of max |y| %.2e)\n", s.name,
                cub * 1e3, gb / cub * 1e3, own * 1e3, gb / own * 1e3, md, mx);
  }

  // 2. A decode step's products: 32 layers, each with its own weights, as one graph.
  {
    cur = stream;
    const int L = 32;
    struct Layer {
      DeviceBuffer<bf16> qkv, o, gu, down;
    };
    std::vector<Layer> layers(L);
    double bytes = 0;
    for (auto& l : layers) {
      l.qkv.reserve(size_t(12288) * 4096);
      l.o.reserve(size_t(4096) * 4096);
      l.gu.reserve(size_t(22016) * 4096);
      l.down.reserve(size_t(4096) * 11008);
      fill(l.qkv.data(), l.qkv.size()); fill(l.o.data(), l.o.size()); fill(l.gu.data(), l.gu.size()); fill(l.down.data(), l.down.size());
      bytes += 2.0 * double(l.qkv.size() + l.o.size() + l.gu.size() + l.down.size());
    }
    DeviceBuffer<bf16> x(4096), qkv(12288), att(4096), gu(22016), h2(11008);
    fill(x.data(), 4096); fill(att.data(), 4096); fill(h2.data(), 11008);
    auto step = [&](int mode) {  // 0 cuBLAS, 1 gemv, 2 gemv + PDL
      for (auto& l : layers) {
        if (mode == 0) {
          cublas_gemv(l.qkv.data(), x.data(), qkv.data(), 12288, 4096, false);
          cublas_gemv(l.o.data(), att.data(), x.data(), 4096, 4096, true);
          cublas_gemv(l.gu.data(), x.data(), gu.data(), 22016, 4096, false);
          cublas_gemv(l.down.data(), h2.data(), x.data(), 4096, 11008, true);
        } else {
          const bool pdl = mode == 2;
          ours(l.qkv.data(), x.data(), qkv.data(), 12288, 4096, false, pdl);
          ours(l.o.data(), att.data(), x.data(), 4096, 4096, true, pdl);
          ours(l.gu.data(), x.data(), gu.data(), 22016, 4096, false, pdl);
          ours(l.down.data(), h2.data(), x.data(), 4096, 11008, true, pdl);
        }
      }
    };
    const char* name[] = {"cuBLAS", "gemv", "gemv + PDL"};
    for (int rep = 0; rep < 2; ++rep)
      for (int mode = 0; mode < 3; ++mode) {
        step(mode);  // first calls outside the recording (cuBLAS's setup)
        ROPEX_CUDA_CHECK(cudaStreamSynchronize(stream));
        cudaGraph_t g;
        cudaGraphExec_t ge;
        ROPEX_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        step(mode);
        ROPEX_CUDA_CHECK(cudaStreamEndCapture(stream, &g));
        ROPEX_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
        cudaEvent_t e0, e1;
        ROPEX_CUDA_CHECK(cudaEventCreate(&e0));
        ROPEX_CUDA_CHECK(cudaEventCreate(&e1));
        std::vector<float> t;
        for (int i = 0; i < 25; ++i) {
          ROPEX_CUDA_CHECK(cudaEventRecord(e0, stream));
          ROPEX_CUDA_CHECK(cudaGraphLaunch(ge, stream));
          ROPEX_CUDA_CHECK(cudaEventRecord(e1, stream));
          ROPEX_CUDA_CHECK(cudaEventSynchronize(e1));
          float ms = 0;
          ROPEX_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
          if (i >= 5) t.push_back(ms);
        }
        std::sort(t.begin(), t.end());
        const double ms = t[t.size() / 2];
        std::printf("32-layer step products (%.2f GB) as one graph, %-10s %.3f ms  %.0f GB/s\n", bytes * 1e-9, name[mode], ms,
                    bytes / ms / 1e6);
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        cudaGraphExecDestroy(ge);
        cudaGraphDestroy(g);
      }
  }
  cublasDestroy(h);
  return 0;
}
