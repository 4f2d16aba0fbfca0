// Context-parallel perplexity: eval::perplexity's windows, each split zigzag over N ranks
// (parallel/zigzag.hpp). Every rank is a model::Llama of its own (its own device on the GPU) run
// by a host thread of its own through the ordinary forward(), with Llama::ContextParallel set: its
// rows at their window positions, and at each layer the attention of the whole window done by
// `attend` over all ranks at once (the CUDA ring, backends/cuda/cp_perplexity.cuh; or any
// reference). Each rank then scores its own rows (position p predicts token p+1), and the sums land
// at their window positions, so the result — per-position curve included — has the layout of the
// one-device run. Non-overlapping windows only (stride = context). A window shorter than 2N tokens
// (a short last window) runs on rank 0 alone with the one-device forward.
#pragma once
#include <ropex/attention/layout.hpp>
#include <ropex/error.hpp>
#include <ropex/eval/perplexity.hpp>
#include <ropex/parallel/zigzag.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace ropex::parallel {

/// A barrier any participant can break, waking the others with BarrierBroken: a rank that fails
/// must not leave the others waiting forever (std::barrier cannot be cancelled).
class BreakableBarrier {
 public:
  struct Broken {};
  explicit BreakableBarrier(int participants) : n_(participants) {}
  void arrive_and_wait() {
    std::unique_lock lock(m_);
    if (broken_) throw Broken{};
    const int64_t phase = phase_;
    if (++waiting_ == n_) {
      waiting_ = 0, ++phase_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return phase_ != phase || broken_; });
    if (phase_ == phase) throw Broken{};
  }
  void break_all() {
    std::lock_guard lock(m_);
    broken_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_ = 0, waiting_ = 0;
  int64_t phase_ = 0;
  bool broken_ = false;
};

/// One rank's q, k, v (its rows, rotated at their window positions) and where its output goes.
template <class Scalar>
struct RankAttention {
  const Scalar* q = nullptr;
  const Scalar* k = nullptr;
  const Scalar* v = nullptr;
  Scalar* o = nullptr;
};

template <class Scalar>
using AttendAll = std::function<void(const std::vector<RankAttention<Scalar>>&, const attention::AttentionShape&)>;

