// The LLaMA forward pass on a real trained model (llama2.c's stories260K): greedy decoding from BOS
// must equal an independent implementation written here the plainest way — llama2.c's run.c
// algorithm (interleaved RoPE pairs, GQA, SwiGLU, tied classifier), reading the .bin by itself,
// plain loops, double accumulation — and the KV-cache decode must equal the full forward.
#include <doctest/doctest.h>

#include <ropex/eval/perplexity.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <tuple>
#include <string>
#include <vector>

namespace {

const std::string kStories = std::string(ROPEX_SHARED_DATA) + "/stories260K.bin";

// ---- the plain reference: its own reader and forward, nothing shared with ropex
struct Plain {
  int dim, hidden, layers, heads, kv_heads, vocab, seq_len, head_size;
  std::vector<float> emb, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final;
  std::vector<double> key_cache, value_cache;  // [layer][pos][kv_dim]

  explicit Plain(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    int32_t h[7];
    f.read(reinterpret_cast<char*>(h), sizeof h);
    dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kv_heads = h[4], vocab = std::abs(h[5]), seq_len = h[6];
    head_size = dim / heads;
    const int kv_dim = kv_heads * head_size;
    auto read = [&](std::vector<float>& v, size_t n) {
      v.resize(n);
      f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * 4));
    };
    read(emb, size_t(vocab) * dim);
    read(rms_att, size_t(layers) * dim);
    read(wq, size_t(layers) * dim * dim);
    read(wk, size_t(layers) * kv_dim * dim);
    read(wv, size_t(layers) * kv_dim * dim);
    read(wo, size_t(layers) * dim * dim);
    read(rms_ffn, size_t(layers) * dim);
    read(w1, size_t(layers) * hidden * dim);
    read(w2, size_t(layers) * dim * hidden);
    read(w3, size_t(layers) * hidden * dim);
    read(rms_final, size_t(dim));
    REQUIRE(f.good());
    REQUIRE(h[5] > 0);  // shared classifier
    key_cache.assign(size_t(layers) * seq_len * kv_dim, 0.0);
    value_cache.assign(size_t(layers) * seq_len * kv_dim, 0.0);
  }

  static std::vector<double> rmsnorm(const std::vector<double>& x, const float* w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double s = 1.0 / std::sqrt(ss / double(x.size()) + 1e-5);
    std::vector<double> o(x.size());
    for (size_t i = 0; i < x.size(); ++i) o[i] = x[i] * s * w[i];
    return o;
  }
  static std::vector<double> matmul(const std::vector<double>& x, const float* w, int out, int in) {
    std::vector<double> y(size_t(out), 0.0);
    for (int r = 0; r < out; ++r)
      for (int i = 0; i < in; ++i) y[size_t(r)] += double(w[size_t(r) * in + i]) * x[size_t(i)];
    return y;
  }

  // run.c forward(): one token at `pos`, returns logits.
  std::vector<double> forward(int token, int pos) {
    const int kv_dim = kv_heads * head_size, group = heads / kv_heads;
    std::vector<double> x(emb.begin() + size_t(token) * dim, emb.begin() + size_t(token + 1) * dim);
    for (int l = 0; l < layers; ++l) {
      auto xb = rmsnorm(x, &rms_att[size_t(l) * dim]);
      auto q = matmul(xb, &wq[size_t(l) * dim * dim], dim, dim);
      auto k = matmul(xb, &wk[size_t(l) * kv_dim * dim], kv_dim, dim);
      auto v = matmul(xb, &wv[size_t(l) * kv_dim * dim], kv_dim, dim);
      for (int i = 0; i < dim; i += 2) {  // RoPE on adjacent pairs (2i, 2i+1) within each head
        const int hd = i % head_size;
        const double freq = 1.0 / std::pow(10000.0, double(hd) / head_size);
        const double c = std::cos(pos * freq), s = std::sin(pos * freq);
        for (auto* vec : {&q, &k}) {
          if (vec == &k && i >= kv_dim) continue;
          const double a = (*vec)[size_t(i)], b = (*vec)[size_t(i + 1)];
          (*vec)[size_t(i)] = a * c - b * s;
          (*vec)[size_t(i + 1)] = a * s + b * c;
        }
      }
      double* kc = &key_cache[(size_t(l) * seq_len + pos) * kv_dim];
      double* vc = &value_cache[(size_t(l) * seq_len + pos) * kv_dim];
      for (int i = 0; i < kv_dim; ++i) kc[i] = k[size_t(i)], vc[i] = v[size_t(i)];
      std::vector<double> att_out(size_t(dim), 0.0);
      for (int h = 0; h < heads; ++h) {
        std::vector<double> att(size_t(pos + 1));
        double mx = -INFINITY;
        for (int t = 0; t <= pos; ++t) {
          const double* kt = &key_cache[(size_t(l) * seq_len + t) * kv_dim + (h / group) * head_size];
          double sc = 0;
          for (int i = 0; i < head_size; ++i) sc += q[size_t(h * head_size + i)] * kt[i];
          att[size_t(t)] = sc / std::sqrt(double(head_size));
          mx = std::max(mx, att[size_t(t)]);
        }
        double sum = 0;
        for (auto& a : att) sum += (a = std::exp(a - mx));
        for (int t = 0; t <= pos; ++t) {
          const double* vt = &value_cache[(size_t(l) * seq_len + t) * kv_dim + (h / group) * head_size];
          for (int i = 0; i < head_size; ++i) att_out[size_t(h * head_size + i)] += att[size_t(t)] / sum * vt[i];
        }
      }
      auto o = matmul(att_out, &wo[size_t(l) * dim * dim], dim, dim);
      for (int i = 0; i < dim; ++i) x[size_t(i)] += o[size_t(i)];
      xb = rmsnorm(x, &rms_ffn[size_t(l) * dim]);
      auto h1 = matmul(xb, &w1[size_t(l) * hidden * dim], hidden, dim);
      auto h3 = matmul(xb, &w3[size_t(l) * hidden * dim], hidden, dim);
      for (int i = 0; i < hidden; ++i) h1[size_t(i)] = h1[size_t(i)] / (1.0 + std::exp(-h1[size_t(i)])) * h3[size_t(i)];
      auto down = matmul(h1, &w2[size_t(l) * dim * hidden], dim, hidden);
      for (int i = 0; i < dim; ++i) x[size_t(i)] += down[size_t(i)];
    }
    x = rmsnorm(x, rms_final.data());
    return matmul(x, emb.data(), vocab, dim);
  }
};

