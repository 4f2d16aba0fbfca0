// The work behind ropex.Model's long calls (logits, nll, perplexity, generate) over one backend's
// Llama forward. Free of Python: model.cpp instantiates it for the CPU, model_cuda.cu (nvcc) for
// the GPU, the same way the CLI splits cmd_model.cpp / cmd_model_cuda.cu. Hooks are called with
// (done, total) after every layer and every window / generated token; the caller's hooks take the
// GIL, and may throw to stop the call (Ctrl-C, a failing progress callback).
#pragma once
#include <ropex/eval/perplexity.hpp>
#include <ropex/eval/scorer.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace ropex_py {

using Hook = std::function<void(int64_t, int64_t)>;

class Runner {
 public:
  virtual ~Runner() = default;
  /// logits [ids.size(), vocab] float32 into `out` (host memory); `layer` after each layer.
  virtual void logits(std::span<const int32_t> ids, float* out, const Hook& layer) = 0;
  /// out[i] = -log softmax(logits[i])[ids[i+1]], i < ids.size()-1, from one forward.
  virtual void nll(std::span<const int32_t> ids, double* out, const Hook& layer) = 0;
  /// eval::perplexity; po.progress is the caller's per-window hook, `layer` the per-layer one.
  virtual ropex::eval::PerplexityResult perplexity(std::span<const int32_t> ids, ropex::eval::PerplexityOptions po,
                                                   const Hook& layer) = 0;
  /// Prefill `prompt` (`layer` after each of its layers), then up to `steps` tokens chosen by
  /// pick(logits row); `token(done, steps)` after each; stops after a token for which stop() holds.
  virtual std::vector<int32_t> generate(std::span<const int32_t> prompt, int64_t steps,
                                        const std::function<int32_t(const float*)>& pick,
                                        const std::function<bool(int32_t)>& stop, const Hook& layer,
                                        const Hook& token) = 0;
  /// The model as an eval::Scorer (passkey retrieval, check), over the same weights.
  virtual ropex::eval::Scorer& scorer() = 0;
  /// Calls `layer` after each layer of every forward until removed (nullptr).
  virtual void on_layer(const Hook& layer) = 0;
};

template <class Backend>
class LlamaRunner final : public Runner {
 public:
  /// `logits_rows`: lm_head rows at once in nll / perplexity (the GPU takes more than the CPU).
  LlamaRunner(const ropex::model::Checkpoint& ck, int64_t chunk, int64_t logits_rows)
      : m_(ck, chunk), vocab_(ck.config().vocab_size), logits_rows_(logits_rows), scorer_(m_, logits_rows) {}

  void logits(std::span<const int32_t> ids, float* out, const Hook& layer) override {
    Scope s(m_, layer);
    auto cache = m_.make_cache(int64_t(ids.size()));
    const auto hidden = m_.forward(ids, cache);
    m_.logits(hidden.data(), hidden.rows(), out);
  }

  void nll(std::span<const int32_t> ids, double* out, const Hook& layer) override {
    Scope s(m_, layer);
    const int64_t n = int64_t(ids.size());
    auto cache = m_.make_cache(n);
    const auto hidden = m_.forward(ids, cache);
    std::vector<float> lg;
    for (int64_t p0 = 0; p0 < n - 1; p0 += logits_rows_) {
      const int64_t r = std::min(logits_rows_, n - 1 - p0);
      const auto* h = hidden.data() + p0 * hidden.cols();
      if constexpr (requires { m_.nll(h, r, ids.data(), out); }) {
        m_.nll(h, r, ids.data() + p0 + 1, out + p0);  // on the device: no [r, vocab] copy to the host
      } else {
        lg.resize(size_t(r * vocab_));
        m_.logits(h, r, lg.data());
        for (int64_t i = 0; i < r; ++i)
          out[p0 + i] = ropex::eval::token_nll(lg.data() + i * vocab_, vocab_, ids[size_t(p0 + i + 1)]);
      }
    }
  }

  ropex::eval::PerplexityResult perplexity(std::span<const int32_t> ids, ropex::eval::PerplexityOptions po,
                                           const Hook& layer) override {
    Scope s(m_, layer);
    po.logits_rows = logits_rows_;
    return ropex::eval::perplexity(m_, ids, po);
  }

  std::vector<int32_t> generate(std::span<const int32_t> prompt, int64_t steps,
                                const std::function<int32_t(const float*)>& pick,
                                const std::function<bool(int32_t)>& stop, const Hook& layer,
                                const Hook& token) override {
    auto cache = m_.make_cache(int64_t(prompt.size()) + steps);
    std::vector<float> row(static_cast<size_t>(vocab_));  // logits of the last position
    std::vector<int32_t> out;
    auto hidden = [&] {
      Scope s(m_, layer);  // the prefill may be long; decode steps run without a layer hook (the
      return m_.forward(prompt, cache);  // GPU records them as CUDA graphs only then)
    }();
    m_.logits(hidden.data() + (hidden.rows() - 1) * hidden.cols(), 1, row.data());
    for (int64_t step = 0; step < steps; ++step) {
      const int32_t next = pick(row.data());
      out.push_back(next);
      token(step + 1, steps);
      if (stop(next) || step + 1 == steps) break;
      hidden = m_.forward(std::span(&next, 1), cache);
      m_.logits(hidden.data(), 1, row.data());
    }
    return out;
  }

  ropex::eval::Scorer& scorer() override { return scorer_; }
  void on_layer(const Hook& layer) override { m_.on_layer(layer); }

 private:
  // Installs the per-layer hook for one call, removes it on any exit.
  struct Scope {
    ropex::model::Llama<Backend>& m;
    Scope(ropex::model::Llama<Backend>& model, const Hook& h) : m(model) { m.on_layer(h); }
    ~Scope() { m.on_layer(nullptr); }
  };
  ropex::model::Llama<Backend> m_;
  int64_t vocab_, logits_rows_;
  ropex::eval::ModelScorer<ropex::model::Llama<Backend>> scorer_;
};

/// The GPU runner (model_cuda.cu): dtype "bf16" (weights, activations, KV cache) or "f32", as the
/// CLI's --dtype; the CLI's chunk and lm_head batch.
std::unique_ptr<Runner> make_cuda_runner(const ropex::model::Checkpoint& ck, const std::string& dtype);

}  // namespace ropex_py
