// Library-level guards behind the "right number or one clear refusal" rule: integer conversions in
// the law's internals, overflowing law results, RoPE values finite but meaningless, NaN/inf
// detection in weights and logits, the perplexity position arrays, the memory budget, and sharded
// index loading in linear time.
#include "test_util.hpp"

#include <ropex/detail/cxmath.hpp>
#include <ropex/eval/perplexity.hpp>
#include <ropex/io/memory_budget.hpp>
#include <ropex/model/finite.hpp>
#include <ropex/model/safetensors.hpp>
#include <ropex/rope/rotary_config.hpp>
#include <ropex/rope/scaling.hpp>
#include <ropex/scaling_law.hpp>
#include <ropex/theories.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

using ropex::test::error_of;
using ropex::test::TempDir;

namespace {
bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }
}  // namespace

TEST_CASE("ceil_int / round_int saturate instead of casting an out-of-range double") {
  constexpr double big = 1e300, inf = std::numeric_limits<double>::infinity();
  CHECK(ropex::cx::ceil_int(big) == ropex::cx::int_limit);
  CHECK(ropex::cx::ceil_int(-big) == -ropex::cx::int_limit);
  CHECK(ropex::cx::round_int(inf) == ropex::cx::int_limit);
  CHECK(ropex::cx::round_int(std::nan("")) == 0);
  CHECK(ropex::cx::ceil_int(2.5) == 3);
  CHECK(ropex::cx::ceil_int(-2.5) == -2);
  CHECK(ropex::cx::round_int(-2.5) == -3);
  static_assert(ropex::cx::ceil_int(1e300) == ropex::cx::int_limit);  // UB would not compile here
}

TEST_CASE("a pre-training base just above 1 gives d_extra = d, not a wrapped integer") {
  // log_b(T/2pi) with b = 1 + 2^-52 is ~1e16 * ln(T/2pi): far past any integer type once times d/2.
  CHECK(ropex::critical_dimension(128, 1e300, 1.0000000000000002) == 128);
  CHECK(ropex::critical_dimension(128, 4096, 1.0000000000000002) == 128);
  CHECK(ropex::law::pairs_with_full_period(128, 1e300, 1.0000000000000002) == 64);
  CHECK(ropex::critical_dimension(128, 4096) == 92);  // the paper's value is unchanged
}

TEST_CASE("law results past the double range are errors, not inf") {
  // 2*pi*base^(d_extra/d) with d_extra = d (train_len huge): 2*pi*1e308 overflows.
  const auto e1 = error_of([] { (void)ropex::extrapolation_limit(128, 1e300, 1e308, 0, 10000); });
  CHECK(has(e1, "larger_base_limit"));
  CHECK(has(e1, "overflows"));
  // beta_0 = beta_pt^(log(T_tune/2pi)/log(T_train/2pi)): tune_len 1e300 over train_len 8 overflows.
  const auto e2 = error_of([] { (void)ropex::critical_base(8, 1e300, 1e300); });
  CHECK(has(e2, "critical_base"));
  const auto e3 = error_of([] { (void)ropex::base_for_context(1e300, 128, 8, 1e300); });
  CHECK(has(e3, "overflows"));
  // The slowest period 2*pi*base^((d-2)/d) passes 1.8e308 only for a base near the top and a huge d.
  const auto e4 = error_of([] { (void)ropex::period_table(1 << 20, 1.7e308, 8); });
  CHECK(has(e4, "period"));
  CHECK(ropex::extrapolation_limit(128, 4096, 1e6).limit > 1e5);  // ordinary inputs unaffected
}

namespace {
ropex::RopeScaling scaled(ropex::RopeType t, double factor) {
  ropex::RopeScaling r;
  r.type = t;
  r.factor = factor;
  r.max_position_embeddings = 4096;
  r.original_max_position_embeddings = 4096;
  if (t == ropex::RopeType::longrope) r.short_factor = r.long_factor = {1.0, 2.0};
  return r;
}
}  // namespace

