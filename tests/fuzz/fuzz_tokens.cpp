// Fuzz the token-file parser (.npy int32/int64 or text ids): any bytes -> ids or ropex::Error.
#include <ropex/io/tokens.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto ids = ropex::io::parse_tokens(std::span(reinterpret_cast<const std::byte*>(data), size), "fuzz.tokens");
    for (int32_t id : ids)
      if (id < 0) std::abort();  // parse_tokens promises non-negative ids
  } catch (const ropex::Error&) {
  }
  return 0;
}
