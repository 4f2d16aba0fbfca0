// The sgemm ceiling on this machine: Eigen's own GEMM vs the BLAS Eigen can hand products to
// (EIGEN_USE_BLAS), at the shapes of a LLaMA-2-7B layer prefill of 512 tokens:
//   [512 x 4096] x [4096 x 4096]   (q/k/v/o projections)
//   [512 x 4096] x [4096 x 11008]  (gate/up),  [512 x 11008] x [11008 x 4096]  (down)
// and of a SmolLM2-135M chunk of 512 tokens (hidden 576, MLP 1536):
//   [512 x 576] x [576 x 576], [512 x 576] x [576 x 1536], [512 x 1536] x [1536 x 576]
// This file undefines EIGEN_USE_BLAS so "eigen" really is Eigen's kernel; "blas" calls sgemm_.
// "ropex" is ops<cpu>'s own choice (backends/eigen/gemm.hpp: sgemm_ unless OpenBLAS reports a
// core older than the machine, else Eigen); the BLAS's core name is printed in the context.
// OPENBLAS_CORETYPE=SkylakeX (set before the program starts) shows what OpenBLAS could do.
#undef EIGEN_USE_BLAS
#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include <ropex/backends/eigen/gemm.hpp>

#include <cstdint>

#if defined(ROPEX_HAS_BLAS)
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);
#endif

namespace {

void set_flops(benchmark::State& st, double m, double n, double k) {
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_eigen_sgemm(benchmark::State& st) {
  const int m = int(st.range(0)), n = int(st.range(1)), k = int(st.range(2));
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(m, k), b = Eigen::MatrixXf::Random(k, n);
  Eigen::MatrixXf c(m, n);
  for (auto _ : st) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(st, m, n, k);
  st.counters["threads"] = Eigen::nbThreads();
}

#if defined(ROPEX_HAS_BLAS)
void BM_blas_sgemm(benchmark::State& st) {
  const int m = int(st.range(0)), n = int(st.range(1)), k = int(st.range(2));
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(m, k), b = Eigen::MatrixXf::Random(k, n);
  Eigen::MatrixXf c(m, n);
  const float one = 1, zero = 0;
  for (auto _ : st) {
    sgemm_("N", "N", &m, &n, &k, &one, a.data(), &m, b.data(), &k, &zero, c.data(), &m);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(st, m, n, k);
}
BENCHMARK(BM_blas_sgemm)->Args({512, 4096, 4096})->Args({512, 11008, 4096})->Args({512, 4096, 11008})
    ->Args({512, 576, 576})->Args({512, 1536, 576})->Args({512, 576, 1536})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
#endif
BENCHMARK(BM_eigen_sgemm)->Args({512, 4096, 4096})->Args({512, 11008, 4096})->Args({512, 4096, 11008})
    ->Args({512, 576, 576})->Args({512, 1536, 576})->Args({512, 576, 1536})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// y[m, n] = x[m, k] w[n, k]^T through ops<cpu>'s GEMM (row-major, as a matmul of weight rows).
void BM_ropex_gemm(benchmark::State& st) {
  const int m = int(st.range(0)), n = int(st.range(1)), k = int(st.range(2));
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(m, k), b = Eigen::MatrixXf::Random(k, n);
  Eigen::MatrixXf c(m, n);
  for (auto _ : st) {
    ropex::backends::eigen::gemm_nt(m, n, k, a.data(), k, b.data(), k, c.data(), n, false);
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(st, m, n, k);
}
BENCHMARK(BM_ropex_gemm)->Args({512, 4096, 4096})->Args({512, 11008, 4096})->Args({512, 4096, 11008})
    ->Args({512, 576, 576})->Args({512, 1536, 576})->Args({512, 576, 1536})->Unit(benchmark::kMillisecond)
    ->UseRealTime()->MinTime(2.0);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const auto& g = ropex::backends::eigen::gemm_backend();
  benchmark::AddCustomContext("blas_core", g.blas_core.empty() ? "(no OpenBLAS)" : g.blas_core);
  benchmark::AddCustomContext("ropex_gemm", g.use_blas ? "sgemm_" : "eigen");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
