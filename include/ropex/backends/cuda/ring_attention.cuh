// Context-parallel (ring) attention: the window split zigzag over N ranks (parallel/zigzag.hpp),
// each rank's queries attended to the K/V chunks that travel around the ring, the blocks merged in
// fp32 by their log-sum-exps (attention::lse_merge, shared with the CPU reference). One process
// drives every rank; rank r's buffers live on devices[r].
//
// Transports (how K/V moves from rank r-1 to rank r between steps):
//   nccl     ncclSend/ncclRecv in one group per step, one communicator per rank (ncclCommInitAll):
//            the multi-GPU path. With every rank on one device it runs as a single-rank communicator
//            whose sends go to itself, so the same NCCL calls and the same schedule are tested on one GPU.
//   streams  a device-to-device copy on the receiver's communication stream: ranks as streams on one
//            GPU (or peers over NVLink), for tests and for measuring the ring's own overhead.
// Communication of step s+1's K/V overlaps the attention of step s (double-buffered).
#pragma once
#include <ropex/attention/online_softmax.hpp>
#include <ropex/backends/cuda/buffer.cuh>
#include <ropex/backends/cuda/common.cuh>
#include <ropex/backends/cuda/flash_prefill.cuh>
#include <ropex/backends/cuda/ops.cuh>  // kernels::attention_rows: blocks of head dims flash lacks
#include <ropex/parallel/zigzag.hpp>

#include <nccl.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

namespace ropex::cuda::ring {

enum class Transport { nccl, streams };

inline void nccl_check(ncclResult_t st, const char* what) {
  if (st != ncclSuccess) throw ropex::Error(std::string("nccl: ") + what + ": " + ncclGetErrorString(st));
}

/// One rank's inputs and output, on its device. q, o: [local_tokens, n_heads, head_dim]; k, v:
/// [local_tokens, n_kv_heads, head_dim]; rows in the order Zigzag::positions_of(rank) gives (its two
/// chunks, first then second), each already rotated at its window positions.
template <class T>
struct RankIO {
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  T* o = nullptr;
  float* lse = nullptr;  // optional: [n_heads, local_tokens], natural log
};

namespace detail {

/// acc = merge(acc, part) for rows [row0, row0 + rows) of the accumulator: one warp per (row, head).
/// acc_o: [local, heads, hd] fp32; acc_lse: [heads, local]; part_o: [rows, heads, hd];
/// part_lse: [heads, rows] (what flash_attention writes for the block). `first`: the rows' first
/// block (the accumulator is not read, so it needs no clearing). `out` non-null: the rows' last
/// block, written as T to out's rows instead of to acc_o (no separate store pass).
template <class T>
__global__ void merge_block(float* __restrict__ acc_o, float* __restrict__ acc_lse, const T* __restrict__ part_o,
                            const float* __restrict__ part_lse, T* __restrict__ out, bool first, int64_t local,
                            int64_t row0, int64_t rows, int heads, int hd) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= rows * heads) return;
  const int64_t i = w / heads;
  const int h = static_cast<int>(w % heads);
  float* a_lse = acc_lse + static_cast<int64_t>(h) * local + row0 + i;
  const float p_lse = part_lse[static_cast<int64_t>(h) * rows + i];
  const auto m = attention::lse_merge(first ? -INFINITY : *a_lse, p_lse);
  const int64_t at = ((row0 + i) * heads + h) * hd;
  float* o = acc_o + at;
  const T* p = part_o + (i * heads + h) * hd;
  for (int d = lane; d < hd; d += 32) {
    const float x = (m.factor_a == 0.f ? 0.f : o[d] * m.factor_a) + to_float(p[d]) * m.factor_b;
    if (out) out[at + d] = from_float<T>(x);
    else o[d] = x;
  }
  __syncwarp();
  if (lane == 0) *a_lse = m.lse;
}

inline unsigned blocks_for(int64_t threads, int per_block = 256) {
  return static_cast<unsigned>((threads + per_block - 1) / per_block);
}

}  // namespace detail

