// ropex build-wide definitions: version, the host/device macro shared math is written with.
#pragma once

#define ROPEX_VERSION_MAJOR 0
#define ROPEX_VERSION_MINOR 1
#define ROPEX_VERSION_PATCH 0
#define ROPEX_VERSION_STRING "0.1.0"

// Functions marked ROPEX_HD compile for both the CPU and (under nvcc) the GPU, so a formula is
// written once and both backends call the same code.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define ROPEX_HD __host__ __device__
#define ROPEX_DEVICE_COMPILE 1
#else
#define ROPEX_HD
#endif

#ifndef ROPEX_HAS_CUDA
#define ROPEX_HAS_CUDA 0
#endif

// An OpenMP directive that vanishes in a build without OpenMP, where `#pragma omp` would warn
// (-Wunknown-pragmas) in every file including the header; g++ before 13 applies no
// `#pragma GCC diagnostic` to that warning, so a header cannot silence it any other way.
//   ROPEX_OMP(parallel for schedule(static))   is   #pragma omp parallel for schedule(static)
#if defined(_OPENMP)
#define ROPEX_PRAGMA(...) _Pragma(#__VA_ARGS__)
#define ROPEX_OMP(...) ROPEX_PRAGMA(omp __VA_ARGS__)
#else
#define ROPEX_OMP(...)
#endif
