// The C++ loops bench_vectorized.py compares the Python module with, built with the module's flags
// (python/CMakeLists.txt target ropex_py_bench_cpp):
//   1. ropex::extrapolation_limit over n log-spaced bases (d = 128, T_train = 4096), each result
//      stored, as the vectorized binding does: once with literal d and T_train, once with every
//      input read from arrays;
//   2. ropex::apply_rope in place on [tokens, heads, head_dim] float32 with a prebuilt table.
// Prints one JSON object: best-of-reps seconds of each, wall clock and CPU time of the process
// (the "_cpu" keys; on a machine shared with other jobs the CPU time is the steadier of the two).
#include <ropex/rope/apply.hpp>
#include <ropex/rope/scaling.hpp>
#include <ropex/scaling_law.hpp>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

struct Best {
  double wall = 1e30, cpu = 1e30;
};

template <class F>
Best best_of(int reps, F&& f) {
  Best b;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds();
    f();
    b.cpu = std::min(b.cpu, cpu_seconds() - c0);
    b.wall = std::min(b.wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return b;
}
}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 1000000;
  const long tokens = argc > 2 ? std::atol(argv[2]) : 16384, heads = argc > 3 ? std::atol(argv[3]) : 32,
             head_dim = argc > 4 ? std::atol(argv[4]) : 128;
  const int reps = argc > 5 ? std::atoi(argv[5]) : 5;

  std::vector<double> bases(static_cast<size_t>(n));
  for (long i = 0; i < n; ++i) bases[size_t(i)] = std::pow(10.0, 3.0 + 5.0 * double(i) / double(std::max(n - 1, 1L)));
  std::vector<ropex::ExtrapolationLimit> out(static_cast<size_t>(n));
  const Best laws_s = best_of(reps, [&] {
    for (long i = 0; i < n; ++i) out[size_t(i)] = ropex::extrapolation_limit(128, 4096, bases[size_t(i)]);
  });
  double check = 0;
  for (const auto& r : out) check += r.limit;
  // The same calls with every input read from memory (what a caller with data does, and what the
  // binding's loop does): with literal 128 and 4096 above, the compiler folds the T_train logs.
  std::vector<int> dims(static_cast<size_t>(n), 128);
  std::vector<double> train(static_cast<size_t>(n), 4096.0), tune(static_cast<size_t>(n), 0.0),
      pre(static_cast<size_t>(n), 10000.0);
  const Best laws_arrays_s = best_of(reps, [&] {
    for (long i = 0; i < n; ++i) {
      const size_t k = size_t(i);
      out[k] = ropex::extrapolation_limit(dims[k], train[k], bases[k], tune[k], pre[k]);
    }
  });

  ropex::RopeScaling rs;
  const auto inv = rs.inv_freq(int(head_dim));
  const auto table = ropex::rope_table(inv, ropex::iota_positions(tokens));
  std::vector<float> x(size_t(tokens * heads * head_dim));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 97) * 0.01f;
  const Best rope_s = best_of(reps, [&] {
    ropex::apply_rope(x.data(), tokens, heads, head_dim, table, ropex::RopeLayout::half);
  });
  std::printf("{\"n\": %ld, \"laws_s\": %.9g, \"laws_arrays_s\": %.9g, \"laws_cpu_s\": %.9g, \"laws_arrays_cpu_s\": %.9g, "
              "\"laws_checksum\": %.17g, \"tokens\": %ld, \"heads\": %ld, \"head_dim\": %ld, \"apply_rope_s\": %.9g, "
              "\"apply_rope_cpu_s\": %.9g, \"reps\": %d}\n",
              n, laws_s.wall, laws_arrays_s.wall, laws_s.cpu, laws_arrays_s.cpu, check, tokens, heads, head_dim,
              rope_s.wall, rope_s.cpu, reps);
}
