// ops<cuda_bf16> / ops<cuda_f32>: the math a LLaMA layer needs, on one GPU, under the same names
// as ops<cpu> (backends/eigen/ops.hpp), so model::Llama<cuda_bf16> runs the very same forward().
//
//   cuda_bf16: weights, activations and the KV cache in bf16, every product accumulated in fp32
//              (cuBLAS GEMMs with CUBLAS_COMPUTE_32F; flash / split-KV decode attention; RMSNorm,
//              SwiGLU and softmax statistics in fp32) — what HF transformers runs in bf16.
//   cuda_f32:  everything in fp32 (pure-fp32 cuBLAS, no TF32): the parity path, within 1e-3 of
//              the CPU.
//
// Stream: every kernel, cuBLAS call and copy of a model runs in order on one stream its State owns
// (not the legacy default stream, which cannot be recorded into a graph). It is a blocking stream
// (default flags): code outside the ops that reads a model's output with a plain cudaMemcpy (tests,
// tools) still waits for it. Tokens go up through a pinned buffer by cudaMemcpyAsync; the only host
// syncs are the copies of logits / losses back to the host (cudaMemcpyAsync + cudaStreamSynchronize).
//
// Graphs: a one-token forward() (a decode step: ~15 launches per layer, ~500 for a 7B model) is
// recorded with stream capture (Llama::forward calls begin_step / end_layer / end_step) and run
// as CUDA graphs of st->graph_layers layers each, every one launched as soon as it is recorded so
// that recording the next overlaps the GPU's work. Kernel arguments change every step (number of
// keys, split count, the cache row written), so each step is recorded anew and patched into the
// executable graph of the same segment with cudaGraphExecUpdate (re-instantiated if the update
// is refused, e.g. a different topology). Why segments: recording + updating a step costs the
// host time (~1.1 ms for a 7B step with cuBLAS products, ~0.2-0.3 ms with the gemv kernel); as one
// graph that time comes before the GPU starts, in pieces it overlaps the GPU's work. With the gemv
// kernel and PDL, graphs of 4 layers measured 4.557-4.585 ms against 4.580-4.606 for 2, 4.597-4.609
// for 8 and 4.71-4.79 for one graph (H200, 4K context, three runs; bench/gpu/llama7b.cu).
// PDL: the kernels of a step (RMSNorm, gemv, RoPE, KV append, decode attention, SwiGLU) are
// launched as programmatic dependents (State::pdl, on for sm_90+): each lets the next one start as
// soon as it runs, and waits for the one before only where it reads its output, so the gemv
// kernel's first weight loads overlap the previous kernel's tail. One-token products go through
// that kernel wherever it applies (gemv.cuh gemv_fits) rather than cuBLAS: the same speed alone,
// ~8% faster chained with PDL over a 7B step's products (bench/gpu/gemv.cu, H200).
// Nothing inside a step may allocate or synchronize: the decode workspace, the cuBLAS workspace
// and every scratch buffer are sized before recording starts, and the first one-token step of a
// State runs op by op (one-time setup: kernel attributes, cuBLAS's first calls). State::graphs
// (default on; ROPEX_CUDA_GRAPHS=0 turns it off) switches it.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/backends/cuda/buffer.cuh>
#include <ropex/backends/cuda/common.cuh>
#include <ropex/backends/cuda/decode.cuh>
#include <ropex/backends/cuda/flash_prefill.cuh>
#include <ropex/backends/cuda/gemv.cuh>
#include <ropex/backends/cuda/rope.cuh>
#include <ropex/backends/eigen/ops.hpp>  // the ops<> template, model::TensorView
#include <ropex/rope/scaling.hpp>

#include <cublas_v2.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ropex::backends {

/// Backend tags: Llama<cuda_bf16> (the fast path) and Llama<cuda_f32> (the parity path).
struct cuda_bf16 {};
struct cuda_f32 {};

}  // namespace ropex::backends

namespace ropex::cuda {

inline void check_cublas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw ropex::Error(std::string("cublas: ") + what + ": status " + std::to_string(static_cast<int>(st)));
}

template <class T> inline constexpr cudaDataType_t kCudaType = CUDA_R_32F;
template <> inline constexpr cudaDataType_t kCudaType<__nv_bfloat16> = CUDA_R_16BF;
template <> inline constexpr cudaDataType_t kCudaType<__half> = CUDA_R_16F;

namespace kernels {

/// Stored checkpoint bytes (F32 / F16 / BF16) -> T, elementwise.
template <class T>
__global__ void convert(T* __restrict__ dst, const void* __restrict__ src, model::DType dtype, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float x;
    if (dtype == model::DType::f32) x = static_cast<const float*>(src)[i];
    else if (dtype == model::DType::bf16) x = __bfloat162float(static_cast<const __nv_bfloat16*>(src)[i]);
    else x = __half2float(static_cast<const __half*>(src)[i]);
    dst[i] = from_float<T>(x);
  }
}

/// x[t, :] = table[tokens[t], :]
template <class T>
__global__ void embed(T* __restrict__ x, const T* __restrict__ table, const int32_t* __restrict__ tokens, int64_t dim) {
  const int64_t t = blockIdx.x;
  const T* row = table + static_cast<int64_t>(tokens[t]) * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) x[t * dim + i] = row[i];
}

/// E elements of T moved as one access (E = kVec<T>: 16 bytes; E = 1: any alignment).
template <class T, int E>
struct alignas(sizeof(T) * E) Pack {
  T v[E];
};

/// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w   (one block per row, E elements per access; in
/// place is fine: each element is read, then written, by the same thread)
template <class T, int E>
__global__ void rmsnorm(T* out, const T* x, const float* __restrict__ w, int64_t dim, float eps) {
  pdl_launch_dependents();
  pdl_wait();
  __shared__ float red[32];
  using P = Pack<T, E>;
  const int64_t np = dim / E;
  const P* xr = reinterpret_cast<const P*>(x + blockIdx.x * dim);
  P* orow = reinterpret_cast<P*>(out + blockIdx.x * dim);
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < np; i += blockDim.x) {
    const P p = xr[i];
#pragma unroll
    for (int e = 0; e < E; ++e) ss += to_float(p.v[e]) * to_float(p.v[e]);
  }
  const float inv = rms_scale(block_sum(ss, red), dim, eps);
  for (int64_t i = threadIdx.x; i < np; i += blockDim.x) {
    P p = xr[i];
#pragma unroll
    for (int e = 0; e < E; ++e) p.v[e] = from_float<T>(to_float(p.v[e]) * inv * w[i * E + e]);
    orow[i] = p;
  }
}

/// a <- f(a, b) elementwise, 16 bytes per thread per step (n a multiple of kVec<T>, 16-byte
/// aligned pointers: every activation buffer here), fp32 math.
template <class T, class F>
__global__ void binary_vec(T* __restrict__ a, const T* __restrict__ b, int64_t n_vec, F f) {
  pdl_launch_dependents();
  pdl_wait();
  using V = Vec16<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_vec; i += int64_t(gridDim.x) * blockDim.x) {
    V x = reinterpret_cast<V*>(a)[i];
    const V y = reinterpret_cast<const V*>(b)[i];
#pragma unroll
    for (int e = 0; e < kVec<T>; ++e) x.v[e] = from_float<T>(f(to_float(x.v[e]), to_float(y.v[e])));
    reinterpret_cast<V*>(a)[i] = x;
  }
}
template <class T, class F>
__global__ void binary(T* __restrict__ a, const T* __restrict__ b, int64_t n, F f) {
  pdl_launch_dependents();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    a[i] = from_float<T>(f(to_float(a[i]), to_float(b[i])));
}
/// y[r, :] += bias for every row r of `cols` (projection biases), E elements an access; the bias is
/// fp32 (upload_vector), the sum taken in fp32. n_packs = rows * cols / E, cols_packs = cols / E.
template <class T, int E>
__global__ void add_bias(T* __restrict__ y, const float* __restrict__ bias, int64_t n_packs, int64_t cols_packs) {
  pdl_launch_dependents();
  pdl_wait();
  using P = Pack<T, E>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n_packs; i += int64_t(gridDim.x) * blockDim.x) {
    const float* b = bias + (i % cols_packs) * E;
    P p = reinterpret_cast<P*>(y)[i];
#pragma unroll
    for (int e = 0; e < E; ++e) p.v[e] = from_float<T>(to_float(p.v[e]) + b[e]);
    reinterpret_cast<P*>(y)[i] = p;
  }
}
struct SiluMul {  // SwiGLU (common.cuh's silu_mul)
  __device__ float operator()(float g, float u) const { return silu_mul(g, u); }
};

/// nll[r] = log sum_v exp(logits[r, v]) - logits[r, target[r]]   (one block per row)
// static: ops.cuh is included by several .cu files of one program (internal linkage, no duplicate symbol)
static __global__ void row_nll(float* __restrict__ nll, const float* __restrict__ logits, const int32_t* __restrict__ targets,
                        int64_t vocab) {
  __shared__ float red[32];
  const float* row = logits + blockIdx.x * vocab;
  float mx = -INFINITY;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) mx = fmaxf(mx, row[v]);
  mx = block_max(mx, red);
  float s = 0.f;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) s += expf(row[v] - mx);
  s = block_sum(s, red);
  if (threadIdx.x == 0) nll[blockIdx.x] = logf(s) + mx - row[targets[blockIdx.x]];
}

/// Plain causal GQA attention for any head_dim <= 256 and any T (the fp32 path, and head sizes
/// the tensor-core kernels do not cover): one warp per (query, head) row, lanes across head_dim,
/// keys one at a time with the online-softmax recurrence in fp32. lse (optional, [heads, queries],
/// natural log; -inf for a row that sees no key): what the context-parallel ring merges blocks by.
template <class T>
__global__ void attention_rows(attention::HeadsView<const T> q, attention::HeadsView<const T> k,
                               attention::HeadsView<const T> v, attention::HeadsView<T> o,
                               attention::AttentionShape s, float* lse = nullptr) {
  const int lane = threadIdx.x % 32;
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  if (row >= s.n_queries * s.n_heads) return;
  const int64_t i = row / s.n_heads, h = row % s.n_heads, kvh = h / s.group();
  const int D = static_cast<int>(s.head_dim);
  const T* qr = q.row(i, h);
  float qv[8], acc[8];
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const int e = lane + 32 * c;
    qv[c] = e < D ? to_float(qr[e]) : 0.f;
    acc[c] = 0.f;
  }
  const float scale = static_cast<float>(s.scale);
  float m = -INFINITY, l = 0.f;
  const int64_t visible = s.visible_keys(i);
  for (int64_t j = s.first_key(i); j < visible; ++j) {  // a sliding window starts past key 0
    const T* kr = k.row(j, kvh);
    float d = 0.f;
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const int e = lane + 32 * c;
      if (e < D) d += qv[c] * to_float(kr[e]);
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) d += __shfl_xor_sync(0xffffffffu, d, off);
    const float sc = d * scale, m_new = fmaxf(m, sc);
    const float corr = expf(m - m_new), p = expf(sc - m_new);
    l = l * corr + p;
    const T* vr = v.row(j, kvh);
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const int e = lane + 32 * c;
      acc[c] = acc[c] * corr + (e < D ? p * to_float(vr[e]) : 0.f);
    }
    m = m_new;
  }
  T* orow = o.row(i, h);
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const int e = lane + 32 * c;
    if (e < D) orow[e] = from_float<T>(acc[c] * inv);
  }
  if (lse && lane == 0) lse[h * s.n_queries + i] = l > 0.f ? m + logf(l) : -INFINITY;
}

