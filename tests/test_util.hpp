// Small helpers shared by the tests: catching a ropex::Error's message, temp directories.
#pragma once
#include <doctest/doctest.h>
#include <ropex/error.hpp>

#include <filesystem>
#include <string>

#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define ROPEX_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ROPEX_TEST_ASAN 1
#endif
#endif

namespace ropex::test {

/// True (with a message saying where the case runs instead) in the sanitizer build: a case that
/// runs the real 30-layer model over thousands of tokens takes minutes under ASan, so
/// scripts/test.sh runs it in its native Release build (build-native).
inline bool skip_in_sanitizer_build() {
#ifdef ROPEX_TEST_ASAN
  MESSAGE("skipped in the sanitizer build: run by the Release build (scripts/test.sh build-native)");
  return true;
#else
  return false;
#endif
}

/// Runs f and returns the ropex::Error message it threw ("<no exception>" if none; other
/// exception types are reported as such, so a test can tell them apart).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ropex::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<not a ropex::Error> ") + e.what();
  }
  return "<no exception>";
}

/// A fresh directory under the system temp dir, removed with its contents at scope exit.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    path = std::filesystem::temp_directory_path() / ("ropex_" + tag + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::filesystem::path operator/(const std::string& n) const { return path / n; }
};

}  // namespace ropex::test

// CHECK that an error message contains `part`, printing the whole message when it does not.
#define CHECK_HAS(msg, part) \
  CHECK_MESSAGE((msg).find(part) != std::string::npos, "message: " << (msg) << "\nmissing: " << (part))
