// The layer-outer forward's pieces that the GPU's 1M-token perplexity relies on, on the CPU:
// a layer-streamed (one-layer) cache gives the same hidden states as a full cache, refuses a
// second call, the on_layer hook reports every layer, and KVCache::append writes at its offset.
#include <doctest/doctest.h>

#include "cli_runner.hpp"

#include <ropex/model/checkpoint.hpp>
#include <ropex/model/kv_cache.hpp>
#include <ropex/model/llama.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using ropex::model::Checkpoint;
using ropex::model::Llama;

namespace {
fs::path fixture_model() {
  const fs::path src = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "hf";
  const fs::path dir = fs::temp_directory_path() / ("ropex_streamed_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(src / "llama3.config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(src / "weights" / "model.safetensors", dir / "model.safetensors", fs::copy_options::overwrite_existing);
  return dir;
}
}  // namespace

TEST_CASE("layer-streamed cache: same hidden states as a full cache, one layer of memory, one call") {
  const fs::path dir = fixture_model();
  const Checkpoint ck = Checkpoint::open(dir);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back((i * 37 + 5) % 256);
  Llama<> model(ck, 9);  // 9-token chunks: later chunks attend to earlier chunks of the same layer
  auto full = model.make_cache(40);
  auto streamed = model.make_cache(40, /*layer_streamed=*/true);
  CHECK(full.n_layers() == ck.config().num_hidden_layers);
  CHECK(streamed.n_layers() == 1);
  CHECK(streamed.bytes() * size_t(ck.config().num_hidden_layers) == full.bytes());
  std::vector<std::pair<int64_t, int64_t>> calls;
  model.on_layer([&](int64_t done, int64_t total) { calls.emplace_back(done, total); });
  const auto a = model.forward(tokens, full);
  REQUIRE(calls.size() == size_t(ck.config().num_hidden_layers));
  CHECK(calls.back() == std::pair<int64_t, int64_t>(ck.config().num_hidden_layers, ck.config().num_hidden_layers));
  const auto b = model.forward(tokens, streamed);
  CHECK(streamed.length() == 40);
  double err = 0;
  for (int64_t i = 0; i < a.size(); ++i) err = std::max(err, double(std::abs(a.data()[i] - b.data()[i])));
  CHECK(err == 0.0);  // the same arithmetic in the same order
  // Its cache now holds only the last layer: extending it would attend to the wrong keys.
  CHECK_THROWS_WITH_AS(model.forward(std::span(tokens).subspan(0, 1), streamed), doctest::Contains("layer-streamed"),
                       ropex::Error);
  streamed.clear();
  CHECK_NOTHROW(model.forward(std::span(tokens).subspan(0, 3), streamed));
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST_CASE("KVCache::append at an offset writes rows length+offset .. and checks capacity") {
  ropex::model::KVCache cache(2, 2, 4, 10);
  std::vector<float> k(3 * 2 * 4), v(3 * 2 * 4);
  for (size_t i = 0; i < k.size(); ++i) k[i] = float(i), v[i] = -float(i);
  cache.append(1, k.data(), v.data(), 3, 5);  // tokens 5, 6, 7 of layer 1
  CHECK(cache.keys(1).row(5, 0)[0] == 0.f);
  CHECK(cache.keys(1).row(6, 1)[2] == float((1 * 2 + 1) * 4 + 2));
  CHECK(cache.values(1).row(7, 1)[3] == -float((2 * 2 + 1) * 4 + 3));
  CHECK(cache.length() == 0);
  CHECK_THROWS_AS(cache.append(0, k.data(), v.data(), 3, 8), ropex::Error);  // rows 8..10 > capacity 10
  cache.commit(8);
  CHECK(cache.length() == 8);
}

#ifdef ROPEX_CLI
TEST_CASE("ropex logits --device cuda: logits on a GPU, or one clear line (no CUDA compiled in / no device)") {
  const fs::path dir = fs::path(ROPEX_SOURCE_DIR) / "tests" / "fixtures" / "hf";
  const fs::path out = fs::temp_directory_path() / ("ropex_cuda_cli_" + std::to_string(::getpid()) + ".npy");
  const auto r = ropex::test::run_cli("logits --device cuda --model " + (dir / "bf16").string() + " --tokens " +
                                      (dir / "tokens.npy").string() + " --out " + out.string());
  MESSAGE("exit " << r.code << ": " << r.err);
  if (r.code == 0) {
    CHECK(fs::file_size(out) > 48 * 256 * 4);
  } else {
    CHECK(r.code == 2);
    CHECK(r.err.rfind("ropex: error: ", 0) == 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    const bool clear = r.err.find("built without CUDA (configure with -DROPEX_CUDA=ON)") != std::string::npos ||
                       r.err.find("no usable CUDA device") != std::string::npos;
    CHECK(clear);
  }
  std::error_code ec;
  fs::remove(out, ec);
  const auto bad = ropex::test::run_cli("logits --device tpu --model x --tokens y --out z");
  CHECK(bad.code == 2);
}
#endif
