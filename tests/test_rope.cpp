// RoPE math: every variant's inv_freq / attention factor against paper.md's worked numbers and
// against Hugging Face transformers (tests/fixtures/rope/hf_rope.json, made by
// scripts/make_rope_fixtures.py); rotation against a long-double reference, both layouts, types.
#include <doctest/doctest.h>
#include <ropex/rope/apply.hpp>
#include <ropex/rope/frequencies.hpp>
#include <ropex/rope/scaling.hpp>

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <fstream>
#include <random>
#include <vector>

using namespace ropex;
using nlohmann::json;

namespace {

json load_fixture() {
  std::ifstream f(ROPEX_SOURCE_DIR "/tests/fixtures/rope/hf_rope.json");
  REQUIRE_MESSAGE(f.good(), "missing tests/fixtures/rope/hf_rope.json");
  return json::parse(f);
}

std::vector<double> random_vec(std::mt19937_64& g, size_t n) {
  std::normal_distribution<double> d;
  std::vector<double> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Reference rotation of one head, in long double, straight from the definition.
std::vector<long double> rotate_reference(const std::vector<double>& x, std::int64_t pos,
                                          const std::vector<double>& inv, RopeLayout layout) {
  const int r = 2 * static_cast<int>(inv.size());
  std::vector<long double> y(x.begin(), x.end());
  for (int i = 0; i < r / 2; ++i) {
    const long double a = static_cast<long double>(pos) * inv[i];
    const int ia = layout == RopeLayout::half ? i : 2 * i;
    const int ib = layout == RopeLayout::half ? i + r / 2 : 2 * i + 1;
    y[ia] = x[ia] * std::cos(a) - x[ib] * std::sin(a);
    y[ib] = x[ia] * std::sin(a) + x[ib] * std::cos(a);
  }
  return y;
}

}  // namespace

TEST_CASE("paper.md worked numbers: NTK-aware, dynamic NTK, YaRN") {
  // NTK-aware base for d = 128, alpha = 2/4/8 (paper.md, related methods).
  CHECK(ntk_base(10000, 2, 128) == doctest::Approx(20221.26).epsilon(1e-6));
  CHECK(ntk_base(10000, 4, 128) == doctest::Approx(40889.94).epsilon(1e-6));
  CHECK(ntk_base(10000, 8, 128) == doctest::Approx(82684.62).epsilon(1e-6));
  // Dynamic NTK, s = 2, L0 = 4096; and the reset below L0.
  CHECK(dynamic_ntk_base(10000, 2, 4096, 8192, 128) == doctest::Approx(30527.74).epsilon(1e-6));
  CHECK(dynamic_ntk_base(10000, 2, 4096, 16384, 128) == doctest::Approx(72195.86).epsilon(1e-6));
  CHECK(dynamic_ntk_base(10000, 2, 4096, 100, 128) == 10000.0);
  // YaRN, d = 128, base 1e4, s = 16, L0 = 4096: ramp from pair 20 to 46, mscale 1.277259.
  RopeParams p;
  p.type = RopeType::yarn;
  p.factor = 16;
  p.original_max_position_embeddings = 4096;
  const YarnRange r = yarn_range(p, 128);
  CHECK(r.low == 20);
  CHECK(r.high == 46);
  CHECK(attention_factor(p) == doctest::Approx(1.277259).epsilon(1e-6));
  // ceil(corr_dim(1)) is the critical dimension's pair count (92/2) for LLaMA-2.
  CHECK(std::ceil(yarn_correction_dim(1, 128, 10000, 4096)) == 46);
  // Pairs below `low` are untouched, above `high` fully interpolated.
  CHECK(inv_freq(p, 5, 128) == doctest::Approx(default_inv_freq(10000, 5, 128)).epsilon(1e-15));
  CHECK(inv_freq(p, 60, 128) == doctest::Approx(default_inv_freq(10000, 60, 128) / 16).epsilon(1e-15));
}

TEST_CASE("every variant matches Hugging Face transformers' inv_freq and attention factor") {
  const json fx = load_fixture();
  const int d = fx["head_dim"].get<int>();
  REQUIRE(fx["cases"].size() >= 10);
  for (const auto& c : fx["cases"]) {
    const std::string name = c["name"].get<std::string>();
    CAPTURE(name);
    json config = c["config"];
    const RopeScaling rs = rope_scaling_from_config(config, name);
    CHECK(std::string(to_string(rs.type)) == c["rope_type"].get<std::string>());
    for (const auto& v : c["values"]) {
      const auto seq_len = v["seq_len"].get<std::int64_t>();
      CAPTURE(seq_len);
      const auto ours = rs.inv_freq(d, seq_len);
      const auto ref = v["inv_freq"].get<std::vector<double>>();
      REQUIRE(ours.size() == ref.size());
      for (size_t i = 0; i < ref.size(); ++i) {
        CAPTURE(i);
        // HF evaluates in float32: agreement to float rounding.
        CHECK(ours[i] == doctest::Approx(ref[i]).epsilon(2e-6));
      }
      CHECK(rs.attention_factor(seq_len) == doctest::Approx(v["attention_factor"].get<double>()).epsilon(1e-6));
    }
  }
}

TEST_CASE("apply_rope reproduces HF's rotary module + apply_rotary_pos_emb (half layout)") {
  const json fx = load_fixture();
  const int d = fx["head_dim"].get<int>();
  for (const auto& c : fx["cases"]) {
    const std::string name = c["name"].get<std::string>();
    CAPTURE(name);
    const RopeScaling rs = rope_scaling_from_config(c["config"], name);
    const auto& a = c["apply"];
    const auto pos = a["positions"].get<std::vector<std::int64_t>>();
    auto q = a["q"].get<std::vector<float>>();
    const auto ref = a["q_rot"].get<std::vector<float>>();
    const std::int64_t seq_len = *std::max_element(pos.begin(), pos.end()) + 1;
    // HF picks longrope's short set at init (seq <= L0 here) and dynamic's init base; pass the
    // same sequence length HF's module used.
    std::int64_t eff = seq_len;
    if (rs.type == RopeType::dynamic) eff = std::max<std::int64_t>(seq_len, rs.max_position_embeddings);
    const auto inv = rs.inv_freq(d, eff);
    const auto table = rope_table(inv, pos, rs.attention_factor(eff));
    apply_rope(q.data(), static_cast<std::int64_t>(pos.size()), 1, d, table, RopeLayout::half);
    double max_err = 0;
    for (size_t i = 0; i < q.size(); ++i) max_err = std::max(max_err, std::fabs(double(q[i]) - ref[i]));
    // HF forms angles in float32 (error up to ~1e3 * 6e-8 rad at position 1011).
    CHECK(max_err < 3e-4);
  }
}

TEST_CASE("rotation equals a long-double reference for both layouts, partial rotary and strides") {
  std::mt19937_64 g(42);
  for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved}) {
    for (int head_dim : {64, 80, 128}) {
      for (int rotary : {head_dim, head_dim / 2}) {
        CAPTURE(head_dim);
        CAPTURE(rotary);
        RopeScaling rs;
        rs.base = 10000;
        const auto inv = rs.inv_freq(rotary);
        const std::vector<std::int64_t> pos = {0, 1, 7, 4095, 123457, 1000000};
        const int heads = 3;
        // token stride with padding to check strided access leaves the gaps alone
        const std::int64_t head_stride = head_dim + 5, token_stride = heads * head_stride + 3;
        std::vector<double> x(static_cast<size_t>(token_stride * pos.size()));
        for (auto& v : x) v = std::normal_distribution<double>()(g);
        const auto orig = x;
        const auto table = rope_table<double>(inv, pos);
        apply_rope(x.data(), static_cast<std::int64_t>(pos.size()), heads, head_dim, token_stride, head_stride,
                   table, layout);
        double max_err = 0;
        for (size_t t = 0; t < pos.size(); ++t)
          for (int h = 0; h < heads; ++h) {
            const size_t off = t * token_stride + h * head_stride;
            std::vector<double> head(orig.begin() + off, orig.begin() + off + head_dim);
            const auto ref = rotate_reference(head, pos[t], inv, layout);
            for (int j = 0; j < head_dim; ++j) max_err = std::max(max_err, double(std::fabs(ref[j] - x[off + j])));
            for (int j = rotary; j < head_dim; ++j) CHECK(x[off + j] == orig[off + j]);  // untouched
            for (std::int64_t gap = head_dim; gap < head_stride && (h + 1) * head_stride <= token_stride; ++gap)
              CHECK(x[off + gap] == orig[off + gap]);
          }
        // bound: a few ulps of the unreduced double angle pos*theta at pos = 1e6 (ulp ~1.2e-10)
        CHECK(max_err < 5e-10);
      }
    }
  }
}