/// Perplexity of the model that `ranks` (one model::Llama per rank, same checkpoint) hold, over
/// `tokens`. `attend(io, whole)` computes the whole window's attention from every rank's rows; it
/// is called from rank 0's thread while the others wait. `on_thread(r)` runs first in rank r's
/// thread (the GPU selects the rank's device there). An exception in any rank stops every rank and
/// is rethrown here.
template <class Model>
eval::PerplexityResult context_parallel_perplexity(const std::vector<Model*>& ranks, std::span<const int32_t> tokens,
                                                   const eval::PerplexityOptions& opts,
                                                   const AttendAll<typename Model::Scalar>& attend,
                                                   const std::function<void(int)>& on_thread = {}) {
  using Scalar = typename Model::Scalar;
  const int R = static_cast<int>(ranks.size());
  const int64_t n = int64_t(tokens.size()), N = opts.context;
  if (R < 1) throw make_error("context parallel", "ranks", "need at least one rank");
  if (N < 2 * int64_t(R))
    throw make_error("perplexity", "context",
                     "a window of " + std::to_string(N) + " tokens cannot be split over " + std::to_string(R) +
                         " ranks (needs >= " + std::to_string(2 * R) + ")");
  if (opts.stride != 0 && opts.stride != N)
    throw make_error("perplexity", "stride", "context parallel runs non-overlapping windows only (stride = context)");
  if (n < 2) throw make_error("perplexity", "tokens", "need at least 2 tokens, got " + std::to_string(n));
  const int64_t vocab = ranks[0]->config().vocab_size;

  struct Partial {
    std::vector<double> nll_sum;
    std::vector<int64_t> count;
    double total = 0;
    int64_t tokens = 0;
  };
  std::vector<Partial> part(static_cast<size_t>(R));
  std::vector<RankAttention<Scalar>> io(static_cast<size_t>(R));
  BreakableBarrier barrier(R);
  std::mutex error_m;
  std::exception_ptr error;
  int64_t windows = 0;

  // Scores rows [0, rows) of `hidden` whose window positions are pos[i] (targets begin + pos + 1).
  auto score = [&](Model& m, Partial& p, const Scalar* hidden, int64_t cols, std::span<const int64_t> pos,
                   int64_t begin) {
    std::vector<double> row_nll(size_t(opts.logits_rows));
    std::vector<float> logits;
    std::vector<int32_t> targets;
    constexpr bool backend_nll = requires(Model& mm, const Scalar* h, const int32_t* t, double* d) {
      mm.nll(h, int64_t(1), t, d);
    };
    if constexpr (!backend_nll) logits.resize(size_t(opts.logits_rows * vocab));
    const int64_t rows = int64_t(pos.size());
    for (int64_t r0 = 0; r0 < rows; r0 += opts.logits_rows) {
      const int64_t k = std::min(opts.logits_rows, rows - r0);
      targets.resize(size_t(k));
      for (int64_t i = 0; i < k; ++i) targets[size_t(i)] = tokens[size_t(begin + pos[size_t(r0 + i)] + 1)];
      if constexpr (backend_nll) {
        m.nll(hidden + r0 * cols, k, targets.data(), row_nll.data());
      } else {
        m.logits(hidden + r0 * cols, k, logits.data());
        for (int64_t i = 0; i < k; ++i)
          row_nll[size_t(i)] = eval::token_nll(logits.data() + i * vocab, vocab, targets[size_t(i)]);
      }
      for (int64_t i = 0; i < k; ++i) {
        const double nll = row_nll[size_t(i)];
        const size_t at = size_t(pos[size_t(r0 + i)]);
        p.total += nll, p.nll_sum[at] += nll, p.count[at] += 1, ++p.tokens;
      }
    }
  };

  auto run_rank = [&](int r) {
    try {
      if (on_thread) on_thread(r);
      Model& m = *ranks[size_t(r)];
      Partial& p = part[size_t(r)];
      p.nll_sum.assign(size_t(N), 0.0);
      p.count.assign(size_t(N), 0);
      auto cache = m.make_cache(1, /*layer_streamed=*/true);  // untouched by a context-parallel forward
      int64_t scored = 0;
      for (int64_t begin = 0; begin < n - 1; begin += N) {  // windows as eval::perplexity's, stride = context
        const int64_t end = std::min(begin + N, n), L = end - begin;
        std::vector<int32_t> window(tokens.begin() + begin, tokens.begin() + end);
        if (opts.window_bos >= 0 && begin > 0) window[0] = opts.window_bos;
        if (L < 2 * int64_t(R)) {  // too short to split: rank 0 runs it alone
          if (r == 0) {
            auto whole = m.make_cache(L, /*layer_streamed=*/true);
            const auto hidden = m.forward(window, whole);
            std::vector<int64_t> pos(size_t(L - 1));
            for (int64_t i = 0; i < L - 1; ++i) pos[size_t(i)] = i;
            score(m, p, hidden.data(), hidden.cols(), pos, begin);
          }
        } else {
          const Zigzag z(L, R);
          typename Model::ContextParallel cp;
          cp.positions = z.positions_of(r);
          cp.window_tokens = L;
          cp.attention = [&, r](const Scalar* q, const Scalar* k, const Scalar* v, Scalar* o,
                                const attention::AttentionShape& whole) {
            io[size_t(r)] = {q, k, v, o};
            barrier.arrive_and_wait();  // every rank's q/k/v enqueued
            if (r == 0) {
              try {
                attend(io, whole);
              } catch (...) {
                barrier.break_all();
                throw;
              }
            }
            barrier.arrive_and_wait();  // every rank's output enqueued
          };
          std::vector<int32_t> local(cp.positions.size());
          for (size_t i = 0; i < local.size(); ++i) local[i] = window[size_t(cp.positions[i])];
          const std::vector<int64_t> pos = cp.positions;
          m.context_parallel(std::move(cp));
          const auto hidden = [&] {
            try {
              auto h = m.forward(local, cache);
              m.context_parallel(std::nullopt);
              return h;
            } catch (...) {
              m.context_parallel(std::nullopt);
              throw;
            }
          }();
          // every row but the window's last position (rank 0's last row) has a target
          const int64_t rows = pos.back() == L - 1 ? int64_t(pos.size()) - 1 : int64_t(pos.size());
          score(m, p, hidden.data(), hidden.cols(), std::span(pos).first(size_t(rows)), begin);
        }
        scored += L - 1;
        if (r == 0) {
          ++windows;
          if (opts.progress) opts.progress(scored, n - 1);
        }
      }
    } catch (const BreakableBarrier::Broken&) {
      // another rank failed first; its error is the one reported
    } catch (...) {
      {
        std::lock_guard lock(error_m);
        if (!error) error = std::current_exception();
      }
      barrier.break_all();
    }
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < R; ++r) threads.emplace_back(run_rank, r);
  run_rank(0);
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);

  eval::PerplexityResult res;
  res.context = N, res.stride = N, res.windows = windows;
  res.position_nll_sum.assign(size_t(N), 0.0);
  res.position_count.assign(size_t(N), 0);
  double total = 0;
  for (const Partial& p : part) {
    total += p.total, res.tokens += p.tokens;
    for (int64_t i = 0; i < N; ++i)
      res.position_nll_sum[size_t(i)] += p.nll_sum[size_t(i)], res.position_count[size_t(i)] += p.count[size_t(i)];
  }
  res.mean_nll = total / double(res.tokens);
  res.perplexity = std::exp(res.mean_nll);
  res.curve = eval::bin_positions(res.position_nll_sum, res.position_count, opts.bins);
  return res;
}

}  // namespace ropex::parallel