static __global__ void iota(int64_t* p, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) p[i] = i;
}

}  // namespace kernels

inline unsigned grid_for(int64_t n, int threads = 256) {
  return static_cast<unsigned>(std::clamp<int64_t>(ceil_div(n, threads), 1, int64_t(1) << 16));
}

/// The GPU side of Llama<cuda_*>: T = __nv_bfloat16 or float.
template <class T>
struct Ops {
  using Scalar = T;
  using Matrix = DeviceMatrix<T>;
  using Cache = DeviceKVCache<T>;
  /// A [rows, cols] nn.Linear weight (or the embedding table) resident on the device in T; weights
  /// uploaded together (upload_stacked) share one allocation, rows back to back.
  struct Weight {
    std::shared_ptr<DeviceBuffer<T>> buffer;
    T* ptr = nullptr;
    int64_t rows = 0, cols = 0;
    const T* data() const { return ptr; }
  };
  using Vector = DeviceBuffer<float>;  ///< norm weights
  /// Rotation of a chunk: positions first .. first+n-1 under the frequencies of one forward(),
  /// as a device cos/sin table made once and applied in every layer.
  struct Rope {
    std::shared_ptr<const RopeFrequencies> freq;
    std::shared_ptr<DeviceBuffer<float2>> table;  // [n, half]
    int64_t first = 0, n = 0;
  };

  /// How the one-token steps ran: recorded into graphs (patched into the executable graph of the
  /// same segment of the last step, or instantiated afresh), and the host time of those steps.
  struct GraphStats {
    int64_t recorded = 0;  // steps
    int64_t segments = 0, updated = 0, instantiated = 0;  // graphs launched; how each got its executable
    double host_ms = 0;    // begin_step .. end_step, recording overlapped with the GPU's work
  };

  /// State shared by copies (the model keeps one): the stream, cuBLAS handle, workspaces, small
  /// buffers, the decode step's graph.
  struct State {
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    DeviceBuffer<unsigned char> blas_workspace;  // ours, so cuBLAS allocates nothing inside a recording
    DecodeWorkspace decode;
    int64_t decode_reserved_head_dim = 0;  // the decode workspace holds any split count for it
    std::shared_ptr<const RopeFrequencies> freq;  // the last frequencies, reused while unchanged
    std::vector<double> freq_key;
    DeviceBuffer<int64_t> positions;  // 0, 1, 2, ... (RoPE reads positions[first ...])
    DeviceBuffer<int64_t> positions_at;  // the rows' positions of rope_angles_at
    std::vector<std::shared_ptr<DeviceBuffer<float2>>> rope_tables;  // cos/sin of chunks (rope_angles)
    DeviceBuffer<int32_t> tokens;
    int32_t* pinned = nullptr;  // host staging of tokens / targets (pinned: async, capturable copies)
    size_t pinned_size = 0;
    cudaEvent_t pinned_free = nullptr;  // recorded after the last copy out of `pinned`
    DeviceBuffer<float> logits, nll;
    DeviceBuffer<unsigned char> staging;  // checkpoint bytes on their way to T
    /// The kernels of a step launched as programmatic dependents (common.cuh; sm_90+;
    /// ROPEX_CUDA_PDL=0 turns it off).
    bool pdl = pdl_default();
    /// Upper bound on decode attention's KV splits (0: as many as fill the GPU once).
    int decode_max_splits = 0;
    /// One-token steps recorded and launched as CUDA graphs (see the top of this file), one graph
    /// per `graph_layers` layers.
    bool graphs = graphs_default();
    int graph_layers = 4;
    std::vector<cudaGraphExec_t> graph;  // per segment of a step
    bool stepped = false;  // a one-token step has run op by op (one-time setup done)
    GraphStats graph_stats;
    std::chrono::steady_clock::time_point step_start;
    State() {
      int n_dev = 0;
      const cudaError_t e = cudaGetDeviceCount(&n_dev);
      if (e != cudaSuccess || n_dev == 0)
        throw ropex::Error(std::string("cuda: no usable CUDA device (") +
                           (e != cudaSuccess ? cudaGetErrorString(e) : "none visible") + ")");
      ROPEX_CUDA_CHECK(cudaStreamCreate(&stream));
      ROPEX_CUDA_CHECK(cudaEventCreateWithFlags(&pinned_free, cudaEventDisableTiming));
      check_cublas(cublasCreate(&blas), "cublasCreate");
      // Weights are read once per decode step: keep the workspace; no TF32 (pure fp32 on cuda_f32).
      check_cublas(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
      // The stream first: cublasSetStream resets the workspace to cuBLAS's own pool. 32 MiB is
      // what cuBLAS asks for on Hopper.
      check_cublas(cublasSetStream(blas, stream), "cublasSetStream");
      blas_workspace.reserve(size_t(32) << 20);
      check_cublas(cublasSetWorkspace(blas, blas_workspace.data(), blas_workspace.size()), "cublasSetWorkspace");
    }
    ~State() {
      for (cudaGraphExec_t g : graph)
        if (g) cudaGraphExecDestroy(g);
      if (blas) cublasDestroy(blas);
      if (pinned) cudaFreeHost(pinned);
      if (pinned_free) cudaEventDestroy(pinned_free);
      if (stream) cudaStreamDestroy(stream);
    }
    static bool pdl_default() {
      const char* e = std::getenv("ROPEX_CUDA_PDL");
      if (e && std::string(e) == "0") return false;
      int dev = 0, major = 0;
      return cudaGetDevice(&dev) == cudaSuccess &&
             cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
    }
    static bool graphs_default() {
      const char* e = std::getenv("ROPEX_CUDA_GRAPHS");
      return !(e && std::string(e) == "0");
    }
    State(const State&) = delete;
    State& operator=(const State&) = delete;
  };
  std::shared_ptr<State> st = std::make_shared<State>();

