// Llama<Backend>: the LLaMA / LLaMA-2 decoder (Touvron et al. 2023) over a Checkpoint's weights.
// forward() is the whole transformer in one screen, top to bottom, like llama2.c's run.c; the
// backend (ops<cpu>, ops<cuda>) supplies the math, the model supplies the order.
//
//   x = embed(tokens)
//   for each layer:  x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
//                    x += Wdown · (silu(Wgate·norm(x)) * Wup·norm(x))
//   logits = lm_head · norm(x)
#pragma once
#include <ropex/backends/eigen/ops.hpp>
#include <ropex/error.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/config.hpp>
#include <ropex/model/kv_cache.hpp>
#include <ropex/rope/apply.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ropex::model {

template <class Backend = backends::cpu>
class Llama {
  using Ops = backends::ops<Backend>;

 public:
  /// Float32 activations, one row per token.
  using Matrix = backends::eigen_detail::RowMatrix;

  /// Keeps a reference to the checkpoint (it must outlive the model); rope settings are read from
  /// checkpoint.config() at every forward, so overrides made on the checkpoint take effect.
  /// `chunk` tokens go through the layer stack at a time, bounding activation memory.
  explicit Llama(const Checkpoint& checkpoint, int64_t chunk = 512) : ck_(&checkpoint), chunk_(chunk) {
    const LlamaConfig& c = config();
    auto vec = [&](const std::string& name) {  // norm weights: small, converted once
      const TensorView& t = ck_->tensor(name);
      std::vector<float> v(t.numel());
      t.to_float(v.data(), 0, v.size());
      return v;
    };
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      layers_.push_back(Layer{vec(p + "input_layernorm.weight"), &ck_->tensor(p + "self_attn.q_proj.weight"),
                              &ck_->tensor(p + "self_attn.k_proj.weight"), &ck_->tensor(p + "self_attn.v_proj.weight"),
                              &ck_->tensor(p + "self_attn.o_proj.weight"), vec(p + "post_attention_layernorm.weight"),
                              &ck_->tensor(p + "mlp.gate_proj.weight"), &ck_->tensor(p + "mlp.up_proj.weight"),
                              &ck_->tensor(p + "mlp.down_proj.weight")});
    }
    embed_ = &ck_->tensor("model.embed_tokens.weight");
    final_norm_ = vec("model.norm.weight");
    lm_head_ = c.tie_word_embeddings ? embed_ : &ck_->tensor("lm_head.weight");
  }

  const LlamaConfig& config() const { return ck_->config(); }

  /// A cache for up to `capacity` tokens.
  KVCache make_cache(int64_t capacity) const {
    const LlamaConfig& c = config();
    return KVCache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, capacity);
  }

  /// Runs `tokens` at positions cache.length() .. cache.length()+n-1, appends their keys and
  /// values to the cache, and returns the final-normed hidden states [n, hidden] (feed them to
  /// logits()). Every RoPE variant's frequencies are computed for this call's sequence length
  /// (max position + 1), as HF does for dynamic NTK and LongRoPE.
  Matrix forward(std::span<const int32_t> tokens, KVCache& cache) {
    const LlamaConfig& c = config();
    const int64_t n = int64_t(tokens.size());
    for (int64_t i = 0; i < n; ++i)
      if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= c.vocab_size)
        throw make_error("tokens", "[" + std::to_string(i) + "]",
                         "id " + std::to_string(tokens[size_t(i)]) + " is outside the vocabulary [0, " +
                             std::to_string(c.vocab_size) + ")");
    cache.reserve_more(n);
    const int64_t seq_len = cache.length() + n;
    const std::vector<double> inv_freq = c.rope.inv_freq(c.rotary_dim(), seq_len);
    const double attention_factor = c.rope.attention_factor(seq_len);

    Matrix hidden(n, c.hidden_size);  // (n, dim)
    for (int64_t t0 = 0; t0 < n; t0 += chunk_) {
      const int64_t m = std::min(chunk_, n - t0);
      const auto positions = iota_positions(m, cache.length());
      const RopeTable table = rope_table(inv_freq, positions, attention_factor);
      forward_chunk(tokens.subspan(size_t(t0), size_t(m)), table, cache, hidden.data() + t0 * c.hidden_size);
    }
    return hidden;
  }

  /// logits[n, vocab] = lm_head · hidden[n, hidden]  (call on a few rows at a time to bound memory)
  void logits(const float* hidden, int64_t n, float* out) const { Ops::matmul(*lm_head_, hidden, n, out); }

  /// Convenience: forward + logits of every token, [n, vocab].
  Matrix logits(std::span<const int32_t> tokens, KVCache& cache) {
    const Matrix h = forward(tokens, cache);
    Matrix out(h.rows(), config().vocab_size);
    logits(h.data(), h.rows(), out.data());
    return out;
  }

 private:
  struct Layer {
    std::vector<float> attn_norm;
    const TensorView *wq, *wk, *wv, *wo;
    std::vector<float> ffn_norm;
    const TensorView *w_gate, *w_up, *w_down;
  };

  // One chunk of m tokens through every layer; writes the final-normed hidden states to `out`.
  void forward_chunk(std::span<const int32_t> tokens, const RopeTable& rope, KVCache& cache, float* out) {
    const LlamaConfig& c = config();
    const int64_t m = int64_t(tokens.size()), dim = c.hidden_size, hd = c.head_dim;
    const int64_t n_heads = c.num_attention_heads, n_kv = c.num_key_value_heads;
    const int64_t q_dim = n_heads * hd, kv_dim = n_kv * hd, inter = c.intermediate_size;
    const int64_t past = cache.length();
    x_.resize(m, dim);       // (m, dim)          residual stream
    xb_.resize(m, dim);      // (m, dim)          normed input of a block
    xb2_.resize(m, dim);     // (m, dim)          a block's output before the residual add
    q_.resize(m, q_dim);     // (m, n_heads, hd)  queries
    k_.resize(m, kv_dim);    // (m, n_kv, hd)     new keys
    v_.resize(m, kv_dim);    // (m, n_kv, hd)     new values
    att_.resize(m, q_dim);   // (m, n_heads, hd)  attention output
    hb_.resize(m, inter);    // (m, inter)        gate, then silu(gate) * up
    hb2_.resize(m, inter);   // (m, inter)        up

    for (int64_t t = 0; t < m; ++t)  // x = embed_tokens[token]
      embed_->to_float(x_.data() + t * dim, size_t(tokens[size_t(t)]) * size_t(dim), size_t(dim));

    attention::AttentionShape shape;
    shape.n_queries = m, shape.n_keys = past + m, shape.query_offset = past, shape.causal = true;
    shape.n_heads = n_heads, shape.n_kv_heads = n_kv, shape.head_dim = hd;
    shape.scale = 1.0 / std::sqrt(double(hd));

    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const Layer& w = layers_[size_t(l)];
      // ---- attention block
      Ops::rmsnorm(xb_.data(), x_.data(), w.attn_norm.data(), m, dim, c.rms_norm_eps);
      Ops::matmul(*w.wq, xb_.data(), m, q_.data());  // q = xb Wq^T
      Ops::matmul(*w.wk, xb_.data(), m, k_.data());  // k = xb Wk^T
      Ops::matmul(*w.wv, xb_.data(), m, v_.data());  // v = xb Wv^T
      Ops::rope(q_.data(), m, n_heads, hd, rope, c.rope_layout);
      Ops::rope(k_.data(), m, n_kv, hd, rope, c.rope_layout);
      cache.append(l, k_.data(), v_.data(), m);  // keys/values of positions past .. past+m-1
      Ops::attention(attention::token_major<const float>(q_.data(), n_heads, hd),
                     attention::const_view(cache.keys(l)),
                     attention::const_view(cache.values(l)),
                     attention::token_major<float>(att_.data(), n_heads, hd), shape);
      Ops::matmul(*w.wo, att_.data(), m, xb2_.data());  // xb2 = att Wo^T
      Ops::add(x_.data(), xb2_.data(), m * dim);        // x += xb2
      // ---- MLP block (SwiGLU)
      Ops::rmsnorm(xb_.data(), x_.data(), w.ffn_norm.data(), m, dim, c.rms_norm_eps);
      Ops::matmul(*w.w_gate, xb_.data(), m, hb_.data());  // hb  = xb Wgate^T
      Ops::matmul(*w.w_up, xb_.data(), m, hb2_.data());   // hb2 = xb Wup^T
      Ops::swiglu(hb_.data(), hb2_.data(), m * inter);    // hb  = silu(hb) * hb2
      Ops::matmul(*w.w_down, hb_.data(), m, xb2_.data()); // xb2 = hb Wdown^T
      Ops::add(x_.data(), xb2_.data(), m * dim);          // x += xb2
    }
    cache.commit(m);
    Ops::rmsnorm(out, x_.data(), final_norm_.data(), m, dim, c.rms_norm_eps);
  }

  const Checkpoint* ck_;
  int64_t chunk_;
  std::vector<Layer> layers_;
  const TensorView* embed_ = nullptr;
  const TensorView* lm_head_ = nullptr;
  std::vector<float> final_norm_;
  Matrix x_, xb_, xb2_, q_, k_, v_, att_, hb_, hb2_;
};

}  // namespace ropex::model
