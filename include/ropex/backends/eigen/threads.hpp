// CPU threads for everything ropex runs on: its OpenMP kernels, Eigen's GEMM, and OpenBLAS's own
// pool when the linked BLAS is OpenBLAS (found at run time, so no link dependency on it). One
// definition for the CLI's --threads and the Python module's threads=.
//
// And the pool the decode products run on (ChunkPool): a one-token step is ~5 small products a
// layer, each a few microseconds of work. An OpenMP region per product ends in a barrier that
// waits for every thread of the team, so on a machine whose cores other processes share, a
// team thread that is not running (descheduled for a time slice) stalls the step for that slice
// at every product: measured on a loaded 2-core VM, a two-thread decode ran 15x slower than one
// thread, its CPU time burnt spinning at barriers. In the pool, chunks are claimed from a shared
// counter and the caller claims too, so a worker that is not running claims nothing and is never
// waited for; the caller waits only for chunks another thread has started.
#pragma once
#include <Eigen/Core>

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
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

/// The threads ropex's kernels may use now (OpenMP's setting, which set_cpu_threads sets).
inline int cpu_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// fn(ctx, c) for every chunk c in [0, n), shared by the calling thread and up to threads - 1
/// persistent workers; returns when every chunk has run. Calls from several threads at once, or
/// from inside an OpenMP region, run serially on the caller.
class ChunkPool {
 public:
  using Fn = void (*)(void*, int64_t);

  static ChunkPool& instance() {
    static ChunkPool* pool = new ChunkPool;  // never destroyed: workers are detached and sleep at exit
    return *pool;
  }

  void run(int64_t n, int threads, void* ctx, Fn fn) {
    std::unique_lock<std::mutex> lock(caller_, std::try_to_lock);
    bool serial = !lock.owns_lock() || threads <= 1 || n <= 1 || n >= (int64_t(1) << 31);
#ifdef _OPENMP
    serial = serial || omp_in_parallel();
#endif
    if (serial) {
      for (int64_t c = 0; c < n; ++c) fn(ctx, c);
      return;
    }
    while (int(workers_.size()) < threads - 1) {
      const int index = int(workers_.size());
      workers_.emplace_back([this, index] { work_loop(index); }).detach();
    }
    // Publish generation g: its job in slot g % 2 (a late worker of g - 1 reads the other slot),
    // then the counter (generation << 32 | next chunk), then the generation workers wait on.
    const uint32_t g = generation_.load() + 1;
    Slot& s = slots_[g & 1];
    s.fn.store(fn), s.ctx.store(ctx), s.n.store(n), s.workers.store(threads - 1);
    done_.store(0);
    counter_.store(uint64_t(g) << 32);
    generation_.store(g);
    if (sleepers_.load() > 0) generation_.notify_all();
    claim(g);
    while (done_.load() < n) pause();  // only chunks another thread has claimed are left
  }

 private:
  struct Slot {
    std::atomic<Fn> fn{nullptr};
    std::atomic<void*> ctx{nullptr};
    std::atomic<int64_t> n{0};
    std::atomic<int> workers{0};
  };

  static void pause() {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_pause();
#endif
  }

  // Runs chunks of generation g while there are any. A claim succeeds only while the counter is
  // still at g, so a worker that woke late, or read a slot being rewritten, runs nothing.
  void claim(uint32_t g) {
    const Slot& s = slots_[g & 1];
    const Fn fn = s.fn.load();
    void* const ctx = s.ctx.load();
    const int64_t n = s.n.load();
    uint64_t v = counter_.load();
    while (uint32_t(v >> 32) == g && int64_t(uint32_t(v)) < n) {
      if (counter_.compare_exchange_weak(v, v + 1)) {
        fn(ctx, int64_t(uint32_t(v)));
        done_.fetch_add(1);
        v = counter_.load();
      }
    }
  }

  // A worker spins ~50 us for the next product (a decode step's products follow each other within
  // microseconds), then sleeps on the generation (futex) so an idle pool costs no CPU.
  void work_loop(int index) {
    uint32_t seen = generation_.load();
    for (;;) {
      uint32_t g = generation_.load();
      if (g == seen) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; (g = generation_.load()) == seen; ++i) {
          pause();
          if ((i & 255) == 255 && std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(50)) {
            sleepers_.fetch_add(1);
            generation_.wait(seen);
            sleepers_.fetch_sub(1);
          }
        }
      }
      seen = g;
      if (index < slots_[g & 1].workers.load()) claim(g);
    }
  }

  std::mutex caller_;
  std::vector<std::thread> workers_;
  Slot slots_[2];
  std::atomic<uint64_t> counter_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<int> sleepers_{0};
};

/// fn(c) for c in [0, n) on the pool with cpu_threads() threads (see ChunkPool).
template <class F>
void parallel_chunks(int64_t n, F&& fn) {
  using Fn = std::remove_reference_t<F>;
  ChunkPool::instance().run(n, cpu_threads(), const_cast<void*>(static_cast<const void*>(&fn)),
                            [](void* f, int64_t c) { (*static_cast<Fn*>(f))(c); });
}

}  // namespace ropex::backends
