// Memory a command-line flag asks for, checked before it is allocated: a flag that passes its range
// check (--context 2^30, --steps 2^24, --head-dim 2e9) can still ask for terabytes, and the
// allocation would end in std::bad_alloc (or the OOM killer) with no flag named. The budget is the
// kernel's own estimate of what can be allocated without swapping (MemAvailable, /proc/meminfo).
#pragma once
#include <ropex/error.hpp>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>

namespace ropex::io {

/// MemAvailable in bytes, or nullopt where /proc/meminfo is absent or unreadable (non-Linux).
inline std::optional<double> available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kib = 0;
  std::string unit;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kib * 1024.0;
  }
  return std::nullopt;
}

inline std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g GiB", bytes / double(1ull << 30));
  return buf;
}

/// Throws ropex::Error naming `flag` when `bytes` (a double, so a product of large flags cannot
/// wrap) exceeds the memory available now. `what` says what the bytes are for.
inline void require_memory(std::string_view flag, double bytes, std::string_view what,
                           std::optional<double> available = available_memory()) {
  if (!available || bytes <= *available) return;
  throw make_error(flag, "", "needs " + gib(bytes) + " for " + std::string(what) + ", more than the " +
                                 gib(*available) + " available (MemAvailable); use a smaller value");
}

/// Bytes of a LLaMA-family CPU forward over `window` tokens into a float32 KV cache of
/// `cache_tokens` tokens and `cache_layers` layers: the cache (keys and values), the residual
/// stream and the returned hidden states [window, hidden], and the cos/sin tables (doubles).
/// Per-chunk buffers are bounded by the chunk size and left out.
inline double forward_bytes(double window, double cache_tokens, double cache_layers, double kv_dim, double hidden,
                            double head_dim) {
  return 4.0 * 2.0 * cache_layers * kv_dim * cache_tokens + 4.0 * 2.0 * window * hidden +
         8.0 * window * head_dim;
}

}  // namespace ropex::io
