// A program of the whole CPU library: the umbrella header, a checkpoint's RoPE settings from JSON
// (nlohmann_json through ropex::ropex), an Eigen matrix, and with ropex::xtensor its views and .npy.
#include <ropex/ropex.hpp>
#if defined(ROPEX_CONSUMER_XTENSOR)
#include <ropex/xtensor.hpp>
#endif

#include <Eigen/Core>

#include <cstdio>
#include <filesystem>

int main() {
  const int d_extra = ropex::critical_dimension(128, 4096);
  const auto cfg = nlohmann::json::parse(R"({"max_position_embeddings": 4096, "rope_theta": 500000})");
  const ropex::RopeScaling rope = ropex::rope_scaling_from_config(cfg);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(2, 3);
  m.setZero();
  m(1, 2) = float(d_extra);
  bool ok = d_extra == 92 && rope.base == 500000.0;
#if defined(ROPEX_CONSUMER_XTENSOR)
  const auto path = std::filesystem::temp_directory_path() / "ropex_consumer.npy";
  ropex::io::write_npy_f32(path, ropex::as_xtensor(m));
  ok = ok && ropex::io::read_npy_xtensor<2>(path)(1, 2) == 92.0f;
  std::filesystem::remove(path);
#endif
  std::printf("critical_dimension(128, 4096) = %d, rope_theta %.0f\n", d_extra, rope.base);
  return ok ? 0 : 1;
}
