// ropex/xtensor.hpp: views share the ropex object's memory at the right (row, col), .npy round
// trips through ropex's checked reader (also files xtensor itself wrote), and what the reader
// refuses stays refused through the xt entry points.
#include <ropex/xtensor.hpp>

#include <doctest/doctest.h>
#include "test_util.hpp"

#include <Eigen/Core>
#include <xtensor/xnpy.hpp>
#include <xtensor/xview.hpp>

#include <cstdint>
#include <filesystem>
#include <vector>

namespace fs = std::filesystem;
using ropex::test::error_of;
using ropex::test::TempDir;

TEST_CASE("as_xtensor: row- and column-major Eigen matrices keep (row, col) and share memory") {
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm(3, 5);
  Eigen::MatrixXf cm(3, 5);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) rm(i, j) = cm(i, j) = float(10 * i + j);
  auto vr = ropex::as_xtensor(rm);
  auto vc = ropex::as_xtensor(cm);
  REQUIRE(vr.shape()[0] == 3);
  REQUIRE(vr.shape()[1] == 5);
  REQUIRE(vc.shape()[0] == 3);
  for (size_t i = 0; i < 3; ++i)
    for (size_t j = 0; j < 5; ++j) {
      CHECK(vr(i, j) == float(10 * i + j));
      CHECK(vc(i, j) == float(10 * i + j));
    }
  vr(2, 4) = -1.0f;  // a view, not a copy
  CHECK(rm(2, 4) == -1.0f);
  CHECK(xt::amax(ropex::as_xtensor(cm))() == 24.0f);
}

TEST_CASE("rope_cos/rope_sin view [n_tokens, half]; apply_rope on an xtensor matches the pointer form") {
  const std::vector<double> inv_freq{1.0, 0.1, 0.01, 0.001};
  const auto pos = ropex::iota_positions(6, 3);
  const auto table = ropex::rope_table<float>(inv_freq, pos, 1.25);
  const auto c = ropex::rope_cos(table), s = ropex::rope_sin(table);
  REQUIRE(c.shape()[0] == 6);
  REQUIRE(c.shape()[1] == 4);
  for (size_t t = 0; t < 6; ++t)
    for (size_t i = 0; i < 4; ++i) {
      CHECK(c(t, i) == table.cos[t * 4 + i]);
      CHECK(s(t, i) == table.sin[t * 4 + i]);
    }

  for (auto layout : {ropex::RopeLayout::half, ropex::RopeLayout::interleaved}) {
    xt::xtensor<float, 3> x = xt::empty<float>({6, 2, 10});
    for (size_t k = 0; k < x.size(); ++k) x.data()[k] = float(k % 17) - 8.0f;
    std::vector<float> ref(x.begin(), x.end());
    ropex::apply_rope(x, table, layout);
    ropex::apply_rope(ref.data(), 6, 2, 10, table, layout);
    CHECK(std::vector<float>(x.begin(), x.end()) == ref);
  }
  xt::xtensor<float, 3> wrong = xt::zeros<float>({5, 2, 10});  // 5 tokens, table has 6
  CHECK_HAS(error_of([&] { ropex::apply_rope(wrong, table, ropex::RopeLayout::half); }), "table has 6 rows for 5 tokens");
}

TEST_CASE("position_mean_nll: the scored prefix of the loss curve, holes refused") {
  ropex::eval::PerplexityResult r;
  r.position_nll_sum = {6.0, 3.0, 1.5, 0.0};
  r.position_count = {3, 2, 1, 0};
  const auto m = ropex::position_mean_nll(r);
  REQUIRE(m.size() == 3);
  CHECK(m(0) == 2.0);
  CHECK(m(1) == 1.5);
  CHECK(m(2) == 1.5);
  r.position_count = {3, 0, 1, 0};
  CHECK_HAS(error_of([&] { ropex::position_mean_nll(r); }), "position 2 has targets after unscored position 1");
  r.position_count = {3, 2};
  CHECK_HAS(error_of([&] { ropex::position_mean_nll(r); }), "2 counts for 4 positions");
}

TEST_CASE(".npy into and out of xt containers through ropex's reader") {
  TempDir dir("xtensor_npy");
  xt::xtensor<float, 2> a = xt::empty<float>({4, 3});
  for (size_t k = 0; k < a.size(); ++k) a.data()[k] = 0.5f * float(k) - 1.0f;

  // A transposed view is written in C order of its own shape [3, 4].
  ropex::io::write_npy_f32(dir / "t.npy", xt::transpose(a));
  const auto back = ropex::io::read_npy_xtensor<2>(dir / "t.npy");
  REQUIRE(back.shape()[0] == 3);
  REQUIRE(back.shape()[1] == 4);
  CHECK(back == xt::transpose(a));
  const auto raw = ropex::io::read_npy_f32(dir / "t.npy");  // the plain reader agrees on the bytes
  CHECK(raw.shape == std::vector<size_t>{3, 4});
  CHECK(raw.data[1] == a(1, 0));

  const xt::xarray<float> any = ropex::io::read_npy_xarray(dir / "t.npy");
  CHECK(any.dimension() == 2);
  CHECK(any == back);

  // A file xtensor itself wrote (float64) reads through ropex's reader, rounded to float.
  xt::xtensor<double, 1> d = {1.0, 2.5, -3.25};
  xt::dump_npy((dir / "d.npy").string(), d);
  CHECK(ropex::io::read_npy_xtensor<1>(dir / "d.npy") == xt::xtensor<float, 1>{1.0f, 2.5f, -3.25f});

  CHECK_HAS(error_of([&] { ropex::io::read_npy_xtensor<3>(dir / "t.npy"); }), "(3, 4) has rank 2, expected rank 3");
  CHECK_HAS(error_of([&] { ropex::io::read_npy_xtensor<3>(dir / "t.npy"); }), "t.npy");

  // Truncated data (xt::load_npy would fill the missing tail with uninitialised floats): refused.
  fs::resize_file(dir / "t.npy", fs::file_size(dir / "t.npy") - 4);
  const std::string msg = error_of([&] { ropex::io::read_npy_xarray(dir / "t.npy"); });
  CHECK_HAS(msg, "t.npy");
  CHECK_HAS(msg, "(truncated)");
}
