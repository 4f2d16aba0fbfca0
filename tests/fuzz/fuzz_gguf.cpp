// Fuzz the GGUF parser and the dequantizers: any bytes -> contents or ropex::Error; every tensor
// the parser returns must decode in full inside the bytes it promised (ASan checks the bounds),
// and every metadata accessor must answer or throw ropex::Error.
#include <ropex/model/gguf.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto c = ropex::model::parse_gguf(std::span(reinterpret_cast<const std::byte*>(data), size), "fuzz.gguf");
    for (const auto& [key, v] : c.metadata.entries()) {
      try {
        (void)c.metadata.get_u32(key);
      } catch (const ropex::Error&) {
      }
      if (v.type == ropex::model::GgufValueType::array && v.count) (void)v.at(v.count - 1).describe();
    }
    std::vector<float> row;
    for (const auto& t : c.tensors) {
      if (t.row_length() > (1 << 16)) continue;  // bounded work per input
      row.resize(size_t(t.row_length()));
      for (int64_t r = 0; r < t.n_rows() && r < 64; ++r) t.rows_to_float(row.data(), r, 1);
      if (t.n_rows() > 1) t.rows_to_float(row.data(), t.n_rows() - 1, 1);  // the last row touches the end
    }
  } catch (const ropex::Error&) {
  }
  return 0;
}
