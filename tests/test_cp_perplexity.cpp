// Context-parallel perplexity on the CPU (parallel/cp_perplexity.hpp): N ranks, each a Llama<cpu>
// in a thread of its own running the ordinary forward() with its zigzag rows, the window's
// attention computed from all ranks' q/k/v by a double-precision reference. It must equal the
// one-model eval::perplexity — per position, for every RoPE variant whose frequencies depend on the
// window length (dynamic NTK, YaRN, LongRoPE, Llama 3) at windows past max_position_embeddings —
// and a failing rank must stop the others with its error, not hang them.
#include <doctest/doctest.h>

#include "cli_runner.hpp"
#include "test_util.hpp"

#include <ropex/eval/perplexity.hpp>
#include <ropex/model/checkpoint.hpp>
#include <ropex/model/llama.hpp>
#include <ropex/parallel/cp_perplexity.hpp>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using ropex::model::Checkpoint;
using ropex::model::Llama;

namespace {

fs::path fixture_model(const ropex::test::TempDir& tmp, const std::string& variant) {
  const fs::path src = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "hf";
  const fs::path dir = tmp / variant;
  fs::create_directories(dir);
  fs::copy_file(src / (variant + ".config.json"), dir / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(src / "weights" / "model.safetensors", dir / "model.safetensors", fs::copy_options::overwrite_existing);
  return dir;
}

// The window's attention from every rank's rows, in double: rows gathered by their window
// positions (Zigzag), the causal GQA softmax, each output row written back to its rank.
void reference_attend(const std::vector<ropex::parallel::RankAttention<float>>& io,
                      const ropex::attention::AttentionShape& s) {
  const int R = int(io.size());
  const ropex::parallel::Zigzag z(s.n_keys, R);
  const int64_t H = s.n_heads, KV = s.n_kv_heads, hd = s.head_dim, L = s.n_keys;
  std::vector<const float*> q(static_cast<size_t>(L)), k(q), v(q);
  std::vector<float*> o(static_cast<size_t>(L));
  for (int r = 0; r < R; ++r) {
    const auto pos = z.positions_of(r);
    for (size_t i = 0; i < pos.size(); ++i) {
      const size_t p = size_t(pos[i]);
      q[p] = io[size_t(r)].q + int64_t(i) * H * hd, o[p] = io[size_t(r)].o + int64_t(i) * H * hd;
      k[p] = io[size_t(r)].k + int64_t(i) * KV * hd, v[p] = io[size_t(r)].v + int64_t(i) * KV * hd;
    }
  }
  std::vector<double> w(static_cast<size_t>(L));
  for (int64_t i = 0; i < L; ++i)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / s.group();
      const int64_t first = s.window > 0 ? std::max<int64_t>(0, i + 1 - s.window) : 0;
      double mx = -INFINITY, sum = 0;
      for (int64_t j = first; j <= i; ++j) {
        double d = 0;
        for (int64_t e = 0; e < hd; ++e) d += double(q[size_t(i)][h * hd + e]) * double(k[size_t(j)][g * hd + e]);
        w[size_t(j)] = d * s.scale, mx = std::max(mx, w[size_t(j)]);
      }
      for (int64_t j = first; j <= i; ++j) sum += (w[size_t(j)] = std::exp(w[size_t(j)] - mx));
      for (int64_t e = 0; e < hd; ++e) {
        double acc = 0;
        for (int64_t j = first; j <= i; ++j) acc += w[size_t(j)] * double(v[size_t(j)][g * hd + e]);
        o[size_t(i)][h * hd + e] = float(acc / sum);
      }
    }
}

std::vector<int32_t> some_tokens(int64_t n, int64_t vocab) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(int32_t((i * 37 + 11 + i * i % 13) % vocab));
  return t;
}

}  // namespace

