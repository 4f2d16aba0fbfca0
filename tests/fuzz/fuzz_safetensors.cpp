// Fuzz the safetensors header parser: any bytes -> tensors or ropex::Error, and every returned view
// must be readable in full (ASan checks the bounds the parser promised).
#include <ropex/model/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto views = ropex::model::parse_safetensors(
        std::span(reinterpret_cast<const std::byte*>(data), size), "fuzz.safetensors");
    float block[64];
    for (const auto& t : views)
      for (size_t off = 0; off < t.numel(); off += 64) t.to_float(block, off, std::min<size_t>(64, t.numel() - off));
  } catch (const ropex::Error&) {
  }
  return 0;
}
