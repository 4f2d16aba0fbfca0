// CPU threads for everything ropex runs on: its OpenMP kernels, Eigen's GEMM, and OpenBLAS's own
// pool when the linked BLAS is OpenBLAS (found at run time, so no link dependency on it). One
// definition for the CLI's --threads and the Python module's threads=.
#pragma once
#include <Eigen/Core>

#include <dlfcn.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ropex::backends {

/// n <= 0 keeps the defaults (all cores).
inline void set_cpu_threads(int n) {
  if (n <= 0) return;
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
  using SetFn = void (*)(int);
  if (auto f = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(n);
}

}  // namespace ropex::backends
