// The ropex CLI's plumbing: each subcommand file registers itself with ROPEX_SUBCOMMAND, so
// subcommands live one idea per file and main.cpp never needs editing.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace ropex::cli {

// A registration adds one subcommand (its options and its callback) to the app.
using Registration = std::function<void(CLI::App&)>;

inline std::vector<std::pair<int, Registration>>& registry() {
  static std::vector<std::pair<int, Registration>> r;
  return r;
}

struct Registrar {
  Registrar(int order, Registration f) { registry().emplace_back(order, std::move(f)); }
};

// Thrown by subcommands for bad input: main prints "ropex <cmd>: error: <what>" and exits 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace ropex::cli

#define ROPEX_CLI_CAT2(a, b) a##b
#define ROPEX_CLI_CAT(a, b) ROPEX_CLI_CAT2(a, b)
// ROPEX_SUBCOMMAND(order, [](CLI::App& app) { auto* sub = app.add_subcommand(...); ... });
#define ROPEX_SUBCOMMAND(order, ...) \
  static ::ropex::cli::Registrar ROPEX_CLI_CAT(ropex_cli_registrar_, __LINE__){order, __VA_ARGS__}