/// The ranks, their devices, streams and NCCL communicators, for activations of type T (bf16 or
/// fp16). Reused across layers and calls: the scratch buffers grow to the largest window seen.
template <class T>
class Ring {
 public:
  /// `compute` (optional, one per rank, on its device): the streams the ranks compute on, owned by
  /// the caller — a model's stream, so the ring's work is ordered with the rest of its layer.
  /// Empty: the ring makes its own.
  Ring(std::vector<int> devices, Transport transport, std::vector<cudaStream_t> compute = {})
      : devices_(std::move(devices)), transport_(transport), own_compute_(compute.empty()) {
    if (devices_.empty()) throw make_error("context parallel", "gpus", "need at least one rank");
    const int n = ranks();
    if (!own_compute_ && static_cast<int>(compute.size()) != n)
      throw make_error("context parallel", "streams", "one compute stream per rank");
    self_ = std::all_of(devices_.begin(), devices_.end(), [&](int d) { return d == devices_[0]; });
    ranks_.resize(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      Rank& k = ranks_[static_cast<size_t>(r)];
      ROPEX_CUDA_CHECK(cudaSetDevice(devices_[static_cast<size_t>(r)]));
      if (own_compute_) ROPEX_CUDA_CHECK(cudaStreamCreateWithFlags(&k.compute, cudaStreamNonBlocking));
      else k.compute = compute[static_cast<size_t>(r)];
      ROPEX_CUDA_CHECK(cudaStreamCreateWithFlags(&k.comm, cudaStreamNonBlocking));
      cudaEvent_t* events[] = {&k.computed, &k.received[0], &k.received[1], &k.handoff};
      for (cudaEvent_t* e : events) ROPEX_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
    }
    if (transport_ == Transport::nccl) {
      if (self_) {
        // every rank on one GPU: one single-rank communicator, each simulated rank sends to itself
        comms_.resize(1);
        nccl_check(ncclCommInitAll(comms_.data(), 1, devices_.data()), "ncclCommInitAll (one device)");
      } else {
        std::vector<int> sorted = devices_;
        std::sort(sorted.begin(), sorted.end());
        if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
          throw make_error("context parallel", "gpus", "NCCL ranks need distinct devices (or all on one)");
        comms_.resize(static_cast<size_t>(n));
        nccl_check(ncclCommInitAll(comms_.data(), n, devices_.data()), "ncclCommInitAll");
      }
    }
  }
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  ~Ring() {
    for (ncclComm_t c : comms_) ncclCommDestroy(c);
    for (size_t r = 0; r < ranks_.size(); ++r) {
      cudaSetDevice(devices_[r]);
      if (own_compute_) cudaStreamDestroy(ranks_[r].compute);
      cudaStreamDestroy(ranks_[r].comm);
      const cudaEvent_t events[] = {ranks_[r].computed, ranks_[r].received[0], ranks_[r].received[1], ranks_[r].handoff};
      for (cudaEvent_t e : events) cudaEventDestroy(e);
    }
  }

  int ranks() const { return static_cast<int>(devices_.size()); }
  int device(int r) const { return devices_[static_cast<size_t>(r)]; }
  /// The stream rank r computes on: callers enqueue the layer's other work for rank r here.
  cudaStream_t stream(int r) const { return ranks_[static_cast<size_t>(r)].compute; }

