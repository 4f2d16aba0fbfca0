// One-token projections (decode's weight stream) on the GPU: ropex's gemv kernel in several
// shapes (loads in flight per lane, rows per warp, threads per block) against cuBLAS n = 1 and a
// plain streaming read, LLaMA-2-7B's projection sizes, bf16. CUDA events, median of 50 after
// warm-up, weights rotated over copies larger than L2. Prints GB/s of weight bytes.
//   build/bin/gemv
#include <ropex/backends/cuda/ops.cuh>

#include "timing.cuh"

#include <algorithm>
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

template <int D, int R>
double time_variant(const std::vector<DeviceBuffer<bf16>>& w, const bf16* x, bf16* y, int rows, int in, int threads) {
  const size_t smem = size_t(in) * sizeof(bf16);
  auto k = kernels::gemv<bf16, bf16, false, D, R>;
  ROPEX_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 << 10));
  int per_sm = 0;
  ROPEX_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, threads, smem));
  const int warps = threads / 32;
  const int blocks = int(std::min<int64_t>(ceil_div(ceil_div(rows, R), warps), int64_t(per_sm) * device_sm_count()));
  return median_ms([&](int i) {
    kernels::GemvParts<bf16, bf16> gp{};
    gp.count = 1;
    gp.part[0] = GemvPart<bf16>{w[size_t(i) % w.size()].data(), y, rows};
    k<<<blocks, threads, smem>>>(gp, x, rows, in);
  });
}

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
  struct Shape { const char* name; int rows, in; };
  for (const Shape s : {Shape{"q/k/v/o 4096x4096", 4096, 4096}, Shape{"q|k|v 12288x4096", 12288, 4096},
                        Shape{"gate|up 22016x4096", 22016, 4096}, Shape{"down 4096x11008", 4096, 11008}}) {
    const size_t n = size_t(s.rows) * size_t(s.in);
    const int copies = int(std::max<size_t>(2, ceil_div(int64_t(160) << 20, int64_t(n * 2))));  // > L2 in all
    std::vector<DeviceBuffer<bf16>> w;
    for (int c = 0; c < copies; ++c) {
      w.emplace_back(n);
      ROPEX_CUDA_CHECK(cudaMemset(w.back().data(), 0x3c, n * 2));
    }
    DeviceBuffer<bf16> x(size_t(s.in)), y(size_t(s.rows));
    ROPEX_CUDA_CHECK(cudaMemset(x.data(), 0x3c, size_t(s.in) * 2));
    const double gb = double(n) * 2 / 1e9;
    const float one = 1.f, zero = 0.f;
    const double cub = median_ms([&](int i) {
      check_cublas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, s.rows, 1, s.in, &one, w[size_t(i) % w.size()].data(), CUDA_R_16BF,
                                s.in, x.data(), CUDA_R_16BF, s.in, &zero, y.data(), CUDA_R_16BF, s.rows,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   "gemm");
    });
    std::printf("%-20s cuBLAS %7.1f us %6.0f GB/s\n", s.name, cub * 1e3, gb / cub * 1e3);
    for (int threads : {128, 256, 512}) {
      std::printf("%-20s threads %3d:", s.name, threads);
      auto show = [&](const char* tag, double ms) { std::printf("  %s %.1f us %.0f GB/s", tag, ms * 1e3, gb / ms * 1e3); };
      show("d4r1", time_variant<4, 1>(w, x.data(), y.data(), s.rows, s.in, threads));
      show("d8r1", time_variant<8, 1>(w, x.data(), y.data(), s.rows, s.in, threads));
      show("d2r2", time_variant<2, 2>(w, x.data(), y.data(), s.rows, s.in, threads));
      show("d4r2", time_variant<4, 2>(w, x.data(), y.data(), s.rows, s.in, threads));
      show("d2r4", time_variant<2, 4>(w, x.data(), y.data(), s.rows, s.in, threads));
      show("d1r8", time_variant<1, 8>(w, x.data(), y.data(), s.rows, s.in, threads));
      std::printf("\n");
    }
  }
  cublasDestroy(h);
  return 0;
}