template <class V>
int argmax(const V& v, int n) {
  int b = 0;
  for (int i = 1; i < n; ++i)
    if (v[i] > v[b]) b = i;
  return b;
}

}  // namespace

TEST_CASE("stories260K: greedy decode from BOS equals the plain llama2.c-algorithm implementation") {
  if (!std::filesystem::exists(kStories)) {
    MESSAGE("skipped: " << kStories << " is absent");
    return;
  }
  constexpr int kSteps = 120;
  Plain plain(kStories);
  std::vector<int> golden;
  std::vector<std::vector<double>> golden_logits;
  int tok = 1;  // BOS
  for (int pos = 0; pos < kSteps; ++pos) {
    golden_logits.push_back(plain.forward(tok, pos));
    tok = argmax(golden_logits.back(), plain.vocab);
    golden.push_back(tok);
  }

  const auto ck = ropex::model::Checkpoint::open(kStories);
  CHECK(ck.config().rope_layout == ropex::RopeLayout::interleaved);
  ropex::model::Llama<> model(ck);
  auto cache = model.make_cache(kSteps);
  std::vector<int> got;
  std::vector<float> logits(512);
  int32_t t = 1;
  double max_err = 0;
  for (int pos = 0; pos < kSteps; ++pos) {
    const auto hidden = model.forward(std::span(&t, 1), cache);
    model.logits(hidden.data(), 1, logits.data());
    for (int v = 0; v < 512; ++v) max_err = std::max(max_err, std::abs(logits[size_t(v)] - golden_logits[size_t(pos)][size_t(v)]));
    t = argmax(logits, 512);
    got.push_back(t);
  }
  MESSAGE("stories260K: max |logit ropex - plain double| over " << kSteps << " steps = " << max_err);
  CHECK(got == golden);
  CHECK(max_err < 1e-3);
  // The model really is trained: its greedy story is not one token repeated.
  CHECK(std::set<int>(golden.begin(), golden.end()).size() > 20);
}