  /// Causal (optionally sliding-window) or full attention of the window described by `whole`
  /// (n_queries = n_keys = window tokens, query_offset 0) over the ranks. io[r] on device(r); each
  /// rank's work is ordered on stream(r): inputs must be ready there, the output is ready there.
  void attention(const std::vector<RankIO<T>>& io, const attention::AttentionShape& whole) {
    const int n = ranks();
    if (static_cast<int>(io.size()) != n) throw make_error("context parallel", "io", "one RankIO per rank");
    if (whole.n_queries != whole.n_keys || whole.query_offset != 0)
      throw make_error("context parallel", "shape", "the window attends to itself (n_queries = n_keys, offset 0)");
    const parallel::Zigzag z(whole.n_keys, n);
    const int64_t H = whole.n_heads, KVH = whole.n_kv_heads, hd = whole.head_dim;
    int64_t max_local = 0, max_chunk = 0;
    for (int r = 0; r < n; ++r) max_local = std::max(max_local, z.local_tokens(r));
    for (int c = 0; c < z.chunks(); ++c) max_chunk = std::max(max_chunk, z.chunk(c).size());
    const int64_t kv_elems = max_local * KVH * hd;  // K rows, then V rows, of one rank's chunks

    for (int r = 0; r < n; ++r) {
      Rank& k = ranks_[static_cast<size_t>(r)];
      ROPEX_CUDA_CHECK(cudaSetDevice(device(r)));
      if (n > 1)
        for (auto& b : k.held) b.reserve(static_cast<size_t>(2 * kv_elems));
      k.part_o.reserve(static_cast<size_t>(max_chunk * H * hd));
      k.part_lse.reserve(static_cast<size_t>(H * max_chunk));
      const int64_t local = z.local_tokens(r);
      k.acc_o.reserve(static_cast<size_t>(local * H * hd));
      k.acc_lse.reserve(static_cast<size_t>(H * local));
      ROPEX_CUDA_CHECK(cudaEventRecord(k.computed, k.compute));  // inputs ready: step 0 may send them
    }

    // Where rank r's K and V rows of step s live: its own inputs at step 0, then a ring buffer.
    auto held_k = [&](int r, int s) -> const T* {
      return s == 0 ? io[static_cast<size_t>(r)].k : ranks_[static_cast<size_t>(r)].held[s % 2].data();
    };
    auto held_v = [&](int r, int s) -> const T* {
      return s == 0 ? io[static_cast<size_t>(r)].v : ranks_[static_cast<size_t>(r)].held[s % 2].data() + kv_elems;
    };

    // The step and block of each query chunk's first and last block: the first overwrites the
    // accumulator, the last writes the output.
    struct Ends { int first_step = -1, first_block = -1, last_step = -1, last_block = -1; };
    std::vector<std::array<Ends, 2>> ends(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r)
      for (int s = 0; s < n; ++s) {
        const auto blocks = parallel::ring_blocks(z, r, s, whole.causal, whole.window);
        for (int i = 0; i < static_cast<int>(blocks.size()); ++i) {
          Ends& e = ends[static_cast<size_t>(r)][static_cast<size_t>(blocks[static_cast<size_t>(i)].q_which)];
          if (e.first_step < 0) e.first_step = s, e.first_block = i;
          e.last_step = s, e.last_block = i;
        }
      }
    for (int r = 0; r < n; ++r)
      for (const Ends& e : ends[static_cast<size_t>(r)])
        if (e.first_step < 0)  // cannot happen for a causal or full mask: every query sees itself
          throw make_error("context parallel", "schedule", "a query chunk meets no key chunk");

    for (int s = 0; s < n; ++s) {
      if (s + 1 < n) exchange(z, s, kv_elems, KVH * hd, held_k, held_v);
      for (int r = 0; r < n; ++r) {
        Rank& k = ranks_[static_cast<size_t>(r)];
        ROPEX_CUDA_CHECK(cudaSetDevice(device(r)));
        if (s > 0) ROPEX_CUDA_CHECK(cudaStreamWaitEvent(k.compute, k.received[s % 2], 0));
        const int src = z.kv_source(r, s);
        const int64_t local = z.local_tokens(r);
        const auto blocks = parallel::ring_blocks(z, r, s, whole.causal, whole.window);
        for (int i = 0; i < static_cast<int>(blocks.size()); ++i) {
          const parallel::RingBlock& b = blocks[static_cast<size_t>(i)];
          const Ends& e = ends[static_cast<size_t>(r)][static_cast<size_t>(b.q_which)];
          const bool first = e.first_step == s && e.first_block == i, last = e.last_step == s && e.last_block == i;
          const int64_t q_row = z.local_row(r, b.q_which), k_row = z.local_row(src, b.k_which);
          const attention::AttentionShape bs = parallel::block_shape(whole, b.q, b.k, b.block);
          block_attention(io[static_cast<size_t>(r)].q + q_row * H * hd, held_k(r, s) + k_row * KVH * hd,
                          held_v(r, s) + k_row * KVH * hd, k.part_o.data(), k.part_lse.data(), bs, k.compute);
          detail::merge_block<T><<<detail::blocks_for(b.q.size() * H * 32), 256, 0, k.compute>>>(
              k.acc_o.data(), k.acc_lse.data(), k.part_o.data(), k.part_lse.data(),
              last ? io[static_cast<size_t>(r)].o : nullptr, first, local, q_row, b.q.size(), static_cast<int>(H),
              static_cast<int>(hd));
          check_launch("ring::merge_block");
        }
        ROPEX_CUDA_CHECK(cudaEventRecord(k.computed, k.compute));
      }
    }
    for (int r = 0; r < n; ++r) {
      Rank& k = ranks_[static_cast<size_t>(r)];
      ROPEX_CUDA_CHECK(cudaSetDevice(device(r)));
      // Rank r's own K/V were read at step 0 by the transfer to the next rank (on that rank's
      // communication stream under `streams`): the caller's next work on stream(r) may overwrite them.
      if (n > 1) ROPEX_CUDA_CHECK(cudaStreamWaitEvent(k.compute, ranks_[static_cast<size_t>((r + 1) % n)].received[1], 0));
      if (io[static_cast<size_t>(r)].lse)
        ROPEX_CUDA_CHECK(cudaMemcpyAsync(io[static_cast<size_t>(r)].lse, k.acc_lse.data(),
                                         sizeof(float) * static_cast<size_t>(H * z.local_tokens(r)),
                                         cudaMemcpyDeviceToDevice, k.compute));
    }
  }

