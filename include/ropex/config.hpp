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