TEST_CASE("RoPE factors finite but meaningless are refused by meaning, naming the key") {
  using T = ropex::RopeType;
  for (T t : {T::linear, T::dynamic, T::yarn, T::llama3, T::longrope}) {
    CAPTURE(ropex::to_string(t));
    for (double f : {1e-310, 1e300, 1e-4, 2e6}) {
      const auto e = error_of([&] { scaled(t, f).validate("config.json"); });
      CHECK(has(e, "config.json: rope_scaling.factor"));
      CHECK(has(e, "[0.001, 1e6]"));
    }
    CHECK(error_of([&] { scaled(t, 4).validate("c"); }) == "<no exception>");
  }
  auto yarn = scaled(T::yarn, 4);
  yarn.attention_factor_override = 1e300;
  CHECK(has(error_of([&] { yarn.validate("c"); }), "rope_scaling.attention_factor"));
  yarn.attention_factor_override = 0;
  yarn.mscale = 1e308;
  CHECK(has(error_of([&] { yarn.validate("c"); }), "rope_scaling.mscale"));
  yarn.mscale = 0.707;
  yarn.mscale_all_dim = -1;
  CHECK(has(error_of([&] { yarn.validate("c"); }), "rope_scaling.mscale_all_dim"));
  auto lr = scaled(T::longrope, 4);
  lr.long_factor = {1e-310, 1.0};
  CHECK(has(error_of([&] { lr.validate("c"); }), "rope_scaling.long_factor"));
  lr.long_factor = {1.0, 1.0};
  lr.original_max_position_embeddings = 1;  // ln L0 = 0 divides the attention factor
  CHECK(has(error_of([&] { lr.validate("c"); }), "original_max_position_embeddings"));
  auto l3 = scaled(T::llama3, 8);
  l3.low_freq_factor = -1;
  CHECK(has(error_of([&] { l3.validate("c"); }), "rope_scaling.low_freq_factor"));
  ropex::RopeScaling big;
  big.base = 1e300;
  CHECK(has(error_of([&] { big.validate("c"); }), "rope_theta"));
  // Every accepted extreme still gives finite frequencies and attention factors.
  for (T t : {T::linear, T::ntk, T::dynamic, T::yarn, T::llama3, T::longrope})
    for (double f : {1.0, 1e6}) {
      auto r = scaled(t, f);
      r.base = ropex::RopeBounds::max_base;
      r.mscale = r.mscale_all_dim = 100;
      if (t == T::longrope) r.short_factor = r.long_factor = {1e-3, 1e6};
      REQUIRE(error_of([&] { r.validate("c"); }) == "<no exception>");
      for (double v : r.inv_freq(4, int64_t(1) << 40)) CHECK(std::isfinite(v));
      CHECK(std::isfinite(r.attention_factor(int64_t(1) << 40)));
    }
}

TEST_CASE("a scaled rope type without its factor is refused, naming factor") {
  for (const char* t : {"linear", "dynamic", "yarn", "llama3", "ntk"}) {
    const nlohmann::json j = {{"type", t}};
    ropex::RopeScaling r;
    r.max_position_embeddings = 4096;
    const auto e = error_of([&] { ropex::apply_rope_override(r, std::nullopt, &j); });
    CHECK(has(e, "--rope-scaling: rope_scaling.factor: required by"));
  }
  const nlohmann::json cfg = {{"max_position_embeddings", 64}, {"rope_scaling", {{"rope_type", "linear"}}}};
  CHECK(has(error_of([&] { (void)ropex::rope_scaling_from_config(cfg, "config.json"); }),
            "config.json: rope_scaling.factor"));
}

TEST_CASE("first_nonfinite finds NaN and inf in floats and in every stored dtype") {
  std::vector<float> x(1000, 1.0f);
  CHECK(ropex::model::first_nonfinite(x.data(), x.size()) == x.size());
  x[777] = std::numeric_limits<float>::infinity();
  CHECK(ropex::model::first_nonfinite(x.data(), x.size()) == 777);
  x[3] = std::nanf("");
  CHECK(ropex::model::first_nonfinite(x.data(), x.size()) == 3);

  using ropex::model::DType;
  using ropex::model::TensorView;
  std::vector<uint16_t> h(300, 0x3c00);  // f16 1.0
  TensorView t{"w", DType::f16, {300}, reinterpret_cast<const std::byte*>(h.data()), 600, "m"};
  CHECK(!ropex::model::first_nonfinite(t));
  h[299] = 0x7c00;  // f16 inf
  CHECK(ropex::model::first_nonfinite(t) == 299);
  std::vector<uint16_t> b(10, 0x3f80);  // bf16 1.0
  TensorView tb{"w", DType::bf16, {10}, reinterpret_cast<const std::byte*>(b.data()), 20, "m"};
  CHECK(!ropex::model::first_nonfinite(tb));
  b[4] = 0xffc1;  // bf16 NaN
  CHECK(ropex::model::first_nonfinite(tb) == 4);
  // Q8_0: an f16 scale then 32 int8; a NaN scale makes the block's decoded values NaN.
  std::vector<unsigned char> q(2 * 34, 1);
  q[0] = 0x00, q[1] = 0x3c, q[34] = 0x00, q[35] = 0x3c;
  TensorView tq{"w", DType::q8_0, {64}, reinterpret_cast<const std::byte*>(q.data()), q.size(), "m"};
  CHECK(!ropex::model::first_nonfinite(tq));
  q[35] = 0x7e;  // second block's scale: f16 NaN
  CHECK(ropex::model::first_nonfinite(tq) == 32);
}