 private:
  /// One block's output and LSE: the flash kernel where it has an instance for the head dim.
  static void block_attention(const T* q, const T* k, const T* v, T* o, float* lse, const attention::AttentionShape& s,
                              cudaStream_t stream) {
    if (s.head_dim == 64 || s.head_dim == 80 || s.head_dim == 128) {
      flash_attention<T>(q, k, v, o, lse, 1, s, {}, {}, stream);
      return;
    }
    if (s.head_dim > 256)
      throw make_error("context parallel", "head_dim", "must be <= 256, got " + std::to_string(s.head_dim));
    // the row kernel (small models: llama2.c's stories260K has head_dim 8)
    const int64_t H = s.n_heads, KVH = s.n_kv_heads, hd = s.head_dim;
    kernels::attention_rows<T><<<detail::blocks_for(s.n_queries * H * 32), 256, 0, stream>>>(
        attention::token_major<const T>(q, H, hd), attention::token_major<const T>(k, KVH, hd),
        attention::token_major<const T>(v, KVH, hd), attention::token_major<T>(o, H, hd), s, lse);
    check_launch("ring::attention_rows");
  }

  struct Rank {
    cudaStream_t compute = nullptr, comm = nullptr;
    cudaEvent_t computed = nullptr;  // the last attention step (or the inputs) enqueued on `compute`
    cudaEvent_t received[2] = {};    // [p]: the K/V of the steps with parity p have landed
    cudaEvent_t handoff = nullptr;   // orders the shared stream of the one-device NCCL ring
    DeviceBuffer<T> held[2];  // K/V held at odd / even steps: K rows then V rows ([local, kv_heads, hd] each)
    DeviceBuffer<T> part_o;   // one block's output [chunk, heads, hd]
    DeviceBuffer<float> part_lse, acc_o, acc_lse;  // [heads, chunk]; [local, heads, hd]; [heads, local]
  };

