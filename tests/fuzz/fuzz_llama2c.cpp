// Fuzz the llama2.c .bin parser: any bytes -> model or ropex::Error; views must be in bounds.
#include <ropex/model/llama2c.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto m = ropex::model::parse_llama2c(std::span(reinterpret_cast<const std::byte*>(data), size), "fuzz.bin");
    volatile float sink = 0;
    for (const auto& t : m.tensors)
      if (t.numel()) sink = sink + t.at(0) + t.at(t.numel() - 1);
  } catch (const ropex::Error&) {
  }
  return 0;
}