TEST_CASE("perplexity position arrays hold what the input can fill; the curve still spans the context") {
  std::vector<double> sum = {1, 2, 3};
  std::vector<int64_t> count = {1, 1, 1};
  const auto bins = ropex::eval::bin_positions(sum, count, 4, int64_t(1) << 30);
  REQUIRE(bins.size() == 4);
  CHECK(bins[0].begin == 0);
  CHECK(bins[3].end == int64_t(1) << 30);
  CHECK(bins[0].count == 3);
  CHECK(bins[1].count == 0);
}

TEST_CASE("require_memory names the flag when the bytes exceed what is available") {
  const auto e = error_of([] { ropex::io::require_memory("--context", 16.0 * (1ull << 30), "a window", 1e9); });
  CHECK(has(e, "--context: needs 16 GiB for a window"));
  CHECK(has(e, "MemAvailable"));
  CHECK(error_of([] { ropex::io::require_memory("--context", 1e6, "a window", 1e9); }) == "<no exception>");
  const auto avail = ropex::io::available_memory();
  REQUIRE(avail.has_value());  // Linux: /proc/meminfo
  CHECK(*avail > 0);
}

TEST_CASE("a sharded index loads in time linear in its entries") {
  // One shard of n zero-size tensors and an index naming each. Matching each entry by a scan of the
  // shard made 100k entries take ~20 s; with a hash map the 100k index costs ~10x the 10k one.
  TempDir dir("index_scale");
  auto write = [&](int n) {  // as text: building a 100k-key nlohmann object would itself be slow
    std::string h = "{", wm = "{\"weight_map\": {";
    for (int i = 0; i < n; ++i) {
      const std::string name = "\"model.layers." + std::to_string(i) + ".w\"", sep = i ? ", " : "";
      h += sep + name + R"(: {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]})";
      wm += sep + name + R"(: "shard.safetensors")";
    }
    h += "}";
    h.append((8 - h.size() % 8) % 8, ' ');
    std::ofstream st(dir / "shard.safetensors", std::ios::binary);
    const uint64_t len = h.size();
    st.write(reinterpret_cast<const char*>(&len), 8);
    st << h;
    st.close();
    std::ofstream(dir / "model.safetensors.index.json") << wm + "}}";
  };
  auto seconds = [&](int n) {
    write(n);
    const auto t0 = std::chrono::steady_clock::now();
    const auto shards = ropex::model::open_safetensors_index(dir / "model.safetensors.index.json");
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE(shards.size() == 1);
    CHECK(shards[0].tensors().size() == size_t(n));
    return s;
  };
  const double small = seconds(10000), large = seconds(100000);
  MESSAGE("index of 10k entries: " << small << " s, 100k: " << large << " s");
  CHECK(large < 40 * small + 0.5);  // quadratic: ~100x
}

TEST_CASE("Men solver steps too small to move the base are refused (the scan never ended)") {
  ropex::MenSolverOptions o;
  o.grid_step = 1e-300;  // b * (1 + 1e-300) == b
  CHECK(has(error_of([&] { (void)ropex::men_base_for_context(16, 100, 0, o); }), "grid_step: must be in [1e-6, 1]"));
  o.grid_step = 1e-3;
  o.fine_step = 1e-300;
  CHECK(has(error_of([&] { (void)ropex::men_base_for_context(16, 100, 0, o); }), "fine_step"));
  o.fine_step = 0;
  CHECK(ropex::men_base_for_context(16, 100, 0, o).base > 1);
}

TEST_CASE("a config head_dim past int range is refused, not wrapped (4294967298 read as 2)") {
  const nlohmann::json cfg = {{"head_dim", 4294967298.0}, {"rope_theta", 10000}};
  CHECK(has(error_of([&] { (void)ropex::rotary_config_from_json(cfg, "config.json"); }), "config.json: head_dim: must be <="));
  const nlohmann::json fine = {{"head_dim", 128}, {"rope_theta", 10000}};
  CHECK(ropex::rotary_config_from_json(fine, "config.json").head_dim == 128);
}
