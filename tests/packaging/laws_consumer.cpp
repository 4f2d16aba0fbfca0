// A program of ropex::laws alone: the scaling laws and RoPE math with no Eigen, JSON or xtensor.
#include <ropex/laws.hpp>

#include <cstdio>
#include <vector>

#if defined(EIGEN_WORLD_VERSION) || defined(NLOHMANN_JSON_VERSION_MAJOR) || defined(XTENSOR_VERSION_MAJOR)
#error "ropex/laws.hpp reached a header of Eigen, nlohmann_json or xtensor"
#endif

int main() {
  const int d_extra = ropex::critical_dimension(128, 4096);  // 92 (eq. 13)
  const std::vector<double> inv_freq{1.0, 0.01};
  const auto table = ropex::rope_table<float>(inv_freq, ropex::iota_positions(3));
  std::printf("critical_dimension(128, 4096) = %d, rope table %lld x %d\n", d_extra,
              static_cast<long long>(table.n_tokens), table.half);
  return d_extra == 92 && table.cos.size() == 6 ? 0 : 1;
}