TEST_CASE("context-parallel perplexity equals the one-model run, per position, for every window-length RoPE rule") {
  const ropex::test::TempDir tmp("cp_perplexity");
  for (const std::string variant : {"default", "dynamic", "yarn", "longrope", "llama3"}) {
    const Checkpoint ck = Checkpoint::open(fixture_model(tmp, variant));
    // 48-token windows (past max_position_embeddings 32: dynamic NTK and LongRoPE's long factors
    // apply), and a short last window: 150 = 3 x 48 + 6.
    const auto tokens = some_tokens(150, ck.config().vocab_size);
    ropex::eval::PerplexityOptions po;
    po.context = 48, po.bins = 4;
    Llama<> one(ck, 16);
    const auto ref = ropex::eval::perplexity(one, tokens, po);
    for (int R : {1, 2, 3, 4}) {
      CAPTURE(variant);
      CAPTURE(R);
      std::vector<std::unique_ptr<Llama<>>> models;
      std::vector<Llama<>*> ranks;
      for (int r = 0; r < R; ++r) ranks.push_back(models.emplace_back(std::make_unique<Llama<>>(ck, 16)).get());
      const auto got = ropex::parallel::context_parallel_perplexity(ranks, tokens, po, reference_attend);
      CHECK(got.tokens == ref.tokens);
      CHECK(got.windows == ref.windows);
      REQUIRE(got.position_count == ref.position_count);
      double worst = 0;
      for (size_t p = 0; p < ref.position_nll_sum.size(); ++p)
        worst = std::max(worst, std::abs(got.position_nll_sum[p] - ref.position_nll_sum[p]));
      CHECK(worst < 1e-4);  // f32 forward; the reference attention in double against the model's f32
      CHECK(got.mean_nll == doctest::Approx(ref.mean_nll).epsilon(1e-6));
      REQUIRE(got.curve.size() == ref.curve.size());
      for (size_t b = 0; b < ref.curve.size(); ++b) CHECK(got.curve[b].count == ref.curve[b].count);
    }
  }
}

TEST_CASE("context-parallel perplexity: a failing rank stops every rank with its error; bad options refused") {
  const ropex::test::TempDir tmp("cp_perplexity_err");
  const Checkpoint ck = Checkpoint::open(fixture_model(tmp, "default"));
  const auto tokens = some_tokens(100, ck.config().vocab_size);
  std::vector<std::unique_ptr<Llama<>>> models;
  std::vector<Llama<>*> ranks;
  for (int r = 0; r < 3; ++r) ranks.push_back(models.emplace_back(std::make_unique<Llama<>>(ck)).get());
  ropex::eval::PerplexityOptions po;
  po.context = 40;
  int calls = 0;
  const auto fails_second = [&](const auto& io, const auto& s) {
    if (++calls == 2) throw ropex::make_error("ring", "step", "transport failed");
    reference_attend(io, s);
  };
  CHECK_HAS(ropex::test::error_of([&] { ropex::parallel::context_parallel_perplexity(ranks, tokens, po, fails_second); }),
            "transport failed");
  // a rank's own failure (here: rank 2's first thing) stops ranks 0 and 1 waiting at the barrier
  CHECK_HAS(ropex::test::error_of([&] {
              ropex::parallel::context_parallel_perplexity(ranks, tokens, po, reference_attend, [](int r) {
                if (r == 2) throw ropex::make_error("device", "2", "not available");
              });
            }),
            "not available");
  po.stride = 20;
  CHECK_HAS(ropex::test::error_of([&] { ropex::parallel::context_parallel_perplexity(ranks, tokens, po, reference_attend); }),
            "non-overlapping windows only");
  po.stride = 0, po.context = 5;
  CHECK_HAS(ropex::test::error_of([&] { ropex::parallel::context_parallel_perplexity(ranks, tokens, po, reference_attend); }),
            "needs >= 6");
}

TEST_CASE("ropex perplexity --gpus: one line naming the flag where it cannot run") {
  const ropex::test::TempDir tmp("cp_perplexity_cli");
  const fs::path model = fixture_model(tmp, "default");
  const std::string tokens = ropex::test::temp_file("cp_tokens.txt", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16");
  const std::string base = "perplexity --model " + model.string() + " --tokens " + tokens + " --context 8 ";
  auto r = ropex::test::run_cli(base + "--gpus 2");
  CHECK(r.code == 2);
  CHECK_HAS(r.err, "--gpus: 2: context parallel runs on GPUs: add --device cuda");
  r = ropex::test::run_cli(base + "--gpus 2 --cp-transport carrier-pigeon");
  CHECK(r.code != 0);
  CHECK_HAS(r.err, "--cp-transport");
  // without a GPU (or without CUDA or NCCL compiled in): refused, naming the flag
  r = ropex::test::run_cli(base + "--device cuda --gpus 2");
  if (r.code != 0) {
    CHECK(r.code == 2);
    CHECK_HAS(r.err, "--gpus: 2: ");
  }
  std::filesystem::remove(tokens);
}
