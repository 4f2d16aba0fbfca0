// The prefill GEMM of ops<cpu>:  Y[m, n] (+)= X[m, k] W[n, k]^T  (row-major, W = weight rows),
// by whichever of two kernels is faster on the machine found at run time:
//   sgemm_   the BLAS the program links (OpenBLAS on Debian; its core name found with dlsym), and
//   Eigen's  own GEMM, compiled at the width the program was built for (-march=native: AVX-512).
// OpenBLAS picks its kernel from the CPU's family/model when it loads; a CPU newer than the
// OpenBLAS can get its oldest SSE3 kernel ("Prescott"; 0.3.21 on Intel family 6 model 207), 2-3x
// slower than the AVX2/AVX-512 kernels it has. Its choice is fixed before any code of ours runs
// (OPENBLAS_CORETYPE is read by its constructor), so instead of fighting it: when
// openblas_get_corename() names an SSE-only core while Eigen here was compiled for AVX2 or wider,
// the products go to Eigen. An AVX2 core ("Haswell", "Zen") stays on OpenBLAS even where Eigen is
// AVX-512: measured on the Zen 5 VM (docs/kernels.md, "CPU GEMMs"), Eigen's AVX-512 GEMM is
// 1.4x OpenBLAS's Haswell kernel on one thread (158-184 vs 116-123 GFLOP/s) but its OpenMP
// parallel GEMM fell to 17-44 GFLOP/s at two threads on a loaded machine (OpenBLAS: 97-120), and
// end-to-end prefill was equal within noise. (OpenBLAS's own AVX-512 kernel, 226-239 GFLOP/s,
// needs OPENBLAS_CORETYPE=SkylakeX in the environment before the program starts.)
// ROPEX_GEMM=blas|eigen in the environment overrides the choice (for measurements).
#pragma once
#include <Eigen/Core>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#define ROPEX_GEMM_DLSYM 1
#endif

#if defined(ROPEX_HAS_BLAS)
// Referenced directly (not only through dlsym) so an --as-needed link keeps the BLAS.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);
#endif

namespace ropex::backends::eigen {

/// What gemm_nt calls, decided once per process.
struct GemmBackend {
  using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
  Sgemm sgemm = nullptr;  ///< the linked BLAS's sgemm_, when there is one
  std::string blas_core;  ///< openblas_get_corename(); "" when the BLAS is not OpenBLAS or absent
  bool use_blas = false;  ///< products go to sgemm (else Eigen's GEMM)
  std::string reason;     ///< why, in a few words (benchmarks print it)
};

namespace gemm_detail {

// OpenBLAS core names by the widest vector unit their sgemm kernel uses.
inline int core_width_bits(std::string_view core) {
  std::string c(core);
  for (char& ch : c) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  for (std::string_view k : {"skylakex", "cooperlake", "sapphirerapids"})
    if (c == k) return 512;
  for (std::string_view k : {"haswell", "zen", "excavator", "steamroller", "piledriver", "bulldozer", "sandybridge"})
    if (c == k) return 256;
  return 128;  // Prescott, Core2, Nehalem, Atom, Barcelona, ... (and names we do not know)
}

// The vector width Eigen was compiled for here.
constexpr int eigen_width_bits() {
#if defined(__AVX512F__)
  return 512;
#elif defined(__AVX2__) && defined(__FMA__)
  return 256;
#else
  return 128;
#endif
}

inline GemmBackend detect() {
  GemmBackend g;
#if defined(ROPEX_HAS_BLAS)
  g.sgemm = &::sgemm_;
#endif
#if defined(ROPEX_HAS_BLAS) && defined(ROPEX_GEMM_DLSYM)
  using CoreFn = char* (*)();
  if (auto f = reinterpret_cast<CoreFn>(dlsym(RTLD_DEFAULT, "openblas_get_corename")))
    if (const char* name = f()) g.blas_core = name;
#endif
  const char* env = std::getenv("ROPEX_GEMM");
  const std::string_view forced = env ? env : "";
  if (!g.sgemm) {
    g.reason = "no BLAS linked";
  } else if (forced == "blas" || forced == "eigen") {
    g.use_blas = forced == "blas";
    g.reason = "ROPEX_GEMM=" + std::string(forced);
  } else if (g.blas_core.empty()) {
    g.use_blas = true;  // a BLAS that is not OpenBLAS (MKL, BLIS, Accelerate): trust it
    g.reason = "BLAS is not OpenBLAS";
  } else if (core_width_bits(g.blas_core) < 256 && eigen_width_bits() >= 256) {
    g.reason = "OpenBLAS core " + g.blas_core + " is SSE-only; Eigen is built for " +
               std::to_string(eigen_width_bits()) + "-bit vectors";
  } else {
    g.use_blas = true;
    g.reason = "OpenBLAS core " + g.blas_core;
  }
  return g;
}

}  // namespace gemm_detail

/// The process's choice (detected on first use).
inline const GemmBackend& gemm_backend() {
  static const GemmBackend g = gemm_detail::detect();
  return g;
}

/// Y[m, n] = X[m, k] W[n, k]^T, or Y += with accumulate; all row-major with leading dimensions.
inline void gemm_nt(int64_t m, int64_t n, int64_t k, const float* x, int64_t ldx, const float* w, int64_t ldw,
                    float* y, int64_t ldy, bool accumulate) {
  const GemmBackend& g = gemm_backend();
  if (g.use_blas && m < (int64_t(1) << 31) && n < (int64_t(1) << 31) && k < (int64_t(1) << 31)) {
    // Row-major Y = X W^T is column-major Y^T = W X^T: W's rows are the columns of a k x n
    // column-major matrix (transposed in), X's rows the columns of a k x m one.
    const int mm = int(n), nn = int(m), kk = int(k), lda = int(ldw), ldb = int(ldx), ldc = int(ldy);
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    g.sgemm("T", "N", &mm, &nn, &kk, &one, w, &lda, x, &ldb, &beta, y, &ldc);
    return;
  }
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>> X(x, m, k, Eigen::OuterStride<>(ldx));
  Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>> W(w, n, k, Eigen::OuterStride<>(ldw));
  Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>> Y(y, m, n, Eigen::OuterStride<>(ldy));
  if (accumulate) Y.noalias() += X * W.transpose();
  else Y.noalias() = X * W.transpose();
}

/// True when products run on the BLAS's own threads (then callers keep OpenMP teams out of the
/// way around them; see ops<cpu>::matmul).
inline bool gemm_has_own_threads() { return gemm_backend().use_blas; }

}  // namespace ropex::backends::eigen