TEST_CASE("stories260K: KV-cache decode equals one full forward; perplexity of its own greedy text is low") {
  if (!std::filesystem::exists(kStories)) {
    MESSAGE("skipped: " << kStories << " is absent");
    return;
  }
  const auto ck = ropex::model::Checkpoint::open(kStories);
  ropex::model::Llama<> model(ck);
  // Greedy 200 tokens with the cache.
  std::vector<int32_t> seq = {1};
  auto cache = model.make_cache(200);
  std::vector<float> logits(512);
  std::vector<std::vector<float>> step_logits;
  for (int i = 0; i < 199; ++i) {
    const auto h = model.forward(std::span(&seq.back(), 1), cache);
    model.logits(h.data(), 1, logits.data());
    step_logits.push_back(logits);
    seq.push_back(argmax(logits, 512));
  }
  // Full forward over the same 199 inputs (chunked through the layers 64 tokens at a time).
  ropex::model::Llama<> chunked(ck, 64);
  auto cache2 = chunked.make_cache(200);
  const auto full = chunked.logits(std::span(seq).subspan(0, 199), cache2);
  double err = 0;
  for (int i = 0; i < 199; ++i)
    for (int v = 0; v < 512; ++v) err = std::max(err, double(std::abs(full(i, v) - step_logits[size_t(i)][size_t(v)])));
  MESSAGE("stories260K: max |incremental - full| = " << err);
  CHECK(err < 1e-4);
  // Perplexity over one window equals exp(mean NLL) computed from the decode's own logits.
  double nll = 0;
  for (int i = 0; i < 199; ++i)
    nll += ropex::eval::token_nll(step_logits[size_t(i)].data(), 512, seq[size_t(i + 1)]);
  ropex::eval::PerplexityOptions one;
  one.context = 200;
  const auto r1 = ropex::eval::perplexity(chunked, seq, one);
  MESSAGE("greedy text: exp(mean nll) from decode = " << std::exp(nll / 199) << ", perplexity() = " << r1.perplexity);
  CHECK(r1.perplexity == doctest::Approx(std::exp(nll / 199)).epsilon(1e-5));
  CHECK(r1.windows == 1);
  // Its own greedy continuation is what it finds likely: perplexity far below uniform (512).
  CHECK(r1.perplexity < 3.0);
  // Strided windows (128 tokens, step 64): windows [0,128) [64,192) [128,200) score targets
  // 1..127, 128..191, 192..199 — each once, every window starting from a fresh cache.
  ropex::eval::PerplexityOptions po;
  po.context = 128, po.stride = 64, po.bins = 4;
  const auto r = ropex::eval::perplexity(chunked, seq, po);
  double expect = 0;
  int64_t scored = 0;
  for (auto [begin, first, last] : {std::tuple{0, 1, 127}, std::tuple{64, 128, 191}, std::tuple{128, 192, 199}}) {
    auto c = chunked.make_cache(128);
    const int len = std::min(128, 200 - begin);
    const auto lg = chunked.logits(std::span(seq).subspan(size_t(begin), size_t(len)), c);
    for (int target = first; target <= last; ++target, ++scored)
      expect += ropex::eval::token_nll(&lg(target - 1 - begin, 0), 512, seq[size_t(target)]);
  }
  CHECK(r.tokens == 199);
  CHECK(scored == 199);
  CHECK(r.windows == 3);
  CHECK(r.perplexity == doctest::Approx(std::exp(expect / 199)).epsilon(1e-6));
  // The per-position curve: window positions 0..126 in window 1; 63..126 in window 2; 63..70 in 3.
  int64_t counted = 0;
  for (auto c : r.position_count) counted += c;
  CHECK(counted == 199);
  CHECK(r.position_count[0] == 1);
  CHECK(r.position_count[63] == 3);
  CHECK(r.position_count[71] == 2);
  CHECK(r.position_count[127] == 0);
  REQUIRE(r.curve.size() == 4);
  CHECK(r.curve[0].begin == 0);
  CHECK(r.curve[3].end == 128);
  CHECK(r.curve[0].count + r.curve[1].count + r.curve[2].count + r.curve[3].count == 199);
  CHECK_THROWS_AS(ropex::eval::perplexity(chunked, seq, ropex::eval::PerplexityOptions{1}), ropex::Error);
  // window_bos: windows 2 and 3 start with BOS instead of tokens 64 / 128; targets unchanged.
  po.window_bos = 1;
  const auto rb = ropex::eval::perplexity(chunked, seq, po);
  double expect_bos = 0;
  for (auto [begin, first, last] : {std::tuple{0, 1, 127}, std::tuple{64, 128, 191}, std::tuple{128, 192, 199}}) {
    auto c = chunked.make_cache(128);
    std::vector<int32_t> w(seq.begin() + begin, seq.begin() + std::min(begin + 128, 200));
    w[0] = 1;
    const auto lg = chunked.logits(w, c);
    for (int target = first; target <= last; ++target)
      expect_bos += ropex::eval::token_nll(&lg(target - 1 - begin, 0), 512, seq[size_t(target)]);
  }
  CHECK(rb.perplexity == doctest::Approx(std::exp(expect_bos / 199)).epsilon(1e-6));
  MESSAGE("greedy text, 128-token windows stride 64: perplexity " << r.perplexity << ", with BOS windows " << rb.perplexity);
}
