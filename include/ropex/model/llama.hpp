// Llama<Backend>: the LLaMA decoder (Touvron et al. 2023) over a Checkpoint's weights, with the flags
// its descendants add (LlamaConfig: q/k/v/o and MLP biases, Qwen3's per-head q/k norm, sliding-window
// attention per layer; Phi-3's fused projections are split by the Checkpoint).
// forward() is the whole transformer in one screen, top to bottom, like llama2.c's run.c; the
// backend (ops<cpu>, ops<cuda>) supplies the math, the model supplies the order.
//
//   x = embed(tokens)
//   for each layer:  x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x)) [+ biases,
//                         q/k = headnorm(q/k) before rope, keys limited to the layer's window]
//                    x += Wdown · (silu(Wgate·norm(x)) * Wup·norm(x))
//   logits = lm_head · norm(x)
//
// The layer loop runs layer-outer: all of a call's tokens go through layer l (a chunk of tokens
// at a time, keys/values appended to layer l of the cache) before layer l+1 starts. With a
// one-layer cache (make_cache(n, /*layer_streamed=*/true)) only the current layer's K/V exist at
// any time: the way a 1M-token window fits on one GPU (eval/perplexity.hpp uses it).
//
// What a backend's ops<B> provides (backends/eigen/ops.hpp for the CPU, backends/cuda/ops.cuh):
//   Matrix (rows(), cols(), data(), resize(r, c)), Weight / Vector (made by upload /
//   upload_stacked / upload_vector from TensorViews), Cache (KVCache's interface), Rope (rope_angles), and
//   embed, rmsnorm, matmul (y = x W^T, or y += x W^T for the residual adds; or several W_i of the
//   same x at once), norm_matmul (matmul of rmsnorm(x)), swiglu_matmul (matmul of silu(gate) * up;
//   the GPU fuses these pairs for one token), rope, attention, logits; begin_step / end_layer / end_step around
//   the layers (the GPU records a decode step as CUDA graphs there).
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
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ropex::model {

template <class Backend = backends::cpu>
class Llama {
  using Ops = backends::ops<Backend>;

 public:
  /// Activations, one row per token: float32 Eigen rows on the CPU, a device buffer on the GPU.
  using Matrix = typename Ops::Matrix;
  using Scalar = typename Ops::Scalar;
  using Cache = typename Ops::Cache;
  /// Logits on the host, [n, vocab] float32.
  using HostMatrix = backends::eigen_detail::RowMatrix;

  /// Keeps a reference to the checkpoint (it must outlive the model); rope settings are read from
  /// checkpoint.config() at every forward, so overrides made on the checkpoint take effect.
  /// `chunk` tokens go through a layer at a time, bounding activation memory. `ops` carries the
  /// backend's state (the CPU's is empty; the GPU's holds the cuBLAS handle and workspaces).
  explicit Llama(const Checkpoint& checkpoint, int64_t chunk = 512, Ops ops = Ops())
      : ck_(&checkpoint), chunk_(chunk), ops_(std::move(ops)) {
    if (chunk_ < 1) throw make_error("Llama", "chunk", "must be >= 1, got " + std::to_string(chunk_));
    const LlamaConfig& c = config();
    auto w = [&](const std::string& name) { return ops_.upload(ck_->tensor(name)); };
    auto vec = [&](const std::string& name) { return ops_.upload_vector(ck_->tensor(name)); };
    auto t = [&](const std::string& name) { return &ck_->tensor(name); };
    auto opt_vec = [&](bool present, const std::string& name) {
      return present ? std::optional<Vector>(vec(name)) : std::nullopt;
    };
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      // q|k|v and gate|up uploaded together: back to back on the GPU (one product for one token).
      auto qkv = ops_.upload_stacked({t(p + "self_attn.q_proj.weight"), t(p + "self_attn.k_proj.weight"),
                                      t(p + "self_attn.v_proj.weight")});
      auto gate_up = ops_.upload_stacked({t(p + "mlp.gate_proj.weight"), t(p + "mlp.up_proj.weight")});
      Layer layer{.attn_norm = vec(p + "input_layernorm.weight"), .wq = qkv[0], .wk = qkv[1], .wv = qkv[2],
                  .wo = w(p + "self_attn.o_proj.weight"), .ffn_norm = vec(p + "post_attention_layernorm.weight"),
                  .w_gate = gate_up[0], .w_up = gate_up[1], .w_down = w(p + "mlp.down_proj.weight"),
                  .bq = opt_vec(c.qkv_bias, p + "self_attn.q_proj.bias"),
                  .bk = opt_vec(c.qkv_bias, p + "self_attn.k_proj.bias"),
                  .bv = opt_vec(c.qkv_bias, p + "self_attn.v_proj.bias"),
                  .bo = opt_vec(c.o_bias, p + "self_attn.o_proj.bias"),
                  .q_norm = opt_vec(c.qk_norm, p + "self_attn.q_norm.weight"),
                  .k_norm = opt_vec(c.qk_norm, p + "self_attn.k_norm.weight"),
                  .b_gate = opt_vec(c.mlp_bias, p + "mlp.gate_proj.bias"),
                  .b_up = opt_vec(c.mlp_bias, p + "mlp.up_proj.bias"),
                  .b_down = opt_vec(c.mlp_bias, p + "mlp.down_proj.bias")};
      layers_.push_back(std::move(layer));
    }
    embed_.push_back(w("model.embed_tokens.weight"));
    if (!c.tie_word_embeddings) lm_head_.push_back(w("lm_head.weight"));
    final_norm_.push_back(vec("model.norm.weight"));
  }

  const LlamaConfig& config() const { return ck_->config(); }
  Ops& ops() { return ops_; }

  /// A cache for up to `capacity` tokens. layer_streamed: keys/values of one layer only, reused
  /// by every layer — enough for one forward() from an empty cache (perplexity windows), with
  /// 1/num_layers of the memory; such a cache cannot be extended by a later call.
  Cache make_cache(int64_t capacity, bool layer_streamed = false) const {
    const LlamaConfig& c = config();
    return Cache(layer_streamed ? 1 : c.num_hidden_layers, c.num_key_value_heads, c.head_dim, capacity);
  }

  /// Context parallelism (parallel/cp_perplexity.hpp): this model is one rank of a window split
  /// over several. forward()'s tokens are the rank's rows, at window `positions`; every layer's
  /// q, k, v ([n, heads, head_dim] each, rotated at those positions with the frequencies of the
  /// whole window, `window_tokens` long) go to `attention`, which writes the rows' output to `out`
  /// — a ring over the ranks (backends/cuda/ring_attention.cuh) in place of the cache.
  struct ContextParallel {
    std::vector<int64_t> positions;
    int64_t window_tokens = 0;
    std::function<void(const Scalar* q, const Scalar* k, const Scalar* v, Scalar* out,
                       const attention::AttentionShape& whole)>
        attention;
  };
  /// Sets (or, with nullopt, clears) the context-parallel rank; forward() is the one-device
  /// forward while none is set.
  void context_parallel(std::optional<ContextParallel> cp) { cp_ = std::move(cp); }

  /// Called after each layer of a forward() with (layers done, layers): progress of long calls.
  void on_layer(std::function<void(int64_t, int64_t)> f) { on_layer_ = std::move(f); }

  /// Runs `tokens` at positions cache.length() .. cache.length()+n-1, appends their keys and
  /// values to the cache, and returns the final-normed hidden states [n, hidden] (feed them to
  /// logits()). Every RoPE variant's frequencies are computed for this call's sequence length
  /// (max position + 1), as HF does for dynamic NTK and LongRoPE.
  Matrix forward(std::span<const int32_t> tokens, Cache& cache) {
    const LlamaConfig& c = config();
    const int64_t n = int64_t(tokens.size()), dim = c.hidden_size, hd = c.head_dim;
    const int64_t n_heads = c.num_attention_heads, n_kv = c.num_key_value_heads;
    const int64_t q_dim = n_heads * hd, kv_dim = n_kv * hd, inter = c.intermediate_size;
    for (int64_t i = 0; i < n; ++i)
      if (tokens[size_t(i)] < 0 || tokens[size_t(i)] >= c.vocab_size)
        throw make_error("tokens", "[" + std::to_string(i) + "]",
                         "id " + std::to_string(tokens[size_t(i)]) + " is outside the vocabulary [0, " +
                             std::to_string(c.vocab_size) + ")");
    const bool streamed = cache.n_layers() != c.num_hidden_layers;
    if (streamed && (cache.n_layers() != 1 || cache.length() != 0))
      throw make_error("kv cache", "layers",
                       "a layer-streamed cache (" + std::to_string(cache.n_layers()) +
                           " layer) serves one forward() from empty; clear() it first");
    // A context-parallel rank: its rows in one chunk, the cache untouched (the ring holds the K/V).
    const ContextParallel* cp = cp_ ? &*cp_ : nullptr;
    if (cp && int64_t(cp->positions.size()) != n)
      throw make_error("context parallel", "positions", "one window position per token");
    const int64_t chunk = cp ? std::max<int64_t>(n, 1) : chunk_;
    if (!cp) cache.reserve_more(n);
    const int64_t past = cp ? 0 : cache.length(), seq_len = cp ? cp->window_tokens : past + n;
    const std::vector<double> inv_freq = c.rope.inv_freq(c.rotary_dim(), seq_len);
    const double attention_factor = c.rope.attention_factor(seq_len);
    std::vector<typename Ops::Rope> rope;  // per chunk: the cos/sin of its positions
    if (cp) rope.push_back(ops_.rope_angles_at(inv_freq, attention_factor, cp->positions));
    else
      for (int64_t t0 = 0; t0 < n; t0 += chunk)
        rope.push_back(ops_.rope_angles(inv_freq, attention_factor, past + t0, std::min(chunk, n - t0)));

    Matrix x(n, dim);  // (n, dim)  the residual stream of every token; returned normed
    ops_.embed(x.data(), embed_[0], tokens);  // x = embed_tokens[tokens]
    const int64_t mc = std::min(chunk, n);
    xb_.resize(mc, dim);      // (m, dim)          normed input of a block
    qkv_.resize(mc, q_dim + 2 * kv_dim);  // q (m, n_heads, hd), then k and v (m, n_kv, hd): one block
    att_.resize(mc, q_dim);   // (m, n_heads, hd)  attention output
    hb_.resize(mc, 2 * inter);  // gate (m, inter), then up (m, inter); gate becomes silu(gate) * up
    // Back to back in one allocation, so one token's q|k|v (gate|up) is one product on the GPU.
    Scalar* const q = qkv_.data();
    Scalar* const k = q + mc * q_dim;
    Scalar* const v = k + mc * kv_dim;
    Scalar* const gate = hb_.data();
    Scalar* const up = gate + mc * inter;

    // On the GPU a one-token step (decode) is recorded from here as CUDA graphs, launched a few
    // layers at a time: a few launches instead of ~15 per layer. Not with an on_layer hook (it
    // would run while recording). ops<cpu>: nothing.
    auto step = ops_.begin_step(cache, /*record=*/n == 1 && !on_layer_ && !cp);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const Layer& w = layers_[size_t(l)];
      const int64_t cl = streamed ? 0 : l;  // the cache layer holding layer l's keys/values
      for (int64_t t0 = 0, ci = 0; t0 < n; t0 += chunk, ++ci) {
        const int64_t m = std::min(chunk, n - t0);
        Scalar* xc = x.data() + t0 * dim;  // (m, dim) this chunk's rows of the residual stream
        // ---- attention block
        // q|k|v = norm(x) Wq|Wk|Wv^T (+ bq|bk|bv)  (xb: the normed rows)
        ops_.norm_matmul(xb_.data(), xc, w.attn_norm.data(), m, dim, c.rms_norm_eps, {{w.wq, q}, {w.wk, k}, {w.wv, v}});
        if (w.bq) ops_.add_bias(q, *w.bq, m, q_dim), ops_.add_bias(k, *w.bk, m, kv_dim), ops_.add_bias(v, *w.bv, m, kv_dim);
        if (w.q_norm) {  // Qwen3: q, k = rmsnorm over each head's head_dim (rows of (m * heads, hd))
          ops_.rmsnorm(q, q, w.q_norm->data(), m * n_heads, hd, c.rms_norm_eps);
          ops_.rmsnorm(k, k, w.k_norm->data(), m * n_kv, hd, c.rms_norm_eps);
        }
        ops_.rope(q, n_heads, k, n_kv, m, hd, rope[size_t(ci)], c.rope_layout);
        attention::AttentionShape shape;
        shape.n_queries = m, shape.n_keys = past + t0 + m, shape.query_offset = past + t0, shape.causal = true;
        shape.window = c.window(l);  // 0, or the sliding window of this layer
        shape.n_heads = n_heads, shape.n_kv_heads = n_kv, shape.head_dim = hd;
        shape.scale = 1.0 / std::sqrt(double(hd));
        if (cp) {  // the whole window's attention, over the ranks
          shape.n_queries = shape.n_keys = cp->window_tokens, shape.query_offset = 0;
          cp->attention(q, k, v, att_.data(), shape);
        } else {
          cache.append(cl, k, v, m, t0);  // keys/values of positions past+t0 .. past+t0+m-1
          ops_.attention(attention::token_major<const Scalar>(q, n_heads, hd),
                         attention::const_view(cache.keys(cl)), attention::const_view(cache.values(cl)),
                         attention::token_major<Scalar>(att_.data(), n_heads, hd), shape);
        }
        ops_.matmul(w.wo, att_.data(), m, xc, /*accumulate=*/true);  // x += att Wo^T (+ bo)
        if (w.bo) ops_.add_bias(xc, *w.bo, m, dim);
        // ---- MLP block (SwiGLU)
        // gate|up = norm(x) Wgate|Wup^T (+ b);  x += (silu(gate) * up) Wdown^T (+ b)
        ops_.norm_matmul(xb_.data(), xc, w.ffn_norm.data(), m, dim, c.rms_norm_eps, {{w.w_gate, gate}, {w.w_up, up}});
        if (w.b_gate) ops_.add_bias(gate, *w.b_gate, m, inter), ops_.add_bias(up, *w.b_up, m, inter);
        ops_.swiglu_matmul(w.w_down, gate, up, m, inter, xc, /*accumulate=*/true);
        if (w.b_down) ops_.add_bias(xc, *w.b_down, m, dim);
      }
      ops_.end_layer(step);  // (GPU: launches what was recorded, every few layers)
      if (on_layer_) on_layer_(l + 1, c.num_hidden_layers);
    }
    if (!cp) cache.commit(n);
    ops_.rmsnorm(x.data(), x.data(), final_norm_[0].data(), n, dim, c.rms_norm_eps);  // in place
    ops_.end_step(step);
    return x;
  }

  /// logits[n, vocab] = lm_head · hidden[n, hidden], written to host memory (call on a few rows
  /// at a time to bound memory). `hidden` points into forward()'s result.
  void logits(const Scalar* hidden, int64_t n, float* out) { ops_.logits(lm_head(), hidden, n, out); }

  /// Per-row loss -log softmax(lm_head · hidden[i])[targets[i]] without moving [n, vocab] logits
  /// off the device (backends whose ops provide nll; eval/perplexity.hpp prefers it).
  void nll(const Scalar* hidden, int64_t n, const int32_t* targets, double* out)
    requires requires(Ops& o, const typename Ops::Weight& w, const Scalar* h, int64_t k, const int32_t* t, double* d) {
      o.nll(w, h, k, t, d);
    }
  {
    ops_.nll(lm_head(), hidden, n, targets, out);
  }

  /// Convenience: forward + logits of every token, [n, vocab] on the host.
  HostMatrix logits(std::span<const int32_t> tokens, Cache& cache) {
    const Matrix h = forward(tokens, cache);
    HostMatrix out(h.rows(), config().vocab_size);
    logits(h.data(), h.rows(), out.data());
    return out;
  }

 private:
  using Weight = typename Ops::Weight;
  using Vector = typename Ops::Vector;
  struct Layer {
    Vector attn_norm;
    Weight wq, wk, wv, wo;
    Vector ffn_norm;
    Weight w_gate, w_up, w_down;
    // What a family adds (config flags qkv_bias, o_bias, qk_norm, mlp_bias); absent for LLaMA-2.
    std::optional<Vector> bq, bk, bv, bo, q_norm, k_norm, b_gate, b_up, b_down;
  };
  const Weight& lm_head() const { return lm_head_.empty() ? embed_[0] : lm_head_[0]; }

  const Checkpoint* ck_;
  int64_t chunk_;
  Ops ops_;
  std::vector<Layer> layers_;
  std::vector<Weight> embed_, lm_head_;  // one each (lm_head empty when tied to the embedding)
  std::vector<Vector> final_norm_;
  std::function<void(int64_t, int64_t)> on_layer_;
  std::optional<ContextParallel> cp_;
  Matrix xb_, qkv_, att_, hb_;
};

}  // namespace ropex::model
