// Prefill products of SmolLM2-135M's shapes: fast mode's int8 GEMM (quant/gemm.hpp) against
// exact mode's path (dequantize the weight rows, then the f32 GEMM of backends/eigen/gemm.hpp)
// and against fast mode's one-token dots applied to every (token, row) pair. Random Q4_1 / Q8_0
// weights; GMAC/s = n * N * K / CPU time of the process (best of --reps): per core, and what
// a loaded machine does not distort. Threads: OMP_NUM_THREADS (1 for the per-core figure).
//   bench_quant_gemm [--reps 5] [--isa scalar|avx2|avx512]
#include <ropex/backends/eigen/gemm.hpp>
#include <ropex/quant/dequantize.hpp>
#include <ropex/quant/dot.hpp>
#include <ropex/quant/gemm.hpp>

#include <algorithm>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace ropex;
using quant::GgmlType;

namespace {

// CPU seconds of the process (all threads): on a shared, loaded machine the time this program
// ran, not the time it waited for a core.
double now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

template <class F>
double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5, isa = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--reps") reps = std::atoi(v.c_str());
    else if (k == "--isa") isa = v == "scalar" ? 0 : v == "avx2" ? 1 : 2;
  }
  struct Shape { GgmlType t; int64_t n, N, K; const char* what; };
  const Shape shapes[] = {{GgmlType::Q4_1, 512, 576, 576, "q/o proj"},
                          {GgmlType::Q4_1, 512, 1536, 576, "gate/up"},
                          {GgmlType::Q4_1, 512, 576, 1536, "down"},
                          {GgmlType::Q8_0, 64, 49152, 576, "lm_head (64 rows)"}};
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::printf("| product | n x N x K | int8 GEMM GMAC/s | one-token dots per pair GMAC/s | dequantize + f32 GEMM GMAC/s |\n");
  std::printf("|---|---|---|---|---|\n");
  for (const Shape& s : shapes) {
    const auto bt = quant::block_traits(s.t);
    const size_t row_bytes = size_t(s.K / bt.block_size * bt.type_size);
    std::vector<std::byte> w(row_bytes * size_t(s.N));
    for (auto& b : w) b = std::byte(rng() & 0xff);
    for (size_t b = 0; b < w.size() / size_t(bt.type_size); ++b) {  // sane f16 scales (and mins)
      const uint16_t h = 0x2000 | uint16_t(rng() % 1024);
      std::memcpy(w.data() + b * size_t(bt.type_size), &h, 2);
      if (s.t == GgmlType::Q4_1) std::memcpy(w.data() + b * size_t(bt.type_size) + 2, &h, 2);
    }
    std::vector<float> x(size_t(s.n * s.K)), y(size_t(s.n * s.N)), wf(size_t(s.N * s.K));
    for (auto& v : x) v = nd(rng);
    const double macs = double(s.n) * double(s.N) * double(s.K);
    const double t_gemm = best_seconds(reps, [&] {
      quant::gemm_int8(s.t, w.data(), row_bytes, s.N, s.K, x.data(), s.K, s.n, y.data(), s.N, false, isa);
    });
    const double t_dots = best_seconds(std::max(1, reps / 2), [&] {
      std::vector<quant::PreparedX> px(size_t(s.n));
      for (int64_t i = 0; i < s.n; ++i) px[size_t(i)].prepare(x.data() + i * s.K, s.K, true);
#pragma omp parallel for schedule(dynamic, 1)
      for (int64_t b = 0; b < (s.N + 15) / 16; ++b)
        for (int64_t i = 0; i < s.n; ++i)
          for (int64_t r = 16 * b; r < std::min(s.N, 16 * b + 16); ++r)
            y[size_t(i * s.N + r)] = quant::dot_row(s.t, w.data() + size_t(r) * row_bytes, px[size_t(i)], true);
    });
    const double t_exact = best_seconds(reps, [&] {
      quant::dequantize(s.t, w.data(), s.N * s.K, wf.data());
      backends::eigen::gemm_nt(s.n, s.N, s.K, x.data(), s.K, wf.data(), s.K, y.data(), s.N, false);
    });
    std::printf("| %s | %lld x %lld x %lld | %.1f | %.1f | %.1f |\n", s.what, (long long)s.n, (long long)s.N,
                (long long)s.K, macs / t_gemm * 1e-9, macs / t_dots * 1e-9, macs / t_exact * 1e-9);
  }
  return 0;
}