  /// Moves every rank's held K/V of step s to the next rank, into its buffer for step s + 1. The
  /// receiving buffer was last read by the receiver's attention of step s - 1: its communication
  /// waits for that; its attention of step s + 1 waits for `received`.
  template <class HeldK, class HeldV>
  void exchange(const parallel::Zigzag& z, int s, int64_t kv_elems, int64_t row_elems, HeldK held_k, HeldV held_v) {
    const int n = ranks();
    for (int r = 0; r < n; ++r) {
      Rank& k = ranks_[static_cast<size_t>(r)];
      ROPEX_CUDA_CHECK(cudaSetDevice(device(r)));
      ROPEX_CUDA_CHECK(cudaStreamWaitEvent(k.comm, k.computed, 0));
    }
    if (transport_ == Transport::streams) {
      for (int r = 0; r < n; ++r) {
        const int prev = (r - 1 + n) % n;
        const size_t bytes = sizeof(T) * static_cast<size_t>(z.local_tokens(z.kv_source(prev, s)) * row_elems);
        Rank& k = ranks_[static_cast<size_t>(r)];
        ROPEX_CUDA_CHECK(cudaSetDevice(device(r)));
        // the sender's buffer of step s landed on its comm stream at step s - 1; the next rank copied
        // this rank's buffer of step s - 1 (the one written now) on its own comm stream
        if (s == 0)  // the copy reads the sender's own inputs: wait until its stream has made them
          ROPEX_CUDA_CHECK(cudaStreamWaitEvent(k.comm, ranks_[static_cast<size_t>(prev)].computed, 0));
        if (s > 0) {
          ROPEX_CUDA_CHECK(cudaStreamWaitEvent(k.comm, ranks_[static_cast<size_t>(prev)].received[s % 2], 0));
          ROPEX_CUDA_CHECK(cudaStreamWaitEvent(k.comm, ranks_[static_cast<size_t>((r + 1) % n)].received[s % 2], 0));
        }
        T* dst = k.held[(s + 1) % 2].data();
        ROPEX_CUDA_CHECK(cudaMemcpyPeerAsync(dst, device(r), held_k(prev, s), device(prev), bytes, k.comm));
        ROPEX_CUDA_CHECK(cudaMemcpyPeerAsync(dst + kv_elems, device(r), held_v(prev, s), device(prev), bytes, k.comm));
      }
    } else {
      // One group for the whole step: every send and receive of every rank (NCCL matches a peer's
      // sends and receives in issue order). On one device all ranks share the single-rank
      // communicator and its stream (rank 0's comm stream), sending to themselves.
      if (self_)
        for (int r = 1; r < n; ++r) {
          Rank& k = ranks_[static_cast<size_t>(r)];
          ROPEX_CUDA_CHECK(cudaEventRecord(k.handoff, k.comm));
          ROPEX_CUDA_CHECK(cudaStreamWaitEvent(ranks_[0].comm, k.handoff, 0));
        }
      nccl_check(ncclGroupStart(), "ncclGroupStart");
      for (int r = 0; r < n; ++r) {
        const int next = (r + 1) % n, prev = (r - 1 + n) % n;
        const size_t send_n = sizeof(T) * static_cast<size_t>(z.local_tokens(z.kv_source(r, s)) * row_elems);
        const size_t recv_n = sizeof(T) * static_cast<size_t>(z.local_tokens(z.kv_source(prev, s)) * row_elems);
        ncclComm_t comm = comms_[self_ ? 0 : static_cast<size_t>(r)];
        cudaStream_t st = ranks_[self_ ? 0 : static_cast<size_t>(r)].comm;
        const int to = self_ ? 0 : next, from = self_ ? 0 : prev;
        T* dst = ranks_[static_cast<size_t>(r)].held[(s + 1) % 2].data();
        if (self_) {
          // self-sends match receives in order: receive what rank r - 1 sends, so issue r - 1's
          // send right before r's receive
          const size_t prev_n = recv_n;
          nccl_check(ncclSend(held_k(prev, s), prev_n, ncclUint8, 0, comm, st), "ncclSend K");
          nccl_check(ncclRecv(dst, recv_n, ncclUint8, 0, comm, st), "ncclRecv K");
          nccl_check(ncclSend(held_v(prev, s), prev_n, ncclUint8, 0, comm, st), "ncclSend V");
          nccl_check(ncclRecv(dst + kv_elems, recv_n, ncclUint8, 0, comm, st), "ncclRecv V");
        } else {
          nccl_check(ncclSend(held_k(r, s), send_n, ncclUint8, to, comm, st), "ncclSend K");
          nccl_check(ncclRecv(dst, recv_n, ncclUint8, from, comm, st), "ncclRecv K");
          nccl_check(ncclSend(held_v(r, s), send_n, ncclUint8, to, comm, st), "ncclSend V");
          nccl_check(ncclRecv(dst + kv_elems, recv_n, ncclUint8, from, comm, st), "ncclRecv V");
        }
      }
      nccl_check(ncclGroupEnd(), "ncclGroupEnd");
      if (self_) {
        ROPEX_CUDA_CHECK(cudaEventRecord(ranks_[0].handoff, ranks_[0].comm));
        for (int r = 1; r < n; ++r)
          ROPEX_CUDA_CHECK(cudaStreamWaitEvent(ranks_[static_cast<size_t>(r)].comm, ranks_[0].handoff, 0));
      }
    }
    for (int r = 0; r < n; ++r) {
      Rank& k = ranks_[static_cast<size_t>(r)];
      ROPEX_CUDA_CHECK(cudaSetDevice(device(r)));
      ROPEX_CUDA_CHECK(cudaEventRecord(k.received[(s + 1) % 2], k.comm));
    }
  }

  std::vector<int> devices_;
  Transport transport_;
  bool own_compute_ = true;
  bool self_ = false;
  std::vector<Rank> ranks_;
  std::vector<ncclComm_t> comms_;
};

}  // namespace ropex::cuda::ring
