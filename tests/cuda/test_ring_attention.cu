// Context-parallel ring attention (backends/cuda/ring_attention.cuh) on one GPU: the ranks run as
// streams (cudaMemcpy transport) or as self-sends of a one-device NCCL communicator (the NCCL calls
// of the multi-GPU path), 1..8 ranks, causal / full / sliding-window, GQA. The window's output and
// LSE, gathered from the ranks, must pass the same calibrated check as the one-GPU flash kernel:
// max error and NMSE within 2x the same-precision naive kernel's against the double oracle.
#include "attention_test_util.cuh"

#include <ropex/backends/cuda/flash_prefill.cuh>
#include <ropex/backends/cuda/ring_attention.cuh>
#include <ropex/parallel/zigzag.hpp>

#include <initializer_list>
#include <memory>
#include <vector>

using namespace ropex;
using namespace ropex::cuda;
using namespace ropex::cuda::test;

namespace {

const char* name(ring::Transport t) { return t == ring::Transport::nccl ? "nccl" : "streams"; }

template <class T>
void check_ring(const Case& c, int ranks, ring::Transport transport) {
  CAPTURE(ranks);
  CAPTURE(name(transport));
  Inputs<T> in(c);
  check_against_oracle<T>(c, in, [&](T* o, float* lse) {
    const parallel::Zigzag z(c.nq, ranks);
    ring::Ring<T> ring(std::vector<int>(static_cast<size_t>(ranks), 0), transport);
    std::vector<std::unique_ptr<DeviceArray<T>>> q, k, v, out;
    std::vector<std::unique_ptr<DeviceArray<float>>> lses;
    std::vector<ring::RankIO<T>> io;
    const int64_t qrow = int64_t(c.hq) * c.d, kvrow = int64_t(c.hkv) * c.d;
    for (int r = 0; r < ranks; ++r) {
      const int64_t local = z.local_tokens(r);
      q.push_back(std::make_unique<DeviceArray<T>>(static_cast<size_t>(local * qrow)));
      k.push_back(std::make_unique<DeviceArray<T>>(static_cast<size_t>(local * kvrow)));
      v.push_back(std::make_unique<DeviceArray<T>>(static_cast<size_t>(local * kvrow)));
      out.push_back(std::make_unique<DeviceArray<T>>(static_cast<size_t>(local * qrow)));
      lses.push_back(std::make_unique<DeviceArray<float>>(static_cast<size_t>(local * c.hq)));
      out.back()->poison();
      for (int which = 0; which < 2; ++which) {  // scatter the window's rows to the rank
        const parallel::Span s = z.chunk(z.chunks_of(r)[which]);
        const int64_t row = z.local_row(r, which);
        ROPEX_CUDA_CHECK(cudaMemcpy(q.back()->ptr + row * qrow, in.q.ptr + s.begin * qrow, sizeof(T) * s.size() * qrow, cudaMemcpyDeviceToDevice));
        ROPEX_CUDA_CHECK(cudaMemcpy(k.back()->ptr + row * kvrow, in.k.ptr + s.begin * kvrow, sizeof(T) * s.size() * kvrow, cudaMemcpyDeviceToDevice));
        ROPEX_CUDA_CHECK(cudaMemcpy(v.back()->ptr + row * kvrow, in.v.ptr + s.begin * kvrow, sizeof(T) * s.size() * kvrow, cudaMemcpyDeviceToDevice));
      }
      io.push_back({q.back()->ptr, k.back()->ptr, v.back()->ptr, out.back()->ptr, lses.back()->ptr});
    }
    ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
    attention::AttentionShape whole = shape_of(c);
    ring.attention(io, whole);
    ROPEX_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> lse_window(static_cast<size_t>(c.hq * c.nq));
    for (int r = 0; r < ranks; ++r) {  // gather the outputs back into window order
      const auto l = lses[static_cast<size_t>(r)]->download();
      const int64_t local = z.local_tokens(r);
      for (int which = 0; which < 2; ++which) {
        const parallel::Span s = z.chunk(z.chunks_of(r)[which]);
        const int64_t row = z.local_row(r, which);
        ROPEX_CUDA_CHECK(cudaMemcpy(o + s.begin * qrow, out[static_cast<size_t>(r)]->ptr + row * qrow, sizeof(T) * s.size() * qrow, cudaMemcpyDeviceToDevice));
        for (int h = 0; h < c.hq; ++h)
          for (int64_t i = 0; i < s.size(); ++i)
            lse_window[static_cast<size_t>(h * c.nq + s.begin + i)] = l[static_cast<size_t>(h * local + row + i)];
      }
    }
    ROPEX_CUDA_CHECK(cudaMemcpy(lse, lse_window.data(), sizeof(float) * lse_window.size(), cudaMemcpyHostToDevice));
  }, "ring");
}

}  // namespace

TEST_CASE("ring attention on one GPU equals one-window attention (calibrated vs the oracle)") {
  using bf16 = __nv_bfloat16;
  const Case causal_gqa{1, 2048, 2048, 32, 8, 128, true};
  const Case odd_mha{1, 1000, 1000, 8, 8, 64, true};
  const Case full{1, 1536, 1536, 16, 4, 128, false};
  const Case window{1, 2048, 2048, 16, 4, 128, true, 300};
  for (ring::Transport t : {ring::Transport::streams, ring::Transport::nccl}) {
    for (int n : {1, 2, 4, 8}) check_ring<bf16>(causal_gqa, n, t);
    check_ring<bf16>(odd_mha, 3, t);
    check_ring<bf16>(full, 4, t);
    check_ring<bf16>(window, 4, t);
    check_ring<__half>(causal_gqa, 2, t);
  }
}
