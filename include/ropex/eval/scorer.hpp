// A model seen as a scorer of token sequences: the per-token loss (and the greedy choice) at every
// position of one sequence, from one forward. Passkey retrieval and `ropex check` need nothing else,
// and the same interface serves the CPU model and the GPU one (model_cuda.hpp), so those evaluations
// are written once. It also keeps the seconds spent in the model (forward + lm_head), the figure
// `ropex check` reports against its total time.
#pragma once
#include <ropex/eval/perplexity.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace ropex::eval {

class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual int64_t vocab() const = 0;
  /// For positions p in [first, n) of `tokens` (n = tokens.size()):
  ///   nll[p - first]    = -log P(tokens[p+1] | tokens[0..p]) for p < n-1 (nullptr: not wanted);
  ///   argmax[p - first] = the greedy next token after tokens[0..p]          (nullptr: not wanted).
  virtual void score(std::span<const int32_t> tokens, int64_t first, double* nll, int32_t* argmax) = 0;
  /// Greedy continuation of `prompt` by `steps` tokens (KV cache), for the rare retrieval answers
  /// that one scored forward cannot settle.
  virtual std::vector<int32_t> greedy(std::span<const int32_t> prompt, int64_t steps) = 0;
  /// Seconds spent inside score() and greedy() so far (the model's forward and lm_head).
  double model_seconds() const { return model_seconds_; }
  /// Tokens through the forward so far.
  int64_t model_tokens() const { return model_tokens_; }

 protected:
  double model_seconds_ = 0;
  int64_t model_tokens_ = 0;
};

/// A Scorer over a model::Llama<B> (any backend). The model must outlive it. `rows`: lm_head rows
/// per call ([rows, vocab] floats on the host at a time).
template <class Model>
class ModelScorer : public Scorer {
 public:
  explicit ModelScorer(Model& model, int64_t rows = 64) : model_(model), rows_(std::max<int64_t>(1, rows)) {}
  int64_t vocab() const override { return model_.config().vocab_size; }

  void score(std::span<const int32_t> tokens, int64_t first, double* nll, int32_t* argmax) override {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t n = int64_t(tokens.size()), V = vocab();
    if (first < 0 || first >= n) throw make_error("score", "first", "must lie in [0, " + std::to_string(n) + ")");
    auto cache = model_.make_cache(n, /*layer_streamed=*/true);
    const auto hidden = model_.forward(tokens, cache);
    constexpr bool backend_nll = requires(const typename Model::Scalar* h, const int32_t* t, double* d) {
      model_.nll(h, int64_t(1), t, d);
    };
    // Losses only: where the backend has its own loss (the GPU), the logits never leave the device.
    if constexpr (backend_nll) {
      if (!argmax) {
        for (int64_t p0 = first; p0 < n - 1; p0 += rows_) {
          const int64_t rows = std::min(rows_, n - 1 - p0);
          model_.nll(hidden.data() + p0 * hidden.cols(), rows, tokens.data() + p0 + 1, nll + (p0 - first));
        }
        finish(t0, n);
        return;
      }
    }
    logits_.resize(size_t(rows_ * V));
    for (int64_t p0 = first; p0 < n; p0 += rows_) {
      const int64_t rows = std::min(rows_, n - p0);
      model_.logits(hidden.data() + p0 * hidden.cols(), rows, logits_.data());
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t p = p0 + i;
        const float* row = logits_.data() + i * V;
        if (nll && p < n - 1) nll[p - first] = token_nll(row, V, tokens[size_t(p + 1)]);
        if (argmax) argmax[p - first] = int32_t(std::max_element(row, row + V) - row);
      }
    }
    finish(t0, n);
  }

  std::vector<int32_t> greedy(std::span<const int32_t> prompt, int64_t steps) override {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t V = vocab();
    auto cache = model_.make_cache(int64_t(prompt.size()) + steps);
    logits_.resize(size_t(V));
    auto hidden = model_.forward(prompt, cache);
    std::vector<int32_t> out;
    for (int64_t s = 0; s < steps; ++s) {
      model_.logits(hidden.data() + (hidden.rows() - 1) * hidden.cols(), 1, logits_.data());
      const int32_t next = int32_t(std::max_element(logits_.begin(), logits_.end()) - logits_.begin());
      out.push_back(next);
      if (s + 1 < steps) hidden = model_.forward(std::span(&next, 1), cache);
    }
    finish(t0, int64_t(prompt.size()) + steps);
    return out;
  }

 private:
  void finish(std::chrono::steady_clock::time_point t0, int64_t tokens) {
    model_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    model_tokens_ += tokens;
  }
  Model& model_;
  int64_t rows_;
  std::vector<float> logits_;
};

/// A ModelScorer that owns its model (built from the arguments), for callers that hand scorers
/// around by pointer (the CLI's CPU / GPU choice).
template <class Model>
struct ModelHolder {
  Model model;
};
template <class Model>
class OwningScorer : private ModelHolder<Model>, public ModelScorer<Model> {
 public:
  template <class... Args>
  explicit OwningScorer(int64_t rows, Args&&... args)
      : ModelHolder<Model>{Model(std::forward<Args>(args)...)}, ModelScorer<Model>(this->model, rows) {}
};

}  // namespace ropex::eval