  // ------------------------------------------------------------------ one forward() = one step
  /// A step being recorded: which segment (a few layers) is under way. Left by an exception, it
  /// drops the recording, so the stream is usable again.
  class Step {
   public:
    Step() = default;
    explicit Step(State* s) : st_(s) {}
    Step(Step&& o) noexcept : st_(std::exchange(o.st_, nullptr)), segment_(o.segment_), layers_(o.layers_) {}
    Step& operator=(Step&&) = delete;
    ~Step() {
      if (!st_) return;
      cudaGraph_t g = nullptr;
      if (cudaStreamEndCapture(st_->stream, &g) == cudaSuccess && g) cudaGraphDestroy(g);
      (void)cudaGetLastError();
    }

   private:
    friend Ops;
    State* st_ = nullptr;
    size_t segment_ = 0;
    int64_t layers_ = 0;
  };

  /// Called by forward() before the layers: the cache's copies join the stream, and with `record`
  /// (a one-token step) and st->graphs, what follows is recorded instead of run, and launched a
  /// few layers at a time (end_layer, end_step).
  Step begin_step(Cache& cache, bool record) {
    cache.set_stream(st->stream, st->pdl);
    if (!record || !st->graphs) return {};
    if (!std::exchange(st->stepped, true)) return {};  // the first one runs op by op: lazy setup
    if constexpr (!std::is_same_v<T, float>) reserve_decode_workspace(cache.head_dim());
    st->step_start = std::chrono::steady_clock::now();
    ROPEX_CUDA_CHECK(cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal));
    return Step(st.get());
  }
  /// After each layer: every st->graph_layers layers the recorded segment is launched and the
  /// next one recorded while it runs, so recording overlaps the GPU's work.
  void end_layer(Step& step) {
    if (step.st_ && ++step.layers_ % std::max(1, st->graph_layers) == 0) {
      launch_segment(step);
      ROPEX_CUDA_CHECK(cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal));
    }
  }
  /// After the final norm: the last segment is launched.
  void end_step(Step& step) {
    if (!step.st_) return;
    launch_segment(step);
    step.st_ = nullptr;
    ++st->graph_stats.recorded;
    st->graph_stats.host_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - st->step_start).count();
  }

  // ---------------------------------------------------------------------------- weights
  /// Copies a checkpoint tensor to the device, converting it to T there.
  Weight upload(const model::TensorView& t) { return upload_stacked({&t}).front(); }
  /// Several [rows_i, cols] weights in one allocation, in order (q|k|v, gate|up): a one-token
  /// product over all of them is then one GEMM (matmul over several projections).
  std::vector<Weight> upload_stacked(std::initializer_list<const model::TensorView*> ts) {
    size_t total = 0;
    for (const auto* t : ts) total += t->numel();
    auto buffer = std::make_shared<DeviceBuffer<T>>(total);
    std::vector<Weight> out;
    size_t offset = 0;
    for (const auto* t : ts) {
      Weight w;
      w.buffer = buffer;
      w.ptr = buffer->data() + offset;
      w.rows = t->shape.size() >= 1 ? t->shape[0] : 1;
      w.cols = t->shape.size() >= 2 ? t->shape[1] : 1;
      to_device(*t, w.ptr);
      offset += t->numel();
      out.push_back(std::move(w));
    }
    return out;
  }
  Vector upload_vector(const model::TensorView& t) {  // small: converted on the host
    std::vector<float> host(t.numel());
    t.to_float(host.data(), 0, host.size());
    Vector v(host.size());
    // Pageable source: returns once `host` is staged, so it may go out of scope.
    ROPEX_CUDA_CHECK(cudaMemcpyAsync(v.data(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice, st->stream));
    return v;
  }

  // ------------------------------------------------------------------------ activations
  void embed(T* x, const Weight& table, std::span<const int32_t> tokens) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n == 0) return;
    const int32_t* ids = upload_ints(tokens);
    kernels::embed<T><<<static_cast<unsigned>(n), 256, 0, st->stream>>>(x, table.data(), ids, table.cols);
    check_launch("embed");
  }

  /// y[i, :] += bias for n rows of `cols` (q/k/v, o and MLP biases). One launch on the model's
  /// stream, a programmatic dependent like the rest of a step, so a recorded decode step holds it.
  void add_bias(T* y, const Vector& bias, int64_t n, int64_t cols) {
    if (n <= 0 || cols <= 0) return;
    if (static_cast<int64_t>(bias.size()) != cols)
      throw make_error("cuda::Ops::add_bias", "bias", "has " + std::to_string(bias.size()) + " elements for rows of " +
                                                          std::to_string(cols));
    constexpr int E = kVec<T>;
    const int64_t count = n * cols;
    if (cols % E == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0)
      launch_pdl(kernels::add_bias<T, E>, grid_for(count / E), dim3(256), 0, st->stream, st->pdl, y, bias.data(), count / E,
                 cols / E);
    else
      launch_pdl(kernels::add_bias<T, 1>, grid_for(count), dim3(256), 0, st->stream, st->pdl, y, bias.data(), count, cols);
    check_launch("add_bias");
  }

  /// out = rmsnorm(x) * weight over n rows of dim: the model's norms, and Qwen3's per-head q/k
  /// norm (n = tokens x heads rows of head_dim: 32 threads a row, one block each).
  void rmsnorm(T* out, const T* x, const float* weight, int64_t n, int64_t dim, double eps) {
    if (n <= 0) return;
    constexpr int E = kVec<T>;
    const bool vec = dim % E == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
    const int64_t accesses = vec ? dim / E : dim;  // a 4096-wide bf16 row: 512 threads, one 16-byte load each
    const int threads = static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, ceil_div(accesses, 32) * 32)));
    launch_pdl(vec ? kernels::rmsnorm<T, E> : kernels::rmsnorm<T, 1>, dim3(static_cast<unsigned>(n)), dim3(threads), 0,
               st->stream, st->pdl, out, x, weight, dim, static_cast<float>(eps));
    check_launch("rmsnorm");
  }

  /// y[n, out] = x[n, in] W^T (y += x W^T with `accumulate`: the residual adds), fp32
  /// accumulation: cuBLAS (column-major: Y^T = W^T' X^T, beta = 1 to accumulate), or the gemv
  /// kernel (gemv.cuh) for one token where it applies.
  void matmul(const Weight& w, const T* x, int64_t n, T* y, bool accumulate = false) {
    const GemvPart<T> part{w.data(), y, static_cast<int>(w.rows)};
    if (n == 1 && w.rows <= INT32_MAX && gemv<T>(std::span(&part, 1), w.cols, GemvInput<T>{x}, accumulate)) return;
    gemm(w, x, n, y, kCudaType<T>, accumulate);
  }
  /// Several projections of the same input (q|k|v, gate|up): y_i = x W_i^T. One token: one gemv
  /// launch over all of them where the gemv kernel applies, else a single GEMM when the weights were upload_stacked
  /// and the outputs lie back to back (a 96 MB product streams at ~3.5 TB/s on an H200 where three
  /// 32 MB ones reach ~2.3); otherwise one product each.
  struct Proj {
    const Weight& w;
    T* y;
  };
  void matmul(const T* x, int64_t n, std::initializer_list<Proj> projs) {
    if (n == 1 && gemv_projs(GemvInput<T>{x}, projs)) return;
    if (n == 1 && projs.size() > 1) {  // stacked weights and outputs back to back: one GEMM
      const Proj* p = projs.begin();
      bool adjacent = true;
      int64_t rows = p[0].w.rows;
      for (size_t i = 1; i < projs.size(); ++i) {
        adjacent = adjacent && p[i].w.cols == p[0].w.cols && p[i].w.ptr == p[i - 1].w.ptr + p[i - 1].w.rows * p[0].w.cols &&
                   p[i].y == p[i - 1].y + p[i - 1].w.rows;
        rows += p[i].w.rows;
      }
      if (adjacent) {
        Weight all = p[0].w;
        all.rows = rows;
        gemm(all, x, 1, p[0].y, kCudaType<T>);
        return;
      }
    }
    for (const Proj& p : projs) matmul(p.w, x, n, p.y);
  }

  /// matmul(rmsnorm(x), projs), xb the normed rows: one token goes through one gemv launch that
  /// normalizes x while staging it (xb is then not written), more through rmsnorm + matmul.
  void norm_matmul(T* xb, const T* x, const float* norm_weight, int64_t n, int64_t dim, double eps,
                   std::initializer_list<Proj> projs) {
    if (n == 1 && gemv_projs(GemvInput<T>{x, norm_weight, static_cast<float>(eps)}, projs)) return;
    rmsnorm(xb, x, norm_weight, n, dim, eps);
    matmul(xb, n, projs);
  }
  /// gate <- silu(gate) * up
  void swiglu(T* gate, const T* up, int64_t count) { elementwise(gate, up, count, kernels::SiluMul{}); }
  /// y = (silu(gate) * up) W^T (+= with accumulate); gate is overwritten. One token: one gemv
  /// launch computing silu(gate) * up while staging it (gate left as it was).
  void swiglu_matmul(const Weight& w, T* gate, const T* up, int64_t n, int64_t inter, T* y, bool accumulate) {
    const GemvPart<T> part{w.data(), y, static_cast<int>(std::min<int64_t>(w.rows, INT32_MAX))};
    if (n == 1 && w.rows <= INT32_MAX && gemv<T>(std::span(&part, 1), w.cols, GemvInput<T>{gate, nullptr, 0.f, up}, accumulate))
      return;
    swiglu(gate, up, n * inter);
    matmul(w, gate, n, y, accumulate);
  }

  // ------------------------------------------------------------------------------ RoPE
  Rope rope_angles(std::span<const double> inv_freq, double attention_factor, int64_t first, int64_t n) {
    use_frequencies(inv_freq, attention_factor);
    const int64_t need = first + n;
    if (static_cast<int64_t>(st->positions.size()) < need) {  // grow geometrically: decode adds one at a time
      const int64_t cap = std::max<int64_t>(need, 2 * static_cast<int64_t>(st->positions.size()));
      st->positions.reserve(static_cast<size_t>(cap));
      kernels::iota<<<grid_for(cap), 256, 0, st->stream>>>(st->positions.data(), cap);
      check_launch("iota");
    }
    return rope_table_at(st->positions.data() + first, first, n);
  }
  /// Rotation of rows at arbitrary `positions` (a context-parallel rank's zigzag rows) under the
  /// given frequencies (computed for the whole window).
  Rope rope_angles_at(std::span<const double> inv_freq, double attention_factor, std::span<const int64_t> positions) {
    use_frequencies(inv_freq, attention_factor);
    const int64_t n = static_cast<int64_t>(positions.size());
    st->positions_at.reserve(static_cast<size_t>(std::max<int64_t>(n, 1)));
    // pageable source: the copy has read it when the call returns; the table kernel follows in stream order
    ROPEX_CUDA_CHECK(cudaMemcpyAsync(st->positions_at.data(), positions.data(), sizeof(int64_t) * size_t(n),
                                     cudaMemcpyHostToDevice, st->stream));
    return rope_table_at(st->positions_at.data(), n ? positions[0] : 0, n);
  }
  /// st->freq = these frequencies (the last ones reused while unchanged).
  void use_frequencies(std::span<const double> inv_freq, double attention_factor) {
    std::vector<double> key(inv_freq.begin(), inv_freq.end());
    key.push_back(attention_factor);
    if (!st->freq || key != st->freq_key) {
      st->freq = std::make_shared<const RopeFrequencies>(inv_freq, attention_factor);
      st->freq_key = std::move(key);
    }
  }
  /// The cos/sin table of n positions read from device memory, under st->freq.
  Rope rope_table_at(const int64_t* device_positions, int64_t first, int64_t n) {
    // Tables are pooled: one no Rope holds any more is reused, so a decode step allocates nothing.
    std::shared_ptr<DeviceBuffer<float2>> table;
    for (const auto& t : st->rope_tables)
      if (t.use_count() == 1) {
        table = t;
        break;
      }
    if (!table) table = st->rope_tables.emplace_back(std::make_shared<DeviceBuffer<float2>>());
    table->reserve(static_cast<size_t>(std::max<int64_t>(n, 1) * st->freq->half()));
    rope_cos_sin_table(table->data(), device_positions, n, *st->freq, st->stream);
    return Rope{st->freq, std::move(table), first, n};
  }
  void rope(T* q, int64_t q_heads, T* k, int64_t k_heads, int64_t n, int64_t head_dim, const Rope& r,
            RopeLayout layout) {
    if (n <= 0) return;
    if (n != r.n) throw make_error("cuda::Ops::rope", "n", "does not match the rope angles' token count");
    const int hd = static_cast<int>(head_dim);
    rope_apply<T>(DeviceHeads<T>::contiguous(q, static_cast<int>(q_heads), hd),
                  DeviceHeads<T>::contiguous(k, static_cast<int>(k_heads), hd), n, hd, r.table->data(), r.freq->half(),
                  layout, st->stream, 1, {}, {}, st->pdl);
  }

  // ------------------------------------------------------------------------- attention
  /// Causal GQA attention. bf16 with head_dim 64/80/128 and a contiguous cache: few queries ->
  /// split-KV decode kernel, many -> flash attention (both by H4, backends/cuda); otherwise the
  /// plain row kernel above.
  void attention(attention::HeadsView<const T> q, attention::HeadsView<const T> k, attention::HeadsView<const T> v,
                 attention::HeadsView<T> o, const attention::AttentionShape& s) {
    if (s.n_queries <= 0) return;
    const int64_t hd = s.head_dim;
    const bool q_dense = q.token_stride == s.n_heads * hd && q.head_stride == hd && o.token_stride == s.n_heads * hd &&
                         o.head_stride == hd;
    const bool kv_dense = k.token_stride == s.n_kv_heads * hd && k.head_stride == hd &&
                          v.token_stride == s.n_kv_heads * hd && v.head_stride == hd;
    if constexpr (!std::is_same_v<T, float>) {
      if (q_dense && s.n_queries * s.group() <= kDecodeMaxRows && (hd == 64 || hd == 128 || hd == 256)) {
        const KVView<T> kv_k{k.data, 0, k.token_stride, k.head_stride}, kv_v{v.data, 0, v.token_stride, v.head_stride};
        decode_attention<T>(q.data, kv_k, kv_v, o.data, nullptr, 1, s, st->decode, st->decode_max_splits, st->stream,
                            DecodeKernel::automatic, st->pdl);
        return;
      }
      if (q_dense && kv_dense && (hd == 64 || hd == 80 || hd == 128)) {
        flash_attention<T>(q.data, k.data, v.data, o.data, nullptr, 1, s, {}, {}, st->stream);
        return;
      }
    }
    if (hd > 256) throw make_error("cuda::Ops::attention", "head_dim", "must be <= 256, got " + std::to_string(hd));
    const int64_t rows = s.n_queries * s.n_heads;
    kernels::attention_rows<T><<<static_cast<unsigned>(ceil_div(rows * 32, 256)), 256, 0, st->stream>>>(q, k, v, o, s);
    check_launch("attention_rows");
  }

  // ------------------------------------------------------------------------ lm_head
  /// out[n, vocab] (host memory) = x lm_head^T, fp32.
  void logits(const Weight& w, const T* x, int64_t n, float* out) {
    for (int64_t r0 = 0; r0 < n;) {
      const int64_t rows = std::min(n - r0, logits_rows(w.rows));
      float* d = device_logits(rows, w.rows);
      const GemvPart<T, float> part{w.data(), d, static_cast<int>(std::min<int64_t>(w.rows, INT32_MAX))};
      if (rows != 1 || w.rows > INT32_MAX || !gemv<float>(std::span(&part, 1), w.cols, GemvInput<T>{x + r0 * w.cols}, false))
        gemm(w, x + r0 * w.cols, rows, d, CUDA_R_32F);
      to_host(out + r0 * w.rows, d, static_cast<size_t>(rows * w.rows) * sizeof(float));
      r0 += rows;
    }
  }

  /// out[i] = -log softmax(x[i] lm_head^T)[targets[i]] (targets and out in host memory); the
  /// [rows, vocab] logits stay on the device.
  void nll(const Weight& w, const T* x, int64_t n, const int32_t* targets, double* out) {
    std::vector<float> host;
    for (int64_t r0 = 0; r0 < n;) {
      const int64_t rows = std::min(n - r0, logits_rows(w.rows));
      float* d = device_logits(rows, w.rows);
      gemm(w, x + r0 * w.cols, rows, d, CUDA_R_32F);
      for (int64_t i = 0; i < rows; ++i)
        if (targets[r0 + i] < 0 || targets[r0 + i] >= w.rows)
          throw make_error("cuda::Ops::nll", "targets", "id " + std::to_string(targets[r0 + i]) + " is outside the vocabulary");
      const int32_t* ids = upload_ints(std::span(targets + r0, static_cast<size_t>(rows)));
      st->nll.reserve(static_cast<size_t>(rows));
      kernels::row_nll<<<static_cast<unsigned>(rows), 256, 0, st->stream>>>(st->nll.data(), d, ids, w.rows);
      check_launch("row_nll");
      host.resize(static_cast<size_t>(rows));
      to_host(host.data(), st->nll.data(), host.size() * sizeof(float));
      for (int64_t i = 0; i < rows; ++i) out[r0 + i] = host[static_cast<size_t>(i)];
      r0 += rows;
    }
  }

 private:
  // Ends the recording of step's current segment and launches it: an update of that segment's
  // executable graph from the last step (same topology: the usual case), else a new one.
  void launch_segment(Step& step) {
    cudaGraph_t g = nullptr;
    ROPEX_CUDA_CHECK(cudaStreamEndCapture(st->stream, &g));
    struct Drop {
      cudaGraph_t g;
      ~Drop() { cudaGraphDestroy(g); }
    } drop{g};
    if (st->graph.size() <= step.segment_) st->graph.resize(step.segment_ + 1, nullptr);
    cudaGraphExec_t& exec = st->graph[step.segment_++];
    cudaGraphExecUpdateResultInfo info{};
    if (exec && cudaGraphExecUpdate(exec, g, &info) == cudaSuccess) {
      ++st->graph_stats.updated;
    } else {
      (void)cudaGetLastError();  // a refused update is not an error
      if (exec) ROPEX_CUDA_CHECK(cudaGraphExecDestroy(exec));
      exec = nullptr;
      ROPEX_CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
      ++st->graph_stats.instantiated;
    }
    ROPEX_CUDA_CHECK(cudaGraphLaunch(exec, st->stream));
    ++st->graph_stats.segments;
  }

  // Host ids -> st->tokens, through the pinned buffer: an async copy in stream order, which a
  // recording could also hold. The pinned buffer is rewritten only once the last copy left it.
  const int32_t* upload_ints(std::span<const int32_t> ids) {
    ROPEX_CUDA_CHECK(cudaEventSynchronize(st->pinned_free));
    if (ids.size() > st->pinned_size) {
      if (st->pinned) ROPEX_CUDA_CHECK(cudaFreeHost(st->pinned));
      st->pinned = nullptr;
      st->pinned_size = 0;
      const size_t n = std::max<size_t>(ids.size(), 64);
      ROPEX_CUDA_CHECK(cudaMallocHost(&st->pinned, n * sizeof(int32_t)));
      st->pinned_size = n;
    }
    std::memcpy(st->pinned, ids.data(), ids.size() * sizeof(int32_t));
    st->tokens.reserve(ids.size());
    ROPEX_CUDA_CHECK(cudaMemcpyAsync(st->tokens.data(), st->pinned, ids.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                                     st->stream));
    ROPEX_CUDA_CHECK(cudaEventRecord(st->pinned_free, st->stream));
    return st->tokens.data();
  }
  // Device -> host after everything queued before it: the host syncs of the ops.
  void to_host(void* dst, const void* src, size_t bytes) {
    ROPEX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st->stream));
    ROPEX_CUDA_CHECK(cudaStreamSynchronize(st->stream));
  }

  // The decode workspace grows on demand (cudaMalloc), which a recorded step cannot hold.
  void reserve_decode_workspace(int64_t head_dim) {
    if (head_dim == st->decode_reserved_head_dim) return;
    st->decode.reserve_for_any_split(static_cast<int>(head_dim));
    st->decode_reserved_head_dim = head_dim;
  }

  template <class F>
  void elementwise(T* a, const T* b, int64_t count, F f) {
    if (count <= 0) return;
    constexpr int V = kVec<T>;
    const bool vec = count % V == 0 && reinterpret_cast<uintptr_t>(a) % 16 == 0 && reinterpret_cast<uintptr_t>(b) % 16 == 0;
    if (vec) launch_pdl(kernels::binary_vec<T, F>, grid_for(count / V), dim3(256), 0, st->stream, st->pdl, a, b, count / V, f);
    else launch_pdl(kernels::binary<T, F>, grid_for(count), dim3(256), 0, st->stream, st->pdl, a, b, count, f);
    check_launch("elementwise");
  }

  // At most ~512 MB of fp32 logits at once.
  static int64_t logits_rows(int64_t vocab) { return std::max<int64_t>(1, (int64_t(1) << 27) / std::max<int64_t>(vocab, 1)); }
  float* device_logits(int64_t rows, int64_t vocab) {
    st->logits.reserve(static_cast<size_t>(rows * vocab));
    return st->logits.data();
  }

  // One token through the gemv kernel where it applies; false: the caller uses cuBLAS.
  template <class Y>
  bool gemv(std::span<const GemvPart<T, Y>> parts, int64_t cols, const GemvInput<T>& input, bool accumulate) {
    return cuda::gemv<T, Y>(parts, cols, input, accumulate, st->stream, st->pdl);
  }
  // One gemv launch over several projections of one input (their weights may lie anywhere).
  template <class Projs>
  bool gemv_projs(const GemvInput<T>& input, const Projs& projs) {
    if (projs.size() > kGemvMaxParts) return false;
    GemvPart<T> parts[kGemvMaxParts];
    int k = 0;
    for (const auto& p : projs) {
      if (p.w.cols != projs.begin()->w.cols || p.w.rows > INT32_MAX) return false;
      parts[k++] = GemvPart<T>{p.w.data(), p.y, static_cast<int>(p.w.rows)};
    }
    return gemv<T>(std::span(parts, static_cast<size_t>(k)), projs.begin()->w.cols, input, false);
  }

  template <class Y>
  void gemm(const Weight& w, const T* x, int64_t n, Y* y, cudaDataType_t y_type, bool accumulate = false) {
    if (n <= 0 || w.rows <= 0) return;
    const float one = 1.f, zero = 0.f;
    const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;  // fp32 accumulation; pure fp32 for T = float
    check_cublas(cublasGemmEx(st->blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows), static_cast<int>(n),
                              static_cast<int>(w.cols), &one, w.data(), kCudaType<T>, static_cast<int>(w.cols), x,
                              kCudaType<T>, static_cast<int>(w.cols), accumulate ? &one : &zero, y, y_type, static_cast<int>(w.rows),
                              compute, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  }

  // Raw checkpoint bytes -> device staging (pageable cudaMemcpyAsync, 64 MB at a time) -> T, in
  // stream order (the staging buffer is rewritten only after the previous block's conversion).
  template <class D>
  void to_device(const model::TensorView& t, D* dst) {
    const size_t n = t.numel();
    if (model::is_quantized(t.dtype)) {
      // GGUF blocks: decoded on the host a few rows at a time (the CPU's exact decoder), sent as
      // f32 and rounded to T on the device. The GPU holds T weights (bf16: 2 bytes a weight).
      const size_t row = size_t(t.shape.back());
      const size_t rows = std::max<size_t>(1, (size_t(16) << 20) / (row * 4));
      std::vector<float> host(std::min(n, rows * row));
      st->staging.reserve(host.size() * 4);
      for (size_t i = 0; i < n; i += host.size()) {
        const size_t m = std::min(host.size(), n - i);
        t.to_float(host.data(), i, m);
        ROPEX_CUDA_CHECK(cudaMemcpyAsync(st->staging.data(), host.data(), m * 4, cudaMemcpyHostToDevice, st->stream));
        kernels::convert<D><<<grid_for(static_cast<int64_t>(m)), 256, 0, st->stream>>>(
            dst + i, st->staging.data(), model::DType::f32, static_cast<int64_t>(m));
        check_launch("convert");
        ROPEX_CUDA_CHECK(cudaStreamSynchronize(st->stream));  // `host` is reused by the next rows
      }
      return;
    }
    const size_t es = model::dtype_size(t.dtype);
    const bool same = (std::is_same_v<D, float> && t.dtype == model::DType::f32) ||
                      (std::is_same_v<D, __nv_bfloat16> && t.dtype == model::DType::bf16) ||
                      (std::is_same_v<D, __half> && t.dtype == model::DType::f16);
    if (same) {
      ROPEX_CUDA_CHECK(cudaMemcpyAsync(dst, t.data, n * es, cudaMemcpyHostToDevice, st->stream));
      return;
    }
    const size_t block = (size_t(64) << 20) / es;
    st->staging.reserve(std::min(n, block) * es);
    for (size_t i = 0; i < n; i += block) {
      const size_t m = std::min(block, n - i);
      ROPEX_CUDA_CHECK(cudaMemcpyAsync(st->staging.data(), t.data + i * es, m * es, cudaMemcpyHostToDevice, st->stream));
      kernels::convert<D><<<grid_for(static_cast<int64_t>(m)), 256, 0, st->stream>>>(dst + i, st->staging.data(), t.dtype,
                                                                                     static_cast<int64_t>(m));
      check_launch("convert");
    }
  }
};

}  // namespace ropex::cuda

namespace ropex::backends {

template <>
struct ops<cuda_bf16> : ::ropex::cuda::Ops<__nv_bfloat16> {};
template <>
struct ops<cuda_f32> : ::ropex::cuda::Ops<float> {};

}  // namespace ropex::backends