TEST_CASE("half and interleaved layouts agree under HF's Meta->HF q/k permutation") {
  std::mt19937_64 g(7);
  const int d = 128;
  RopeScaling rs;
  rs.base = 500000;
  const auto inv = rs.inv_freq(d);
  const std::vector<std::int64_t> pos = {3, 999, 65535};
  const auto perm = interleaved_to_half_permutation(d);
  for (auto p : pos) {
    const auto meta = random_vec(g, d);
    std::vector<float> xi(meta.begin(), meta.end()), xh(d);
    for (int r = 0; r < d; ++r) xh[r] = xi[perm[r]];
    const std::vector<std::int64_t> one = {p};
    const auto table = rope_table(inv, one);
    apply_rope(xi.data(), 1, 1, d, table, RopeLayout::interleaved);
    apply_rope(xh.data(), 1, 1, d, table, RopeLayout::half);
    for (int r = 0; r < d; ++r) CHECK(xh[r] == xi[perm[r]]);  // same arithmetic: bitwise equal
  }
}

TEST_CASE("relative position: <R(m)q, R(n)k> depends only on m - n (float64, positions to 1e6)") {
  std::mt19937_64 g(3);
  const int d = 128;
  RopeScaling rs;
  const auto inv = rs.inv_freq(d);
  auto dot_at = [&](const std::vector<double>& q, const std::vector<double>& k, std::int64_t m, std::int64_t n,
                    RopeLayout layout) {
    auto qq = q, kk = k;
    const std::vector<std::int64_t> pm = {m}, pn = {n};
    apply_rope(qq.data(), 1, 1, d, rope_table<double>(inv, pm), layout);
    apply_rope(kk.data(), 1, 1, d, rope_table<double>(inv, pn), layout);
    double s = 0;
    for (int i = 0; i < d; ++i) s += qq[i] * kk[i];
    return s;
  };
  for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved}) {
    for (int trial = 0; trial < 5; ++trial) {
      const auto q = random_vec(g, d), k = random_vec(g, d);
      const std::int64_t delta = std::uniform_int_distribution<std::int64_t>(0, 5000)(g);
      const double ref = dot_at(q, k, delta, 0, layout);
      for (std::int64_t shift : {1LL, 4096LL, 99999LL, 1000000LL - delta}) {
        CHECK(dot_at(q, k, shift + delta, shift, layout) == doctest::Approx(ref).epsilon(1e-9));
      }
      // and a different offset gives a different score (the property is not vacuous)
      CHECK(std::fabs(dot_at(q, k, delta + 17, 0, layout) - ref) > 1e-6);
    }
  }
}

