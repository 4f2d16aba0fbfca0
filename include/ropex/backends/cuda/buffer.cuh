// Owning device memory for the model on the GPU: a flat buffer, a [rows, cols] activation matrix,
// and the KV cache (token-major per layer, the layout flash attention reads without a copy).
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/backends/cuda/common.cuh>
#include <ropex/model/kv_cache.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

namespace ropex::cuda {

/// n elements of T in device memory (cudaMalloc; freed on destruction). Move-only.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { allocate(n); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { swap(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    swap(o);
    return *this;
  }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  /// Makes room for n elements (contents are lost when it grows).
  void reserve(size_t n) {
    if (n > n_) allocate(n);
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  void allocate(size_t n) {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
    if (n == 0) return;
    const cudaError_t st = cudaMalloc(&p_, n * sizeof(T));
    if (st != cudaSuccess) {
      p_ = nullptr;
      (void)cudaGetLastError();  // clear the sticky-free allocation error
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw ropex::Error("cuda: out of device memory: cannot allocate " + std::to_string(n * sizeof(T) >> 20) +
                         " MiB (" + std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) +
                         " MiB)");
    }
    n_ = n;
  }
  void swap(DeviceBuffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
  }
  T* p_ = nullptr;
  size_t n_ = 0;
};

/// Row-major [rows, cols] activations on the device. resize() only reallocates to grow, so the
/// per-call scratch of a decode loop is allocated once.
template <class T>
class DeviceMatrix {
 public:
  using Scalar = T;
  DeviceMatrix() = default;
  DeviceMatrix(int64_t rows, int64_t cols) { resize(rows, cols); }
  void resize(int64_t rows, int64_t cols) {
    buf_.reserve(static_cast<size_t>(rows * cols));
    rows_ = rows, cols_ = cols;
  }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  T* data() { return buf_.data(); }
  const T* data() const { return buf_.data(); }

 private:
  DeviceBuffer<T> buf_;
  int64_t rows_ = 0, cols_ = 0;
};

namespace kernels {
/// dk[i] = k[i], dv[i] = v[i] for n 16-byte words: a KV cache append (one launch for both, and
/// with PDL it can start while the kernel before it drains, which a memcpy cannot).
template <class W>  // int4 (a template: defined in a header, compiled once per program)
__global__ void copy_kv(W* __restrict__ dk, const W* __restrict__ k, W* __restrict__ dv, const W* __restrict__ v, int64_t n) {
  pdl_launch_dependents();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    dk[i] = k[i];
    dv[i] = v[i];
  }
}
}  // namespace kernels

/// The KV cache on the device, the GPU twin of model::KVCache (same interface): per layer
/// k, v : [capacity, kv_heads, head_dim] token-major, so keys 0..n of a layer are one contiguous
/// [n, kv_heads, head_dim] tensor (what flash_attention takes) and appending a chunk is one copy.
/// Keys are stored after RoPE, in T (bf16 on the bf16 path: half the bytes a decode step reads).
template <class T>
class DeviceKVCache : public model::KVCacheBook {
 public:
  DeviceKVCache() = default;
  DeviceKVCache(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity)
      : KVCacheBook(n_layers, n_kv_heads, head_dim, capacity),
        k_(static_cast<size_t>(n_layers * capacity * n_kv_heads * head_dim)),
        v_(static_cast<size_t>(n_layers * capacity * n_kv_heads * head_dim)) {}

  /// Layer l's keys / values (device memory), row(t, h) -> head_dim elements.
  attention::HeadsView<T> keys(int64_t layer) { return view(k_, layer); }
  attention::HeadsView<T> values(int64_t layer) { return view(v_, layer); }

  /// Copies n tokens' keys and values (device, token-major [n, kv_heads, head_dim]) to layer l at
  /// positions length()+offset ..; commit(total) once every layer has been appended. The copies
  /// go on the stream set by set_stream (ops<cuda> sets its own at every forward, so they stay in
  /// order with its kernels and inside a recorded decode step), else on the legacy default stream.
  void append(int64_t layer, const T* k_new, const T* v_new, int64_t n, int64_t offset = 0) {
    reserve_more(offset + n);
    const size_t row = static_cast<size_t>(n_kv_heads_ * head_dim_);
    const size_t bytes = static_cast<size_t>(n) * row * sizeof(T);
    T* dk = keys(layer).row(length_ + offset, 0);
    T* dv = values(layer).row(length_ + offset, 0);
    auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    if (bytes % 16 == 0 && aligned(dk) && aligned(dv) && aligned(k_new) && aligned(v_new)) {
      const int64_t words = static_cast<int64_t>(bytes / 16);
      const auto blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(words, 256), 8 * 1024));
      launch_pdl(kernels::copy_kv<int4>, dim3(blocks), dim3(256), 0, stream_, pdl_, reinterpret_cast<int4*>(dk),
                 reinterpret_cast<const int4*>(k_new), reinterpret_cast<int4*>(dv), reinterpret_cast<const int4*>(v_new),
                 words);
      check_launch("copy_kv");
      return;
    }
    ROPEX_CUDA_CHECK(cudaMemcpyAsync(dk, k_new, bytes, cudaMemcpyDeviceToDevice, stream_));
    ROPEX_CUDA_CHECK(cudaMemcpyAsync(dv, v_new, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(T); }
  /// The stream of the appends; pdl: launched as programmatic dependents (common.cuh).
  void set_stream(cudaStream_t stream, bool pdl = false) {
    stream_ = stream;
    pdl_ = pdl;
  }

 private:
  attention::HeadsView<T> view(DeviceBuffer<T>& buf, int64_t layer) {
    return {buf.data() + layer * capacity_ * n_kv_heads_ * head_dim_, n_kv_heads_ * head_dim_, head_dim_};
  }
  DeviceBuffer<T> k_, v_;
  cudaStream_t stream_ = nullptr;  // the legacy default stream until set_stream
  bool pdl_ = false;
};

}  // namespace ropex::cuda