TEST_CASE("double-angle tables stay exact at position 1e6 where float32 pos*inv_freq does not") {
  const int d = 128;
  RopeScaling rs;
  const auto inv = rs.inv_freq(d);
  const std::int64_t pos = 1000000;
  const std::vector<std::int64_t> one = {pos};
  const auto table = rope_table(inv, one);
  double worst_ours = 0, worst_f32 = 0;
  for (int i = 0; i < d / 2; ++i) {
    const long double exact = static_cast<long double>(pos) * inv[i];
    const float f32_angle = static_cast<float>(pos) * static_cast<float>(inv[i]);  // what HF / ggml do
    worst_ours = std::max(worst_ours, double(std::fabs(std::cos(exact) - table.cos[i])));
    worst_f32 = std::max(worst_f32, double(std::fabs(std::cos(exact) - std::cos(static_cast<long double>(f32_angle)))));
  }
  MESSAGE("max |cos error| at 1e6: double table " << worst_ours << ", float32 angles " << worst_f32);
  CHECK(worst_ours < 1e-7);  // float rounding of the stored cos only
  CHECK(worst_f32 > 1e-3);   // the float32 product is off by up to ~0.03 rad
}

TEST_CASE("apply_rope on Eigen::half and Eigen::bfloat16 is within one rounding of the float result") {
  std::mt19937_64 g(11);
  const int d = 128, heads = 4, n = 9;
  RopeScaling rs;
  const auto inv = rs.inv_freq(d);
  const auto pos = iota_positions(n, 100);
  const auto table = rope_table(inv, pos);
  const auto src = random_vec(g, static_cast<size_t>(n * heads * d));
  std::vector<float> xf(src.begin(), src.end());
  std::vector<Eigen::half> xh(src.size());
  std::vector<Eigen::bfloat16> xb(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    xh[i] = Eigen::half(xf[i]);
    xb[i] = Eigen::bfloat16(xf[i]);
  }
  // reference: rotate the already-rounded inputs in float, then round once.
  std::vector<float> rh(xh.begin(), xh.end()), rb(xb.begin(), xb.end());
  apply_rope(rh.data(), n, heads, d, table, RopeLayout::half);
  apply_rope(rb.data(), n, heads, d, table, RopeLayout::half);
  apply_rope(xh.data(), n, heads, d, table, RopeLayout::half);
  apply_rope(xb.data(), n, heads, d, table, RopeLayout::half);
  for (size_t i = 0; i < src.size(); ++i) {
    CHECK(static_cast<float>(xh[i]) == static_cast<float>(Eigen::half(rh[i])));
    CHECK(static_cast<float>(xb[i]) == static_cast<float>(Eigen::bfloat16(rb[i])));
  }
}

TEST_CASE("config parsing: both formats, overrides, and clear errors") {
  // legacy + "type" key
  auto a = rope_scaling_from_config(json::parse(R"({"rope_theta": 500000, "max_position_embeddings": 8192,
      "rope_scaling": {"type": "dynamic", "factor": 2.0}})"));
  CHECK(a.type == RopeType::dynamic);
  CHECK(a.base == 500000);
  CHECK(a.factor == 2.0);
  // rope_parameters
  auto b = rope_scaling_from_config(json::parse(R"({"max_position_embeddings": 131072,
      "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})"));
  CHECK(b.type == RopeType::llama3);
  CHECK(b.original_length() == 8192);
  // no rope fields at all: LLaMA-2 defaults
  auto c = rope_scaling_from_config(json::parse(R"({"max_position_embeddings": 4096})"));
  CHECK(c.type == RopeType::default_rope);
  CHECK(c.base == 10000);
  // yarn without original_max: HF falls back to max_position_embeddings
  auto y = rope_scaling_from_config(json::parse(R"({"max_position_embeddings": 4096,
      "rope_scaling": {"rope_type": "yarn", "factor": 4}})"));
  CHECK(y.original_length() == 4096);

  // overrides
  json over = json::parse(R"({"rope_type": "linear", "factor": 4})");
  apply_rope_override(c, 1e6, &over);
  CHECK(c.type == RopeType::linear);
  CHECK(c.base == 1e6);
  CHECK(c.inv_freq(128)[1] == doctest::Approx(default_inv_freq(1e6, 1, 128) / 4));

  auto err = [](const char* text) {
    try {
      rope_scaling_from_config(json::parse(text), "cfg.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(err(R"({"rope_theta": 1.0})").find("cfg.json: rope_theta") != std::string::npos);
  CHECK(err(R"({"rope_theta": -5})").find("rope_theta") != std::string::npos);
  CHECK(err(R"({"rope_theta": "big"})").find("expected a number") != std::string::npos);
  CHECK(err(R"({"rope_scaling": {"type": "fancy", "factor": 2}})").find("unknown rope type \"fancy\"") !=
        std::string::npos);
  CHECK(err(R"({"rope_scaling": {"type": "linear", "factor": 0}})").find("rope_scaling.factor") !=
        std::string::npos);
  CHECK(err(R"({"rope_scaling": {"type": "dynamic", "factor": 2}})").find("max_position_embeddings") !=
        std::string::npos);
  CHECK(err(R"({"max_position_embeddings": 10, "rope_scaling": {"type": "llama3", "factor": 8,
      "low_freq_factor": 4, "high_freq_factor": 1}})").find("low_freq_factor") != std::string::npos);
  CHECK(err(R"({"max_position_embeddings": 10, "rope_scaling": {"type": "longrope", "short_factor": [1, 2]}})")
            .find("long_factor") != std::string::npos);
  CHECK(err(R"({"partial_rotary_factor": 1.5})").find("partial_rotary_factor") != std::string::npos);
  CHECK(err(R"([1, 2])").find("top level") != std::string::npos);
  json inf_theta = {{"rope_theta", std::numeric_limits<double>::infinity()}};
  CHECK_THROWS_WITH_AS(rope_scaling_from_config(inf_theta), doctest::Contains("rope_theta: must be finite"), Error);
  CHECK_THROWS_AS(apply_rope_override(a, 0.5, nullptr), Error);
  RopeScaling odd;
  CHECK_THROWS_WITH_AS(odd.inv_freq(63), doctest::Contains("rotary_dim"), Error);
}

TEST_CASE("xPos, Giraffe and ALiBi") {
  // xPos: q scale * k scale^-1 depends only on m - n
  const double qs = xpos_scale(10, 128, 1500), ks = xpos_scale(10, 128, 1000);
  CHECK(qs / ks == doctest::Approx(xpos_scale(10, 128, 500)).epsilon(1e-12));
  CHECK(xpos_scale(0, 128, 512) == doctest::Approx(0.4 / 1.4));
  CHECK(xpos_scale(63, 128, 512) < 1.0);
  // Giraffe: power 0 is linear scaling; power > 0 shrinks low frequencies more
  CHECK(giraffe_power_inv_freq(10000, 7, 128, 4, 0) == doctest::Approx(default_inv_freq(10000, 7, 128) / 4));
  CHECK(giraffe_power_inv_freq(10000, 48, 128, 1, 0.5) ==
        doctest::Approx(default_inv_freq(10000, 48, 128) * std::sqrt(1 - 96.0 / 128)));
  const double f40 = default_inv_freq(10000, 40, 128);
  CHECK(giraffe_truncated_inv_freq(10000, 2, 128, 1e-4, 1e-2, 5e-3) == default_inv_freq(10000, 2, 128));
  CHECK(giraffe_truncated_inv_freq(10000, 40, 128, f40 / 2, f40 * 2, 5e-3) == 5e-3);
  CHECK(giraffe_truncated_inv_freq(10000, 63, 128, 1e-3, 1e-2, 5e-3) == 0.0);
  // ALiBi: 8 heads -> 1/2 .. 1/256; 6 heads -> the 4-head rule then odd slots of the 8-head rule
  for (int h = 0; h < 8; ++h) CHECK(alibi_slope(h, 8) == std::ldexp(1.0, -(h + 1)));
  const double six[] = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  for (int h = 0; h < 6; ++h) CHECK(alibi_slope(h, 6) == six[h]);
}
